"""The GMM baselines: EM against scikit-learn's, likelihoods against the formula, and
lfcc-gmm / cqcc-gmm through trainer.fit / trainer.score and the CLI (run directory,
weights_only checkpoint, score files, typed errors)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_fixture import make_corpus
from sklearn.mixture import GaussianMixture

import featstore
import trainer
from trainer.cli import main
from trainer.errors import TrainingError
from trainer.gmm_baseline import DiagonalGMM, GMMBaseline, fit_diagonal_gmm
from trainer.models import ModelError, build_model
from trainer.models.registry import MODELS, is_gmm_model
from trainer.scorefiles import read_cm_scores

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*were quarantined:UserWarning"),
    pytest.mark.filterwarnings("ignore:Best performing initialization did not converge"),
]


def mixture_data(n: int = 6000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0, 2.0], [3.0, 3.0, -1.0], [0.0, -5.0, 0.0]])
    scales = np.array([[1.0, 0.5, 2.0], [0.7, 1.5, 1.0], [1.2, 1.0, 0.3]])
    which = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return centres[which] + scales[which] * rng.standard_normal((n, 3))


# --- the mathematics --------------------------------------------------------------------------


def test_log_likelihood_is_the_mixture_density():
    rng = np.random.default_rng(1)
    gmm = DiagonalGMM(
        weights=np.array([0.2, 0.8]),
        means=rng.standard_normal((2, 3)),
        variances=rng.uniform(0.5, 2.0, (2, 3)),
    )
    x = rng.standard_normal((50, 3)) * 2
    density = sum(
        w * np.prod(np.exp(-((x - m) ** 2) / (2 * v)) / np.sqrt(2 * np.pi * v), axis=1)
        for w, m, v in zip(gmm.weights, gmm.means, gmm.variances, strict=True)
    )
    np.testing.assert_allclose(gmm.log_likelihood(x, chunk_frames=7), np.log(density), rtol=1e-5)


def test_em_matches_scikit_learn_from_the_same_start():
    """Our EM and sklearn's GaussianMixture(diag) from the same initial parameters."""
    x = mixture_data()
    ours, history = fit_diagonal_gmm(x, 3, max_iter=15, seed=3, variance_floor=1e-6)
    init = np.random.default_rng(3).choice(x.shape[0], size=3, replace=False)
    ref = GaussianMixture(
        3,
        covariance_type="diag",
        max_iter=15,
        tol=0.0,
        reg_covar=0.0,
        weights_init=np.full(3, 1 / 3),
        means_init=x[np.sort(init)],
        precisions_init=np.tile(1 / x.var(axis=0), (3, 1)),
    ).fit(x)
    np.testing.assert_allclose(ours.means, ref.means_, atol=2e-3)
    np.testing.assert_allclose(ours.variances, ref.covariances_, rtol=2e-3)
    np.testing.assert_allclose(ours.weights, ref.weights_, atol=1e-4)
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(history))  # EM ascends


def test_em_is_seeded_and_does_not_depend_on_the_chunking():
    x = mixture_data(3000)
    a, _ = fit_diagonal_gmm(x, 4, seed=5)
    b, _ = fit_diagonal_gmm(x, 4, seed=5)
    c, _ = fit_diagonal_gmm(x, 4, seed=5, chunk_frames=333)
    assert np.array_equal(a.means, b.means) and np.array_equal(a.variances, b.variances)
    np.testing.assert_allclose(a.means, c.means, atol=1e-4)
    d, _ = fit_diagonal_gmm(x, 4, seed=6)
    assert not np.array_equal(a.means, d.means)


def test_variances_are_floored_and_empty_components_keep_their_parameters():
    x = np.repeat(np.array([[0.0, 0.0], [10.0, 10.0]]), [50, 50], axis=0)  # point masses
    gmm, _ = fit_diagonal_gmm(x, 4, seed=0, variance_floor=1e-2)
    assert np.all(gmm.variances >= 1e-2 * x.var(axis=0) - 1e-12)
    assert np.all(np.isfinite(gmm.means)) and math.isclose(gmm.weights.sum(), 1.0)


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (np.zeros((3, 2)), {"n_components": 4}, "3 training frames are fewer than the 4"),
        (np.full((9, 2), np.nan), {"n_components": 2}, "non-finite values"),
        (np.zeros((9, 2)), {"n_components": 2, "max_iter": 0}, "max_iter must be a positive"),
        (np.zeros(9), {"n_components": 2}, "must be (n_frames, dim)"),
    ],
)
def test_bad_training_input_is_a_training_error(frames, kwargs, message):
    with pytest.raises(TrainingError) as exc:
        fit_diagonal_gmm(frames, **kwargs)
    assert message in str(exc.value)


def test_utterance_score_is_the_mean_frame_llr():
    rng = np.random.default_rng(2)
    one = DiagonalGMM(np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2)))
    two = DiagonalGMM(np.array([1.0]), np.ones((1, 2)), np.full((1, 2), 2.0))
    baseline = GMMBaseline(one, two, np.float32([1.0, -1.0]), np.float32([2.0, 0.5]))
    frames = rng.standard_normal((7, 2)).astype(np.float32)
    scores = baseline.score(frames, np.array([3, 0, 4]))
    z = (frames - baseline.mean) / baseline.std
    llr = one.log_likelihood(z) - two.log_likelihood(z)
    np.testing.assert_allclose(scores[[0, 2]], [llr[:3].mean(), llr[3:].mean()], rtol=1e-6)
    assert np.isnan(scores[1])


def test_registry_tells_gmm_baselines_apart():
    assert is_gmm_model("lfcc-gmm") and is_gmm_model("cqcc-gmm")
    assert not is_gmm_model("lcnn") and not is_gmm_model("nope") and not is_gmm_model(None)
    assert MODELS["cqcc-gmm"].features == ("cqcc",) and MODELS["lfcc-gmm"].features == ("lfcc",)
    with pytest.raises(ModelError, match="'lfcc-gmm' is a GMM baseline, not a neural network"):
        build_model("lfcc-gmm")


# --- runs: fit, score, CLI --------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("gmm")
    corpus = make_corpus(root / "corpus", {"train": 9, "dev": 6, "eval": 6}, (0.3, 0.6))
    store = root / "store.zarr"
    build = dict(features=["lfcc", "cqcc"], jobs=1, quiet=True, fsync=False)
    featstore.build(corpus / "protocols", corpus, store, **build)
    run = root / "runs" / "lfcc-gmm-x"
    result = trainer.fit(
        str(store), model="lfcc-gmm", out=run, model_kwargs={"n_components": 4}, progress=False
    )
    return {"root": root, "corpus": corpus, "store": store, "run": run, "result": result}


def _manual_scores(store: Path, run: Path, split: str, feature: str) -> np.ndarray:
    state = torch.load(run / "best.pt", weights_only=True)
    names = ("weights", "means", "variances")
    gmms = {
        p: DiagonalGMM(*(state["model"][f"{p}.{n}"].numpy() for n in names))
        for p in ("bonafide", "spoof")
    }
    norm = state["normalizer"][feature]
    st = featstore.open_store(store)
    offsets, n_frames = st.frames(split, feature)
    out = []
    for o, n in zip(offsets, n_frames, strict=True):
        z = (st.array(split, feature)[o : o + n] - norm["mean"].numpy()) / norm["std"].numpy()
        out.append(np.mean(gmms["bonafide"].log_likelihood(z) - gmms["spoof"].log_likelihood(z)))
    return np.array(out)


def test_fit_writes_a_run_directory_like_the_neural_models(world):
    run, result = world["run"], world["result"]
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "metrics.csv"]
    assert result.out == run and result.best_epoch == 1 and 0 <= result.best_dev_eer <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "lfcc-gmm" and config["model"]["features"] == ["lfcc"]
    assert config["model"]["n_bins"] == {"lfcc": 60}
    assert config["fit"]["model_kwargs"] == {"n_components": 4}
    state = torch.load(run / "last.pt", weights_only=True)  # no pickle
    assert state["model"]["bonafide.means"].shape == (4, 60)
    assert state["model"]["spoof.variances"].shape == (4, 60)
    assert math.isclose(float(state["model"]["spoof.weights"].sum()), 1.0)
    with pytest.raises(TrainingError, match="already holds a run"):
        trainer.fit(str(world["store"]), model="lfcc-gmm", out=run, progress=False)


def test_score_gives_the_mean_frame_llr_per_utterance(world):
    path = trainer.score(run=world["run"], split="eval", progress=False)
    assert path == world["run"] / "scores_eval.txt"
    scores = read_cm_scores(path)
    ids = [str(u) for u in featstore.open_store(world["store"]).index("eval")["utt_id"]]
    assert list(scores.utt_ids) == ids
    expected = _manual_scores(world["store"], world["run"], "eval", "lfcc")
    np.testing.assert_allclose(scores.scores, expected, rtol=1e-4, atol=1e-4)
    info = json.loads(path.with_name("scores_eval.txt.json").read_text())
    assert info["model"]["name"] == "lfcc-gmm" and info["n_utterances"] == len(ids)
    assert "log-likelihood ratio" in info["score"] or "LLR" in info["score"]


def test_cli_fit_with_components_and_score_split_eval(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = str(world["store"])
    rc, out, err = run_cli(
        ["fit", store, "--model", "cqcc-gmm", "--components", "3", "--quiet"], capsys
    )
    assert rc == 0, err
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("cqcc-gmm-") and f"done: runs/{run.name}" in out
    assert json.loads((run / "config.json").read_text())["fit"]["model_kwargs"] == {
        "n_components": 3
    }
    rc, out, err = run_cli(["score", "--split", "eval", "--quiet"], capsys)
    assert rc == 0, err
    assert f"wrote runs/{run.name}/scores_eval.txt (6 utterances of 'eval'" in out
    scores = read_cm_scores(run / "scores_eval.txt")
    np.testing.assert_allclose(
        scores.scores, _manual_scores(world["store"], run, "eval", "cqcc"), rtol=1e-4, atol=1e-4
    )
    rc, out, err = run_cli(["metrics", str(run / "scores_eval.txt")], capsys)
    assert rc == 0, err
    assert "EER" in out


def test_cli_bad_input_is_one_error_line(world, tmp_path, capsys):
    lfcc_only = tmp_path / "lfcc.zarr"
    corpus = world["corpus"]
    featstore.build(
        corpus / "protocols", corpus, lfcc_only, features=["lfcc"], jobs=1, quiet=True, fsync=False
    )
    rc, _, err = run_cli(
        ["fit", str(lfcc_only), "--model", "cqcc-gmm", "--out", str(tmp_path / "r"), "--quiet"],
        capsys,
    )
    assert rc == 2
    assert err.startswith("error: ") and "needs feature 'cqcc'" in err
    assert "--features cqcc" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    argv = ["fit", str(world["store"]), "--model", "lfcc-gmm", "--components", "100000"]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "r2"), "--quiet"], capsys)
    assert rc == 2 and "fewer than the 100000 GMM components" in err
    assert not (tmp_path / "r2").exists()
