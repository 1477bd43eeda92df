"""Interrupted builds resume and end byte-identical to an uninterrupted build.

Two kinds of interruption: an exception injected at a chosen write/commit inside this
process (every stage of the pipeline, deterministic), and a real ``SIGKILL`` of a
``featstore build`` subprocess while it commits shards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_fixture import assert_stores_equal, make_corpus
from processes import alive, loky_children

import featstore
from featstore.errors import ResourceError
from featstore.store.hdf5_backend import Hdf5Writer, RawSink
from featstore.store.journal import SplitJournal
from featstore.store.zarr_backend import ZarrSink, ZarrWriter

SMALL = {"chunk_frames": 32, "shard_frames": 128, "fsync": False}  # a kill needs no fsync


class Crash(Exception):
    """Stands in for the process dying."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 10, "dev": 6}, seed=11)


@pytest.fixture(scope="module", params=["zarr", "h5"])
def clean(request, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / f"clean.{request.param}"
    featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    return out


def _files(store: Path) -> dict[str, bytes]:
    """Data files of a Zarr store's splits (shards, index chunks, array metadata)."""
    out = {}
    for split in ("dev", "train"):
        for p in sorted((store / split).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(store))] = p.read_bytes()
    return out


def _crash_after(monkeypatch, cls, name: str, n: int) -> None:
    original = getattr(cls, name)
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise Crash(f"{name} call {calls['n']}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


@pytest.mark.parametrize(
    "where",
    [
        ("sink.write", 3),  # mid-split, between shard writes
        ("journal.commit", 5),  # data written, commit not recorded
        ("write_index", 1),  # all frames committed, index of the 2nd split not written
        ("finish", 0),  # every split done, final metadata / HDF5 assembly not done
    ],
)
def test_resume_after_crash_is_byte_identical(
    where, corpus: Path, clean: Path, tmp_path: Path, monkeypatch
):
    name, n = where
    zarr_format = clean.suffix == ".zarr"
    out = tmp_path / clean.name
    targets = {
        "sink.write": ZarrSink if zarr_format else RawSink,
        "journal.commit": SplitJournal,
        "write_index": ZarrWriter if zarr_format else Hdf5Writer,
        "finish": ZarrWriter if zarr_format else Hdf5Writer,
    }
    attr = name.split(".")[-1]
    with monkeypatch.context() as m:
        _crash_after(m, targets[name], attr, n)
        with pytest.raises(Crash):
            featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    with pytest.raises(featstore.StoreError, match="incomplete"):
        featstore.open_store(out)
    summary = featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert not summary.noop
    assert sum(summary.written.values()) + sum(summary.skipped.values()) == 16
    assert_stores_equal(clean, out)
    if zarr_format:
        assert _files(clean) == _files(out)
        assert not (out / ".spoofstore-build").exists()
    again = featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert again.noop


def test_resume_skips_committed_utterances(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        _crash_after(m, ZarrSink, "write", 12)
        with pytest.raises(Crash):
            featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    progress = json.loads((out / ".spoofstore-build" / "dev.progress.json").read_text())
    assert progress["done"] or progress["committed"] > 0
    summary = featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert summary.skipped["dev"] == progress["committed"] or progress["done"]
    assert summary.written["train"] + summary.skipped["train"] == 10


# -- a real SIGKILL ---------------------------------------------------------------------------


def _committed(state: Path) -> int:
    total = 0
    for p in state.glob("*.progress.json"):
        try:
            total += json.loads(p.read_text())["committed"]
        except (OSError, ValueError, KeyError):
            pass
    return total


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_sigkill_mid_build_then_resume_is_byte_identical(tmp_path: Path, jobs: int) -> None:
    """Killed twice and resumed; with ``--jobs 2`` the killed builds' shared-memory arena
    directories are removed by the next build (their pid is gone)."""
    root = make_corpus(tmp_path / "corpus", {"train": 50, "dev": 20}, seconds=(0.4, 1.2), seed=2)
    toml = tmp_path / "featstore.toml"
    toml.write_text(
        f"jobs = {jobs}\nbatch_size = 2\nchunk_frames = 32\nshard_frames = 64\nfsync = false\n"
        "[features.mgd]\n[features.logmel]\n"
    )
    out = tmp_path / "killed.zarr"
    cmd = [
        sys.executable,
        "-m",
        "featstore",
        "build",
        "--manifest",
        str(root / "protocols"),
        "--audio-root",
        str(root),
        "--out",
        str(out),
        "--config",
        str(toml),
        "--quiet",
    ]
    state = out / ".spoofstore-build"
    kills = 0
    killed: list[int] = []
    workers: list[int] = []
    for threshold in (1, 40):  # kill early, then again later in the resumed run
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _committed(state) >= threshold:
                workers += loky_children(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                killed.append(proc.pid)
                break
            time.sleep(0.002)
        proc.wait()
    assert kills >= 1, "the build finished before it could be killed; make the corpus bigger"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stdout or "already complete" in done.stdout
    if os.path.isdir("/dev/shm"):
        left = [p for p in os.listdir("/dev/shm") for pid in killed if f"-rows-{pid}-" in p]
        assert left == []
    assert (jobs == 1) == (workers == [])
    deadline = time.monotonic() + 10  # the killed builds' workers end with them
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)]
    clean = tmp_path / "clean.zarr"
    featstore.build(root / "protocols", root, clean, config=toml, quiet=True)
    assert_stores_equal(clean, out)
    assert _files(clean) == _files(out)
    assert not list(out.rglob("*.partial"))
    assert not list(out.rglob(".*.tmp"))  # temporary shard files of featstore.atomic_files


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the ``lockf`` lock of ``path`` (as a running build does)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "fh = open(sys.argv[1], 'a+'); fcntl.lockf(fh, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_concurrent_build_of_the_same_store_is_refused(
    corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    from featstore.build import _lock_path

    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        _crash_after(m, ZarrSink, "write", 2)
        with pytest.raises(Crash):
            featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert not _lock_path(out).exists()  # released and removed on errors too
    holder = _hold_lock(_lock_path(out))
    try:
        with pytest.raises(ResourceError, match=f"another featstore build holds the lock on {out}"):
            featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    finally:
        holder.kill()
        holder.wait()
    summary = featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    assert not summary.noop and featstore.open_store(out).splits == ["dev", "train"]
    assert not _lock_path(out).exists()


def test_two_fresh_builds_into_one_new_out(corpus: Path, tmp_path: Path) -> None:
    """The second of two builds started at once into a new ``--out`` gets a clear error
    (exit 1) before it touches anything, or (started late) finds the store complete; the
    first one finishes undisturbed. Then the race made certain: a lock held by another
    process on a new ``--out``."""
    from featstore.build import _lock_path
    from featstore.cli import main

    out = tmp_path / "new" / "s.zarr"
    args = ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus)]
    args += ["--out", str(out), "--jobs", "1", "--quiet"]
    first = subprocess.Popen(
        [sys.executable, "-m", "featstore", *args], stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not _lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    second = subprocess.run(
        [sys.executable, "-m", "featstore", *args], capture_output=True, text=True, timeout=120
    )
    stdout, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and "built" in stdout
    if second.returncode == 0:  # pragma: no cover - the first one finished before it started
        assert "nothing to do" in second.stdout
    else:
        assert second.returncode == 1, second.stderr
        assert second.stderr == f"error: another featstore build holds the lock on {out} " + (
            f"({_lock_path(out)}); wait for it to end, then re-run this command (it resumes "
            "or finds the store complete)\n"
        )
    assert featstore.open_store(out).splits == ["dev", "train"]
    holder = _hold_lock(_lock_path(tmp_path / "other.zarr"))  # the race, made certain
    try:
        with pytest.raises(SystemExit) as exc:
            main([*args[:-5], "--out", str(tmp_path / "other.zarr"), "--jobs", "1", "--quiet"])
        assert exc.value.code == 1
        assert not (tmp_path / "other.zarr").exists()
    finally:
        holder.kill()
        holder.wait()
