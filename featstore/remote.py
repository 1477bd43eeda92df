"""Feature stores written to fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...).

``featstore build --out s3://...`` builds into a local *staging* store (resumable like any
local build) and then uploads it with :func:`upload_store`, root ``zarr.json`` last, so no
reader ever sees a half-uploaded store as complete (:func:`build_to_url`).

Reading stores at URLs (zarr's ``FsspecStore``, the local read cache :class:`StoreMirror`),
filesystems, credentials and endpoints live in :mod:`featstore.store.fsspec_io`; the names
below re-export them, so this module is the one import for everything remote. This module
depends on :mod:`featstore.store`, never the other way round.

fsspec (and s3fs for ``s3://``) are optional: ``pip install spoofstore[scale]``. Local paths
never import them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featstore.atomic_files import write_bytes_atomic
from featstore.errors import StoreError
from featstore.store.fsspec_io import (
    CACHE_ENV,
    OPTIONS_ENV,
    ROOT_METADATA,
    UPLOAD_MARKER,
    StoreMirror,
    cache_dir_from_env,
    filesystem,
    read_remote_metadata,
    storage_options,
    url_key,
    zarr_store,
)
from featstore.store.layout import BUILD_STATE_DIR, METADATA_ATTR, is_remote

__all__ = [
    "CACHE_ENV",
    "OPTIONS_ENV",
    "UPLOAD_MARKER",
    "StoreMirror",
    "build_to_url",
    "cache_dir_from_env",
    "default_cache_root",
    "filesystem",
    "is_remote",
    "read_remote_metadata",
    "staging_dir",
    "storage_options",
    "upload_store",
    "zarr_store",
]


# --------------------------------------------------------------------------------------------
# local directories


def default_cache_root() -> Path:
    """``$SPOOFSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/spoofstore`` or ``~/.cache/spoofstore``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spoofstore"


def staging_dir(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local directory where a build to ``url`` is staged (stable, so re-runs resume).

    Examples
    --------
    >>> staging_dir("s3://b/la.zarr", "/tmp/c").parent
    PosixPath('/tmp/c/staging')
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / "staging" / url_key(url)


# --------------------------------------------------------------------------------------------
# writing: stage locally, upload complete


def _local_files(staging: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(staging):
        dirnames[:] = sorted(d for d in dirnames if d != BUILD_STATE_DIR)
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(staging).as_posix()
            if rel != ROOT_METADATA and not name.endswith(".tmp"):  # atomic_path's
                out.append(rel)
    return out


def upload_store(staging: str | os.PathLike, url: str) -> int:
    """Upload a finished local Zarr store to ``url``, replacing whatever is there.

    Order: remove the old objects, write an upload marker, upload every file but the root
    ``zarr.json`` (concurrently on async filesystems), then the root ``zarr.json``, then drop
    the marker. A reader sees either no store or a complete one; an interrupted upload leaves
    the marker, so the next build knows the objects are its own and starts over.

    Parameters
    ----------
    staging : str or os.PathLike
        The local store (its build state directory is skipped).
    url : str
        Destination.

    Returns
    -------
    int
        Bytes uploaded.
    """
    staging = Path(staging)
    fs, root = filesystem(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.pipe_file(f"{root}/{UPLOAD_MARKER}", json.dumps({"pid": os.getpid()}).encode())
    rels = _local_files(staging)
    nbytes = (staging / ROOT_METADATA).stat().st_size
    if rels:
        fs.put([os.fspath(staging / r) for r in rels], [f"{root}/{r}" for r in rels])
        nbytes += sum((staging / r).stat().st_size for r in rels)
    fs.put_file(os.fspath(staging / ROOT_METADATA), f"{root}/{ROOT_METADATA}")
    fs.rm_file(f"{root}/{UPLOAD_MARKER}")
    fs.invalidate_cache()
    return nbytes


def _local_root_metadata(staging: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((staging / ROOT_METADATA).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    meta = doc.get("attributes", {}).get(METADATA_ATTR)
    return meta if isinstance(meta, dict) else None


def build_to_url(
    url: str,
    run: Callable[[Path, bool], Any],
    *,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Any:
    """Build a store at a URL: build locally in a staging directory, then upload it.

    Parameters
    ----------
    url : str
        Destination (``s3://bucket/store.zarr``).
    run : callable
        ``run(local_path, overwrite) -> BuildSummary``: the local build.
    cache_dir : str or os.PathLike, optional
        Where the staging copy lives (``<cache_dir>/staging/<key>``); default
        :func:`default_cache_root`. A killed build resumes from it on re-run; it is removed
        after a successful upload.
    overwrite : bool, default False
        Replace a store built another way.

    Returns
    -------
    BuildSummary
        The local build's summary with ``out`` set to ``url``.

    Raises
    ------
    StoreError
        ``url`` holds something that is not a feature store, or a store of another
        configuration/manifest (without ``overwrite``).
    """
    fs, root = filesystem(url)
    staging = staging_dir(url, cache_dir)
    remote_meta, raw = read_remote_metadata(fs, root)
    ours = remote_meta is not None or fs.exists(f"{root}/{UPLOAD_MARKER}")
    if not ours and not overwrite and fs.exists(root) and fs.find(root, maxdepth=None)[:1]:
        raise StoreError(
            url,
            "exists and is not a spoofstore feature store; refusing to touch it "
            "(choose another --out or remove it yourself)",
        )
    seeded = False
    if (
        remote_meta is not None
        and remote_meta.get("complete")
        and not overwrite
        and not (_local_root_metadata(staging) or {}).get("complete")
        and not (staging / BUILD_STATE_DIR).is_dir()
    ):
        # the local build then decides "already complete" vs. "built another way"
        staging.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(staging / ROOT_METADATA, raw)
        seeded = True
    try:
        summary = run(staging, overwrite)
    except StoreError as exc:
        if seeded:
            shutil.rmtree(staging, ignore_errors=True)
        where = exc.path or ""
        message = exc.message if where.startswith(os.fspath(staging)) else str(exc)
        raise StoreError(url, message) from None
    staged = _local_root_metadata(staging)
    if not seeded and staged != remote_meta:
        upload_store(staging, url)
    shutil.rmtree(staging, ignore_errors=True)
    summary.out = url
    return summary
