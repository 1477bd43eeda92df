"""Stores on a real S3-protocol server (moto on 127.0.0.1): build, verify, crops, local cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_fixture import assert_stores_equal, make_corpus

import featstore
from featstore.remote import CACHE_ENV
from featstore.store import open_store
from featstore.store.inspect import verify_store

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytestmark = pytest.mark.slow

from s3_fixture import MotoS3  # noqa: E402

SMALL = {"chunk_frames": 32, "shard_frames": 128}
FEATURES = {"mgd": 257, "logmel": 256}


@pytest.fixture(scope="module")
def s3():
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 5, "dev": 3}, seed=11)


@pytest.fixture(scope="module")
def local_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    return out


@pytest.fixture(scope="module")
def s3_store(s3, corpus, tmp_path_factory) -> str:
    """Built with the command line, exactly as a user would."""
    from click.testing import CliRunner

    from featstore.cli import cli

    url = s3.url("stores/la.zarr")
    staging = tmp_path_factory.mktemp("staging")
    args = ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus)]
    args += ["--out", url, "--jobs", "1", "--cache-dir", str(staging), "--quiet"]
    args += ["--config", str(_small_config(staging))]
    result = CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"built {url}" in result.output
    return url


def _small_config(directory: Path) -> Path:
    path = directory / "small.toml"
    path.write_text("chunk_frames = 32\nshard_frames = 128\n")
    return path


def test_build_to_s3_equals_local_and_verifies(s3, s3_store, local_store, capsys):
    from featstore.cli import main

    assert verify_store(s3_store) == []
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", s3_store])
    assert exit_info.value.code == 0 and f"{s3_store}: OK" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["info", s3_store])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith(f"{s3_store}: zarr feature store")
    assert_stores_equal(local_store, s3_store)
    keys = [p for m, p in s3.requests if m == "PUT" and ".spoofstore-upload" not in p]
    assert keys and keys[-1].endswith("/stores/la.zarr/zarr.json")  # root metadata last


def test_rebuild_to_s3_is_a_noop(s3_store, corpus, tmp_path):
    summary = featstore.build(
        corpus / "protocols", corpus, s3_store, jobs=1, quiet=True, cache_dir=tmp_path, **SMALL
    )
    assert summary.noop and summary.out == s3_store


def _crops(store, split: str = "train") -> list[dict]:
    from trainer.data import CropBatches

    ds = CropBatches(store, {"mgd": 256, "logmel": 256}, 24, 4, seed=3, split=split)
    return [ds[(epoch, b)] for epoch in (0, 1) for b in range(ds.num_batches(epoch))]


def test_crops_from_s3_equal_crops_from_the_local_store(s3_store, local_store, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    for remote, local in zip(_crops(s3_store), _crops(str(local_store)), strict=True):
        for key in ("mgd", "logmel", "label", "index"):
            np.testing.assert_array_equal(remote[key].numpy(), local[key].numpy())


def test_cached_reads_fetch_nothing_on_the_second_pass(
    s3, s3_store, local_store, tmp_path, monkeypatch
):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    st = open_store(s3_store)
    assert st.array("train", "mgd").memmapped  # read from the local copy

    before = len(s3.requests)
    first = [st.array(s, f)[:] for s in st.splits for f in FEATURES]
    fetched = s3.requests[before:]
    assert any("/c/" in p for _, p in fetched)  # shard files came over the network once

    before = len(s3.requests)
    second = [st.array(s, f)[:] for s in st.splits for f in FEATURES]
    assert s3.requests[before:] == []  # second pass (next epoch): no request at all
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()

    before = len(s3.requests)  # a fresh open (DataLoader worker, next run): root zarr.json only
    crops = _crops(s3_store)
    after = s3.requests[before:]
    assert [p for _, p in after] == [f"/{s3.bucket}/stores/la.zarr/zarr.json"]
    assert len(crops) > 0
    assert_stores_equal(local_store, s3_store)


def test_trainer_fit_on_the_s3_store_with_a_cache(s3, s3_store, tmp_path, monkeypatch):
    import json

    from trainer.cli import main

    # setenv first so monkeypatch records the variable and removes what `fit --cache-dir`
    # exports into this process at teardown (a plain delenv of an unset name records nothing)
    monkeypatch.setenv(CACHE_ENV, "")
    monkeypatch.delenv(CACHE_ENV)
    (tmp_path / "small.toml").write_text(
        "model_kwargs = { n_bins = 32, embedding_size = 32, eval_window = 32 }\n"
    )
    args = ["fit", s3_store, "--out", str(tmp_path / "run"), "--epochs", "1"]
    args += ["--batch-size", "2", "--crop-frames", "32", "--workers", "0", "--threads", "1"]
    args += ["--device", "cpu", "--quiet", "--config", str(tmp_path / "small.toml")]
    args += ["--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["store"]["path"] == s3_store
    assert list((tmp_path / "cache").glob("*/train/mgd/c/*/0"))  # trained from the local copy
