"""featstore.shared_rows: the rings that carry feature rows from build workers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore import shared_rows
from featstore.shared_rows import ArenaSpec, SharedRows, WorkerArena, arenas, worker_arena

pytestmark = pytest.mark.skipif(not shared_rows.supported(), reason="arenas: Linux x86-64 only")

KIB = 1024


@pytest.fixture
def reader(tmp_path: Path):
    with arenas(root=str(tmp_path), capacity=16 * KIB) as r:
        assert r is not None
        yield r


def _rows(n: int, bins: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, bins)).astype(np.float32)


def test_put_then_read_gives_the_same_array_and_unlinks_the_file(reader) -> None:
    arena = WorkerArena(reader.spec)
    a, b = _rows(10), np.arange(12, dtype=np.float64).reshape(3, 4)
    refs = [arena.put(a), arena.put(b)]
    assert all(isinstance(r, SharedRows) for r in refs)
    assert refs[0].offset % 64 == 0 and refs[1].offset % 64 == 0
    assert os.listdir(reader.spec.directory) == [arena.name]
    out = [reader.rows(r) for r in refs]
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], b)
    assert out[1].dtype == np.float64 and out[1].shape == (3, 4)
    assert os.listdir(reader.spec.directory) == []  # mapped by both: nothing left behind


def test_arrays_too_large_empty_or_of_objects_stay_inline(reader) -> None:
    arena = WorkerArena(reader.spec)
    assert arena.put(np.zeros((0, 8), np.float32)) is None
    assert arena.put(np.zeros(8 * KIB // 4 + 1, np.float32)) is None  # over half the ring
    assert arena.put(np.zeros(8 * KIB // 4, np.float32)) is not None
    assert arena.put(np.array([["a"]], dtype=object)) is None  # pointers mean nothing elsewhere


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 200), min_size=1, max_size=60), per_batch=st.integers(1, 5))
def test_ring_wraps_and_every_array_arrives_intact(tmp_path_factory, sizes, per_batch) -> None:
    """Batches of arrays through a small ring, read and released in order: the reader sees
    every array the worker shared, exactly, and the worker never overwrites an unread one."""
    with arenas(root=str(tmp_path_factory.mktemp("shm")), capacity=8 * KIB) as reader:
        arena = WorkerArena(reader.spec)
        shared = 0
        for start in range(0, len(sizes), per_batch):
            arena.new_batch()
            batch = [_rows(n, 4, seed=i) for i, n in enumerate(sizes[start : start + per_batch])]
            refs = [arena.put(a) for a in batch]
            for a, ref in zip(batch, refs, strict=True):
                if ref is not None:
                    np.testing.assert_array_equal(reader.rows(ref), a)
                    shared += a.nbytes
            assert refs[0] is not None  # a batch's first array always fits
            for ref in refs:
                if ref is not None:
                    reader.release(ref)
        if shared > 2 * arena.capacity:
            assert arena.head > 2 * arena.capacity  # it went round the ring


def test_a_batch_never_waits_for_its_own_arrays(reader) -> None:
    """Results of a batch are released only after the whole batch: an array that needs the
    batch's own space goes inline at once instead of waiting forever."""
    arena = WorkerArena(reader.spec)
    arena.new_batch()
    a = _rows(128)  # 4 KiB: four fill the 16 KiB ring, a fifth needs the first one's space
    refs = [arena.put(a) for _ in range(5)]
    t0 = time.monotonic()
    assert all(r is not None for r in refs[:4])
    assert refs[4] is None and time.monotonic() - t0 < 0.5
    for ref in refs[:4]:
        reader.release(ref)
    arena.new_batch()  # the next batch reuses the released space
    assert arena.put(a) is not None


def test_a_worker_waits_for_the_reader_to_release_space(reader) -> None:
    arena = WorkerArena(reader.spec)
    a = _rows(128)
    arena.new_batch()
    first = [arena.put(a) for _ in range(4)]
    arena.new_batch()

    def release_later() -> None:
        time.sleep(0.3)
        for ref in first:
            np.testing.assert_array_equal(reader.rows(ref), a)
            reader.release(ref)

    thread = threading.Thread(target=release_later)
    t0 = time.monotonic()
    thread.start()
    b = _rows(128, seed=1)  # other values: an early overwrite would show in release_later
    ref = arena.put(b)
    waited = time.monotonic() - t0
    thread.join()
    assert ref is not None and waited >= 0.25
    np.testing.assert_array_equal(reader.rows(ref), b)


def test_a_closed_arena_or_a_silent_reader_sends_inline(tmp_path: Path, monkeypatch) -> None:
    with arenas(root=str(tmp_path), capacity=16 * KIB) as reader:
        arena = WorkerArena(reader.spec)
        a = _rows(128)
        arena.new_batch()
        refs = [arena.put(a) for _ in range(4)]
        reader.rows(refs[0])  # the reader knows this arena
        arena.new_batch()
        monkeypatch.setattr(shared_rows, "WAIT_SECONDS", 0.2)
        t0 = time.monotonic()
        assert arena.put(a) is None  # nothing released for WAIT_SECONDS
        assert 0.15 < time.monotonic() - t0 < 2
        monkeypatch.setattr(shared_rows, "WAIT_SECONDS", 60.0)
        closer = threading.Timer(0.2, reader.close)
        closer.start()
        t0 = time.monotonic()
        assert arena.put(a) is None  # the build closed the arena: no 60 s wait
        assert time.monotonic() - t0 < 5
        closer.join()
        assert arena.closed
    assert not (tmp_path / os.path.basename(reader.spec.directory)).exists()


def test_close_reaches_arenas_the_reader_never_saw(tmp_path: Path) -> None:
    with arenas(root=str(tmp_path), capacity=16 * KIB) as reader:
        arena = WorkerArena(reader.spec)
    assert arena.closed
    assert list(tmp_path.iterdir()) == []


def test_worker_arena_per_build_and_none_where_it_cannot_be_made(tmp_path: Path) -> None:
    assert worker_arena(None) is None
    with arenas(root=str(tmp_path), capacity=16 * KIB) as first:
        a = worker_arena(first.spec)
        assert a is not None and worker_arena(first.spec) is a
    assert worker_arena(first.spec) is None  # closed by its build
    with arenas(root=str(tmp_path), capacity=16 * KIB) as second:
        b = worker_arena(second.spec)
        assert b is not None and b is not a
    missing = ArenaSpec(str(tmp_path / "gone"), 16 * KIB)
    assert worker_arena(missing) is None and worker_arena(missing) is None


def test_full_tmpfs_means_no_arena_and_no_file(tmp_path: Path, monkeypatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    with arenas(root=str(tmp_path), capacity=16 * KIB) as reader:
        monkeypatch.setattr(os, "posix_fallocate", no_space)
        with pytest.raises(OSError):
            WorkerArena(reader.spec)
        assert os.listdir(reader.spec.directory) == []


def test_disabled_unsupported_or_missing_root_yield_none(tmp_path: Path, monkeypatch) -> None:
    with arenas(enabled=False, root=str(tmp_path)) as r:
        assert r is None
    with arenas(root=str(tmp_path / "no-such-dir")) as r:
        assert r is None
    monkeypatch.setattr(shared_rows.platform, "machine", lambda: "aarch64")
    with arenas(root=str(tmp_path)) as r:
        assert r is None
    assert list(tmp_path.iterdir()) == []


def test_directories_of_killed_builds_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    orphan = tmp_path / f"featstore-rows-{dead}-abc"
    orphan.mkdir()
    (orphan / "123-deadbeef").write_bytes(b"x" * 100)
    alive = tmp_path / f"featstore-rows-{os.getpid()}-xyz"
    alive.mkdir()
    other = tmp_path / "featstore-rows-notapid"
    other.mkdir()
    with arenas(root=str(tmp_path), capacity=16 * KIB) as reader:
        assert reader is not None
    assert not orphan.exists() and alive.exists() and other.exists()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
