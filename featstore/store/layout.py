"""The versioned on-disk schema of a feature store, shared by both backends.

One place names every node, column and metadata key, so the Zarr and HDF5 backends, the
reader, ``verify`` and the docs (``docs/store-format.md``) cannot drift apart.

Logical layout (identical in Zarr v3 and HDF5)::

    /                                  root group; attribute "spoofstore" = store metadata
    /<split>/<feature>                 float32 (total_frames, n_bins), utterances concatenated
    /<split>/index/<column>            1-D columns, one row per utterance in build order

Location handling (local path vs. fsspec URL) also lives here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError

FORMAT_NAME = "spoofstore.featstore"
"""Value of ``metadata["format"]``: says the store was written by this package."""

FORMAT_VERSION = 1
"""Bumped on every incompatible change of this schema."""

METADATA_ATTR = "spoofstore"
"""Name of the root attribute holding the store metadata (a JSON object)."""

INDEX_GROUP = "index"
"""Name of the per-split group holding the index columns."""

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
    """Node path of the concatenated frame array of ``feature`` in ``split``."""
    return f"{split}/{feature}"


def index_path(split: str, column: str) -> str:
    """Node path of one index column."""
    return f"{split}/{INDEX_GROUP}/{column}"


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
    if version != FORMAT_VERSION:
        raise StoreError(
            where,
            f"store format version {version} is not supported by this spoofstore "
            f"(reads version {FORMAT_VERSION}); rebuild it with --overwrite",
        )
    if not meta.get("complete", False):
        raise StoreError(
            where,
            "the store is incomplete (its build was interrupted or is still running); "
            "re-run the same `featstore build` command to finish it",
        )
    return meta


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
