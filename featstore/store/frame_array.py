"""FrameArray: fast row slices of one concatenated ``(total_frames, n_bins)`` float32 array.

For local stores the array is a list of *segments*, each a run of rows whose raw
little-endian float32 bytes are contiguous in one file (a Zarr shard's chunks, an HDF5
dataset). Each segment is a NumPy view of a read-only memory map, so ``fa[a:b]`` is a
bisect and a ``memcpy``: no codec pipeline, no per-slice Python machinery of zarr/h5py.

Rows in no segment have no stored bytes (a shard file or chunk is missing): reading them
raises :class:`~featstore.errors.StoreError` naming the store, the array and, from the
array's :class:`Hole` s, the missing file -- never the fill value, which would be silently
wrong data.

Remote stores fall back to a reader function (zarr's own slicing, which *does* return the
fill value for missing chunks); their holes are refused before the reader is called.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from featstore.errors import ResourceError, StoreError
from featstore.store.layout import DTYPE


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of the array live in ``view``."""

    start: int
    stop: int
    view: np.ndarray


@dataclass(frozen=True)
class Hole:
    """Rows ``[start, stop)`` of the array are not stored; ``reason`` says which file is gone.

    Examples
    --------
    >>> Hole(128, 256, "train/mgd/c/1/0 is missing")
    Hole(start=128, stop=256, reason='train/mgd/c/1/0 is missing')
    """

    start: int
    stop: int
    reason: str


def map_file(path: str | os.PathLike) -> mmap.mmap | None:
    """A read-only memory map of a whole file (``None`` for an empty file).

    Raises
    ------
    ResourceError
        The file may not be read (permission denied).
    """
    try:
        fh = open(path, "rb")
    except PermissionError as exc:
        raise ResourceError(f"{os.fspath(path)}: cannot read the store: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return None
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def rows_view(buffer: mmap.mmap, offset: int, n_rows: int, n_bins: int) -> np.ndarray:
    """``(n_rows, n_bins)`` float32 view of ``buffer`` starting at byte ``offset``."""
    count = n_rows * n_bins
    if offset < 0 or offset + count * DTYPE.itemsize > len(buffer):
        raise ValueError(
            f"rows {n_rows} x {n_bins} at byte {offset} lie beyond the file ({len(buffer)} bytes)"
        )
    return np.frombuffer(buffer, dtype=DTYPE, count=count, offset=offset).reshape(n_rows, n_bins)


def merge_runs(pieces: list[tuple[int, int, int]], row_bytes: int) -> list[tuple[int, int, int]]:
    """Merge ``(start_row, stop_row, byte_offset)`` pieces that are contiguous in the file.

    Parameters
    ----------
    pieces : list of (int, int, int)
        Row ranges in increasing row order with the byte offset of their first row.
    row_bytes : int
        Bytes per row.

    Returns
    -------
    list of (int, int, int)
        Fewer, longer pieces.

    Examples
    --------
    >>> merge_runs([(0, 2, 0), (2, 4, 8), (4, 6, 100)], 4)
    [(0, 4, 0), (4, 6, 100)]
    """
    merged: list[tuple[int, int, int]] = []
    for start, stop, offset in pieces:
        if merged:
            m_start, m_stop, m_offset = merged[-1]
            if m_stop == start and m_offset + (m_stop - m_start) * row_bytes == offset:
                merged[-1] = (m_start, stop, m_offset)
                continue
        merged.append((start, stop, offset))
    return merged


class FrameArray:
    """The concatenated frames of one feature in one split.

    Slicing returns a new float32 array (a copy): ``fa[a:b]`` -> ``(b - a, n_bins)``.
    Indexing with an int returns one row ``(n_bins,)``.

    Parameters
    ----------
    shape : tuple of int
        ``(total_frames, n_bins)``.
    segments : list of Segment, optional
        Memory-mapped runs covering the rows, sorted, non-overlapping. Rows outside them
        are refused.
    reader : callable, optional
        ``reader(a, b) -> ndarray`` used instead of segments (remote stores).
    keepalive : list, optional
        Objects (memory maps) that must live as long as the views.
    holes : list of Hole, optional
        Rows known to be missing, with the reason (the missing file); refused on read.
        With ``reader``, the only rows refused.
    store : str, optional
        The store, for error messages.
    name : str, default "frames"
        The array (``"train/mgd"``), for error messages.

    Examples
    --------
    >>> fa = FrameArray((4, 2), segments=[Segment(0, 4, np.arange(8, dtype="f4").reshape(4, 2))])
    >>> fa[1:3]
    array([[2., 3.],
           [4., 5.]], dtype=float32)
    """

    def __init__(
        self,
        shape: tuple[int, int],
        segments: list[Segment] | None = None,
        reader: Callable[[int, int], np.ndarray] | None = None,
        keepalive: list | None = None,
        *,
        holes: list[Hole] | None = None,
        store: str | None = None,
        name: str = "frames",
    ):
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = DTYPE
        self._segments = list(segments or [])
        self._starts = [s.start for s in self._segments]
        self._reader = reader
        self._keepalive = keepalive or []
        self.holes = sorted(holes or [], key=lambda h: h.start)
        self.store = store
        self.name = name

    @property
    def memmapped(self) -> bool:
        """True when reads come from memory maps (local stores)."""
        return self._reader is None

    @property
    def n_bins(self) -> int:
        """Width of a row."""
        return self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        how = "memmap" if self.memmapped else "reader"
        return f"FrameArray(shape={self.shape}, {how}, {len(self._segments)} segments)"

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += self.shape[0]
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            return self[i : i + 1][0]
        if not isinstance(key, slice):
            raise TypeError("FrameArray supports int and slice (step 1) indexing only")
        a, b, step = key.indices(self.shape[0])
        if step != 1:
            raise TypeError("FrameArray slices must have step 1")
        b = max(a, b)
        out = np.empty((b - a, self.shape[1]), dtype=self.dtype)
        self.read_into(a, b, out)
        return out

    def read_into(self, a: int, b: int, out: np.ndarray) -> np.ndarray:
        """Copy rows ``[a, b)`` into ``out[: b - a]`` (no allocation) and return ``out``.

        Parameters
        ----------
        a, b : int
            Row range, ``0 <= a <= b <= len(self)``.
        out : np.ndarray
            float32 array with at least ``b - a`` rows of ``n_bins``.

        Returns
        -------
        np.ndarray
            ``out``.
        """
        if not 0 <= a <= b <= self.shape[0]:
            raise IndexError(f"rows [{a}, {b}) out of range for {self.shape[0]} rows")
        if self._reader is not None:
            for hole in self.holes:
                if hole.start < b and a < hole.stop:
                    self._refuse(max(a, hole.start), min(b, hole.stop))
            out[: b - a] = self._reader(a, b)
            return out
        segments = self._segments
        n_seg = len(segments)
        pos = a
        k = bisect.bisect_right(self._starts, pos) - 1
        if k < 0 or segments[k].stop <= pos:
            k += 1  # segments[k] is now the first one ending after pos
        while pos < b:
            if k < n_seg and segments[k].start <= pos:
                seg = segments[k]
                stop = min(b, seg.stop)
                out[pos - a : stop - a] = seg.view[pos - seg.start : stop - seg.start]
                k += 1
            else:  # a gap: no stored bytes
                self._refuse(pos, min(b, segments[k].start if k < n_seg else self.shape[0]))
            pos = stop
        return out

    def _refuse(self, a: int, b: int) -> None:
        """Raise the StoreError of reading rows ``[a, b)``, which are not stored."""
        reasons = [h.reason for h in self.holes if h.start < b and a < h.stop]
        why = reasons[0] if reasons else "no stored bytes hold them"
        raise StoreError(
            self.store,
            f"{self.name}: rows {a}..{b} are not in the store ({why}); the store is damaged: "
            "restore the file or rebuild the store (`featstore verify` lists every damaged file)",
        )
