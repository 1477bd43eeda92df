"""``featstore build | info | verify`` on the command line: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixture import add_utterance, make_corpus

from featstore.cli import main
from featstore.store import open_store


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 4, "dev": 3}, seed=4)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    toml = tmp_path_factory.mktemp("cfg") / "featstore.toml"
    toml.write_text("jobs = 1\nchunk_frames = 32\nshard_frames = 128\nfsync = false\n")
    return toml


def build_args(corpus: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--manifest",
        str(corpus / "protocols"),
        "--audio-root",
        str(corpus),
        "--out",
        str(out),
        "--config",
        str(config),
        "--quiet",
        *extra,
    ]


def test_build_info_verify(corpus: Path, config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.zarr"
    code, stdout, _ = run(build_args(corpus, out, config, "--features", "mgd,logmel"), capsys)
    assert code == 0
    assert "built" in stdout and "dev: 3 written" in stdout and "train: 4 written" in stdout
    code, stdout, _ = run(build_args(corpus, out, config, "--features", "mgd,logmel"), capsys)
    assert code == 0 and "nothing to do" in stdout
    code, stdout, _ = run(["info", str(out)], capsys)
    assert code == 0
    for word in ("zarr feature store", "mgd", "logmel", "257 bins", "train", "MB on disk"):
        assert word in stdout
    code, stdout, _ = run(["verify", str(out)], capsys)
    assert code == 0 and "OK" in stdout


def test_other_config_refused_then_overwrite(
    corpus: Path, config: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "s.h5"
    assert run(build_args(corpus, out, config, "--features", "logmel"), capsys)[0] == 0
    assert open_store(out).format == "hdf5"
    code, _, err = run(build_args(corpus, out, config, "--features", "mgd"), capsys)
    assert code == 2
    assert err.startswith("error: ") and "--overwrite" in err and len(err.splitlines()) == 1
    code, _, _ = run(build_args(corpus, out, config, "--features", "mgd", "--overwrite"), capsys)
    assert code == 0 and list(open_store(out).features) == ["mgd"]


def test_format_option(corpus: Path, config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    code, _, _ = run(
        build_args(corpus, out, config, "--features", "logmel", "--format", "hdf5"), capsys
    )
    assert code == 0 and out.is_file() and open_store(out).format == "hdf5"


def test_verify_corrupted_store_exits_1(corpus: Path, config: Path, tmp_path: Path, capsys):
    out = tmp_path / "s.zarr"
    assert run(build_args(corpus, out, config, "--features", "logmel"), capsys)[0] == 0
    shard = out / "dev" / "logmel" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[40:44] = np.array([np.inf], dtype="<f4").tobytes()
    shard.write_bytes(bytes(data))
    code, _, err = run(["verify", str(out)], capsys)
    assert code == 1
    assert "problem(s)" in err and "dev/logmel: checksum mismatch: LA_D_1000000" in err
    assert "NaN/inf" in err


def test_bad_audio_quarantined_or_strict(config: Path, tmp_path: Path, capsys) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 2})
    add_utterance(root, "dev", "LA_D_GONE")
    sf.write(add_utterance(root, "dev", "LA_D_OK"), np.zeros(8000) + 0.1, 16000)
    code, stdout, _ = run(build_args(root, tmp_path / "a.zarr", config), capsys)
    assert code == 0
    assert "1 utterance(s) quarantined" in stdout and "dev/LA_D_GONE: " in stdout
    code, stdout, _ = run(["info", str(tmp_path / "a.zarr")], capsys)
    assert "quarantined: 1" in stdout and "LA_D_GONE" in stdout
    code, _, err = run(build_args(root, tmp_path / "b.zarr", config, "--strict"), capsys)
    assert code == 2 and err.startswith("error: ") and "LA_D_GONE" in err


def test_malformed_protocol_line_exit_2(config: Path, tmp_path: Path, capsys) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 2})
    proto = root / "protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    proto.write_text(proto.read_text() + "LA_0001 LA_D_X\n")
    code, _, err = run(build_args(root, tmp_path / "s.zarr", config), capsys)
    assert code == 2
    assert err.startswith(f"error: {proto}:3: ")


def test_info_and_verify_of_missing_store(tmp_path: Path, capsys) -> None:
    code, _, err = run(["info", str(tmp_path / "nope.zarr")], capsys)
    assert code == 2 and "no such feature store" in err
    code, _, err = run(["verify", str(tmp_path / "nope.zarr")], capsys)
    assert code == 1 and "no such feature store" in err
