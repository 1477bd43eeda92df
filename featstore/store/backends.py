"""Store backends: what a writer, a frame sink and a source do, and the name -> backend table.

:mod:`featstore.build` writes a store through a :class:`StoreWriter` (one per store) and its
:class:`FrameSink` s (one per frame array); :class:`~featstore.store.reader.Store` reads one
through a :class:`StoreSource`. Zarr (:mod:`~featstore.store.zarr_backend`) and HDF5
(:mod:`~featstore.store.hdf5_backend`) implement all three; :data:`BACKENDS` maps the format
name (``BuildConfig.format``, :func:`~featstore.store.layout.detect_format`) to them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from featstore.errors import StoreError
from featstore.store.frame_array import FrameArray
from featstore.store.hdf5_backend import Hdf5Source, Hdf5Writer
from featstore.store.layout import is_remote
from featstore.store.zarr_backend import ZarrSource, ZarrWriter

__all__ = ["BACKENDS", "FrameSink", "StoreBackend", "StoreSource", "StoreWriter"]


class FrameSink(Protocol):
    """Writes the rows of one frame array ``/<split>/<feature>`` during a build.

    The build writes whole shards in order (``start`` a multiple of ``shard_frames``, every
    shard but the last full), so a sink may rely on that.
    """

    def write(self, start: int, data: np.ndarray) -> None:
        """Write rows ``[start, start + len(data))``."""
        ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` written earlier: the head of a shard (on resume)."""
        ...

    def truncate(self, n_frames: int) -> None:
        """Forget every row from ``n_frames`` on (on resume)."""
        ...

    def finish(self, n_frames: int) -> None:
        """The array is complete at ``n_frames`` rows."""
        ...


class StoreWriter(Protocol):
    """Creates, fills and completes one store at a local path."""

    @property
    def state_dir(self) -> Path:
        """Directory of the build journal while the build runs."""
        ...

    def complete_metadata(self) -> dict[str, Any] | None:
        """Metadata of a finished store at the path, else None."""
        ...

    def is_store(self) -> bool:
        """True when the path holds (part of) a store written by this package."""
        ...

    def exists(self) -> bool:
        """True when something other than the build state is at the path."""
        ...

    def remove(self) -> None:
        """Delete the store and its build state."""
        ...

    def open(self, metadata: dict[str, Any] | None) -> None:
        """Create the store, or open it when resuming, with ``metadata`` (incomplete).

        None: open a finished store to add augmented views, keeping its metadata until
        :meth:`finish` (it stays readable as it was meanwhile).
        """
        ...

    def remove_views(self, split: str) -> None:
        """Delete the augmented views of ``split`` written by an abandoned build."""
        ...

    def sink(
        self,
        split: str,
        feature: str,
        n_bins: int,
        chunk_frames: int,
        shard_frames: int,
        view: int = 0,
    ) -> FrameSink:
        """View ``view`` (0: clean) of ``/<split>/<feature>``, created empty when missing."""
        ...

    def write_index(self, split: str, columns: dict[str, np.ndarray], group: str = "index") -> None:
        """Write the columns of ``split`` in ``group`` (``index``, or ``views/index``)."""
        ...

    def finish(self, metadata: dict[str, Any]) -> None:
        """Record the final metadata (``complete: true``); the store is then readable."""
        ...


class StoreSource(Protocol):
    """Read access to one finished store (opened lazily, closed by :meth:`close`)."""

    def metadata(self) -> Any:
        """The raw ``spoofstore`` metadata object (None when absent)."""
        ...

    def data_problems(self, metadata: dict[str, Any]) -> list[str]:
        """Missing or wrongly sized data files/datasets, one line each (stat only, cheap)."""
        ...

    def index_columns(
        self, split: str, names: list[str], group: str = "index"
    ) -> dict[str, np.ndarray]:
        """The named columns of ``split`` in ``group`` (strings as ``<U``); StoreError if
        missing. ``group``: ``index``, or ``views/index`` (the augmented views' columns)."""
        ...

    def frame_array(self, split: str, feature: str, view: int = 0) -> FrameArray:
        """The ``(total_frames, n_bins)`` array of view ``view`` of ``feature`` in ``split``."""
        ...

    def close(self) -> None:
        """Release open files (the source reopens on next use)."""
        ...


@dataclass(frozen=True)
class StoreBackend:
    """One storage format.

    Attributes
    ----------
    name : str
        ``"zarr"`` or ``"hdf5"``.
    writer : callable
        ``writer(path, fsync=...) -> StoreWriter``.
    source : callable
        ``source(location, cache_dir) -> StoreSource``; ``cache_dir`` is the local read
        cache of a store at a URL (None: none).
    """

    name: str
    writer: Callable[..., StoreWriter]
    source: Callable[[str, str | os.PathLike | None], StoreSource]


def _hdf5_source(location: str, cache_dir: str | os.PathLike | None) -> StoreSource:
    if is_remote(location):
        raise StoreError(location, "remote HDF5 stores are not supported; use Zarr")
    return Hdf5Source(location)


BACKENDS: dict[str, StoreBackend] = {
    "zarr": StoreBackend("zarr", ZarrWriter, ZarrSource),
    "hdf5": StoreBackend("hdf5", Hdf5Writer, _hdf5_source),
}
"""Format name -> backend. Every reader and writer of the package picks its backend here."""
