"""Exact batching, eval modes and bounded memory of ``trainer score``; ``trainer predict``."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_fixture import make_corpus

import featstore
import trainer
from featstore.errors import ResourceError, StoreError
from trainer import checkpoint
from trainer.cli import main
from trainer.config import FitConfig
from trainer.data import FeatureNormalizer
from trainer.errors import ScoreFileError
from trainer.runs import ModelRecord
from trainer.score_batches import (
    DEFAULT_MAX_FRAMES,
    Segments,
    plan_batches,
    plan_segments,
    used_frames,
)
from trainer.scorefiles import read_cm_scores

MODELS = {
    # whole utterances through the recurrence over 32-frame windows (step 10)
    "grcnn-logmel": {"n_bins": 32, "embedding_size": 16},
    # whole utterances; 'same' convolutions see every frame
    "lcnn": {"n_bins": 20, "train_frames": 24},
}


def _make_run(root: Path, store: Path, name: str, kwargs: dict) -> Path:
    """A run directory with untrained weights (seed 0) and the record ``trainer fit`` writes."""
    torch.manual_seed(0)
    net = trainer.build_model(name, **kwargs)
    st = featstore.open_store(store)
    run = root / "runs" / name
    run.mkdir(parents=True)
    info = {
        "fit": asdict(FitConfig(store=str(store), model=name, out=str(run), device="cpu")),
        "store": {"path": str(store), "fingerprint": st.fingerprint, "format": st.format},
        "model": ModelRecord.of(name, kwargs, net).to_dict(),
        "runtime": {"device": "cpu"},
    }
    state = {"format": 1, "model": net.state_dict(), "epoch": 0, "config": info}
    checkpoint.save_checkpoint(run / "best.pt", state)
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store of utterances of 0.1-1.5 s (4 to ~150 frames) and one untrained run per model."""
    root = tmp_path_factory.mktemp("batches")
    corpus = make_corpus(root / "corpus", {"train": 6, "eval": 24}, (0.1, 1.5), seed=3)
    store = root / "store.zarr"
    featstore.build(
        corpus / "protocols", corpus, store, features=["logmel", "lfcc"], jobs=1, quiet=True,
        fsync=False,
    )  # fmt: skip
    runs = {name: _make_run(root, store, name, kw) for name, kw in MODELS.items()}
    return {"root": root, "corpus": corpus, "store": store, "runs": runs}


def _one_at_a_time(world: dict, name: str, segment=lambda x: [x]) -> dict[str, float]:
    """Reference: each utterance (or each of its segments) alone through the model."""
    state = checkpoint.load_checkpoint(world["runs"][name] / "best.pt")
    net = trainer.build_model(name, **MODELS[name]).eval()
    net.load_state_dict(state["model"])
    (feature,) = net.features
    bins = net.n_bins[feature]
    st = featstore.open_store(world["store"])
    norm = FeatureNormalizer.from_store(st, {feature: bins})
    out = {}
    for u in st.index("eval")["utt_id"]:
        x = torch.from_numpy(st.read("eval", feature, str(u))[:, :bins])
        with torch.no_grad():
            logits = torch.cat([net(**norm({feature: s[None]})) for s in segment(x)])
        out[str(u)] = float((logits[:, 1] - logits[:, 0]).double().mean())
    return out


def _scores(path: Path) -> dict[str, float]:
    cm = read_cm_scores(path)
    return dict(zip(cm.utt_ids, cm.scores, strict=True))


# --- exact batching ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_batched_scores_equal_one_at_a_time_scores(world, tmp_path, name):
    out = trainer.score(
        run=world["runs"][name], out=tmp_path / "s.txt", batch_size=16, device="cpu",
        progress=False,
    )  # fmt: skip
    got, want = _scores(out), _one_at_a_time(world, name)
    assert got.keys() == want.keys()
    for u in want:
        assert got[u] == pytest.approx(want[u], abs=1e-5), u
    info = json.loads((tmp_path / "s.txt.json").read_text())
    assert info["eval_mode"] == "full" and info["windowed"] == []
    assert info["max_frames"] == DEFAULT_MAX_FRAMES
    if name == "grcnn-logmel":  # 24 utterances of 4-150 frames: ~13 window counts
        assert info["n_batches"] < 20


def test_grcnn_batches_utterances_by_window_count():
    net = trainer.build_model("grcnn-logmel", n_bins=32, embedding_size=16)
    n = np.array([5, 31, 32, 41, 42, 51, 52, 300, 301, 309])
    assert used_frames(net, n).tolist() == [32, 32, 32, 32, 42, 42, 52, 292, 292, 302]
    batches = plan_batches(plan_segments(n, net), 16, 10**6)
    assert [(b[0].tolist(), b[2]) for b in batches] == [
        ([0, 1, 2, 3], 32), ([4, 5], 42), ([6], 52), ([7, 8], 292), ([9], 302),
    ]  # fmt: skip


def test_other_models_batch_only_equal_lengths_after_wrapping():
    net = trainer.build_model("lcnn", n_bins=20, train_frames=24)
    n = np.array([3, 15, 16, 17, 17])  # shorter than 16 frames: wrapped to 16 by the model
    assert used_frames(net, n).tolist() == [16, 16, 16, 17, 17]
    batches = plan_batches(plan_segments(n, net), 16, 10**6)
    assert [(b[0].tolist(), b[2]) for b in batches] == [([0, 1, 2], 16), ([3, 4], 17)]


def test_a_batch_holds_at_most_batch_size_segments_and_the_frame_budget():
    seg = Segments(np.arange(10), np.zeros(10, np.int64), np.full(10, 100), np.zeros(10, bool))
    sizes = [b[0].size for b in plan_batches(seg, 4, 250)]
    assert sizes == [2] * 5
    assert [b[0].size for b in plan_batches(seg, 4, 10**6)] == [4, 4, 2]
    assert [b[0].size for b in plan_batches(seg, 4, 50)] == [1] * 10  # at least one


# --- bounded memory and eval modes ------------------------------------------------------------


def test_long_utterances_are_the_mean_of_max_frames_windows(world, tmp_path):
    m = 40

    def windows(x):
        n = x.shape[0]
        if n <= m:
            return [x]
        starts = sorted({min(s, n - m) for s in range(0, n, m)})
        return [x[s : s + m] for s in starts]

    out = trainer.score(
        run=world["runs"]["lcnn"], out=tmp_path / "s.txt", max_frames=m, progress=False
    )
    got, want = _scores(out), _one_at_a_time(world, "lcnn", windows)
    for u in want:
        assert got[u] == pytest.approx(want[u], abs=1e-5), u
    st = featstore.open_store(world["store"])
    index = st.index("eval")
    _, n_frames = st.frames("eval", "lfcc")
    long = [str(u) for u, n in zip(index["utt_id"], n_frames, strict=True) if n > m]
    assert long and len(long) < len(index["utt_id"])
    info = json.loads((tmp_path / "s.txt.json").read_text())
    assert info["windowed"] == long and info["max_frames"] == m


def test_fixed_mode_scores_the_first_4_s_tiled(world, tmp_path):
    out = trainer.score(
        run=world["runs"]["grcnn-logmel"], out=tmp_path / "s.txt", eval_mode="fixed",
        progress=False,
    )  # fmt: skip
    got = _scores(out)
    want = _one_at_a_time(world, "grcnn-logmel", lambda x: [x[torch.arange(400) % x.shape[0]]])
    for u in want:
        assert got[u] == pytest.approx(want[u], abs=1e-5), u
    info = json.loads((tmp_path / "s.txt.json").read_text())
    assert info["eval_mode"] == "fixed" and info["fixed_frames"] == 400  # 10 ms hop


def test_plan_settings_are_checked(world, tmp_path):
    from trainer.errors import TrainingError

    with pytest.raises(TrainingError, match="eval_mode"):
        trainer.score(run=world["runs"]["lcnn"], eval_mode="half", progress=False)
    with pytest.raises(TrainingError, match="max_frames"):
        trainer.score(run=world["runs"]["lcnn"], max_frames=0, progress=False)


def test_cli_defaults_match_the_api():
    from trainer.cli import cli

    for command in ("score", "predict"):
        params = {p.name: p for p in cli.commands[command].params}
        assert params["max_frames"].default == DEFAULT_MAX_FRAMES


def test_write_faults_of_the_environment_exit_1_others_2(tmp_path):
    from trainer.scoring import write_error

    assert isinstance(write_error(tmp_path, OSError(errno.ENOSPC, "full")), ResourceError)
    assert isinstance(write_error(tmp_path, OSError(errno.EACCES, "denied")), ResourceError)
    assert isinstance(write_error(tmp_path, OSError(errno.ENOENT, "no dir")), ScoreFileError)


# --- trainer predict --------------------------------------------------------------------------


def _eval_files(world: dict) -> list[str]:
    st = featstore.open_store(world["store"])
    return [str(world["corpus"] / "flac" / f"{u}.flac") for u in st.index("eval")["utt_id"]]


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_equals_score_on_the_same_audio(world, tmp_path, name):
    from trainer.predict import predict

    run = world["runs"][name]
    scored = _scores(trainer.score(run=run, out=tmp_path / "s.txt", progress=False))
    files = _eval_files(world)
    result = predict(files, run=run, device="cpu", progress=False)
    assert result.failures == []
    assert [p.file for p in result.predictions] == files
    for p in result.predictions:
        assert p.score == pytest.approx(scored[Path(p.file).stem], abs=1e-5), p.file


def test_predict_cli_reports_unreadable_files_and_scores_the_others(world, tmp_path, capsys):
    files = _eval_files(world)[:3]
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    argv = ["predict", "--run", str(world["runs"]["lcnn"]), "--quiet", *files[:2], str(bad)]
    argv += [str(silent), str(tmp_path / "missing.flac"), files[2]]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 1
    lines = out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == files
    for ln in lines:
        _, score, label = ln.split("\t")
        assert label == ("bonafide" if float(score) >= -np.log(1.9) else "spoof")
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 3
    assert str(bad) in errors[1] and "silent" in errors[2] and "missing.flac" in errors[0]
    assert "3 of 6 input(s) could not be scored" in err


def test_predict_threshold_directories_and_out_file(world, tmp_path, capsys):
    out = tmp_path / "p.tsv"
    argv = ["predict", "--run", str(world["runs"]["lcnn"]), "--quiet", "--threshold", "1e9"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(out), str(world["corpus"] / "flac")])
    assert exc.value.code == 0, capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert len(lines) == 30 and all(ln.endswith("\tspoof") for ln in lines)
    assert [ln.split("\t")[0] for ln in lines] == sorted(ln.split("\t")[0] for ln in lines)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--format", "jsonl", _eval_files(world)[0]])
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "spoof" and record["threshold"] == 1e9
    assert exc.value.code == 0


def test_bayes_threshold_is_actdcfs():
    from trainer.metrics import act_dcf
    from trainer.predict import bayes_threshold

    t = bayes_threshold()
    assert t == pytest.approx(-np.log(0.95 / 0.5))
    # a bona fide trial just at the threshold is accepted, just below it missed
    assert act_dcf([t, 5.0], [-9.0]) == 0.0 and act_dcf([t - 1e-9, 5.0], [-9.0]) > 0


def test_predict_refuses_feature_parameters_the_registry_describes_differently():
    from trainer.predict import feature_parameters

    record = featstore.FEATURES["logmel"].describe()
    good = SimpleNamespace(path="s.zarr", features={"logmel": record})
    assert feature_parameters(good, ["logmel"])["logmel"]["hop_length"] == record["hop_length"]
    bad = SimpleNamespace(path="s.zarr", features={"logmel": {**record, "n_bins": 7}})
    with pytest.raises(StoreError, match="registry's kernel now describes"):
        feature_parameters(bad, ["logmel"])
