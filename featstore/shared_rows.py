"""Feature rows from a build's worker processes to the writing process through shared memory.

Each worker process of a local build (loky, ``--jobs`` other than 1) copies the rows it
computes into its own *arena*: a fixed-size ring in a file under ``/dev/shm`` that the
build process maps too. A result then carries a :class:`SharedRows` reference (a few dozen
bytes) instead of its rows, so the rows are not pickled, not copied through a pipe twice,
and not unpickled into fresh memory in the build process, which copies them once, from the
ring into its shard buffer.

Hand-off (one writer and one reader per arena)
    The worker appends arrays at a byte position ``head`` that only grows (positions are
    taken modulo the ring's capacity; an array never wraps, the ring's tail is skipped
    instead). The reader copies an array out, then stores the position after it in the
    arena's header (``released``). The worker writes to the ring only below
    ``released + capacity``, waiting for the reader when it must. Workers take batches in
    dispatch order and the build consumes results in that order, so ``released`` only grows.
Never waiting on itself
    A batch's results reach the reader together, after the whole batch, so an array that
    would need ring space still held by its own batch is sent inline (pickled, as without an
    arena); so is an array larger than half the ring, every array when the ring cannot be
    made (no ``/dev/shm``, too little space there), and every array after the reader closed
    the arena or did not release anything for :data:`WAIT_SECONDS`. Inline and shared
    results mix freely: the bytes a build writes never depend on the transport.
Where
    Linux on x86-64, whose memory model keeps a load before a later store: the reader's
    copy of an array has completed when its ``released`` store becomes visible to the
    worker. Elsewhere :func:`arenas` yields None and results travel through the pipe.
Clean-up
    The reader unlinks each arena file as soon as it has mapped it and removes the arena
    directory on exit; a directory left by a build that was killed (its pid is in the name)
    is removed by the next build that starts.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_CAPACITY",
    "WAIT_SECONDS",
    "ArenaReader",
    "ArenaSpec",
    "SharedRows",
    "WorkerArena",
    "arenas",
    "worker_arena",
]

DEFAULT_CAPACITY = 28 << 20
"""Bytes of one worker's ring: ~4 batches of 8 six-second utterances of ``mgd,logmel``
(~1 KiB per frame each); two workers' rings fit the 64 MiB ``/dev/shm`` of a default Docker
container. Where ``/dev/shm`` has no room for a worker's ring, that worker sends inline."""

WAIT_SECONDS = 5.0
"""How long a worker waits for ring space before sending an array inline."""

_ALIGN = 64  # arrays start on cache-line boundaries
_DATA_OFFSET = 4096  # the header has a page of its own
_MAGIC = 0x73686172_6564726F  # "sharedro"
_MAGIC_SLOT, _CAPACITY_SLOT, _RELEASED_SLOT, _CLOSED_SLOT = range(4)
_PREFIX = "featstore-rows-"


@dataclass(frozen=True)
class ArenaSpec:
    """Where a build's workers make their arenas, and how large (passed with every batch).

    Attributes
    ----------
    directory : str
        The build's arena directory (under ``/dev/shm``).
    capacity : int
        Bytes of each worker's ring.
    """

    directory: str
    capacity: int = DEFAULT_CAPACITY


@dataclass(frozen=True)
class SharedRows:
    """An array a worker put in its arena: what travels through the pipe instead of it.

    Attributes
    ----------
    arena : str
        The arena file's name in the build's arena directory.
    offset : int
        Byte offset of the array in the file.
    shape : tuple of int
        Its shape (C order).
    dtype : str
        Its NumPy dtype string (``"<f4"``).
    end : int
        The worker's ring position after the array: what the reader releases once it has
        copied the array out.
    """

    arena: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    end: int


def supported() -> bool:
    """Whether this machine can hand rows over through arenas (Linux on x86-64)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def _header(buf: mmap.mmap) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.int64, count=4)


class WorkerArena:
    """One worker's ring: :meth:`put` copies an array in and returns its reference.

    Parameters
    ----------
    spec : ArenaSpec
        The build's arena directory and the ring's capacity.

    Raises
    ------
    OSError
        The file cannot be made or its space reserved (the directory is gone, ``/dev/shm``
        is full): the worker sends its rows inline.
    """

    def __init__(self, spec: ArenaSpec):
        self.capacity = spec.capacity
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        path = os.path.join(spec.directory, self.name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # reserve the pages now: writing to a full tmpfs through a mapping is SIGBUS
            os.posix_fallocate(fd, 0, _DATA_OFFSET + self.capacity)
            self._map = mmap.mmap(fd, _DATA_OFFSET + self.capacity)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._header = _header(self._map)
        self._header[_MAGIC_SLOT] = _MAGIC
        self._header[_CAPACITY_SLOT] = self.capacity
        self._data = np.frombuffer(self._map, dtype=np.uint8, offset=_DATA_OFFSET)
        self.head = 0
        self.batch_start = 0

    @property
    def closed(self) -> bool:
        """Whether the reader has closed the arena (the build is over)."""
        return bool(self._header[_CLOSED_SLOT])

    def new_batch(self) -> None:
        """Mark the start of a batch: its own arrays are never overwritten while it runs."""
        self.batch_start = self.head

    def put(self, rows: np.ndarray) -> SharedRows | None:
        """Copy ``rows`` into the ring; None where it must go inline (see the module)."""
        n = rows.nbytes
        if n == 0 or n > self.capacity // 2 or rows.dtype.hasobject:  # no pointers in a ring
            return None
        size = -(-n // _ALIGN) * _ALIGN
        start = self.head
        pos = start % self.capacity
        if pos + size > self.capacity:  # skip the ring's tail: arrays are contiguous
            start += self.capacity - pos
            pos = 0
        end = start + size
        if end - self.capacity > self.batch_start:  # it would overwrite its own batch
            return None
        if not self._wait_released(end - self.capacity):
            return None
        dst = self._data[pos : pos + n].view(rows.dtype).reshape(rows.shape)
        np.copyto(dst, rows, casting="no")
        self.head = end
        return SharedRows(self.name, _DATA_OFFSET + pos, tuple(rows.shape), rows.dtype.str, end)

    def _wait_released(self, needed: int) -> bool:
        """Wait until the reader has released up to ``needed``; False if it stopped reading."""
        if int(self._header[_RELEASED_SLOT]) >= needed:
            return True
        deadline = time.monotonic() + WAIT_SECONDS
        delay = 1e-4
        while int(self._header[_RELEASED_SLOT]) < needed:
            if self.closed or time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 5e-3)
        return True

    def close(self) -> None:
        """Unmap the ring (its file is the reader's to remove)."""
        self._header = self._data = None
        self._map.close()


_worker: dict[str, WorkerArena | None] = {}
"""This process's arena per build directory (None: it could not be made). Only the newest
build's entry is kept; a worker process may serve several builds."""


def worker_arena(spec: ArenaSpec | None) -> WorkerArena | None:
    """This worker process's arena for the build of ``spec``, made on first use.

    None when ``spec`` is None, when the arena cannot be made, or when the build has closed
    it: the caller sends its rows inline.
    """
    if spec is None:
        return None
    arena = _worker.get(spec.directory, False)
    if arena is False:
        for old in _worker.values():
            if old is not None:
                old.close()
        _worker.clear()
        try:
            arena = WorkerArena(spec)
        except OSError:
            arena = None
        _worker[spec.directory] = arena
    if arena is not None and arena.closed:
        return None
    return arena


class ArenaReader:
    """The build process's side: the arrays of :class:`SharedRows` and their release.

    Parameters
    ----------
    spec : ArenaSpec
        The build's arena directory (made by :func:`arenas`).
    """

    def __init__(self, spec: ArenaSpec):
        self.spec = spec
        self._maps: dict[str, mmap.mmap] = {}
        self._headers: dict[str, np.ndarray] = {}

    def rows(self, ref: SharedRows) -> np.ndarray:
        """The array ``ref`` points to: a view of the ring, valid until :meth:`release`."""
        buf = self._maps.get(ref.arena)
        if buf is None:
            buf = self._open(ref.arena)
        count = math.prod(ref.shape)
        return np.frombuffer(buf, dtype=ref.dtype, count=count, offset=ref.offset).reshape(
            ref.shape
        )

    def release(self, ref: SharedRows) -> None:
        """Give the ring space up to ``ref`` back to its worker (after copying it out)."""
        if ref.arena not in self._headers:
            self._open(ref.arena)
        header = self._headers[ref.arena]
        if header[_RELEASED_SLOT] < ref.end:
            header[_RELEASED_SLOT] = ref.end

    def _open(self, name: str) -> mmap.mmap:
        path = os.path.join(self.spec.directory, name)
        fd = os.open(path, os.O_RDWR)
        try:
            buf = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        os.unlink(path)  # the mappings keep it; nothing is left behind if we are killed
        header = _header(buf)
        if header[_MAGIC_SLOT] != _MAGIC:  # pragma: no cover - not one of our files
            raise RuntimeError(f"{path}: not a featstore arena")
        self._maps[name], self._headers[name] = buf, header
        return buf

    def close(self) -> None:
        """Tell every worker the arena is closed, unmap, and remove the directory."""
        directory = Path(self.spec.directory)
        for path in directory.iterdir() if directory.is_dir() else ():
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self._open(path.name)  # arenas made after the last result we received
        for header in self._headers.values():
            header[_CLOSED_SLOT] = 1
        self._headers.clear()
        for buf in self._maps.values():
            with contextlib.suppress(BufferError):  # a caller still holds a view: GC unmaps
                buf.close()
        self._maps.clear()
        shutil.rmtree(directory, ignore_errors=True)


def _remove_orphans(root: str) -> None:
    """Remove arena directories of builds whose process is gone (killed builds)."""
    for path in Path(root).glob(f"{_PREFIX}*"):
        try:
            pid = int(path.name[len(_PREFIX) :].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):
            continue  # not ours, or a live process of another user (EPERM)


@contextlib.contextmanager
def arenas(
    enabled: bool = True, capacity: int | None = None, root: str = "/dev/shm"
) -> Iterator[ArenaReader | None]:
    """The arena directory of one build, removed on exit; None where arenas cannot be used.

    Parameters
    ----------
    enabled : bool
        False: yield None (builds whose workers are not local processes).
    capacity : int, optional
        Bytes of each worker's ring (default :data:`DEFAULT_CAPACITY`).
    root : str
        Where to make the directory (a tmpfs).
    """
    if not enabled or not supported() or not os.path.isdir(root):
        yield None
        return
    _remove_orphans(root)
    try:
        directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root)
    except OSError:
        yield None
        return
    reader = ArenaReader(ArenaSpec(directory, capacity or DEFAULT_CAPACITY))
    try:
        yield reader
    finally:
        reader.close()
