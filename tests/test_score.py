"""trainer.score / ``trainer score``: defaults, layouts read back by metrics, determinism,
normalisation and windowing as in training, provenance sidecar, typed errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_fixture import make_corpus, protocol_path, utt_id
from hypothesis import given, settings
from hypothesis import strategies as st

import featstore
import trainer
from trainer import checkpoint
from trainer.cli import main
from trainer.data import FeatureNormalizer
from trainer.errors import TrainingError
from trainer.runs import latest_run
from trainer.scorefiles import read_cm_scores
from trainer.scoring import write_score_file

pytestmark = pytest.mark.filterwarnings("ignore:.*were quarantined:UserWarning")

N_EVAL = 8
SHORT = "LA_E_SHORT01"  # 10 ms of audio: quarantined by the build (shorter than a frame)
FEATURES = ("logmel", "lfcc")
FAST = dict(epochs=1, batch_size=4, workers=0, threads=1, progress=False, lr=1e-3, warmup=0.0)
RUNS = {
    # whole utterances (eval_window None)
    "lcnn": dict(model="lcnn", model_kwargs={"n_bins": 20, "train_frames": 24}),
    # fixed windows of 32 frames every 16, averaged
    "grcnn-logmel": dict(
        model="grcnn-logmel",
        crop_frames=32,
        model_kwargs={"n_bins": 32, "embedding_size": 16, "eval_window": 32, "eval_hop": 16},
    ),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A keyed store (train/dev/eval), a key-less eval store of the same configuration, and
    one tiny run per model (``trainer.fit``, one epoch) under ``root/runs``."""
    root = tmp_path_factory.mktemp("score")
    corpus = make_corpus(root / "corpus", {"train": 9, "dev": 6, "eval": N_EVAL}, (0.3, 0.6))
    with open(protocol_path(corpus, "eval"), "a") as fh:  # quarantined by the build
        fh.write(f"LA_0001 {SHORT} - A01 spoof\n")
    sf.write(corpus / "flac" / f"{SHORT}.flac", np.full(160, 0.1), 16000, subtype="PCM_16")
    key = root / "eval_key.txt"  # the eval protocol without the quarantined utterance
    with open(protocol_path(corpus, "eval")) as fh:
        key.write_text("".join(ln for ln in fh if SHORT not in ln))
    store = root / "store.zarr"
    build = dict(features=list(FEATURES), jobs=1, quiet=True, fsync=False)
    featstore.build(corpus / "protocols", corpus, store, **build)
    # ASVspoof 2021-style key-less eval list over the same audio
    keyless_dir = root / "keyless"
    keyless_dir.mkdir()
    ids = [utt_id("eval", i) for i in range(N_EVAL)]
    (keyless_dir / "ASVspoof2021.LA.cm.eval.trl.txt").write_text("\n".join(ids) + "\n")
    keyless = root / "keyless.zarr"
    featstore.build(keyless_dir, corpus, keyless, **build)  # eval only: stats from the run's
    runs = {}
    for name, settings_ in RUNS.items():
        out = root / "runs" / f"{name}-20261122-000000"
        trainer.fit(str(store), out=out, **FAST, **settings_)
        runs[name] = out
    return {
        "root": root,
        "corpus": corpus,
        "store": store,
        "keyless": keyless,
        "key": key,
        "runs": runs,
    }


def _read(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_newest_run_its_store_best_and_out(world, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    for src in world["runs"].values():
        shutil.copytree(src, runs / src.name)
    old, new = runs / world["runs"]["grcnn-logmel"].name, runs / world["runs"]["lcnn"].name
    for p in old.glob("*.pt"):
        os.utime(p, (1e9, 1e9))
    (runs / "zz-started-no-checkpoint").mkdir()  # newest name, but no checkpoint: skipped
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(["score", "--split", "eval"], capsys)
    assert rc == 0, err
    assert "warning: 1 utterance(s) of split 'eval' were quarantined when the store " in err
    assert f"have no score (e.g. {SHORT}; see featstore info)" in err
    assert f"run: runs/{new.name} (most recent under ./runs)" in err
    scores = new / "scores_eval.txt"
    assert f"wrote runs/{new.name}/scores_eval.txt" in out
    info = json.loads((new / "scores_eval.txt.json").read_text())
    assert info["checkpoint"]["path"] == str((new / "best.pt").resolve())
    assert info["store"]["path"] == str(world["store"].resolve())
    lines = _read(scores)
    ids = [str(u) for u in featstore.open_store(world["store"]).index("eval")["utt_id"]]
    assert [ln.split()[1] for ln in lines] == ids  # store index order
    assert len(ids) == N_EVAL and SHORT not in ids
    # a file we write, `trainer metrics` reads
    rc, out, err = run_cli(["metrics", str(scores)], capsys)
    assert rc == 0, err
    assert "EER" in out


def test_latest_run_by_checkpoint_time(tmp_path):
    for name, t in (("b", 300), ("a", 200), ("c", None)):
        (tmp_path / name).mkdir()
        if t is not None:
            (tmp_path / name / "last.pt").write_bytes(b"")
            os.utime(tmp_path / name / "last.pt", (t, t))
    os.utime(tmp_path / "a", (999, 999))  # directory times do not matter once checkpoints exist
    assert latest_run(tmp_path) == tmp_path / "b"
    (tmp_path / "a" / "best.pt").write_bytes(b"")
    os.utime(tmp_path / "a" / "best.pt", (400, 400))
    assert latest_run(tmp_path) == tmp_path / "a"


# --- layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["asvspoof2019", "asvspoof2021", "asvspoof5"])
def test_every_layout_is_read_back_by_trainer_metrics(world, tmp_path, capsys, fmt):
    out = tmp_path / f"scores_{fmt}.txt"
    run = world["runs"]["lcnn"]
    args = ["score", "--run", str(run), "--split", "eval", "--format", fmt, "--out", str(out)]
    rc, _, err = run_cli([*args, "--quiet"], capsys)
    assert rc == 0, err
    lines = _read(out)
    if fmt == "asvspoof2019":
        assert all(len(ln.split(" ")) == 6 and ln.split(" ")[2] == "-" for ln in lines)
        assert {ln.split()[4] for ln in lines} == {"bonafide", "spoof"}
    elif fmt == "asvspoof2021":
        assert all(len(ln.split(" ")) == 2 for ln in lines)
    else:
        assert lines[0] == "filename\tcm-score"
        assert all(len(ln.split("\t")) == 2 for ln in lines)
        lines = lines[1:]
    assert len(lines) == N_EVAL
    protocol = world["key"]
    metrics = ["metrics", str(out), "--json", str(tmp_path / "m.json")]
    if fmt != "asvspoof2019":
        rc, _, err = run_cli(metrics, capsys)
        assert rc == 2 and "--protocol" in err
    rc, _, err = run_cli([*metrics, "--protocol", str(protocol)], capsys)
    assert rc == 0, err
    cm = read_cm_scores(out, protocol)
    ref = run.parent / "ref_2019.txt"
    if not ref.exists():
        trainer.score(run=run, split="eval", out=ref, progress=False)
    ref_cm = read_cm_scores(ref)
    assert cm.utt_ids == ref_cm.utt_ids
    assert np.array_equal(cm.scores, ref_cm.scores)  # exact: repr round-trips float64


def test_keyless_split_defaults_to_2021_layout(world, tmp_path, capsys):
    run = world["runs"]["lcnn"]
    out = tmp_path / "keyless.txt"
    args = ["score", "--run", str(run), "--store", str(world["keyless"]), "--out", str(out)]
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    assert "has no keys: writing the asvspoof2021 layout" in err
    lines = _read(out)
    assert [ln.split()[0] for ln in lines] == [utt_id("eval", i) for i in range(N_EVAL)]
    rc, _, err = run_cli(["metrics", str(out), "--protocol", str(world["key"])], capsys)
    assert rc == 0, err
    # the same audio scores the same in both stores (same fingerprint, same train statistics)
    keyed = trainer.score(run=run, split="eval", out=tmp_path / "keyed.txt", progress=False)
    by_id = {ln.split()[1]: ln.split()[5] for ln in _read(keyed)}
    assert all(by_id[u] == s for u, s in (ln.split() for ln in lines))
    # the 2019 layout needs keys
    rc, _, err = run_cli([*args, "--format", "asvspoof2019"], capsys)
    assert rc == 2 and err.startswith("error: ") and "no key" in err


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=20))
def test_written_scores_round_trip_exactly(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("rt") / "s.txt"
    ids = [f"U{i}" for i in range(len(values))]
    keys = ["bonafide"] + ["spoof"] * (len(values) - 1)
    systems = ["-"] + ["A01"] * (len(values) - 1)
    write_score_file(path, ids, values, speakers=["S"] * len(ids), systems=systems, keys=keys)
    cm = read_cm_scores(path)
    assert cm.utt_ids == ids and cm.scores.tolist() == [float(v) for v in values]


def test_writer_refuses_non_finite_scores_and_missing_keys(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        write_score_file(tmp_path / "s", ["a"], [float("nan")], format="asvspoof2021")
    with pytest.raises(ValueError, match="keys"):
        write_score_file(tmp_path / "s", ["a"], [1.0])
    assert not (tmp_path / "s").exists()


# --- what the scores are ----------------------------------------------------------------------


def _model(run: Path) -> tuple[torch.nn.Module, dict]:
    state = checkpoint.load_checkpoint(run / "best.pt")
    info = state["config"]["model"]
    net = trainer.build_model(info["name"], **info["kwargs"]).eval()
    net.load_state_dict(state["model"])
    return net, info


@pytest.mark.parametrize("name", ["lcnn", "grcnn-logmel"])
def test_scores_are_the_models_log_odds_on_train_normalised_features(world, tmp_path, name):
    """Whole utterances (lcnn) or the mean over windows (grcnn, 32 frames every 16)."""
    run = world["runs"][name]
    out = trainer.score(run=run, split="eval", out=tmp_path / "s.txt", progress=False)
    got = {ln.split()[1]: float(ln.split()[5]) for ln in _read(out)}
    net, info = _model(run)
    st_ = featstore.open_store(world["store"])
    (feature,) = info["features"]
    bins = info["n_bins"][feature]
    norm = FeatureNormalizer.from_store(st_, {feature: bins})
    window, hop = info["eval_window"], info["eval_hop"]
    assert (window is None) == (name == "lcnn")
    for u in st_.index("eval")["utt_id"]:
        x = torch.from_numpy(st_.read("eval", feature, str(u))[:, :bins])
        if window is None:
            segs = [x]
        else:
            if x.shape[0] < window:  # wrapped to one window
                x = x[torch.arange(window) % x.shape[0]]
            segs = [x[s : s + window] for s in range(0, x.shape[0] - window + 1, hop)]
        with torch.no_grad():
            logits = torch.cat([net(**norm({feature: s[None]})) for s in segs])
        want = float((logits[:, 1] - logits[:, 0]).double().mean())
        assert got[str(u)] == pytest.approx(want, abs=1e-5), u


def test_normalisation_statistics_saved_in_the_checkpoint_are_used(world, tmp_path):
    run = world["runs"]["lcnn"]
    state = checkpoint.load_checkpoint(run / "best.pt")
    mean, std = featstore.open_store(world["store"]).stats("lfcc")
    state["normalizer"] = {"lfcc": {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}}
    same = checkpoint.save_checkpoint(tmp_path / "same.pt", state)
    state["normalizer"]["lfcc"]["mean"] = torch.from_numpy(mean + 1.0)
    shifted = checkpoint.save_checkpoint(tmp_path / "shifted.pt", state)
    ref = trainer.score(run=run, out=tmp_path / "ref.txt", progress=False)
    a = trainer.score(run=run, checkpoint=same, out=tmp_path / "a.txt", progress=False)
    b = trainer.score(run=run, checkpoint=shifted, out=tmp_path / "b.txt", progress=False)
    assert a.read_bytes() == ref.read_bytes() != b.read_bytes()
    assert json.loads((tmp_path / "a.txt.json").read_text())["normalisation"] == "checkpoint"


def test_dev_scores_give_the_dev_eer_fit_recorded(world, tmp_path):
    from trainer.metrics import compute_eer

    run = world["runs"]["grcnn-logmel"]
    out = trainer.score(run=run, split="dev", out=tmp_path / "dev.txt", progress=False)
    cm = read_cm_scores(out)
    state = checkpoint.load_checkpoint(run / "best.pt")
    assert compute_eer(cm.bonafide, cm.spoof)[0] == pytest.approx(state["dev_eer"], abs=1e-12)


def test_deterministic_and_batch_size_free(world, tmp_path):
    run = world["runs"]["grcnn-logmel"]
    a = trainer.score(run=run, split="eval", out=tmp_path / "a.txt", progress=False)
    b = trainer.score(run=run, split="eval", out=tmp_path / "b.txt", progress=False)
    assert a.read_bytes() == b.read_bytes()
    for bs in (1, 5):
        c = trainer.score(
            run=run, split="eval", out=tmp_path / f"c{bs}.txt", batch_size=bs, progress=False
        )
        x, y = read_cm_scores(a), read_cm_scores(c)
        assert x.utt_ids == y.utt_ids
        np.testing.assert_allclose(x.scores, y.scores, rtol=0, atol=1e-5)


def test_sidecar_records_provenance(world, tmp_path):
    run = world["runs"]["lcnn"]
    with pytest.warns(UserWarning, match=f"1 utterance.*quarantined.*{SHORT}"):
        out = trainer.score(
            run=run, split="eval", out=tmp_path / "x" / "s.txt", checkpoint="last",
            batch_size=3, device="cpu", progress=False,
        )  # fmt: skip
    info = json.loads((tmp_path / "x" / "s.txt.json").read_text())
    import hashlib

    st_ = featstore.open_store(world["store"])
    assert info["score_file"] == str(out.resolve())
    assert info["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert info["run"] == str(run.resolve())
    assert info["checkpoint"] == {
        "path": str((run / "last.pt").resolve()),
        "epoch": 1,
        "dev_eer": pytest.approx(checkpoint.load_checkpoint(run / "last.pt")["dev_eer"]),
    }
    assert info["store"]["fingerprint"] == st_.fingerprint == info["store"]["run_fingerprint"]
    assert info["store"]["forced"] is False
    assert info["normalisation"] == "checkpoint"  # fit saves its statistics in every checkpoint
    assert info["split"] == "eval" and info["format"] == "asvspoof2019"
    assert info["model"]["name"] == "lcnn" and info["model"]["eval_window"] is None
    assert info["n_utterances"] == N_EVAL and info["n_bonafide"] == 3
    assert info["quarantined"] == [SHORT] and info["unscored"] == []
    assert info["device"] == "cpu" and info["batch_size"] == 3
    assert info["version"] == trainer.__version__ and info["time"].endswith("Z")
    assert not list((tmp_path / "x").glob(".*tmp*"))  # nothing left of the atomic writes


def test_utterance_without_scored_segment_gets_llr_zero(world, tmp_path, monkeypatch):
    from trainer import inference

    real = inference.evaluate

    def losing_one(*args, **kwargs):
        scores = real(*args, **kwargs)
        scores[2] = np.nan  # what evaluate returns for an utterance without frames
        return scores

    monkeypatch.setattr(inference, "evaluate", losing_one)
    with pytest.warns(UserWarning, match=r"1 utterance\(s\).*no frames.*score 0"):
        out = trainer.score(run=world["runs"]["lcnn"], out=tmp_path / "s.txt", progress=False)
    assert _read(out)[2].split()[5] == "0.0"
    info = json.loads((tmp_path / "s.txt.json").read_text())
    assert info["unscored"] == [utt_id("eval", 2)]


def test_trainer_score_is_callable_after_importing_the_module(world, tmp_path):
    import trainer.scoring  # the submodule no longer shadows the function trainer.score

    out = trainer.score(run=world["runs"]["lcnn"], out=tmp_path / "s.txt", progress=False)
    assert out.is_file()


def test_cache_dir_reaches_the_store_reader(world, tmp_path, monkeypatch):
    import importlib

    scoring = importlib.import_module("trainer.scoring")
    seen = []

    def spy(path, *args, cache_dir=None, **kwargs):
        seen.append(cache_dir)
        return featstore.open_store(path, *args, cache_dir=cache_dir, **kwargs)

    monkeypatch.setattr(scoring, "open_store", spy)
    cache = tmp_path / "cache"
    trainer.score(
        run=world["runs"]["lcnn"], out=tmp_path / "s.txt", cache_dir=cache, progress=False
    )
    assert seen == [cache]


# --- errors -----------------------------------------------------------------------------------


def test_no_runs_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(["score", "--split", "eval"], capsys)
    assert rc == 2 and not out and err.startswith("error: no runs under") and err.count("\n") == 1
    (tmp_path / "runs" / "grcnn-1").mkdir(parents=True)
    rc, _, err = run_cli(["score"], capsys)
    assert rc == 2 and "no run under" in err and "checkpoint" in err
    with pytest.raises(TrainingError, match="no runs under"):
        latest_run(tmp_path / "none")


def test_run_without_checkpoint(world, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rc, _, err = run_cli(["score", "--run", str(run)], capsys)
    assert rc == 2 and "no best checkpoint" in err and "no checkpoint" in err
    shutil.copy(world["runs"]["lcnn"] / "last.pt", run / "last.pt")
    rc, _, err = run_cli(["score", "--run", str(run)], capsys)
    assert rc == 2 and "--checkpoint last" in err
    rc, _, err = run_cli(["score", "--run", str(run), "--checkpoint", str(run / "x.pt")], capsys)
    assert rc == 2 and "x.pt: no such checkpoint" in err


def test_fingerprint_mismatch_needs_force(world, tmp_path, capsys):
    run = world["runs"]["lcnn"]
    state = checkpoint.load_checkpoint(run / "best.pt")
    state["config"]["store"]["fingerprint"] = "0" * 64  # as if trained on another build
    ckpt = checkpoint.save_checkpoint(tmp_path / "other.pt", state)
    out = tmp_path / "s.txt"
    args = ["score", "--run", str(run), "--checkpoint", str(ckpt), "--out", str(out), "--quiet"]
    rc, _, err = run_cli(args, capsys)
    assert rc == 2 and "fingerprint" in err and "--force" in err and not out.exists()
    rc, _, err = run_cli([*args, "--force"], capsys)
    assert rc == 0, err
    assert json.loads(out.with_name("s.txt.json").read_text())["store"]["forced"] is True


def test_unknown_split_and_missing_store(world, tmp_path, capsys):
    run = world["runs"]["lcnn"]
    rc, _, err = run_cli(["score", "--run", str(run), "--split", "test"], capsys)
    assert rc == 2 and "no split 'test'" in err and "dev, eval, train" in err
    state = checkpoint.load_checkpoint(run / "best.pt")
    state["config"]["store"]["path"] = str(tmp_path / "moved.zarr")
    del state["normalizer"]  # a checkpoint without saved statistics: they come from a store
    ckpt = checkpoint.save_checkpoint(tmp_path / "moved.pt", state)
    rc, _, err = run_cli(["score", "--run", str(run), "--checkpoint", str(ckpt)], capsys)
    assert rc == 2 and "moved.zarr" in err and "--store" in err
    # scoring a copy at another path: normalised with that copy's train statistics
    out = tmp_path / "s.txt"
    with pytest.warns(UserWarning, match="training store .*moved.zarr is not available"):
        trainer.score(run=run, checkpoint=ckpt, store=world["store"], out=out, progress=False)
    ref = trainer.score(run=run, out=tmp_path / "ref.txt", progress=False)
    assert out.read_bytes() == ref.read_bytes()


def test_checkpoint_without_config_uses_the_runs_config_json(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world["runs"]["lcnn"], run, ignore=shutil.ignore_patterns("scores*", "ref*"))
    state = checkpoint.load_checkpoint(run / "best.pt")
    del state["config"]
    checkpoint.save_checkpoint(run / "best.pt", state)
    a = trainer.score(run=run, out=tmp_path / "a.txt", progress=False)
    ref = trainer.score(run=world["runs"]["lcnn"], out=tmp_path / "ref.txt", progress=False)
    assert a.read_bytes() == ref.read_bytes()
    (run / "config.json").unlink()
    with pytest.raises(TrainingError, match="not a trainer checkpoint"):
        trainer.score(run=run, out=tmp_path / "b.txt", progress=False)
    checkpoint.save_checkpoint(run / "last.pt", {"epoch": 1})  # no weights
    with pytest.raises(TrainingError, match="not a trainer checkpoint"):
        trainer.score(run=run, checkpoint="last", out=tmp_path / "b.txt", progress=False)


def test_progress_counts_each_utterance_once_when_its_last_segment_is_scored():
    from types import SimpleNamespace

    from trainer.scoring import UtteranceProgress

    # windows of utterances 0 (3 windows), 1 (1), 2 (4), in batches of 3
    utts = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    batches = [(utts[i : i + 3], None, 32) for i in range(0, utts.size, 3)]
    bar = SimpleNamespace(n=0, update=lambda k: setattr(bar, "n", bar.n + k))
    hook = UtteranceProgress(SimpleNamespace(batches=batches), bar)
    seen = []
    for _ in batches:
        hook(None, None, None)
        seen.append(bar.n)
    assert seen == [1, 2, 3]
