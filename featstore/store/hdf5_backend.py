"""HDF5 backend: the same logical layout as Zarr, in one ``.h5`` file.

HDF5 files are not crash-safe while open for writing (a killed writer can leave the file
unreadable), so a build stages each frame array as a raw little-endian float32 file in
``<out>.build/`` (resumable exactly like the Zarr shards: whole-shard ``pwrite`` at known
offsets) and assembles the final file once at the end, into a temporary name that is then
atomically renamed to ``<out>``. Frame arrays are *contiguous* float32 datasets, so the
reader memory-maps each with a single ``np.frombuffer`` at ``dataset.id.get_offset()``
(chunked datasets are mapped chunk by chunk via ``get_chunk_info``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from featstore.atomic_files import atomic_path, open_atomic
from featstore.errors import StoreError
from featstore.store.frame_array import (
    FrameArray,
    Hole,
    Segment,
    map_file,
    merge_runs,
    rows_view,
)
from featstore.store.layout import (
    DTYPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_GROUP,
    METADATA_ATTR,
    VIEW_INDEX_GROUP,
    VIEWS_GROUP,
    check_name,
    frame_arrays,
    index_nodes,
    index_path,
    local_path,
    n_views,
    view_path,
)

_COPY_ROWS = 65536  # rows copied per block when assembling


def read_file_metadata(path: Path) -> dict[str, Any] | None:
    """The ``spoofstore`` metadata of an HDF5 store, or None when it has none."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get(METADATA_ATTR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(path, f"not a readable HDF5 file: {exc}") from None
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise StoreError(path, f"corrupt store metadata: {exc}") from None
    return meta if isinstance(meta, dict) else None


# --------------------------------------------------------------------------------------------
# writing


class RawSink:
    """Whole-shard writer of one staged frame array (a raw float32 file)."""

    def __init__(self, path: Path, n_bins: int, fsync: bool):
        self.path = path
        self.n_bins = n_bins
        self.fsync = fsync
        self.row_bytes = n_bins * DTYPE.itemsize
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()

    def write(self, start: int, data: np.ndarray) -> None:
        """Write rows at ``start`` (``pwrite``)."""
        payload = np.ascontiguousarray(data, dtype=DTYPE)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view = memoryview(payload).cast("B")
            offset = start * self.row_bytes
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``."""
        n = max(0, stop - start)
        with open(self.path, "rb") as fh:
            fh.seek(start * self.row_bytes)
            data = np.fromfile(fh, dtype=DTYPE, count=n * self.n_bins)
        if data.size != n * self.n_bins:
            raise StoreError(self.path, f"staged data ends before row {stop}")
        return data.reshape(n, self.n_bins)

    def truncate(self, n_frames: int) -> None:
        """Cut the file to ``n_frames`` rows."""
        os.truncate(self.path, n_frames * self.row_bytes)

    def finish(self, n_frames: int) -> None:
        """The staged array is complete at ``n_frames`` rows."""
        self.truncate(n_frames)


class Hdf5Writer:
    """Stages a build next to ``<out>`` and assembles the HDF5 file at the end."""

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync

    @property
    def state_dir(self) -> Path:
        """Staging directory: build journal and raw frame arrays."""
        return self.path.with_name(self.path.name + ".build")

    def complete_metadata(self) -> dict[str, Any] | None:
        """Metadata of a finished store at ``path``, else None."""
        if not self.path.is_file():
            return None
        meta = read_file_metadata(self.path)
        return meta if meta and meta.get("complete") else None

    def is_store(self) -> bool:
        """True when ``path`` (or its staging directory) was written by this package."""
        if self.state_dir.is_dir():
            return True
        try:
            return self.path.is_file() and read_file_metadata(self.path) is not None
        except StoreError:
            return False

    def exists(self) -> bool:
        """True when something is at ``path``."""
        return self.path.exists() or self.state_dir.exists()

    def remove(self) -> None:
        """Delete the store and its staging directory."""
        if self.path.is_file():
            self.path.unlink()
        if self.state_dir.is_dir():
            shutil.rmtree(self.state_dir)

    def open(self, metadata: dict[str, Any] | None) -> None:
        """Create the staging directory (``metadata`` is written by :meth:`finish` only)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def remove_views(self, split: str) -> None:
        """Drop staged views of ``split`` (the file itself changes only in :meth:`finish`)."""
        target = self.state_dir / "data" / check_name(split, "split") / VIEWS_GROUP
        if target.is_dir():
            shutil.rmtree(target)

    def sink(
        self,
        split: str,
        feature: str,
        n_bins: int,
        chunk_frames: int,
        shard_frames: int,
        view: int = 0,
    ) -> RawSink:
        """The staged raw array of view ``view`` of ``/<split>/<feature>``."""
        return RawSink(self._staged(split, feature, view), n_bins, self.fsync)

    def _staged(self, split: str, feature: str, view: int = 0) -> Path:
        return self.state_dir / "data" / f"{view_path(split, feature, view)}.f32"

    def _staged_index(self, split: str, group: str) -> Path:
        name = "index.npz" if group == INDEX_GROUP else "views-index.npz"
        return self.state_dir / "data" / check_name(split, "split") / name

    def write_index(
        self, split: str, columns: dict[str, np.ndarray], group: str = INDEX_GROUP
    ) -> None:
        """Stage the index columns of ``split`` in ``group`` (``.npz``, atomically)."""
        target = self._staged_index(split, group)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_atomic(target, fsync=self.fsync) as fh:
            np.savez(fh, **columns)

    def finish(self, metadata: dict[str, Any]) -> None:
        """Assemble ``<out>`` from the staged arrays, then rename it into place.

        Arrays and index groups not staged (views added to a finished store: its clean
        view and index) are copied from the existing ``<out>``.
        """
        import h5py

        old = h5py.File(self.path, "r") if self.path.is_file() else None
        try:
            with atomic_path(self.path, fsync=self.fsync) as tmp, h5py.File(tmp, "w") as fh:
                fh.attrs[METADATA_ATTR] = json.dumps(metadata, sort_keys=True)
                for split, feature, view, _, n_bins in frame_arrays(metadata):
                    self._copy_array(fh, old, split, feature, view, n_bins)
                for split, record in metadata["splits"].items():
                    groups = [(INDEX_GROUP, record["columns"])]
                    if n_views(record) > 1:
                        groups.append((VIEW_INDEX_GROUP, record["views"]["columns"]))
                    for group, names in groups:
                        self._copy_index(fh, old, split, group, names)
        finally:
            if old is not None:
                old.close()

    def _copy_index(self, fh: Any, old: Any, split: str, group: str, names: list[str]) -> None:
        import h5py

        staged = self._staged_index(split, group)
        target = fh.require_group(f"{split}/{group}")
        if not staged.is_file():
            for name in names:
                target.copy(old[index_path(split, name, group)], name)
            return
        with np.load(staged) as cols:
            for name in names:
                values = cols[name]
                if values.dtype.kind == "U":
                    target.create_dataset(
                        name, data=values.astype(object), dtype=h5py.string_dtype("utf-8")
                    )
                else:
                    target.create_dataset(name, data=values)

    def _copy_array(
        self, fh: Any, old: Any, split: str, feature: str, view: int, n_bins: int
    ) -> None:
        name = view_path(split, feature, view)
        staged = self._staged(split, feature, view)
        if staged.is_file():
            row_bytes = n_bins * DTYPE.itemsize
            total = staged.stat().st_size // row_bytes
            shape = (total, n_bins)
            data = np.memmap(staged, dtype=DTYPE, mode="r", shape=shape) if total else None
        else:  # not rebuilt: the existing file's
            data = old[name]
            total = int(data.shape[0])
        ds = fh.create_dataset(name, shape=(total, n_bins), dtype=DTYPE)
        for a in range(0, total, _COPY_ROWS):
            b = min(total, a + _COPY_ROWS)
            ds[a:b] = data[a:b]
        del data


# --------------------------------------------------------------------------------------------
# reading


class Hdf5Source:
    """Read access to an HDF5 store; the file is opened on first use."""

    def __init__(self, location: str):
        self.location = location
        self.path = local_path(location)
        self._file: Any = None

    def _h5(self) -> Any:
        if self._file is None:
            import h5py

            try:
                self._file = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise StoreError(self.location, "no such feature store") from None
            except OSError as exc:
                raise StoreError(self.location, f"not a readable HDF5 file: {exc}") from None
        return self._file

    def metadata(self) -> Any:
        """The parsed ``spoofstore`` attribute (None when absent)."""
        if not self.path.is_file():
            if self.path.with_name(self.path.name + ".build").is_dir():
                return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "complete": False}
            raise StoreError(self.location, "no such feature store")
        return read_file_metadata(self.path)

    def data_problems(self, metadata: dict[str, Any]) -> list[str]:
        """Missing, misshapen or truncated datasets (HDF5 metadata and the file size only).

        Parameters
        ----------
        metadata : dict
            The checked store metadata.

        Returns
        -------
        list of str
            One line per damaged dataset (empty when all are there).
        """
        fh = self._h5()
        file_size = os.stat(self.path).st_size
        problems = []
        for split in sorted(metadata["splits"]):
            problems += self._split_problems(fh, file_size, metadata, split)
        return problems

    def _split_problems(
        self, fh: Any, file_size: int, metadata: dict[str, Any], split: str
    ) -> list[str]:
        problems = []
        for _, feature, view, n_frames, n_bins in frame_arrays(metadata, split):
            name = view_path(split, feature, view)
            expected = (n_frames, n_bins)
            ds = fh.get(name)
            if not hasattr(ds, "shape"):
                problems.append(f"dataset {name} is missing")
            elif tuple(ds.shape) != expected:
                problems.append(f"dataset {name} has shape {ds.shape}, expected {expected}")
            elif ds.chunks is None and expected[0]:
                offset = ds.id.get_offset()
                end = None if offset is None else offset + ds.id.get_storage_size()
                if end is None or ds.id.get_storage_size() < expected[0] * expected[1] * 4:
                    problems.append(f"dataset {name} has no stored data")
                elif end > file_size:
                    problems.append(f"dataset {name} ends at byte {end}, the file has {file_size}")
        for _, group, column in index_nodes(metadata, split):
            if index_path(split, column, group) not in fh:
                problems.append(f"dataset {index_path(split, column, group)} is missing")
        return problems

    def index_columns(
        self, split: str, names: list[str], group: str = INDEX_GROUP
    ) -> dict[str, np.ndarray]:
        """The named index columns of ``split`` in ``group`` (strings as ``<U``).

        Raises
        ------
        StoreError
            A column is missing or unreadable.
        """
        fh = self._h5()
        out = {}
        for name in names:
            try:
                ds = fh[index_path(split, name, group)]
                if ds.dtype.kind == "O":
                    values = np.asarray(ds.asstr()[:], dtype=str)
                    if values.size == 0:
                        values = np.empty(0, dtype="<U1")
                else:
                    values = ds[:]
            except (KeyError, OSError, TypeError, ValueError, AttributeError) as exc:
                raise StoreError(
                    self.location,
                    f"{split}: index column {name!r} is missing or unreadable "
                    f"({type(exc).__name__}: {exc}); rebuild the store",
                ) from None
            out[name] = values
        return out

    def _dataset(self, name: str) -> Any:
        ds = self._h5().get(name)
        if not hasattr(ds, "shape") or len(ds.shape) != 2:
            raise StoreError(self.location, f"{name}: no such frame array")
        return ds

    def frame_array(self, split: str, feature: str, view: int = 0) -> FrameArray:
        """Memory-mapped FrameArray over the dataset's bytes (h5py reads if filtered)."""
        name = view_path(split, feature, view)
        ds = self._dataset(name)
        total, n_bins = (int(v) for v in ds.shape)
        where = {"store": self.location, "name": name}
        if ds.dtype != DTYPE or ds.id.get_create_plist().get_nfilters() != 0:
            return FrameArray((total, n_bins), reader=lambda a, b: ds[a:b], **where)
        row_bytes = n_bins * DTYPE.itemsize
        pieces: list[tuple[int, int, int]] = []
        holes: list[Hole] = []
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is not None and total:
                pieces.append((0, total, int(offset)))
            elif total:
                holes.append(Hole(0, total, f"dataset {name} has no stored data"))
        else:
            rows = ds.chunks[0]
            if ds.chunks[1] != n_bins:
                return FrameArray((total, n_bins), reader=lambda a, b: ds[a:b], **where)
            infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
            for info in sorted(infos, key=lambda x: x.chunk_offset[0]):
                start = int(info.chunk_offset[0])
                if info.size != rows * row_bytes:
                    return FrameArray((total, n_bins), reader=lambda a, b: ds[a:b], **where)
                pieces.append((start, min(start + rows, total), int(info.byte_offset)))
        if not pieces:
            return FrameArray((total, n_bins), segments=[], holes=holes, **where)
        buffer = map_file(self.path)
        segments = []
        for start, stop, offset in merge_runs(pieces, row_bytes):
            try:
                view = rows_view(buffer, offset, stop - start, n_bins)
            except ValueError as exc:
                raise StoreError(self.location, f"{name}: truncated file: {exc}") from None
            segments.append(Segment(start, stop, view))
        return FrameArray((total, n_bins), segments=segments, keepalive=[buffer], **where)

    def close(self) -> None:
        """Close the HDF5 file."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
