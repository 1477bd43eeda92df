"""Zarr v3 backend: sharded, uncompressed frame arrays, written in whole shards.

Each ``/<split>/<feature>`` array is chunked ``(chunk_frames, n_bins)`` inside shards of
``(shard_frames, n_bins)`` with the ``bytes`` codec only, so a shard file is the raw
little-endian float32 rows of its chunks followed by the shard index (zarr v3 sharding
spec). The reader memory-maps those bytes directly (:func:`shard_segments`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from featstore.atomic_files import atomic_path
from featstore.errors import ResourceError, StoreError
from featstore.store.direct_io import write_new_file
from featstore.store.frame_array import (
    FrameArray,
    Hole,
    Segment,
    map_file,
    merge_runs,
    rows_view,
)
from featstore.store.fsspec_io import StoreMirror, filesystem, list_files, zarr_store
from featstore.store.layout import (
    BUILD_STATE_DIR,
    DTYPE,
    INDEX_GROUP,
    METADATA_ATTR,
    VIEWS_GROUP,
    check_name,
    frame_arrays,
    index_nodes,
    index_path,
    is_remote,
    local_path,
    view_path,
)
from featstore.store.zarr_shards import (
    EMPTY_CHUNK,
    check_shard_layout,
    decode_shard_index,
    shard_file_sizes,
    shard_trailer,
)


def read_root_metadata(path: Path) -> dict[str, Any] | None:
    """The ``spoofstore`` root attribute of a local Zarr store, or None when absent."""
    try:
        with open(path / "zarr.json", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        raise ResourceError(
            f"{path / 'zarr.json'}: cannot read the store: {exc.strerror}"
        ) from None
    except (OSError, ValueError) as exc:
        raise StoreError(path / "zarr.json", f"unreadable: {exc}") from None
    meta = doc.get("attributes", {}).get(METADATA_ATTR)
    return meta if isinstance(meta, dict) else None


# --------------------------------------------------------------------------------------------
# writing


class ZarrSink:
    """Whole-shard writer of one sharded frame array (see :mod:`featstore.build`).

    Shards are encoded by :mod:`featstore.store.zarr_shards` (byte-identical to zarr's
    ``sharding_indexed`` codec) rather than through zarr's codec pipeline, and written to a
    temporary name that is then renamed, like zarr's LocalStore does. The array's ``shape``
    in ``zarr.json`` is only set by :meth:`finish` / :meth:`truncate` (the store is
    incomplete, and unread, until then).
    """

    def __init__(self, array: Any, directory: Path, fsync: bool):
        self.array = array
        self.directory = directory
        self.fsync = fsync
        self.n_bins = int(array.shape[1])
        self.shard_frames = int(array.shards[0])
        self.chunk_frames = int(array.chunks[0])
        self.row_bytes = self.n_bins * DTYPE.itemsize
        check_shard_layout(array.metadata.to_dict(), directory)

    def _shard_path(self, shard: int) -> Path:
        return self.directory / "c" / str(shard) / "0"

    def write(self, start: int, data: np.ndarray) -> None:
        """Write one shard: rows ``[start, start + len(data))``, ``start`` a shard boundary."""
        size = self.shard_frames
        n = data.shape[0]
        if start % size or not 0 < n <= size or data.shape[1:] != (self.n_bins,):
            raise ValueError(f"not a shard: rows {start}..{start + n} of {data.shape}")
        trailer = shard_trailer(n, self.chunk_frames, size, self.row_bytes)
        payload = np.ascontiguousarray(data, dtype=DTYPE)
        path = self._shard_path(start // size)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=self.fsync) as tmp:
            write_new_file(tmp, payload, trailer, fsync=False)  # atomic_path fsyncs

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of one shard written by :meth:`write` (resume)."""
        n = stop - start
        if n <= 0:
            return np.empty((0, self.n_bins), dtype=DTYPE)
        if start % self.shard_frames or n > self.shard_frames:
            raise ValueError(f"rows {start}..{stop} are not the head of one shard")
        path = self._shard_path(start // self.shard_frames)
        with open(path, "rb") as fh:
            data = np.fromfile(fh, dtype=DTYPE, count=n * self.n_bins)
        if data.size != n * self.n_bins:
            raise StoreError(path, f"shard holds fewer than {n} rows")
        return data.reshape(n, self.n_bins)

    def truncate(self, n_frames: int) -> None:
        """Forget rows from ``n_frames`` on (resume): drop later shards and stray temp files."""
        keep = (n_frames - 1) // self.shard_frames if n_frames else -1
        chunks_dir = self.directory / "c"
        if chunks_dir.is_dir():
            for entry in chunks_dir.iterdir():
                if entry.name.isdigit() and int(entry.name) > keep:
                    shutil.rmtree(entry)
            for stray in chunks_dir.rglob(".*.tmp"):  # atomic_path's, left by a killed build
                stray.unlink(missing_ok=True)
        self.finish(n_frames)

    def finish(self, n_frames: int) -> None:
        """Record the array's final length in its metadata."""
        if int(self.array.shape[0]) != n_frames:
            self.array.resize((n_frames, self.n_bins))


class ZarrWriter:
    """Creates and fills a local Zarr v3 store (used by :mod:`featstore.build`)."""

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._group: Any = None

    @property
    def state_dir(self) -> Path:
        """Where the build journal lives while the build runs."""
        return self.path / BUILD_STATE_DIR

    def complete_metadata(self) -> dict[str, Any] | None:
        """Metadata of a finished store at ``path``, else None."""
        meta = read_root_metadata(self.path)
        return meta if meta and meta.get("complete") else None

    def is_store(self) -> bool:
        """True when ``path`` holds (part of) a store written by this package."""
        return read_root_metadata(self.path) is not None or self.state_dir.is_dir()

    def exists(self) -> bool:
        """True when something other than the build state is at ``path``."""
        if self.path.is_file():
            return True
        return self.path.is_dir() and any(p.name != BUILD_STATE_DIR for p in self.path.iterdir())

    def remove(self) -> None:
        """Delete the store (only call after :meth:`is_store`)."""
        if self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists():
            self.path.unlink()

    def open(self, metadata: dict[str, Any] | None) -> None:
        """Create the root group (or open it when resuming) and set its metadata.

        ``metadata`` None: open a finished store to add views to it, keeping its metadata
        (the store stays readable as it was until :meth:`finish`).
        """
        import zarr

        self._group = zarr.open_group(self.path, mode="a", zarr_format=3)
        if metadata is not None:
            self._set_metadata(metadata)

    def remove_views(self, split: str) -> None:
        """Delete every augmented view of ``split`` (left by an abandoned addition of views)."""
        target = self.path / check_name(split, "split") / VIEWS_GROUP
        if target.is_dir():
            shutil.rmtree(target)

    def _set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the root metadata attribute (atomic file replace by zarr's LocalStore)."""
        self._group.attrs.put({METADATA_ATTR: metadata})

    def sink(
        self,
        split: str,
        feature: str,
        n_bins: int,
        chunk_frames: int,
        shard_frames: int,
        view: int = 0,
    ) -> ZarrSink:
        """The array of view ``view`` of ``/<split>/<feature>``, created empty when missing."""
        import zarr

        name = view_path(split, feature, view)
        directory = self.path / name
        if (directory / "zarr.json").is_file():
            array = zarr.open_array(self.path / name, mode="r+", zarr_format=3)
            if tuple(array.shape[1:]) != (n_bins,) or tuple(array.shards or ()) != (
                shard_frames,
                n_bins,
            ):
                raise StoreError(directory, "existing array does not match the build layout")
        else:
            array = self._group.create_array(
                name=name,
                shape=(0, n_bins),
                dtype="float32",
                chunks=(chunk_frames, n_bins),
                shards=(shard_frames, n_bins),
                compressors=None,
                filters=None,
                fill_value=0.0,
                config={"write_empty_chunks": True},
            )
        return ZarrSink(array, directory, self.fsync)

    def write_index(
        self, split: str, columns: dict[str, np.ndarray], group: str = INDEX_GROUP
    ) -> None:
        """Write the index columns of ``split`` in ``group`` (replacing earlier ones).

        ``group``: :data:`~featstore.store.layout.INDEX_GROUP` or ``VIEW_INDEX_GROUP``.
        """
        target = self.path / check_name(split, "split") / group
        if target.exists():
            shutil.rmtree(target)
        for name, values in columns.items():
            n = max(1, len(values))
            if values.dtype.kind == "U":
                array = self._group.create_array(
                    name=index_path(split, name, group), shape=values.shape, dtype=str, chunks=(n,)
                )
            else:
                array = self._group.create_array(
                    name=index_path(split, name, group),
                    shape=values.shape,
                    dtype=values.dtype,
                    chunks=(n,),
                    compressors=None,
                )
            if len(values):
                array[:] = values

    def finish(self, metadata: dict[str, Any]) -> None:
        """Record the final metadata (``complete: true``)."""
        self._set_metadata(metadata)


# --------------------------------------------------------------------------------------------
# reading


def expected_files(meta: dict[str, Any]) -> list[tuple[str, int | None]]:
    """The files a complete Zarr store must hold, with their sizes where known.

    Parameters
    ----------
    meta : dict
        The store metadata (checked by :func:`~featstore.store.layout.check_metadata`).

    Returns
    -------
    list of (str, int or None)
        Path relative to the store root and expected byte size (None: any): each frame
        array's and index column's ``zarr.json``, and every shard file ``c/<i>/0`` of each
        frame array, sized by :func:`~featstore.store.zarr_shards.shard_file_sizes`.
    """
    chunk, shard = meta.get("chunk_frames"), meta.get("shard_frames")
    sized = isinstance(chunk, int) and isinstance(shard, int) and 0 < chunk <= shard
    files: list[tuple[str, int | None]] = []
    for name in sorted(meta["splits"]):
        for split, feature, view, n_frames, n_bins in frame_arrays(meta, name):
            array = view_path(split, feature, view)
            files.append((f"{array}/zarr.json", None))
            if sized:
                for i, size in enumerate(shard_file_sizes(n_frames, n_bins, chunk, shard)):
                    files.append((f"{array}/c/{i}/0", size))
        for split, group, column in index_nodes(meta, name):
            files.append((f"{index_path(split, column, group)}/zarr.json", None))
    return files


def file_problem(rel: str, size: int | None, expected: int | None) -> str | None:
    """What is wrong with a store file of ``size`` bytes (None: absent), or None if nothing.

    Examples
    --------
    >>> file_problem("train/mgd/c/1/0", None, 100)
    'train/mgd/c/1/0 is missing'
    >>> file_problem("train/mgd/c/1/0", 60, 100)
    'train/mgd/c/1/0 has 60 bytes, expected 100'
    """
    if size is None:
        return f"{rel} is missing"
    if expected is not None and size != expected:
        return f"{rel} has {size} bytes, expected {expected}"
    return None


class ZarrSource:
    """Read access to a Zarr v3 store: metadata, index columns, frame arrays."""

    def __init__(self, location: str, cache_dir: str | os.PathLike | None = None):
        self.location = location
        self.remote = is_remote(location)
        self.path = None if self.remote else local_path(location)
        self._group: Any = None
        self._mirror: StoreMirror | None = None
        self._listing: dict[str, int] | None = None
        if self.remote and cache_dir is not None:  # read a local copy, filled on demand
            self._mirror = StoreMirror(location, cache_dir)
            self.path = self._mirror.open()
            self.remote = False

    def _zarr_group(self) -> Any:
        if self._group is None:
            import zarr

            target = zarr_store(self.location) if self.remote else self.path
            try:
                self._group = zarr.open_group(target, mode="r", zarr_format=3)
            except FileNotFoundError:
                raise StoreError(self.location, "no Zarr store here") from None
        return self._group

    def metadata(self) -> Any:
        """The raw ``spoofstore`` root attribute (None when absent)."""
        if self.remote:
            return dict(self._zarr_group().attrs).get(METADATA_ATTR)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(self.location, "no such feature store (no zarr.json)")
        return read_root_metadata(self.path)

    def _sizes(self, rels: list[str]) -> dict[str, int | None]:
        """Byte size of each file (None: absent): ``stat`` locally, one listing remotely."""
        if self._mirror is not None or self.remote:
            if self._listing is None:
                if self._mirror is not None:
                    self._listing = self._mirror.listing
                else:
                    fs, root = filesystem(self.location)
                    self._listing = list_files(fs, root)
            return {rel: self._listing.get(rel) for rel in rels}
        out: dict[str, int | None] = {}
        for rel in rels:
            try:
                out[rel] = os.stat(self.path / rel).st_size
            except (FileNotFoundError, NotADirectoryError):
                out[rel] = None
            except PermissionError as exc:
                raise ResourceError(
                    f"{self.path / rel}: cannot read the store: {exc.strerror}"
                ) from None
        return out

    def data_problems(self, metadata: dict[str, Any]) -> list[str]:
        """Missing or wrongly sized files of the store (stat only, nothing is read).

        Parameters
        ----------
        metadata : dict
            The checked store metadata.

        Returns
        -------
        list of str
            One line per damaged file, in store order (empty when all are there).
        """
        files = expected_files(metadata)
        sizes = self._sizes([rel for rel, _ in files])
        problems = (file_problem(rel, sizes[rel], expected) for rel, expected in files)
        return [p for p in problems if p is not None]

    def index_columns(
        self, split: str, names: list[str], group: str = INDEX_GROUP
    ) -> dict[str, np.ndarray]:
        """The named index columns of ``split`` in ``group`` (strings as ``<U``).

        Raises
        ------
        StoreError
            A column is missing or unreadable.
        """
        root = self._zarr_group()
        out = {}
        for name in names:
            path = index_path(split, name, group)
            try:
                values = np.asarray(root[path][:])
            except (KeyError, FileNotFoundError, ValueError, TypeError, OSError) as exc:
                raise StoreError(
                    self.location,
                    f"{split}: index column {name!r} is missing or unreadable "
                    f"({type(exc).__name__}: {exc}); rebuild the store",
                ) from None
            if values.dtype.kind in "OTU":
                values = np.array([str(v) for v in values.tolist()], dtype=str)
                if values.size == 0:
                    values = np.empty(0, dtype="<U1")
            out[name] = values
        return out

    def _zarr_array(self, split: str, feature: str, view: int = 0) -> Any:
        return self._zarr_group()[view_path(split, feature, view)]

    def frame_array(self, split: str, feature: str, view: int = 0) -> FrameArray:
        """Memory-mapped FrameArray (local), else one reading through zarr."""
        name = view_path(split, feature, view)
        if self._mirror is not None:
            self._mirror.ensure_array(split, feature, view)
        if not self.remote:
            directory = self.path / name
            try:
                with open(directory / "zarr.json", encoding="utf-8") as fh:
                    meta = json.load(fh)
            except FileNotFoundError:
                raise StoreError(self.location, f"{name}: no such frame array") from None
            except (OSError, ValueError) as exc:
                raise StoreError(directory / "zarr.json", f"unreadable: {exc}") from None
            mapped = shard_segments(directory, meta, store=self.location, name=name)
            if mapped is not None:
                return mapped
        try:
            array = self._zarr_array(split, feature, view)
        except (KeyError, FileNotFoundError):
            raise StoreError(self.location, f"{name}: no such frame array") from None
        return FrameArray(
            tuple(array.shape),
            reader=lambda a, b: array[a:b],
            holes=self._remote_holes(name, array),
            store=self.location,
            name=name,
        )

    def _remote_holes(self, name: str, array: Any) -> list[Hole]:
        """Rows of missing or wrongly sized shard files (zarr would read them as 0.0)."""
        total, n_bins = (int(v) for v in array.shape)
        shard = int((array.shards or array.chunks)[0])
        inner = int(array.chunks[0])
        rels = [f"{name}/c/{i}/0" for i in range(-(-total // shard))]
        sizes = self._sizes(rels)
        if array.shards is None:
            expected = [None] * len(rels)
        else:
            expected = shard_file_sizes(total, n_bins, inner, shard)
        holes = []
        for i, (rel, size) in enumerate(zip(rels, expected, strict=True)):
            problem = file_problem(rel, sizes[rel], size)
            if problem is not None:
                holes.append(Hole(i * shard, min(total, (i + 1) * shard), problem))
        return holes

    def close(self) -> None:
        """Forget the zarr group."""
        self._group = None


def _bytes_le(codec: dict) -> bool:
    return codec.get("name") == "bytes" and codec.get("configuration", {}).get(
        "endian", "little"
    ) in ("little", None)


def shard_segments(
    directory: Path, meta: dict[str, Any], *, store: str | None = None, name: str = "frames"
) -> FrameArray | None:
    """Map a local float32 2-D Zarr v3 array's chunk bytes; None if not memory-mappable.

    Parameters
    ----------
    directory : Path
        The array's directory (holding ``zarr.json`` and ``c/``).
    meta : dict
        Its parsed ``zarr.json``.
    store, name : str, optional
        The store and the array's node path, for error messages.

    Returns
    -------
    FrameArray or None
        None when the array uses codecs other than ``bytes`` (little endian), so its
        chunks are not raw float32. Rows of missing shard files and absent chunks are
        the array's holes: reading them raises StoreError.
    """
    if meta.get("data_type") != "float32" or len(meta.get("shape", ())) != 2:
        return None
    total, n_bins = (int(v) for v in meta["shape"])
    grid = meta.get("chunk_grid", {})
    if grid.get("name") != "regular":
        return None
    outer = [int(v) for v in grid["configuration"]["chunk_shape"]]
    if outer[1] != n_bins:
        return None
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    if encoding.get("name") != "default":
        return None
    sep = encoding.get("configuration", {}).get("separator", "/")
    codecs = meta.get("codecs", [])
    if len(codecs) != 1:
        return None
    codec = codecs[0]
    row_bytes = n_bins * DTYPE.itemsize
    if _bytes_le(codec):
        inner = outer[0]
        index_spec = None
    elif codec.get("name") == "sharding_indexed":
        conf = codec["configuration"]
        inner_shape = [int(v) for v in conf["chunk_shape"]]
        if inner_shape[1] != n_bins or not all(_bytes_le(c) for c in conf["codecs"]):
            return None
        index_codecs = conf.get("index_codecs", [])
        if not index_codecs or not _bytes_le(index_codecs[0]):
            return None
        if any(c.get("name") != "crc32c" for c in index_codecs[1:]):
            return None
        inner = inner_shape[0]
        at_end = conf.get("index_location", "end") == "end"
        index_spec = (outer[0] // inner, len(index_codecs) - 1, at_end)
    else:
        return None

    segments: list[Segment] = []
    holes: list[Hole] = []
    keepalive: list = []
    n_outer = -(-total // outer[0]) if total else 0
    for i in range(n_outer):
        base = i * outer[0]
        key = "c" + sep + sep.join((str(i), "0"))
        path = directory / key
        rel = f"{name}/{key}"
        if not path.is_file():
            holes.append(Hole(base, min(base + outer[0], total), f"{rel} is missing"))
            continue
        buffer = map_file(path)
        if buffer is None:
            holes.append(Hole(base, min(base + outer[0], total), f"{rel} is empty"))
            continue
        keepalive.append(buffer)
        if index_spec is None:
            pieces = [(base, min(base + outer[0], total), 0)]
        else:
            n_inner, n_checksums, at_end = index_spec
            table = decode_shard_index(buffer, n_inner, n_checksums, at_end, path)
            pieces = []
            for c in range(n_inner):
                offset, nbytes = int(table[c, 0]), int(table[c, 1])
                start = base + c * inner
                if start >= total:
                    continue
                if offset == EMPTY_CHUNK:
                    stop = min(start + inner, total)
                    holes.append(Hole(start, stop, f"{rel}: chunk {c} is not stored"))
                    continue
                if nbytes != inner * row_bytes:
                    raise StoreError(path, f"corrupt shard: chunk {c} holds {nbytes} bytes")
                pieces.append((start, min(start + inner, total), offset))
        for start, stop, offset in merge_runs(pieces, row_bytes):
            try:
                view = rows_view(buffer, offset, stop - start, n_bins)
            except ValueError as exc:
                raise StoreError(path, f"corrupt shard: {exc}") from None
            segments.append(Segment(start, stop, view))
    return FrameArray(
        (total, n_bins),
        segments=segments,
        keepalive=keepalive,
        holes=holes,
        store=store,
        name=name,
    )
