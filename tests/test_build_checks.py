"""featstore build refuses or reports what used to pass without a word.

Bad feature parameters and configuration values fail before extraction; empty protocols
fail; ids in two splits and clipped audio are reported; the summary counts bona fide and
spoof per split and lists every quarantined utterance with ``--all``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixture import add_utterance, make_corpus, protocol_path, speechlike

import featstore
from featstore.build import BuildConfig
from featstore.cli import main
from featstore.errors import ConfigError, ManifestError
from featstore.store import open_store

build_module = importlib.import_module("featstore.build")  # featstore.build is the function

SMALL = {"chunk_frames": 32, "shard_frames": 128, "fsync": False}
KW = {"jobs": 1, "quiet": True, **SMALL}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 3, "dev": 4}, seed=7)


# -- feature parameters and configuration values ------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "params", "words"),
    [
        ("logmel", {"n_mels": 0}, "n_mels"),
        ("mgd", {"win_length": 0}, "win_length"),
        ("mgd", {"hop_length": -160}, "hop_length"),
        ("lfcc", {"n_ceps": 0}, "n_ceps"),
    ],
)
def test_bad_feature_parameters_fail_before_extraction(
    corpus: Path, tmp_path: Path, feature: str, params: dict, words: str
) -> None:
    out = tmp_path / "s.zarr"
    with pytest.raises(ConfigError, match=f"{feature}: .*{words}"):
        featstore.build(
            corpus / "protocols", corpus, out, features=feature,
            feature_params={feature: params}, **KW,
        )  # fmt: skip
    assert not out.exists()  # nothing extracted, nothing quarantined


def test_a_kernel_config_error_in_a_worker_is_not_quarantined(
    corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(build_module, "check_features", lambda cfg: None)  # as if skipped
    with pytest.raises(ConfigError, match="win_length and hop_length must be positive"):
        featstore.build(
            corpus / "protocols", corpus, tmp_path / "s.zarr", features="mgd",
            feature_params={"mgd": {"win_length": 0}}, **KW,
        )  # fmt: skip


def test_bad_feature_parameter_on_the_command_line_is_one_error_line(
    corpus: Path, tmp_path: Path, capsys
) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("jobs = 1\n\n[features.mgd]\nwin_length = 0\n")
    code, _, err = run(
        ["build", "--manifest", str(corpus / "protocols"), "--audio-root", str(corpus),
         "--out", str(tmp_path / "s.zarr"), "--config", str(toml), "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {toml}: mgd: ") and "win_length" in err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("jobs = 0\n", "jobs must be >= 1"),
        ("jobs = -3\n", "jobs must be >= 1"),
        ("jobs = 2.5\n", "jobs must be an integer"),
        ('jobs = "2"\n', "jobs must be an integer"),
        ("batch_size = 0\n", "batch_size must be >= 1"),
        ("chunk_frames = -32\n", "chunk_frames must be >= 1"),
        ("shard_frames = 0\n", "shard_frames must be >= 1"),
        ("max_quarantine = -0.5\n", "max_quarantine must be a fraction"),
        ('strict = "yes"\n', "strict must be true or false"),
        ("[features.logmel]\nn_mels = -40\n", "logmel: n_mels=-40 must be >= 1"),
        ("[features.mgd]\nwin_length = 0\n", "mgd: win_length=0"),
        ("features = 3\n", "features must be a list"),
    ],
)
def test_bad_values_in_a_toml_file_name_the_file_and_field(
    tmp_path: Path, text: str, words: str
) -> None:
    toml = tmp_path / "featstore.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as exc:
        BuildConfig.from_toml(toml)
    assert str(exc.value).startswith(f"{toml}: ") and words in str(exc.value)


def test_build_table_keeps_the_feature_tables(tmp_path: Path) -> None:
    toml = tmp_path / "featstore.toml"
    toml.write_text("[build]\njobs = 1\n\n[features.mgd]\nrho = 0.2\n\n[features.logmel]\n")
    cfg = BuildConfig.from_toml(toml)  # the features used to be dropped without a word
    assert cfg.jobs == 1 and cfg.features == ("mgd", "logmel")
    assert cfg.feature_params == {"mgd": {"rho": 0.2}, "logmel": {}}
    toml.write_text('features = ["logmel"]\n\n[feature_params.logmel]\nn_mels = 40\n')
    cfg = BuildConfig.from_toml(toml)
    assert cfg.features == ("logmel",) and cfg.feature_params == {"logmel": {"n_mels": 40}}
    toml.write_text("jobs = 1\n\n[build]\njobs = 2\n")
    with pytest.raises(ConfigError, match=r"jobs set both in \[build\] and at the top level"):
        BuildConfig.from_toml(toml)


def test_every_example_config_parses() -> None:
    conf = Path(__file__).resolve().parent.parent / "pipelines" / "conf"
    files = sorted(f for f in conf.glob("*.toml") if not f.name.endswith(".fit.toml"))
    assert {f.name for f in files} >= {
        "asvspoof2019_la.toml",
        "asvspoof2021_la_df.toml",
        "asvspoof2017.toml",
        "demo.toml",
    }
    recipe_features = ("mgd", "logmel", "fbank", "lfcc")  # features_for grcnn vgg10 lcnn
    for f in files:
        cfg = BuildConfig.from_toml(f)
        # parameters written out equal the defaults: the store of the recipe's own command
        plain = BuildConfig(features=cfg.features)
        assert cfg.fingerprint("zarr") == plain.fingerprint("zarr"), f
        if f.name.startswith("asvspoof"):
            assert cfg.features == recipe_features, f


def test_the_readme_config_example_parses(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## featstore build --config", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    toml = tmp_path / "readme.toml"
    toml.write_text(example)
    cfg = BuildConfig.from_toml(toml)
    assert cfg.features == ("mgd", "logmel") and cfg.feature_params["mgd"] == {"rho": 0.2}
    assert (cfg.jobs, cfg.max_quarantine, cfg.format) == (4, 0.5, "zarr")


# -- protocols ----------------------------------------------------------------------------------


def test_an_empty_protocol_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "c", {"train": 2, "dev": 2})
    empty = protocol_path(root, "dev")
    empty.write_text("")
    with pytest.raises(ManifestError, match=f"{empty}: no trials"):
        featstore.build(root / "protocols", root, tmp_path / "a.zarr", **KW)
    with pytest.raises(ManifestError, match=f"{empty}: no trials"):
        featstore.build(empty, root, tmp_path / "b.zarr", **KW)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_a_missing_audio_root_fails_at_once(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.zarr"
    code, _, err = run(
        ["build", "--manifest", str(corpus / "protocols"), "--audio-root",
         str(tmp_path / "nope"), "--out", str(out), "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert err == f"error: {tmp_path / 'nope'}: audio root does not exist; check --audio-root\n"
    assert not out.exists()


def test_an_id_in_two_splits_is_a_warning(tmp_path: Path, capsys) -> None:
    root = make_corpus(tmp_path / "c", {"train": 2, "dev": 2})
    add_utterance(root, "train", "LA_D_1000001")  # the dev recording, also in train
    summary = featstore.build(root / "protocols", root, tmp_path / "s.zarr", **KW)
    assert summary.written == {"dev": 2, "train": 3}
    (warning,) = summary.warnings
    assert "1 utterance id(s) are in both split dev and split train" in warning
    assert warning.endswith(": LA_D_1000001")
    code, _, err = run(
        ["build", "--manifest", str(root / "protocols"), "--audio-root", str(root),
         "--out", str(tmp_path / "t.zarr"), "--jobs", "1", "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0 and f"warning: {warning}" in err


def test_clipped_audio_is_noted_and_warned_about(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 2})
    x = speechlike(np.random.default_rng(0), 1.0)
    x[::20] = 1.0  # 5 % of the samples at full scale
    sf.write(add_utterance(root, "dev", "LA_D_HOT"), x, 16000, subtype="PCM_16")
    out = tmp_path / "s.zarr"
    summary = featstore.build(root / "protocols", root, out, **KW)
    (warning,) = summary.warnings
    assert warning.startswith("1 utterance(s) of split dev are clipped (more than 1% of their")
    assert warning.endswith(": LA_D_HOT")
    ix = open_store(out).index("dev")
    notes = dict(zip(ix["utt_id"], ix["notes"], strict=True))
    assert notes["LA_D_HOT"] == "clipped: 800 of 16000 samples (5.0 %) at full scale"
    assert notes["LA_D_1000000"] == ""


# -- the report -------------------------------------------------------------------------------


def test_summary_counts_labels_and_all_lists_every_quarantined(tmp_path: Path, capsys) -> None:
    root = make_corpus(tmp_path / "c", {"dev": 30})  # 10 bona fide, 20 spoof
    for i in range(25):
        add_utterance(root, "dev", f"LA_D_GONE{i:02d}", key="spoof")
    args = ["build", "--manifest", str(root / "protocols"), "--audio-root", str(root)]
    args += ["--out", str(tmp_path / "s.zarr"), "--jobs", "1", "--quiet"]
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "dev: 30 written, 25 quarantined; in the store: 10 bona fide, 20 spoof" in out
    assert "25 utterance(s) quarantined:" in out and "... and 5 more (--all lists them)" in out
    assert out.count("dev/LA_D_GONE") == 20
    code, out, _ = run([*args, "--all"], capsys)  # the complete store: nothing to do, all listed
    assert code == 0 and "nothing to do" in out
    assert out.count("dev/LA_D_GONE") == 25 and "more" not in out
