"""The synthetic demo corpus: layout, protocol format, determinism, balance, unseen attacks."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines import demo_corpus as dc

SMALL = dc.CorpusConfig(seed=3, n_train=12, n_dev=6, n_eval=12, max_duration=2.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    dc.generate(root, SMALL, jobs=1)
    return root


def _protocol(root: Path, layout: dc.SplitLayout) -> list[list[str]]:
    text = (root / dc.PROTOCOL_DIR / layout.protocol).read_text()
    return [line.split(" ") for line in text.splitlines()]


def test_layout_and_protocol_format(corpus: Path) -> None:
    assert (corpus / "ASVspoof2019_LA_cm_protocols").is_dir()
    names = {
        "train": "ASVspoof2019.LA.cm.train.trn.txt",
        "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
        "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
    }
    for layout in dc.SPLITS:
        assert layout.protocol == names[layout.name]
        rows = _protocol(corpus, layout)
        assert len(rows) == SMALL.size(layout.name)
        letter = {"train": "T", "dev": "D", "eval": "E"}[layout.name]
        listed = set()
        for row in rows:
            assert len(row) == 5, row
            speaker, utt, dash, system, key = row
            assert re.fullmatch(r"LA_00\d\d", speaker)
            assert re.fullmatch(rf"LA_{letter}_\d{{7}}", utt)
            assert dash == "-"
            assert key in ("bonafide", "spoof")
            assert (system == "-") == (key == "bonafide")
            if key == "spoof":
                assert re.fullmatch(r"A0[1-6]", system)
            listed.add(utt)
        flac_dir = corpus / f"ASVspoof2019_LA_{layout.name}" / "flac"
        on_disk = {p.stem for p in flac_dir.iterdir()}
        assert on_disk == listed  # every listed file exists, nothing else
        assert all(p.suffix == ".flac" for p in flac_dir.iterdir())


def test_audio_format_and_durations(corpus: Path) -> None:
    for layout in dc.SPLITS:
        for path in (corpus / layout.audio_dir).iterdir():
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (
                16000,
                1,
                "FLAC",
                "PCM_16",
            )
            assert SMALL.min_duration - 1e-3 <= info.duration <= SMALL.max_duration + 1e-3


def test_same_seed_gives_byte_identical_files_whatever_the_jobs(
    corpus: Path, tmp_path: Path
) -> None:
    dc.generate(tmp_path, SMALL, jobs=2)
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (corpus / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_another_seed_gives_another_corpus() -> None:
    a = dc.plan_corpus(SMALL)["train"]
    b = dc.plan_corpus(dc.CorpusConfig(**{**vars(SMALL), "seed": 4}))["train"]
    assert [p.utt_id for p in a] != [p.utt_id for p in b]
    x = dc.render_utterance(a[0], SMALL)
    y = dc.render_utterance(b[0], dc.CorpusConfig(**{**vars(SMALL), "seed": 4}))
    assert x.shape != y.shape or not np.array_equal(x, y)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_class_balance_and_even_attacks(fraction: float) -> None:
    config = dc.CorpusConfig(n_train=50, n_dev=11, n_eval=30, bonafide_fraction=fraction)
    for layout in dc.SPLITS:
        plans = dc.plan_corpus(config)[layout.name]
        n = config.size(layout.name)
        counts = Counter(p.system for p in plans)
        assert counts["-"] == round(n * fraction)
        spoof = [counts[a] for a in layout.attacks]
        assert sum(spoof) == n - counts["-"]
        assert max(spoof) - min(spoof) <= 1
        assert len({p.utt_id for p in plans}) == n


def test_eval_attacks_are_unseen_in_training(corpus: Path) -> None:
    systems = {
        layout.name: {row[3] for row in _protocol(corpus, layout)} - {"-"} for layout in dc.SPLITS
    }
    assert systems["train"] == set(dc.TRAIN_ATTACKS)
    assert systems["dev"] <= set(dc.TRAIN_ATTACKS)
    assert systems["eval"] and not systems["eval"] & systems["train"]
    assert set(dc.EVAL_ATTACKS).isdisjoint(dc.TRAIN_ATTACKS)


def test_speakers_are_disjoint_across_splits(corpus: Path) -> None:
    speakers = [{row[0] for row in _protocol(corpus, layout)} for layout in dc.SPLITS]
    assert not speakers[0] & speakers[1]
    assert not speakers[0] & speakers[2]
    assert not speakers[1] & speakers[2]


def test_both_classes_are_loudness_normalised_alike() -> None:
    """Every file's active level lies in the configured range, whatever its class or attack,
    so level does not separate bona fide from spoof."""
    config = dc.CorpusConfig(seed=1, n_train=0, n_dev=0, n_eval=0)
    lo, hi = config.level_dbfs
    levels: dict[str, list[float]] = {}
    for system in ["-", *dc.ATTACKS]:
        for i in range(3):
            plan = dc.UtterancePlan(
                split="train",
                index=i,
                utt_id=f"LA_T_100000{i}",
                speaker=dc.plan_corpus(dc.CorpusConfig(n_train=1))["train"][0].speaker,
                system=system,
                duration=1.5,
                entropy=(7, 0, i),
            )
            x = dc.render_utterance(plan, config).astype(np.float64) / 32768.0
            levels.setdefault(system, []).append(dc.active_level_db(x))
    for system, values in levels.items():
        assert all(lo - 1.0 <= v <= hi + 1.0 for v in values), (system, values)
    bona = np.mean(levels["-"])
    spoof = np.mean([v for s, vs in levels.items() if s != "-" for v in vs])
    assert abs(bona - spoof) < (hi - lo) / 2  # the distributions overlap


def test_attacks_keep_length_and_change_the_signal() -> None:
    speaker = dc.plan_corpus(dc.CorpusConfig(n_train=1))["train"][0].speaker
    speech, tracks = dc.synthesise_speech(speaker, 120, np.random.default_rng(0))
    assert speech.shape == (120 * 128,)
    assert np.isfinite(speech).all() and speech.std() > 0
    for system in dc.ATTACKS:
        out = dc.apply_attack(system, speech, tracks, np.random.default_rng(1))
        assert out.shape == speech.shape, system
        assert np.isfinite(out).all(), system
        assert np.corrcoef(out, speech)[0, 1] < 0.999, system
    with pytest.raises(ValueError, match="unknown attack"):
        dc.apply_attack("A99", speech, tracks, np.random.default_rng(1))


def test_reuse_skips_an_up_to_date_corpus_and_regenerates_a_changed_one(tmp_path: Path) -> None:
    config = dc.CorpusConfig(seed=5, n_train=2, n_dev=1, n_eval=2, max_duration=1.2)
    first = dc.generate(tmp_path, config)
    assert not first.reused
    stamp = (tmp_path / "corpus.json").stat().st_mtime_ns
    again = dc.generate(tmp_path, config)
    assert again.reused and (tmp_path / "corpus.json").stat().st_mtime_ns == stamp
    next(iter((tmp_path / dc.SPLITS[0].audio_dir).iterdir())).unlink()
    assert not dc.generate(tmp_path, config).reused  # a missing file is regenerated
    other = dc.CorpusConfig(seed=6, n_train=2, n_dev=1, n_eval=2, max_duration=1.2)
    assert not dc.generate(tmp_path, other).reused


def test_protocols_parse_with_featstore_manifests(corpus: Path) -> None:
    manifests = pytest.importorskip("featstore.manifests")
    utts = manifests.read_manifest(corpus / dc.PROTOCOL_DIR)
    by_split = Counter(u.split for u in utts)
    assert by_split == {"train": 12, "dev": 6, "eval": 12}
    for u in utts:
        assert u.label == (1 if u.system == "-" else 0)
        assert manifests.find_audio(corpus, u).is_file()


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        dc.CorpusConfig(bonafide_fraction=1.5)
    with pytest.raises(ValueError):
        dc.CorpusConfig(n_train=-1)
    with pytest.raises(ValueError):
        dc.CorpusConfig(min_duration=3.0, max_duration=2.0)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--n-train", "2", "--n-dev", "1", "--n-eval", "2"]
    assert dc.main([*argv, "--max-duration", "1.2", "--jobs", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / dc.PROTOCOL_DIR / "ASVspoof2019.LA.cm.eval.trl.txt").is_file()
    assert dc.main([*argv, "--bonafide-fraction", "2"]) == 2
    assert "error: bonafide_fraction" in capsys.readouterr().err


def test_spoofs_start_from_the_smoother_acoustic_model_voice() -> None:
    speaker = dc.plan_corpus(dc.CorpusConfig(n_train=1))["train"][0].speaker
    voice = dc.acoustic_model_voice(speaker)
    assert voice.jitter < 0.5 * speaker.jitter and voice.shimmer < 0.5 * speaker.shimmer
    assert voice.breathiness < speaker.breathiness
    assert (voice.f0_mean, voice.formant_scale) == (speaker.f0_mean, speaker.formant_scale)


# --- the eval-only channel ----------------------------------------------------------------

CHANNEL = dc.CorpusConfig(
    seed=3, n_train=2, n_dev=2, n_eval=6, max_duration=1.5, eval_channel=dc.DEMO_EVAL_CHANNEL
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.flac"))
        if p.is_file()
    }


def test_eval_channel_changes_eval_only_and_is_byte_identical_whatever_the_jobs(
    tmp_path: Path,
) -> None:
    plain = dc.CorpusConfig(**{**vars(CHANNEL), "eval_channel": ""})
    dc.generate(tmp_path / "plain", plain, jobs=1)
    dc.generate(tmp_path / "a", CHANNEL, jobs=1)
    dc.generate(tmp_path / "b", CHANNEL, jobs=2)
    a, b, base = (_files(tmp_path / n) for n in ("a", "b", "plain"))
    assert a == b  # deterministic per seed, whatever the jobs
    assert a.keys() == base.keys()
    for rel, data in a.items():
        if "_eval/" in rel:
            assert data != base[rel], rel  # every eval utterance, bona fide and spoof
        else:
            assert data == base[rel], rel  # train and dev keep their channel
    other = dc.CorpusConfig(**{**vars(CHANNEL), "seed": 4})
    plan = dc.plan_corpus(other)["eval"][0]
    assert dc.render_utterance(plan, other).shape == (round(plan.duration * 16000),)


def test_eval_channel_keeps_length_and_level() -> None:
    plan = dc.plan_corpus(CHANNEL)["eval"][0]
    plain = dc.CorpusConfig(**{**vars(CHANNEL), "eval_channel": ""})
    x = dc.render_utterance(plan, plain).astype(float)
    y = dc.render_utterance(plan, CHANNEL).astype(float)
    assert x.shape == y.shape
    assert np.corrcoef(x, y)[0, 1] > 0.3  # the same utterance, aligned, through a channel
    assert np.array_equal(y, dc.render_utterance(plan, CHANNEL))


def test_eval_channel_is_recorded_only_when_set() -> None:
    assert "eval_channel" not in dc.CorpusConfig().to_json()  # older corpora are reused
    assert CHANNEL.to_json()["eval_channel"] == dc.DEMO_EVAL_CHANNEL


def test_bad_eval_channel_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        dc.CorpusConfig(eval_channel="no-such-thing")
    assert dc.main(["--out", str(tmp_path), "--eval-channel", "noise(snr_mni=3)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written
