"""Zarr stores at fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...): the one place that opens
fsspec filesystems, and the read side of remote stores.

Reading
    Without a cache, a remote Zarr store is read through zarr's ``FsspecStore`` (byte ranges of
    the shard files, every read goes to the network; :func:`zarr_store`). With a cache
    directory, :class:`StoreMirror` copies the files a reader needs into ``CACHE/<key>/``
    (metadata and index columns when the store opens, the shard files of one frame array on
    its first use) and the store is then read from there exactly like a local one,
    memory-mapped. Later epochs, DataLoader workers, ranks and runs on the same machine fetch
    nothing but the root ``zarr.json`` (one small GET per open, to notice a rebuilt store: the
    key covers the URL, the store's fingerprint and its completion time).
Credentials and endpoints
    Whatever fsspec and s3fs read from the environment and their config files
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/``,
    ``FSSPEC_S3_*``), plus ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (S3-compatible servers:
    MinIO, Ceph, moto) and ``SPOOFSTORE_STORAGE_OPTIONS`` (a JSON object of extra keyword
    arguments for the filesystem) -- see :func:`storage_options`.

Writing a store to a URL (stage locally, then upload) is :mod:`featstore.remote`, built on
:func:`filesystem` from here. fsspec (and s3fs for ``s3://``) are optional: ``pip install
spoofstore[scale]``; they are imported only when a URL is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from featstore.atomic_files import atomic_path, write_bytes_atomic, write_json_atomic
from featstore.errors import SpoofstoreError, StoreError
from featstore.store.layout import BUILD_STATE_DIR, METADATA_ATTR, n_views, view_path

__all__ = [
    "CACHE_ENV",
    "OPTIONS_ENV",
    "UPLOAD_MARKER",
    "StoreMirror",
    "cache_dir_from_env",
    "filesystem",
    "list_files",
    "read_remote_metadata",
    "storage_options",
    "url_key",
    "zarr_store",
]

CACHE_ENV = "SPOOFSTORE_CACHE_DIR"
"""Environment variable naming the local cache directory for remote stores: the default of
:func:`featstore.open_store`'s ``cache_dir`` and of the staging copy of remote builds."""

OPTIONS_ENV = "SPOOFSTORE_STORAGE_OPTIONS"
"""Environment variable holding a JSON object of extra fsspec filesystem keyword arguments."""

UPLOAD_MARKER = ".spoofstore-upload"
"""File written at the root of a remote store while an upload runs (removed at the end)."""

ROOT_METADATA = "zarr.json"
"""The root metadata document of a Zarr store (uploaded last, fetched on every open)."""

_LISTING = ".spoofstore-listing.json"
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
        raw = fs.cat_file(f"{root}/{ROOT_METADATA}")
    except FileNotFoundError:
        return None, None
    try:
        meta = json.loads(raw).get("attributes", {}).get(METADATA_ATTR)
    except (ValueError, AttributeError):
        return None, raw
    return (meta if isinstance(meta, dict) else None), raw


def cache_dir_from_env() -> Path | None:
    """``$SPOOFSTORE_CACHE_DIR`` (unset or empty: None), the default read cache of a remote store.

    Read by :func:`featstore.open_store` only; everything below it takes the directory as an
    argument.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else None


def url_key(url: str) -> str:
    """A short, file-name-safe key unique to ``url`` (a trailing slash does not count).

    Examples
    --------
    >>> url_key("s3://b/la.zarr") == url_key("s3://b/la.zarr/")
    True
    """
    name = url.rstrip("/").rsplit("/", 1)[-1] or "store"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:60]
    return f"{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}-{safe}"


def list_files(fs: Any, root: str) -> dict[str, int]:
    """Every file of the store at ``root`` (one listing): relative path -> size in bytes.

    The build state and the upload marker are left out.
    """
    found = fs.find(root, detail=True)
    out = {}
    prefix = root + "/"
    for path, info in found.items():
        path = path.rstrip("/")
        rel = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
        build_state = rel.startswith((BUILD_STATE_DIR, UPLOAD_MARKER))
        if info.get("type", "file") != "file" or build_state:
            continue
        out[rel] = int(info.get("size") or 0)
    return out


# --------------------------------------------------------------------------------------------
# reading through a local cache


def _atomic_fetch(fs: Any, pairs: list[tuple[str, Path]]) -> None:
    """Download ``(remote, local)`` pairs via temporary names (concurrently on async fs).

    A cache needs no durability, so nothing is ``fsync``-ed.
    """
    if not pairs:
        return
    with contextlib.ExitStack() as stack:
        tmps = []
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(stack.enter_context(atomic_path(local, fsync=False)))
        fs.get([r for r, _ in pairs], [os.fspath(t) for t in tmps])


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
        key = f"{url_key(self.url)}-{hashlib.sha256(ident).hexdigest()[:12]}"
        local = self.cache_dir / key
        local.mkdir(parents=True, exist_ok=True)
        listing_path = local / _LISTING
        try:
            self._listing = json.loads(listing_path.read_text())
        except (FileNotFoundError, ValueError):
            self._listing = self._list()
            write_json_atomic(listing_path, self._listing, fsync=False)
        self._arrays = {
            view_path(split, feature, view)
            for split, rec in meta.get("splits", {}).items()
            for feature in meta.get("features", {})
            for view in range(n_views(rec) if isinstance(rec, dict) else 1)
        }
        self.local = local
        self._fetch(r for r in self._listing if r != ROOT_METADATA and not self._is_chunk(r))
        root_json = local / ROOT_METADATA
        if not root_json.is_file() or root_json.read_bytes() != raw:
            write_bytes_atomic(root_json, raw, fsync=False)
        return local

    def _list(self) -> dict[str, int]:
        return list_files(self.fs, self.root)

    @property
    def listing(self) -> dict[str, int]:
        """Every file of the remote store (relative path -> bytes), as listed once on open."""
        if self.local is None:
            self.open()
        return dict(self._listing)

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

    def ensure_array(self, split: str, feature: str, view: int = 0) -> None:
        """Copy every shard file of view ``view`` of ``/<split>/<feature>`` not cached yet."""
        if self.local is None:
            self.open()
        prefix = view_path(split, feature, view) + "/"
        self._fetch(rel for rel in self._listing if rel.startswith(prefix))
