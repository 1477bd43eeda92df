"""Feature stores at fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...): the one place that
talks to fsspec.

Reading
    Without a cache, a remote Zarr store is read through zarr's ``FsspecStore`` (byte ranges of
    the shard files, every read goes to the network). With a cache directory,
    :class:`StoreMirror` copies the files a reader needs into ``CACHE/<key>/`` (metadata and
    index columns when the store opens, the shard files of one frame array on its first use)
    and the store is then read from there exactly like a local one, memory-mapped. Later
    epochs, DataLoader workers, ranks and runs on the same machine fetch nothing but the root
    ``zarr.json`` (one small GET per open, to notice a rebuilt store: the key covers the URL,
    the store's fingerprint and its completion time).
Writing
    ``featstore build --out s3://...`` builds into a local *staging* store (resumable like any
    local build) and then uploads it with :func:`upload_store`, root ``zarr.json`` last, so no
    reader ever sees a half-uploaded store as complete (:func:`build_to_url`).
Credentials and endpoints
    Whatever fsspec and s3fs read from the environment and their config files
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/``,
    ``FSSPEC_S3_*``), plus ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (S3-compatible servers:
    MinIO, Ceph, moto) and ``SPOOFSTORE_STORAGE_OPTIONS`` (a JSON object of extra keyword
    arguments for the filesystem) -- see :func:`storage_options`.

fsspec (and s3fs for ``s3://``) are optional: ``pip install spoofstore[scale]``. Local paths
never import them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from featstore.errors import SpoofstoreError, StoreError
from featstore.store.layout import METADATA_ATTR, feature_path, is_remote

__all__ = [
    "CACHE_ENV",
    "OPTIONS_ENV",
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

CACHE_ENV = "SPOOFSTORE_CACHE_DIR"
"""Environment variable naming the local cache directory for remote stores (reads and the
staging copy of remote builds). Inherited by DataLoader workers and ``torchrun`` ranks."""

OPTIONS_ENV = "SPOOFSTORE_STORAGE_OPTIONS"
"""Environment variable holding a JSON object of extra fsspec filesystem keyword arguments."""

UPLOAD_MARKER = ".spoofstore-upload"
"""File written at the root of a remote store while an upload runs (removed at the end)."""

_ROOT_META = "zarr.json"
_LISTING = ".spoofstore-listing.json"
_STATE_DIR = ".spoofstore-build"  # featstore.store.zarr_backend.STATE_DIR (never uploaded)
_INSTALL_HINT = "install the scale extra: pip install 'spoofstore[scale]'"


# --------------------------------------------------------------------------------------------
# URLs, options, filesystems


def storage_options(url: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec keyword arguments for ``url``, from the environment.

    Parameters
    ----------
    url : str
        A store URL (``s3://bucket/store.zarr``).
    overrides : dict, optional
        Explicit options; they win over everything read from the environment.

    Returns
    -------
    dict
        ``SPOOFSTORE_STORAGE_OPTIONS`` (JSON object) if set, plus for ``s3://`` the
        ``endpoint_url`` from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, then
        ``overrides``. Credentials are left to s3fs/botocore's own lookup (environment,
        ``AWS_PROFILE``, ``~/.aws``, instance roles).

    Raises
    ------
    StoreError
        ``SPOOFSTORE_STORAGE_OPTIONS`` is not a JSON object.

    Examples
    --------
    >>> storage_options("memory://x.zarr", {"skip_instance_cache": True})
    {'skip_instance_cache': True}
    """
    options: dict[str, Any] = {}
    text = os.environ.get(OPTIONS_ENV)
    if text:
        try:
            options = json.loads(text)
        except ValueError as exc:
            raise StoreError(None, f"${OPTIONS_ENV} is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise StoreError(None, f"${OPTIONS_ENV} must be a JSON object, got {text!r}")
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = options.get("client_kwargs") or {}
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
            # explicit, so that fsspec's instance cache keeps one filesystem per endpoint
            options["endpoint_url"] = endpoint
    options.update(overrides or {})
    return options


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path of ``url`` inside it.

    Parameters
    ----------
    url : str
        ``s3://bucket/a/store.zarr``, ``memory://store.zarr``, ``file:///data/store.zarr`` ...
    options : dict, optional
        Extra filesystem options (see :func:`storage_options`).

    Returns
    -------
    (fsspec.AbstractFileSystem, str)
        The filesystem and the root path without protocol and trailing slash.

    Raises
    ------
    SpoofstoreError
        fsspec or the protocol's implementation (s3fs, gcsfs ...) is not installed.

    Examples
    --------
    >>> fs, root = filesystem("memory://stores/a.zarr/")
    >>> root
    '/stores/a.zarr'
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise SpoofstoreError(f"{url}: reading URLs needs fsspec; {_INSTALL_HINT}") from None
    try:
        fs, root = url_to_fs(url, **storage_options(url, options))
    except (ImportError, ValueError) as exc:
        raise SpoofstoreError(f"{url}: {exc}; {_INSTALL_HINT}") from None
    return fs, root.rstrip("/")


def zarr_store(url: str, read_only: bool = True, options: dict[str, Any] | None = None) -> Any:
    """A zarr ``FsspecStore`` for ``url`` with :func:`storage_options` applied.

    Parameters
    ----------
    url : str
        Store URL.
    read_only : bool, default True
        Open read-only.
    options : dict, optional
        Extra filesystem options.

    Returns
    -------
    zarr.storage.FsspecStore
        Pass it to ``zarr.open_group``.
    """
    try:
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(
            url, storage_options=storage_options(url, options), read_only=read_only
        )
    except ImportError as exc:
        raise SpoofstoreError(f"{url}: {exc}; {_INSTALL_HINT}") from None


def read_remote_metadata(fs: Any, root: str) -> tuple[dict[str, Any] | None, bytes | None]:
    """The ``spoofstore`` root attribute of the Zarr store at ``root`` and the raw ``zarr.json``.

    Returns
    -------
    (dict or None, bytes or None)
        ``(None, None)`` when there is no root ``zarr.json``; ``(None, raw)`` when it is not a
        spoofstore store.
    """
    try:
        raw = fs.cat_file(f"{root}/{_ROOT_META}")
    except FileNotFoundError:
        return None, None
    try:
        meta = json.loads(raw).get("attributes", {}).get(METADATA_ATTR)
    except (ValueError, AttributeError):
        return None, raw
    return (meta if isinstance(meta, dict) else None), raw


def default_cache_root() -> Path:
    """``$SPOOFSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/spoofstore`` or ``~/.cache/spoofstore``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spoofstore"


def cache_dir_from_env() -> Path | None:
    """The read cache directory set by ``--cache-dir`` / ``$SPOOFSTORE_CACHE_DIR``, or None."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else None


def _url_key(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "store"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:60]
    return f"{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}-{safe}"


def staging_dir(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local directory where a build to ``url`` is staged (stable, so re-runs resume).

    Examples
    --------
    >>> staging_dir("s3://b/la.zarr", "/tmp/c").parent
    PosixPath('/tmp/c/staging')
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / "staging" / _url_key(url)


# --------------------------------------------------------------------------------------------
# reading through a local cache


def _atomic_fetch(fs: Any, pairs: list[tuple[str, Path]]) -> None:
    """Download ``(remote, local)`` pairs via temporary names (concurrently on async fs)."""
    if not pairs:
        return
    tag = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    tmps = [local.with_name(local.name + tag) for _, local in pairs]
    for tmp in tmps:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.get([r for r, _ in pairs], [os.fspath(t) for t in tmps])
        for tmp, (_, local) in zip(tmps, pairs, strict=True):
            os.replace(tmp, local)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


class StoreMirror:
    """A local copy of a remote Zarr store, filled file by file as readers need it.

    Parameters
    ----------
    url : str
        The remote store.
    cache_dir : str or os.PathLike
        Cache root; the copy lives in ``cache_dir/<key>/`` (one per URL, fingerprint and
        completion time, so a rebuilt store never mixes with an old copy).

    Attributes
    ----------
    fetched_files, fetched_bytes : int
        What this object downloaded (the root ``zarr.json`` included).

    Examples
    --------
    >>> mirror = StoreMirror("s3://bucket/la.zarr", "/scratch/cache")  # doctest: +SKIP
    >>> local = mirror.open()  # metadata + index columns  # doctest: +SKIP
    >>> mirror.ensure_array("train", "mgd")  # the shard files of train/mgd  # doctest: +SKIP
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike):
        self.url = url
        self.cache_dir = Path(cache_dir)
        self.fs, self.root = filesystem(url)
        self.local: Path | None = None
        self.fetched_files = 0
        self.fetched_bytes = 0
        self._listing: dict[str, int] = {}
        self._arrays: set[str] = set()

    def open(self) -> Path:
        """Fetch the root ``zarr.json`` (always), list the store once, copy its small files.

        Returns
        -------
        Path
            The local copy's root (a Zarr store whose frame arrays are filled on demand).

        Raises
        ------
        StoreError
            No Zarr store at the URL.
        """
        meta, raw = read_remote_metadata(self.fs, self.root)
        if raw is None:
            raise StoreError(self.url, "no such feature store (no zarr.json)")
        self.fetched_files += 1
        self.fetched_bytes += len(raw)
        meta = meta or {}
        ident = json.dumps(
            [self.url.rstrip("/"), meta.get("fingerprint"), meta.get("completed")]
        ).encode()
        key = f"{_url_key(self.url)}-{hashlib.sha256(ident).hexdigest()[:12]}"
        local = self.cache_dir / key
        local.mkdir(parents=True, exist_ok=True)
        listing_path = local / _LISTING
        try:
            self._listing = json.loads(listing_path.read_text())
        except (FileNotFoundError, ValueError):
            self._listing = self._list()
            tmp = listing_path.with_name(f"{_LISTING}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._listing, sort_keys=True))
            os.replace(tmp, listing_path)
        self._arrays = {
            feature_path(split, feature)
            for split in meta.get("splits", {})
            for feature in meta.get("features", {})
        }
        self.local = local
        self._fetch(r for r in self._listing if r != _ROOT_META and not self._is_chunk(r))
        root_json = local / _ROOT_META
        if not root_json.is_file() or root_json.read_bytes() != raw:
            tmp = root_json.with_name(f"{_ROOT_META}.{os.getpid()}.tmp")
            tmp.write_bytes(raw)
            os.replace(tmp, root_json)
        return local

    def _list(self) -> dict[str, int]:
        found = self.fs.find(self.root, detail=True)
        out = {}
        prefix = self.root + "/"
        for path, info in found.items():
            path = path.rstrip("/")
            rel = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
            if info.get("type", "file") != "file" or rel.startswith((_STATE_DIR, UPLOAD_MARKER)):
                continue
            out[rel] = int(info.get("size") or 0)
        return out

    def _is_chunk(self, rel: str) -> bool:
        head, sep, _ = rel.partition("/c/")
        return bool(sep) and head in self._arrays

    def _fetch(self, rels: Iterable[str]) -> None:
        """Copy the listed files ``rels`` missing from the cache (a size check, no request)."""
        assert self.local is not None
        missing = []
        for rel in rels:
            target = self.local / rel
            try:
                if target.stat().st_size == self._listing[rel]:
                    continue
            except FileNotFoundError:
                pass
            missing.append(rel)
        _atomic_fetch(self.fs, [(f"{self.root}/{rel}", self.local / rel) for rel in missing])
        self.fetched_files += len(missing)
        self.fetched_bytes += sum(self._listing[rel] for rel in missing)

    def ensure_array(self, split: str, feature: str) -> None:
        """Copy every shard file of ``/<split>/<feature>`` that is not in the cache yet."""
        if self.local is None:
            self.open()
        prefix = feature_path(split, feature) + "/"
        self._fetch(rel for rel in self._listing if rel.startswith(prefix))


# --------------------------------------------------------------------------------------------
# writing: stage locally, upload complete


def _local_files(staging: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(staging):
        dirnames[:] = sorted(d for d in dirnames if d != _STATE_DIR)
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(staging).as_posix()
            if rel != _ROOT_META and not name.endswith((".tmp", ".partial")):
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
    nbytes = (staging / _ROOT_META).stat().st_size
    if rels:
        fs.put([os.fspath(staging / r) for r in rels], [f"{root}/{r}" for r in rels])
        nbytes += sum((staging / r).stat().st_size for r in rels)
    fs.put_file(os.fspath(staging / _ROOT_META), f"{root}/{_ROOT_META}")
    fs.rm_file(f"{root}/{UPLOAD_MARKER}")
    fs.invalidate_cache()
    return nbytes


def _local_root_metadata(staging: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((staging / _ROOT_META).read_text(encoding="utf-8"))
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
        and not (staging / _STATE_DIR).is_dir()
    ):
        # the local build then decides "already complete" vs. "built another way"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / _ROOT_META).write_bytes(raw)
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
