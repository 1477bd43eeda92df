"""featstore.remote: URL options, the local read cache, staged builds + upload (memory://)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from corpus_fixture import assert_stores_equal, make_corpus

import featstore
from featstore.errors import StoreError
from featstore.remote import (
    CACHE_ENV,
    OPTIONS_ENV,
    UPLOAD_MARKER,
    StoreMirror,
    build_to_url,
    cache_dir_from_env,
    filesystem,
    staging_dir,
    storage_options,
    upload_store,
)
from featstore.store import open_store

pytest.importorskip("fsspec")

SMALL = {"chunk_frames": 32, "shard_frames": 128, "quiet": True, "jobs": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 4, "dev": 2}, seed=7)


@pytest.fixture(scope="module")
def local_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    featstore.build(corpus / "protocols", corpus, out, **SMALL)
    return out


def _url() -> str:
    return f"memory://spoofstore-tests/{uuid.uuid4().hex[:8]}/store.zarr"


def _runner(corpus: Path, **kw):
    def run(path: Path, overwrite: bool):
        return featstore.build(corpus / "protocols", corpus, path, overwrite=overwrite, **kw)

    return run


# --- options --------------------------------------------------------------------------------


def test_storage_options_from_environment(monkeypatch):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert storage_options("s3://b/s.zarr") == {"endpoint_url": "http://127.0.0.1:9000"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert storage_options("s3://b/s.zarr")["endpoint_url"] == "http://127.0.0.1:9001"
    assert storage_options("memory://s.zarr") == {}  # endpoints are for S3 only
    monkeypatch.setenv(OPTIONS_ENV, '{"anon": true, "endpoint_url": "http://x"}')
    assert storage_options("s3://b/s.zarr") == {"anon": True, "endpoint_url": "http://x"}
    assert storage_options("s3://b/s.zarr", {"anon": False})["anon"] is False
    monkeypatch.setenv(OPTIONS_ENV, "[1, 2]")
    with pytest.raises(StoreError, match="must be a JSON object"):
        storage_options("s3://b/s.zarr")
    monkeypatch.setenv(OPTIONS_ENV, "{oops")
    with pytest.raises(StoreError, match="not valid JSON"):
        storage_options("s3://b/s.zarr")


def test_filesystem_root_and_cache_locations(monkeypatch, tmp_path):
    fs, root = filesystem("memory://a/b.zarr/")
    assert root == "/a/b.zarr" and "memory" in fs.protocol
    assert staging_dir("s3://b/x.zarr", tmp_path) == staging_dir("s3://b/x.zarr/", tmp_path)
    assert staging_dir("s3://b/x.zarr", tmp_path) != staging_dir("s3://b/y.zarr", tmp_path)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir_from_env() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir_from_env() == tmp_path
    assert staging_dir("s3://b/x.zarr").parent == tmp_path / "staging"


# --- staged build + upload ---------------------------------------------------------------------


def test_build_to_url_equals_local_build_and_reruns_are_noops(corpus, local_store, tmp_path):
    url = _url()
    summary = build_to_url(url, _runner(corpus, **SMALL), cache_dir=tmp_path)
    assert summary.out == url and summary.written == {"dev": 2, "train": 4}
    assert not staging_dir(url, tmp_path).exists()  # removed after the upload
    fs, root = filesystem(url)
    assert not fs.exists(f"{root}/{UPLOAD_MARKER}")
    assert not any(".spoofstore-build" in p for p in fs.find(root))
    assert_stores_equal(local_store, url)  # read through zarr's FsspecStore
    again = build_to_url(url, _runner(corpus, **SMALL), cache_dir=tmp_path)
    assert again.noop and again.out == url
    assert not staging_dir(url, tmp_path).exists()


def test_build_to_url_refuses_other_config_and_foreign_data(corpus, tmp_path):
    url = _url()
    build_to_url(url, _runner(corpus, **SMALL), cache_dir=tmp_path)
    other = _runner(corpus, features="logmel", **SMALL)
    with pytest.raises(StoreError, match=r"memory://.*different configuration.*--overwrite"):
        build_to_url(url, other, cache_dir=tmp_path)
    assert not staging_dir(url, tmp_path).exists()
    build_to_url(url, other, cache_dir=tmp_path, overwrite=True)
    assert sorted(open_store(url).features) == ["logmel"]

    foreign = _url()
    fs, root = filesystem(foreign)
    fs.pipe_file(f"{root}/notes.txt", b"not a store")
    with pytest.raises(StoreError, match="not a spoofstore feature store"):
        build_to_url(foreign, _runner(corpus, **SMALL), cache_dir=tmp_path)
    assert fs.cat_file(f"{root}/notes.txt") == b"not a store"


def test_interrupted_upload_is_redone(corpus, local_store, tmp_path):
    url = _url()
    fs, root = filesystem(url)
    fs.pipe_file(f"{root}/{UPLOAD_MARKER}", b"{}")  # a crashed upload left this
    fs.pipe_file(f"{root}/train/mgd/c/9/0", b"stale")
    build_to_url(url, _runner(corpus, **SMALL), cache_dir=tmp_path)
    assert not fs.exists(f"{root}/train/mgd/c/9/0")
    assert_stores_equal(local_store, url)


def test_upload_writes_root_metadata_last(local_store, monkeypatch):
    url = _url()
    fs, root = filesystem(url)
    order: list[str] = []
    real_put, real_put_file = fs.put, fs.put_file

    def put(lpaths, rpaths, **kw):
        order.extend(rpaths)
        return real_put(lpaths, rpaths, **kw)

    def put_file(lpath, rpath, **kw):
        order.append(rpath)
        return real_put_file(lpath, rpath, **kw)

    monkeypatch.setattr(fs, "put", put)
    monkeypatch.setattr(fs, "put_file", put_file)
    nbytes = upload_store(local_store, url)
    assert order[-1] == f"{root}/zarr.json" and order.count(f"{root}/zarr.json") == 1
    assert nbytes == sum(p.stat().st_size for p in local_store.rglob("*") if p.is_file())


# --- read cache -------------------------------------------------------------------------------


def test_mirror_fetches_each_file_once(local_store, tmp_path):
    url = _url()
    upload_store(local_store, url)
    mirror = StoreMirror(url, tmp_path / "cache")
    local = mirror.open()
    small = mirror.fetched_files
    assert not (local / "train" / "mgd" / "c").exists()  # shard files wait for first use
    mirror.ensure_array("train", "mgd")
    assert mirror.fetched_files > small
    after = (mirror.fetched_files, mirror.fetched_bytes)
    mirror.ensure_array("train", "mgd")
    assert (mirror.fetched_files, mirror.fetched_bytes) == after  # second pass: nothing
    for split in ("train", "dev"):
        for feature in ("mgd", "logmel"):
            mirror.ensure_array(split, feature)
    assert_stores_equal(local_store, local)
    assert open_store(local).array("train", "mgd").memmapped

    again = StoreMirror(url, tmp_path / "cache")  # a new process / epoch / run
    assert again.open() == local
    for split in ("train", "dev"):
        for feature in ("mgd", "logmel"):
            again.ensure_array(split, feature)
    assert again.fetched_files == 1  # only the root zarr.json, to notice a rebuild


def test_mirror_of_a_rebuilt_store_is_a_fresh_copy(corpus, local_store, tmp_path):
    url = _url()
    upload_store(local_store, url)
    first = StoreMirror(url, tmp_path / "cache").open()
    build_to_url(
        url, _runner(corpus, features="logmel", **SMALL), cache_dir=tmp_path, overwrite=True
    )
    mirror = StoreMirror(url, tmp_path / "cache")
    second = mirror.open()
    assert second != first
    mirror.ensure_array("train", "logmel")
    # the copy holds train/logmel only: opened as a store of its own it is refused as damaged
    with pytest.raises(StoreError, match="dev/logmel/c/0/0 is missing"):
        open_store(second)
    assert sorted(open_store(second, check_files=False).features) == ["logmel"]


def test_mirror_of_a_missing_store_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="no such feature store"):
        StoreMirror(_url(), tmp_path).open()


def test_build_api_takes_urls(corpus, local_store, tmp_path):
    url = _url()  # featstore.build stages and uploads by itself
    summary = featstore.build(corpus / "protocols", corpus, url, cache_dir=tmp_path, **SMALL)
    assert summary.out == url
    assert_stores_equal(local_store, url)
    out = tmp_path / "file.zarr"  # file:// URLs are local paths
    featstore.build(corpus / "protocols", corpus, f"file://{out}", **SMALL)
    assert_stores_equal(local_store, out)
    assert_stores_equal(local_store, f"file://{out}")
    with pytest.raises(StoreError, match="Zarr only"):
        featstore.build(corpus / "protocols", corpus, "memory://x/store.h5", **SMALL)


def test_store_package_never_imports_featstore_remote():
    """Imports run one way: featstore.remote uses featstore.store, never the reverse."""
    import ast
    import importlib.util

    package = Path(importlib.util.find_spec("featstore.store").origin).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n == "featstore.remote" for n in names), module.name


def test_cache_dir_reaches_the_store_as_an_argument(local_store, tmp_path, monkeypatch):
    """$SPOOFSTORE_CACHE_DIR is open_store's default only; nothing below it reads it."""
    from featstore.store import Store

    url = _url()
    upload_store(local_store, url)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert not open_store(url).array("train", "mgd").memmapped  # direct reads
    explicit = open_store(url, cache_dir=tmp_path / "explicit")
    assert explicit.array("train", "mgd").memmapped and explicit.cache_dir is not None
    assert any((tmp_path / "explicit").iterdir())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert open_store(url).array("train", "mgd").memmapped  # the documented default
    assert not Store(url).array("train", "mgd").memmapped  # Store itself: arguments only
