"""Faults of the environment during a build: one ``error:`` line and exit code 1, never a
traceback; a re-run after the cause is gone resumes and completes the store.

Disk full is simulated by injecting ``OSError(ENOSPC)`` at each write of the pipeline (Zarr
shard, index, journal; HDF5 staged shard, journal, assembly of the final file); missing S3
credentials with an endpoint on a closed loopback port and no credentials anywhere.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from corpus_fixture import assert_stores_equal, make_corpus

import featstore
from featstore.cli import main
from featstore.errors import ResourceError
from featstore.store.hdf5_backend import Hdf5Writer, RawSink
from featstore.store.journal import SplitJournal
from featstore.store.zarr_backend import ZarrSink, ZarrWriter

SMALL = {"chunk_frames": 32, "shard_frames": 128, "fsync": False}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 4, "dev": 3}, seed=12)


def _disk_full(monkeypatch, cls, name: str, h5py_style: bool = False) -> None:
    def full(self, *args, **kwargs):
        if h5py_style:  # h5py raises OSError without errno, the reason in the text
            raise OSError(
                "[Errno 28] Can't synchronously write data (file write failed: errno = 28, "
                "error message = 'No space left on device')"
            )
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cls, name, full)


WRITES = [
    (".zarr", ZarrSink, "write", False),  # a shard
    (".zarr", ZarrWriter, "write_index", False),
    (".zarr", SplitJournal, "commit", False),
    (".h5", RawSink, "write", False),
    (".h5", SplitJournal, "commit", False),
    (".h5", Hdf5Writer, "_copy_array", True),  # assembling the final file
]


@pytest.mark.parametrize(("suffix", "cls", "name", "h5py_style"), WRITES)
def test_disk_full_is_one_error_line_and_a_rerun_resumes(
    corpus: Path, tmp_path: Path, monkeypatch, capsys, suffix, cls, name, h5py_style
) -> None:
    out = tmp_path / f"s{suffix}"
    kw = {"jobs": 1, "quiet": True, **SMALL}
    with monkeypatch.context() as m:
        _disk_full(m, cls, name, h5py_style)
        with pytest.raises(ResourceError, match="no space left on device while building"):
            featstore.build(corpus / "protocols", corpus, out, **kw)
        argv = ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus)]
        toml = tmp_path / "small.toml"
        toml.write_text("chunk_frames = 32\nshard_frames = 128\nfsync = false\n")
        argv += ["--out", str(out), "--jobs", "1", "--quiet", "--config", str(toml)]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        _, err = capsys.readouterr()
        assert exc.value.code == 1
        assert err.startswith("error: ") and len(err.splitlines()) == 1
        assert "no space left on device" in err and "re-run the same command" in err
    summary = featstore.build(corpus / "protocols", corpus, out, **kw)  # space again
    assert not summary.noop
    clean = tmp_path / f"clean{suffix}"
    featstore.build(corpus / "protocols", corpus, clean, **kw)
    assert_stores_equal(clean, out)


def test_other_os_errors_keep_their_traceback(corpus: Path, tmp_path: Path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")  # not the environment's "full": a bug?

    monkeypatch.setattr(ZarrSink, "write", broken)
    with pytest.raises(OSError, match="Input/output error") as exc:
        featstore.build(corpus / "protocols", corpus, tmp_path / "s.zarr", jobs=1, quiet=True)
    assert not isinstance(exc.value, ResourceError)


def test_s3_out_without_credentials_exits_1(corpus: Path, tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("s3fs")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SPOOFSTORE_STORAGE_OPTIONS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # closed port, no network
    monkeypatch.setenv("SPOOFSTORE_CACHE_DIR", str(tmp_path / "cache"))
    url = "s3://no-such-bucket/s.zarr"
    argv = ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus)]
    argv += ["--out", url, "--jobs", "1", "--quiet"]
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capsys.readouterr()
    assert time.monotonic() - t0 < 60
    assert exc.value.code == 1
    assert err.startswith(f"error: cannot reach {url}: no credentials")
    assert len(err.splitlines()) == 1
