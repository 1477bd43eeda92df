"""Read a feature store: metadata, per-split index, memory-mapped frame arrays, statistics.

:func:`open_store` is the one entry point; :class:`Store` is cheap to create, holds no open
file until first use, reopens after ``fork`` (pid check) and pickles by path, so it can be
handed to DataLoader worker processes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from featstore.errors import StoreError
from featstore.store.backends import BACKENDS, StoreSource
from featstore.store.frame_array import FrameArray
from featstore.store.fsspec_io import cache_dir_from_env
from featstore.store.layout import (
    FIXED_COLUMNS,
    VIEW_INDEX_GROUP,
    check_index,
    check_metadata,
    check_name,
    check_view_index,
    detect_format,
    n_frames_column,
    offset_column,
    view_ok_column,
)


class Store:
    """A finished feature store, opened read-only.

    Parameters
    ----------
    location : str or os.PathLike
        Zarr v3 directory (default), ``.h5``/``.hdf5`` file, or an fsspec URL (Zarr only).
    cache_dir : str or os.PathLike, optional
        For a remote Zarr store: read through a local copy under this directory (None:
        direct reads). Use :func:`open_store` for the ``$SPOOFSTORE_CACHE_DIR`` default.
    check_files : bool, default True
        Refuse a store whose data files are missing or of the wrong size (stat only; see
        :meth:`data_problems`). ``featstore verify`` opens without it to list them all.

    Attributes
    ----------
    path : str
        The location as given.
    format : str
        ``"zarr"`` or ``"hdf5"``.
    metadata : dict
        The whole store metadata (see ``docs/store-format.md``).

    Examples
    --------
    >>> st = open_store("store.zarr")  # doctest: +SKIP
    >>> st.splits, st.array("train", "mgd")[100:356].shape  # doctest: +SKIP
    (['dev', 'train'], (256, 257))
    >>> st.n_views("train"), st.array("train", "mgd", view=2)[100:356].shape  # doctest: +SKIP
    (4, (256, 257))
    """

    def __init__(
        self,
        location: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        check_files: bool = True,
    ):
        self.path = os.fspath(location)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.format = detect_format(self.path)
        self._pid = os.getpid()
        self._src = BACKENDS[self.format].source(self.path, self.cache_dir)
        self.metadata: dict[str, Any] = check_metadata(self._src.metadata(), self.path)
        self._check_files = check_files
        try:
            if check_files:
                self._refuse_missing_files()
        finally:
            self._src.close()
        self._arrays: dict[tuple[str, str, int], FrameArray] = {}
        self._index: dict[str, dict[str, np.ndarray]] = {}
        self._view_index: dict[str, dict[str, np.ndarray]] = {}
        self._rows: dict[str, dict[str, int]] = {}

    def data_problems(self) -> list[str]:
        """Missing or wrongly sized data files (Zarr) / datasets (HDF5), one line each.

        Cheap: file sizes and HDF5 metadata only, no data is read; flipped bits inside a
        present file are :func:`~featstore.store.inspect.verify_store`'s job.
        """
        return self._live().data_problems(self.metadata)

    def _refuse_missing_files(self) -> None:
        problems = self.data_problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StoreError(
                self.path,
                f"damaged store: {problems[0]}{more}; restore the files or rebuild the store "
                "(`featstore verify` lists every problem)",
            )

    # -- pickling / fork safety ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "cache_dir": self.cache_dir, "check_files": self._check_files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"],
            cache_dir=state["cache_dir"],
            check_files=state.get("check_files", True),
        )

    def _live(self) -> StoreSource:
        if os.getpid() != self._pid:  # forked: drop handles inherited from the parent
            self._pid = os.getpid()
            self._src = BACKENDS[self.format].source(self.path, self.cache_dir)
            self._arrays = {}
        return self._src

    def close(self) -> None:
        """Release open files and memory maps (the Store stays usable; it reopens)."""
        self._src.close()
        self._arrays = {}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r}, format={self.format!r}, splits={self.splits})"

    # -- metadata --------------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        """Split names, sorted."""
        return sorted(self.metadata["splits"])

    @property
    def features(self) -> dict[str, dict]:
        """Feature name -> its ``describe()`` record (parameters, ``n_bins``, ``hop_length``)."""
        return {k: dict(v) for k, v in self.metadata["features"].items()}

    @property
    def fingerprint(self) -> str:
        """Hex sha256 of the build configuration's canonical JSON."""
        return str(self.metadata["fingerprint"])

    @property
    def quarantine(self) -> list[tuple[str, str, str]]:
        """Utterances left out by the build: ``(split, utt_id, reason)``."""
        return [tuple(q) for q in self.metadata.get("quarantine", [])]

    def _split_record(self, split: str) -> dict[str, Any]:
        check_name(split, "split", self.path)
        try:
            return self.metadata["splits"][split]
        except KeyError:
            raise StoreError(
                self.path, f"no split {split!r}; the store has {', '.join(self.splits)}"
            ) from None

    def _check_feature(self, feature: str) -> None:
        check_name(feature, "feature", self.path)
        if feature not in self.metadata["features"]:
            raise StoreError(
                self.path,
                f"no feature {feature!r}; the store has {', '.join(sorted(self.features))}",
            )

    def n_utterances(self, split: str) -> int:
        """Number of utterances (index rows) in ``split``."""
        return int(self._split_record(split)["n_utterances"])

    # -- augmented views -------------------------------------------------------------------------
    @property
    def augmentation(self) -> dict[str, Any] | None:
        """What made the augmented views, or None for a store without them.

        Returns
        -------
        dict or None
            ``recipe`` (the canonical JSON of :meth:`featstore.augment.Recipe.to_json`;
            ``Recipe.from_json`` reads it back), ``recipe_text`` (as ``str(recipe)``),
            ``seed``, ``views`` (augmented copies per utterance, K) and ``splits`` (the
            augmented splits).
        """
        aug = self.metadata.get("augmentation")
        return None if aug is None else {**aug, "splits": list(aug["splits"])}

    def n_views(self, split: str) -> int:
        """Views of ``split``: 1 + K when it was augmented with K copies, else 1 (clean only).

        Every view of a split shares the clean view's index: view ``k`` of utterance ``i``
        is rows ``offsets[i] : offsets[i] + n_frames[i]`` of ``array(split, f, view=k)``.
        """
        views = self._split_record(split).get("views")
        return int(views["n_views"]) if views else 1

    def _check_view(self, split: str, view: int) -> None:
        n = self.n_views(split)
        if isinstance(view, bool) or not isinstance(view, int | np.integer) or not 0 <= view < n:
            have = "only the clean view 0" if n == 1 else f"views 0..{n - 1}"
            raise StoreError(self.path, f"no view {view!r} in split {split!r}; it has {have}")

    def raw_view_columns(self, split: str) -> dict[str, np.ndarray]:
        """The augmented views' columns of ``split`` as stored, NOT validated (``verify``).

        ``ok.<k>`` (int8, 1 augmented, 0 quarantined), ``chain.<k>`` (the chain drawn),
        ``sha256.<k>.<feature>``; empty for a split without views.
        """
        views = self._split_record(split).get("views")
        if not views:
            return {}
        return self._live().index_columns(split, list(views["columns"]), VIEW_INDEX_GROUP)

    def view_columns(self, split: str) -> dict[str, np.ndarray]:
        """The views' columns of ``split`` (:meth:`raw_view_columns`), checked, read-only."""
        if split not in self._view_index:
            columns = self.raw_view_columns(split)
            if columns:
                check_view_index(columns, self._split_record(split), self.path, split)
            for values in columns.values():
                values.flags.writeable = False
            self._view_index[split] = columns
        return self._view_index[split]

    def view_mask(self, split: str) -> np.ndarray:
        """Which views of each utterance may be sampled.

        Returns
        -------
        np.ndarray
            bool ``(n_utterances, n_views)``: column 0 (clean) is all True; column ``k`` is
            False where the augmentation of view ``k`` failed for that utterance (the view
            is quarantined: its rows hold a copy of the clean frames; do not pick it).
        """
        n, n_views = self.n_utterances(split), self.n_views(split)
        mask = np.ones((n, n_views), dtype=bool)
        columns = self.view_columns(split)
        for k in range(1, n_views):
            mask[:, k] = columns[view_ok_column(k)] == 1
        return mask

    # -- index -----------------------------------------------------------------------------------
    def _columns(self, split: str) -> dict[str, np.ndarray]:
        if split not in self._index:
            record = self._split_record(split)
            columns = self.raw_index_columns(split)
            check_index(columns, record, self.path, split)
            for values in columns.values():
                values.flags.writeable = False  # shared by every caller: read-only
            self._index[split] = columns
        return self._index[split]

    def raw_index_columns(self, split: str) -> dict[str, np.ndarray]:
        """Every index column of ``split`` as stored, NOT validated (for ``verify``).

        Everything else reads the index through :meth:`index` / :meth:`frames`, which
        refuse an index that does not describe the arrays exactly
        (:func:`~featstore.store.layout.check_index`).
        """
        record = self._split_record(split)
        return self._live().index_columns(split, list(record["columns"]))

    def index(self, split: str) -> np.ndarray:
        """One row per utterance of ``split``, in build order.

        Returns
        -------
        np.ndarray
            Structured array with fields ``utt_id, speaker, system, key`` (str),
            ``label`` (int8: 1 bona fide, 0 spoof, -1 unknown), ``duration`` (float64 s),
            ``sample_rate`` (int32, original), ``channels`` (int16, original), ``notes`` (str)
            and the protocol's extra columns (str, e.g. ``codec``).
        """
        cols = self._columns(split)
        record = self._split_record(split)
        fields: list[tuple[str, np.ndarray]] = [(name, cols[name]) for name in FIXED_COLUMNS]
        for field, column in record.get("extra_columns", {}).items():
            fields.append((field, cols[column]))
        n = self.n_utterances(split)
        dtype = []
        for name, values in fields:
            if values.dtype.kind == "U":
                width = max(1, values.dtype.itemsize // 4)
                dtype.append((name, f"<U{width}"))
            else:
                dtype.append((name, FIXED_COLUMNS.get(name, values.dtype)))
        out = np.empty(n, dtype=dtype)
        for name, values in fields:
            out[name] = values
        return out

    def frames(self, split: str, feature: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of each utterance in :meth:`array`: ``(offsets, n_frames)``, int64, read-only."""
        self._check_feature(feature)
        cols = self._columns(split)
        return (
            cols[offset_column(feature)].astype(np.int64, copy=False),
            cols[n_frames_column(feature)].astype(np.int64, copy=False),
        )

    def row(self, split: str, utt_id: str) -> int:
        """Index row of ``utt_id`` in ``split``."""
        if split not in self._rows:
            ids = self._columns(split)["utt_id"]
            self._rows[split] = {str(u): i for i, u in enumerate(ids)}
        try:
            return self._rows[split][utt_id]
        except KeyError:
            raise StoreError(self.path, f"no utterance {utt_id!r} in split {split!r}") from None

    # -- frames ----------------------------------------------------------------------------------
    def array(self, split: str, feature: str, view: int = 0) -> FrameArray:
        """The concatenated ``(total_frames, n_bins)`` float32 array of ``feature``.

        ``view`` 0 is the clean view; 1..K the augmented copies (:meth:`n_views`), each
        with the clean view's shape and rows (:meth:`frames`). Local stores are
        memory-mapped: ``array(...)[a:b]`` is a copy out of the mapped file bytes, never
        a per-slice trip through zarr/h5py.
        """
        self._check_feature(feature)
        self._split_record(split)
        self._check_view(split, view)
        src = self._live()
        key = (split, feature, int(view))
        if key not in self._arrays:
            fa = src.frame_array(split, feature, int(view))
            frec = self._split_record(split)["features"][feature]
            expected = (int(frec["n_frames"]), int(frec["n_bins"]))
            if fa.shape != expected:
                name = f"{split}/{feature}" + (f" view {view}" if view else "")
                raise StoreError(
                    self.path,
                    f"{name}: the array has shape {fa.shape}, the metadata says "
                    f"{expected}; rebuild the store",
                )
            self._arrays[key] = fa
        return self._arrays[key]

    def read(
        self,
        split: str,
        feature: str,
        utt_id: str,
        start: int | None = None,
        stop: int | None = None,
        view: int = 0,
    ) -> np.ndarray:
        """Frames ``[start:stop]`` (Python slice semantics) of one utterance, of ``view``.

        Returns
        -------
        np.ndarray
            float32 ``(n, n_bins)``.
        """
        i = self.row(split, utt_id)
        offsets, n_frames = self.frames(split, feature)
        a, b, _ = slice(start, stop).indices(int(n_frames[i]))
        base = int(offsets[i])
        return self.array(split, feature, view)[base + a : base + max(a, b)]

    # -- statistics ------------------------------------------------------------------------------
    def stats(self, feature: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """Per-bin mean and standard deviation of ``feature`` over ``split``.

        Accumulated in float64 over every frame of the split's clean view at build time
        (augmented views do not change them). A split with no frames has mean 0 and std 1.

        Returns
        -------
        (np.ndarray, np.ndarray)
            float32 ``mean[n_bins]``, ``std[n_bins]``.
        """
        self._check_feature(feature)
        rec = self._split_record(split)["features"][feature]
        return (np.asarray(rec["mean"], dtype=np.float32), np.asarray(rec["std"], dtype=np.float32))

    def checksum(self, split: str, feature: str) -> str:
        """The checksum recorded at build time (see ``docs/store-format.md``)."""
        self._check_feature(feature)
        return str(self._split_record(split)["features"][feature]["sha256"])


def open_store(
    path_or_url: str | os.PathLike,
    mode: str = "r",
    *,
    cache_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> Store:
    """Open a finished feature store for reading.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        A Zarr v3 directory, an ``.h5``/``.hdf5`` file, or an fsspec URL of a Zarr store.
    mode : {"r"}
        Stores are written only by :func:`featstore.build`.
    cache_dir : str or os.PathLike, optional
        For a remote Zarr store: read through a local copy under this directory, filled on
        demand and memory-mapped. Default: ``$SPOOFSTORE_CACHE_DIR`` if set (the user-level
        default, read here and nowhere else), else direct reads through zarr.
    check_files : bool, default True
        Refuse a store with missing or wrongly sized data files (file sizes only; see
        :meth:`Store.data_problems`).

    Returns
    -------
    Store

    Raises
    ------
    StoreError
        Missing, not a spoofstore store, of an unsupported format version, incomplete,
        with damaged metadata or unsafe names in it, or with data files missing or short.
        Later reads raise StoreError too for an index that does not describe the arrays
        and for rows whose bytes are not stored.

    Examples
    --------
    >>> st = open_store("store.zarr")  # doctest: +SKIP
    >>> mean, std = st.stats("mgd")  # doctest: +SKIP
    """
    if mode != "r":
        raise ValueError(f"stores open read-only (mode='r'), got mode={mode!r}")
    if cache_dir is None:
        cache_dir = cache_dir_from_env()
    return Store(path_or_url, cache_dir=cache_dir, check_files=check_files)
