"""The versioned on-disk schema of a feature store, shared by both backends.

One place names every node, column and metadata key, so the Zarr and HDF5 backends, the
reader, ``verify`` and the docs (``docs/store-format.md``) cannot drift apart.

Logical layout (identical in Zarr v3 and HDF5)::

    /                                  root group; attribute "spoofstore" = store metadata
    /<split>/<feature>                 float32 (total_frames, n_bins), utterances concatenated
    /<split>/index/<column>            1-D columns, one row per utterance in build order
    /<split>/views/<k>/<feature>       augmented view k (1..K) of the split: rows aligned with
                                       /<split>/<feature> (the clean view 0), same shape
    /<split>/views/index/<column>      per-utterance columns of the views (ok.<k>, chain.<k>,
                                       sha256.<k>.<feature>), one row per index row

Location handling (local path vs. fsspec URL) also lives here.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError

FORMAT_NAME = "spoofstore.featstore"
"""Value of ``metadata["format"]``: says the store was written by this package."""

FORMAT_VERSION = 2
"""Bumped on every incompatible change of this schema (2: augmented views)."""

READABLE_VERSIONS = (1, 2)
"""Format versions this package reads. Version 1 is version 2 without augmented views."""

CLEAN_LAYOUT_VERSION = 1
"""The layout version of the clean view, recorded in the fingerprinted build configuration
(``config.format_version``). It is not bumped with :data:`FORMAT_VERSION` when only views
are added, so a store's fingerprint (which trainer runs record) does not change when views
are appended to it, and version-1 stores keep theirs."""


METADATA_ATTR = "spoofstore"
"""Name of the root attribute holding the store metadata (a JSON object)."""

INDEX_GROUP = "index"
"""Name of the per-split group holding the index columns."""

VIEWS_GROUP = "views"
"""Name of the per-split group holding the augmented views and their index columns."""

RESERVED_NAMES = frozenset({INDEX_GROUP, VIEWS_GROUP})
"""Node names every split may hold besides its features: no feature may be named so."""

BUILD_STATE_DIR = ".spoofstore-build"
"""Directory inside a Zarr store holding the build journal until the build completes (never
uploaded to, nor mirrored from, a remote store)."""

DEFAULT_CHUNK_FRAMES = 512
"""Frames per chunk: a 256-frame crop touches at most two chunks."""

DEFAULT_SHARD_FRAMES = 65536
"""Frames per Zarr shard file (128 chunks of 512 frames)."""

DTYPE = np.dtype("<f4")
"""Every feature array is little-endian float32."""

FIXED_COLUMNS: dict[str, np.dtype] = {
    "utt_id": np.dtype("U"),
    "speaker": np.dtype("U"),
    "system": np.dtype("U"),
    "key": np.dtype("U"),
    "label": np.dtype("i1"),
    "duration": np.dtype("f8"),
    "sample_rate": np.dtype("i4"),
    "channels": np.dtype("i2"),
    "notes": np.dtype("U"),
}
"""Index columns every split has, with their types (``U``: variable-length UTF-8 string).

``key`` is ``""`` when the protocol has none; ``label`` is 1 bona fide, 0 spoof, -1 unknown;
``duration`` is seconds of the decoded 16 kHz signal; ``sample_rate``/``channels`` describe
the original file; ``notes`` lists what loading did (``"resampled 44100->16000; ..."``).
"""

EXTRA_PREFIX = "extra."
"""Prefix of the columns holding a protocol's other fields (``extra.codec`` ...), as strings."""


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""What a split, feature or index-column name may look like: it becomes one path component
of the store (a Zarr directory, an HDF5 group), so no ``/``, ``\\``, ``..`` or leading dot."""


def check_name(name: object, kind: str = "name", where: str | os.PathLike | None = None) -> str:
    """Return ``name`` if it is safe to join into a store path, else raise StoreError.

    Every split, feature and index-column name read from store metadata goes through here
    before it is joined into a path (:func:`feature_path`, :func:`index_path`), and so can
    names given on a command line (``--split``, ``--features``).

    Parameters
    ----------
    name : object
        The name to check (anything but a matching ``str`` is refused).
    kind : str, default "name"
        What the name is (``"split"``, ``"feature"``, ``"index column"``), for the message.
    where : str or os.PathLike, optional
        The store (or file) the name comes from, for the message.

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    StoreError
        ``name`` does not match :data:`NAME_PATTERN` or contains ``..``.

    Examples
    --------
    >>> check_name("train", "split")
    'train'
    >>> check_name("../../x", "split")
    Traceback (most recent call last):
    ...
    featstore.errors.StoreError: invalid split name '../../x': use 1-128 letters, digits, '_', \
'.', '-', starting with a letter or digit, without '..'
    """
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name) and ".." not in name:
        return name
    raise StoreError(
        where,
        f"invalid {kind} name {name!r}: use 1-128 letters, digits, '_', '.', '-', "
        "starting with a letter or digit, without '..'",
    )


def offset_column(feature: str) -> str:
    """Name of the index column with each utterance's first row in ``/<split>/<feature>``."""
    return f"offset.{feature}"


def n_frames_column(feature: str) -> str:
    """Name of the index column with each utterance's number of frames of ``feature``."""
    return f"n_frames.{feature}"


def sha256_column(feature: str) -> str:
    """Name of the index column with the sha256 of each utterance's ``feature`` bytes."""
    return f"sha256.{feature}"


def feature_path(split: str, feature: str) -> str:
    """Node path of the concatenated frame array of ``feature`` in ``split`` (names checked)."""
    return f"{check_name(split, 'split')}/{check_name(feature, 'feature')}"


def index_path(split: str, column: str, group: str = INDEX_GROUP) -> str:
    """Node path of one index column (names checked).

    ``group`` is :data:`INDEX_GROUP` (the split's index) or :data:`VIEW_INDEX_GROUP` (the
    columns of its augmented views).
    """
    if group not in (INDEX_GROUP, VIEW_INDEX_GROUP):
        raise ValueError(f"not an index group: {group!r}")
    return f"{check_name(split, 'split')}/{group}/{check_name(column, 'index column')}"


VIEW_INDEX_GROUP = f"{VIEWS_GROUP}/{INDEX_GROUP}"
"""Group (below the split) of the per-utterance columns of the augmented views."""


def view_path(split: str, feature: str, view: int) -> str:
    """Node path of view ``view`` of ``feature`` in ``split``: view 0 is :func:`feature_path`.

    Examples
    --------
    >>> view_path("train", "mgd", 0), view_path("train", "mgd", 2)
    ('train/mgd', 'train/views/2/mgd')
    """
    if isinstance(view, bool) or not isinstance(view, int) or view < 0:
        raise ValueError(f"view must be a non-negative integer, got {view!r}")
    if view == 0:
        return feature_path(split, feature)
    return f"{check_name(split, 'split')}/{VIEWS_GROUP}/{view}/{check_name(feature, 'feature')}"


def view_ok_column(view: int) -> str:
    """Column (in :data:`VIEW_INDEX_GROUP`): int8, 1 where view ``view`` was augmented,
    0 where its augmentation failed (the view is quarantined; its rows copy the clean ones)."""
    return f"ok.{view}"


def view_chain_column(view: int) -> str:
    """Column (in :data:`VIEW_INDEX_GROUP`): the augmentation chain drawn for view ``view``
    (``"codec+noise"``), ``""`` where the view is quarantined."""
    return f"chain.{view}"


def view_sha256_column(view: int, feature: str) -> str:
    """Column (in :data:`VIEW_INDEX_GROUP`): hex sha256 of each utterance's rows of
    ``feature`` in view ``view``."""
    return f"sha256.{view}.{feature}"


def n_views(split_record: dict[str, Any]) -> int:
    """Views of a split (1: the clean view only) from its metadata record."""
    views = split_record.get("views")
    return int(views["n_views"]) if isinstance(views, dict) else 1


def frame_arrays(
    meta: dict[str, Any], split: str | None = None
) -> list[tuple[str, str, int, int, int]]:
    """Every frame array a complete store holds: ``(split, feature, view, n_frames, n_bins)``.

    Views of a split share the clean view's shape. Splits, then features, sorted; views in
    order. ``split``: that split's only.
    """
    out = []
    for name, rec in sorted(meta["splits"].items()):
        if split is not None and name != split:
            continue
        for feature, frec in sorted(rec["features"].items()):
            for view in range(n_views(rec)):
                out.append((name, feature, view, int(frec["n_frames"]), int(frec["n_bins"])))
    return out


def index_nodes(meta: dict[str, Any], split: str | None = None) -> list[tuple[str, str, str]]:
    """Every index column a complete store holds: ``(split, group, column)`` (``split``:
    that split's only)."""
    out = []
    for name, rec in sorted(meta["splits"].items()):
        if split is not None and name != split:
            continue
        out += [(name, INDEX_GROUP, column) for column in rec["columns"]]
        views = rec.get("views")
        if isinstance(views, dict):
            out += [(name, VIEW_INDEX_GROUP, column) for column in views["columns"]]
    return out


def is_remote(location: str | os.PathLike) -> bool:
    """True for fsspec URLs (``s3://...``, ``gs://...``); False for local paths and file://."""
    text = os.fspath(location)
    if "://" not in text:
        return False
    return not text.startswith("file://")


def local_path(location: str | os.PathLike) -> Path:
    """The local filesystem path of a location (``file://`` stripped)."""
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(text)


def detect_format(location: str | os.PathLike) -> str:
    """``"hdf5"`` for ``.h5``/``.hdf5`` (or an existing HDF5 file), else ``"zarr"``.

    Parameters
    ----------
    location : str or os.PathLike
        Store path or URL.

    Returns
    -------
    str
        ``"zarr"`` or ``"hdf5"``.

    Examples
    --------
    >>> detect_format("store.zarr"), detect_format("/data/store.h5")
    ('zarr', 'hdf5')
    """
    text = os.fspath(location).rstrip("/")
    if text.lower().endswith((".h5", ".hdf5")):
        return "hdf5"
    if not is_remote(text):
        path = local_path(text)
        if path.is_file():
            with open(path, "rb") as fh:
                if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                    return "hdf5"
    return "zarr"


def check_metadata(meta: Any, where: str) -> dict[str, Any]:
    """Validate the root metadata object, returning it; raise StoreError when unusable."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise StoreError(where, "not a spoofstore feature store (no 'spoofstore' metadata)")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise StoreError(
            where,
            f"store format version {version} is not supported by this spoofstore "
            f"(reads versions {readable}); rebuild it with --overwrite",
        )
    if not meta.get("complete", False):
        raise StoreError(
            where,
            "the store is incomplete (its build was interrupted or is still running); "
            "re-run the same `featstore build` command to finish it",
        )
    _check_structure(meta, where)
    return meta


def _expect(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise StoreError(where, f"damaged store metadata: {what}; rebuild the store")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_structure(meta: dict[str, Any], where: str) -> None:
    """Check the metadata fields the reader relies on, and every name in it (:func:`check_name`)."""
    features = meta.get("features")
    _expect(isinstance(features, dict), where, "'features' is not an object")
    for feature, rec in features.items():
        check_name(feature, "feature", where)
        _expect(isinstance(rec, dict), where, f"features.{feature} is not an object")
    splits = meta.get("splits")
    _expect(isinstance(splits, dict), where, "'splits' is not an object")
    _expect(isinstance(meta.get("quarantine", []), list), where, "'quarantine' is not a list")
    for split, rec in splits.items():
        check_name(split, "split", where)
        _expect(isinstance(rec, dict), where, f"splits.{split} is not an object")
        _expect(_is_count(rec.get("n_utterances")), where, f"splits.{split}.n_utterances")
        columns = rec.get("columns")
        _expect(isinstance(columns, list), where, f"splits.{split}.columns is not a list")
        for column in columns:
            check_name(column, "index column", where)
        extra = rec.get("extra_columns", {})
        _expect(isinstance(extra, dict), where, f"splits.{split}.extra_columns")
        required = [*FIXED_COLUMNS, *extra.values()]
        for feature in features:
            required += [offset_column(feature), n_frames_column(feature)]
        missing = [c for c in required if c not in columns]
        _expect(not missing, where, f"splits.{split}.columns lacks {', '.join(missing[:3])}")
        frecs = rec.get("features")
        _expect(isinstance(frecs, dict), where, f"splits.{split}.features is not an object")
        _expect(set(frecs) == set(features), where, f"splits.{split}.features != features")
        for feature, frec in frecs.items():
            ok = isinstance(frec, dict) and all(
                _is_count(frec.get(k)) for k in ("n_frames", "n_bins")
            )
            _expect(ok, where, f"splits.{split}.features.{feature}: n_frames/n_bins")
    _check_views_structure(meta, where)


def _check_views_structure(meta: dict[str, Any], where: str) -> None:
    """The augmentation record and each augmented split's ``views`` record (version 2)."""
    aug = meta.get("augmentation")
    augmented = [s for s, rec in meta["splits"].items() if "views" in rec]
    if aug is None:
        _expect(not augmented, where, "splits hold views but 'augmentation' is missing")
        return
    _expect(meta.get("format_version") == 2, where, "'augmentation' in a version-1 store")
    _expect(isinstance(aug, dict), where, "'augmentation' is not an object")
    views, seed, splits = aug.get("views"), aug.get("seed"), aug.get("splits")
    _expect(_is_count(views) and views > 0, where, "augmentation.views")
    _expect(_is_count(seed), where, "augmentation.seed")
    _expect(isinstance(aug.get("recipe"), str), where, "augmentation.recipe")
    _expect(
        isinstance(splits, list) and sorted(splits) == sorted(augmented),
        where,
        "augmentation.splits differs from the splits holding views",
    )
    for split in augmented:
        rec = meta["splits"][split]["views"]
        name = f"splits.{split}.views"
        _expect(isinstance(rec, dict), where, f"{name} is not an object")
        _expect(rec.get("n_views") == 1 + views, where, f"{name}.n_views")
        _expect(_is_count(rec.get("n_quarantined")), where, f"{name}.n_quarantined")
        columns = rec.get("columns")
        _expect(isinstance(columns, list), where, f"{name}.columns is not a list")
        for column in columns:
            check_name(column, "index column", where)
        required = []
        for k in range(1, 1 + views):
            required += [view_ok_column(k), view_chain_column(k)]
            required += [view_sha256_column(k, f) for f in meta["features"]]
        missing = [c for c in required if c not in columns]
        _expect(not missing, where, f"{name}.columns lacks {', '.join(missing[:3])}")
        checksums = rec.get("sha256")
        _expect(
            isinstance(checksums, dict)
            and set(checksums) == set(meta["features"])
            and all(isinstance(v, list) and len(v) == views for v in checksums.values()),
            where,
            f"{name}.sha256: one checksum per feature and view",
        )


def split_checksum(digests: Iterable[str]) -> str:
    """Checksum of a split's feature array: sha256 of its utterances' sha256 digests.

    Parameters
    ----------
    digests : iterable of str
        Hex sha256 of each utterance's float32 rows (C order, little endian), in index order.

    Returns
    -------
    str
        Hex sha256 of the concatenated raw digests.

    Examples
    --------
    >>> split_checksum([])[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    for d in digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def check_view_index(
    columns: dict[str, np.ndarray], record: dict[str, Any], where: str, split: str
) -> None:
    """Validate the view columns of one split as loaded (see :func:`check_index`).

    Every column has one row per utterance; ``ok.<k>`` is int8 and 0 or 1; the others are
    strings.

    Parameters
    ----------
    columns : dict of str to np.ndarray
        The loaded columns of :data:`VIEW_INDEX_GROUP`.
    record : dict
        The split's metadata record (``n_utterances``, ``views``).
    where, split : str
        The store and the split, for messages.

    Raises
    ------
    StoreError
        Naming the split and the first bad column.
    """
    n = int(record["n_utterances"])
    for name in record["views"]["columns"]:
        values = columns.get(name)
        label = f"views/{name}"
        if values is None:
            raise _column_error(where, split, label, "is missing")
        if values.ndim != 1 or len(values) != n:
            raise _column_error(where, split, label, f"has {values.shape} rows, expected {n}")
        if name.startswith("ok."):
            if values.dtype != np.dtype("i1"):
                raise _column_error(where, split, label, f"has dtype {values.dtype}, expected int8")
            bad = np.flatnonzero((values != 0) & (values != 1))
            if bad.size:
                raise _column_error(where, split, label, f"is not 0 or 1 at row {int(bad[0])}")
        elif values.dtype.kind != "U":
            raise _column_error(where, split, label, f"has dtype {values.dtype}, expected str")


def _column_error(where: str, split: str, column: str, what: str) -> StoreError:
    return StoreError(where, f"{split}: index column {column!r} {what}; rebuild the store")


def check_index(
    columns: dict[str, np.ndarray], record: dict[str, Any], where: str, split: str
) -> None:
    """Validate the index columns of one split as loaded, before anything reads through them.

    Checks every column's length and dtype, that ``utt_id`` values are non-empty and unique,
    ``label`` agrees with ``key``, ``duration``/``sample_rate``/``channels`` are positive, and
    per feature that ``n_frames`` is positive and ``offset`` runs contiguously from 0 to the
    array's row count (``offset[i+1] == offset[i] + n_frames[i]``): an index that does not
    describe the array exactly would read other utterances' rows.

    Parameters
    ----------
    columns : dict of str to np.ndarray
        The loaded columns (strings as ``<U``).
    record : dict
        The split's metadata record (``n_utterances``, ``columns``, ``features``).
    where : str
        The store, for messages.
    split : str
        The split, for messages.

    Raises
    ------
    StoreError
        Naming the split and the first bad column.
    """
    n = int(record["n_utterances"])
    expected = dict(FIXED_COLUMNS)
    for feature in record["features"]:
        expected[offset_column(feature)] = np.dtype("i8")
        expected[n_frames_column(feature)] = np.dtype("i8")
    for name in record["columns"]:
        values = columns.get(name)
        if values is None:
            raise _column_error(where, split, name, "is missing")
        if values.ndim != 1 or len(values) != n:
            raise _column_error(where, split, name, f"has {values.shape} rows, expected {n}")
        want = expected.get(name, np.dtype("U"))
        kind_ok = values.dtype.kind == want.kind
        if not kind_ok or (want.kind != "U" and values.dtype.itemsize != want.itemsize):
            raise _column_error(where, split, name, f"has dtype {values.dtype}, expected {want}")

    def refuse(name: str, bad: np.ndarray, what: str) -> None:
        rows = np.flatnonzero(bad)
        if rows.size:
            raise _column_error(
                where, split, name, f"{what} at row {int(rows[0])} ({rows.size} row(s))"
            )

    for name in ("utt_id", "speaker", "system"):
        refuse(name, columns[name] == "", "is empty")
    if len(np.unique(columns["utt_id"])) != n:
        raise _column_error(where, split, "utt_id", "holds duplicate ids")
    key = columns["key"]
    label = np.where(key == "bonafide", 1, np.where(key == "spoof", 0, -1))
    refuse("label", columns["label"] != label, "disagrees with the key column")
    refuse("duration", ~(columns["duration"] > 0), "is not a positive number")
    refuse("sample_rate", columns["sample_rate"] <= 0, "is not positive")
    refuse("channels", columns["channels"] <= 0, "is not positive")
    for feature, frec in record["features"].items():
        offsets = columns[offset_column(feature)]
        n_frames = columns[n_frames_column(feature)]
        refuse(n_frames_column(feature), n_frames <= 0, "is not positive")
        ends = np.cumsum(n_frames)
        starts = ends - n_frames
        refuse(offset_column(feature), offsets != starts, "is not contiguous from 0")
        total = int(ends[-1]) if n else 0
        if total != int(frec["n_frames"]):
            raise _column_error(
                where,
                split,
                n_frames_column(feature),
                f"totals {total} frames, the array has {int(frec['n_frames'])}",
            )
