"""Back-ends: the kinds against scikit-learn, the back-end file (no pickle, checked on load),
``trainer backend fit/score`` end to end through ``trainer metrics``, and bad input (one
``error:`` line, exit 2, nothing written) and environment faults (exit 1)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.backends import (
    BACKENDS,
    fit_backend,
    load_backend,
    save_backend,
    score_embeddings,
)
from trainer.backends.cosine import CosineBackend
from trainer.backends.gmm import GmmBackend
from trainer.backends.logreg import LogregBackend
from trainer.cli import main
from trainer.embeddings import EmbeddingSet, write_embeddings
from trainer.errors import BackendError
from trainer.scorefiles import read_cm_scores

KINDS = ["plda", "gmm", "logreg", "cosine"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _emb(n: int, d: int = 8, seed: int = 0, prefix: str = "u", keys: bool = True, **meta):
    """Bona fide shifted along dim 0, three attacks along dims 1..3."""
    rng = np.random.default_rng(seed)
    label = np.where(np.arange(n) % 4 == 0, 1, 0).astype(np.int8)
    attack = np.where(label == 1, "-", np.array(["A01", "A02", "A03"])[np.arange(n) % 3])
    x = rng.normal(size=(n, d))
    x[label == 1, 0] += 2.5
    for k, a in enumerate(["A01", "A02", "A03"]):
        x[attack == a, k + 1] += 1.5
    if not keys:
        label[:] = -1
        attack[:] = "-"
    info = {"model": "grcnn", "run": "runs/grcnn-1", "split": "train", "dim": d, **meta}
    return EmbeddingSet(x, [f"{prefix}{i:05d}" for i in range(n)], label, attack, info)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "train": write_embeddings(tmp_path / "train.npz", _emb(400, seed=0, prefix="T")),
        "dev": write_embeddings(tmp_path / "dev.zarr", _emb(200, seed=1, prefix="D")),
        "eval": write_embeddings(tmp_path / "eval.zarr", _emb(300, seed=2, prefix="E")),
    }
    return out


# --- the kinds --------------------------------------------------------------------------------


def test_registry_names_the_four_kinds():
    assert sorted(BACKENDS) == sorted(KINDS)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_gmm_score_is_sklearns_log_likelihood_ratio(covariance_type):
    from sklearn.mixture import GaussianMixture

    emb = _emb(400)
    b = GmmBackend.fit(
        emb.vectors, emb.label, emb.attack, components=3, covariance_type=covariance_type
    )
    z = (emb.vectors.astype(np.float64) - b.mean) / b.scale
    expected = []
    for cls in (1, 0):
        g = GaussianMixture(3, covariance_type=covariance_type, reg_covar=1e-3, random_state=0)
        g.max_iter = 200
        expected.append(g.fit(z[emb.label == cls]).score_samples(z))
    np.testing.assert_allclose(b.score(emb.vectors), expected[0] - expected[1], rtol=1e-8)


def test_gmm_is_deterministic_with_a_seed():
    emb = _emb(400)
    a = GmmBackend.fit(emb.vectors, emb.label, emb.attack, seed=3).score(emb.vectors)
    b = GmmBackend.fit(emb.vectors, emb.label, emb.attack, seed=3).score(emb.vectors)
    np.testing.assert_array_equal(a, b)


def test_logreg_score_is_the_logit_minus_the_training_prior_log_odds():
    from sklearn.linear_model import LogisticRegression

    emb = _emb(400)
    b = LogregBackend.fit(emb.vectors, emb.label, emb.attack, c=0.5)
    z = (emb.vectors.astype(np.float64) - b.mean) / b.scale
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(z, emb.label)
    assert b.prior_log_odds == pytest.approx(np.log(100 / 300))
    np.testing.assert_allclose(
        b.score(emb.vectors), ref.decision_function(z) - np.log(100 / 300), rtol=1e-6
    )


def test_cosine_is_cosine_to_bonafide_mean_minus_cosine_to_spoof_mean():
    x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    b = CosineBackend.fit(x, np.array([1, 1, 0, 0]), np.array(["-", "-", "A", "A"]))
    np.testing.assert_allclose(b.centre, [1.0, 1.0])
    np.testing.assert_allclose(b.bonafide_mean, [np.sqrt(0.5), -np.sqrt(0.5)])
    point = np.array([[4.0, 1.0]])  # centred (3, 0): cos 1/sqrt2 and -1/sqrt2
    np.testing.assert_allclose(b.score(point), [np.sqrt(2)])


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_separates_the_classes_and_survives_its_file(tmp_path, kind):
    train, ev = _emb(400, seed=0), _emb(300, seed=2)
    trained = fit_backend(train, kind=kind)
    scores = trained.model.score(ev.vectors)
    assert scores.dtype == np.float64 and np.all(np.isfinite(scores))
    assert np.median(scores[ev.label == 1]) > np.quantile(scores[ev.label == 0], 0.9)
    path = save_backend(tmp_path / "b.backend", trained)  # any suffix
    loaded = load_backend(path, kind=kind)
    np.testing.assert_array_equal(loaded.model.score(ev.vectors), scores)
    assert loaded.dim == 8 and loaded.embedding_meta["model"] == "grcnn"
    with zipfile.ZipFile(path) as z:  # plain .npy members: nothing to unpickle
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["__header__"][()]))
    assert header["kind"] == kind and header["format"] == "spoofstore-backend"
    assert sorted(os.listdir(tmp_path)) == ["b.backend"]


# --- the back-end file ------------------------------------------------------------------------


def _tampered(tmp_path: Path, **changes) -> Path:
    trained = fit_backend(_emb(200), kind="cosine")
    header = trained.header_dict() | changes
    params = trained.model.params()
    path = tmp_path / "t.npz"
    np.savez(path, __header__=np.array(json.dumps(header)), **params)
    return path


def test_load_checks_kind_dimension_format_and_version(tmp_path):
    path = save_backend(tmp_path / "c.npz", fit_backend(_emb(200), kind="cosine"))
    with pytest.raises(BackendError, match="a 'cosine' back-end, not 'plda'"):
        load_backend(path, kind="plda")
    with pytest.raises(BackendError, match=r"malformed cosine back-end \(dim 5\)"):
        load_backend(_tampered(tmp_path, dim=5))
    with pytest.raises(BackendError, match="unknown back-end kind 'svm'"):
        load_backend(_tampered(tmp_path, kind="svm"))
    with pytest.raises(BackendError, match="version 7"):
        load_backend(_tampered(tmp_path, version=7))
    with pytest.raises(BackendError, match="header format"):
        load_backend(_tampered(tmp_path, format="other"))
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(BackendError, match="not a back-end file"):
        load_backend(tmp_path / "junk.npz")
    with pytest.raises(BackendError, match="does not exist"):
        load_backend(tmp_path / "none.npz")


# --- the CLI, end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fit_score_metrics_round_trip(files, tmp_path, capsys, kind):
    backend, scores = tmp_path / f"{kind}.npz", tmp_path / "out" / "scores.txt"
    rc, out, err = run(
        ["backend", "fit", "--kind", kind, str(files["train"]), "--dev", str(files["dev"]),
         "--out", str(backend)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert f"wrote {backend} ({kind}, 8 dims, 400 embeddings: 100 bona fide, 300 spoof)" in out
    assert "dev: EER" in out and "Cllr" in out
    rc, out, err = run(
        ["backend", "score", str(backend), str(files["eval"]), "--out", str(scores)], capsys
    )
    assert rc == 0, err
    assert "300 utterances, asvspoof2019" in out
    cm = read_cm_scores(scores)  # what trainer metrics reads
    assert cm.format == "2019" and len(cm.utt_ids) == 300 and cm.utt_ids[0] == "E00000"
    assert sorted(set(cm.attacks.tolist())) == ["-", "A01", "A02", "A03"]
    expected = load_backend(backend).model.score(_emb(300, seed=2).vectors)
    np.testing.assert_allclose(cm.scores, expected, rtol=1e-6, atol=1e-9)
    side = json.loads(scores.with_name("scores.txt.json").read_text())
    assert side["backend"]["kind"] == kind and side["backend"]["dim"] == 8
    assert side["embeddings"]["meta"]["model"] == "grcnn"
    assert side["backend"]["dev"]["eer"] < 0.2
    assert (side["n_utterances"], side["n_bonafide"], side["n_spoof"]) == (300, 75, 225)
    rc, out, err = run(["metrics", str(scores)], capsys)
    assert rc == 0, err
    assert "EER" in out and "A03" in out


def test_unlabelled_embeddings_default_to_the_2021_layout(files, tmp_path, capsys):
    backend = save_backend(tmp_path / "b.npz", fit_backend(files["train"], kind="logreg"))
    ev = write_embeddings(tmp_path / "e.npz", _emb(40, seed=5, prefix="E", keys=False))
    out = tmp_path / "s.txt"
    rc, _, err = run(["backend", "score", str(backend), str(ev), "--out", str(out)], capsys)
    assert rc == 0, err
    first = out.read_text().splitlines()[0].split()
    assert first[0] == "E00000" and len(first) == 2
    rc, _, err = run(
        ["backend", "score", str(backend), str(ev), "--out", str(tmp_path / "t.tsv"),
         "--format", "asvspoof5"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "t.tsv").read_text().startswith("filename\tcm-score\n")


# --- bad input: one error line, exit 2, nothing written ---------------------------------------


def _assert_refused(capsys, argv: list[str], message: str, out: Path, tmp_path: Path) -> None:
    before = sorted(os.listdir(tmp_path))
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == before  # no sidecar, no temporary file


def _raw_npz(path: Path, emb: EmbeddingSet, **override) -> Path:
    arrays = {
        "vectors": emb.vectors,
        "utt_id": emb.utt_id,
        "label": emb.label,
        "attack": emb.attack,
        "meta": np.array(json.dumps(emb.meta)),
    } | override
    np.savez(path, **arrays)
    return path


def test_duplicate_ids_are_refused(files, tmp_path, capsys):
    emb = _emb(100)
    ids = emb.utt_id.copy()
    ids[7] = ids[3]
    bad = _raw_npz(tmp_path / "dup.npz", emb, utt_id=ids)
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "plda", str(bad), "--out", str(out)]
    _assert_refused(capsys, argv, "duplicate utterance id 'u00003' (rows 3 and 7)", out, tmp_path)
    backend = save_backend(tmp_path / "ok.npz", fit_backend(files["train"], kind="cosine"))
    out = tmp_path / "s.txt"
    argv = ["backend", "score", str(backend), str(bad), "--out", str(out)]
    _assert_refused(capsys, argv, f"{bad}: duplicate utterance id", out, tmp_path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused(files, tmp_path, capsys, value):
    emb = _emb(100)
    v = emb.vectors.copy()
    v[11, 2] = value
    bad = _raw_npz(tmp_path / "nan.npz", emb, vectors=v)
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "gmm", str(bad), "--out", str(out)]
    _assert_refused(capsys, argv, "NaN or inf, the first of utterance 'u00011'", out, tmp_path)


@pytest.mark.parametrize("which", ["train", "dev"])
@pytest.mark.parametrize("only", [0, 1])
def test_one_class_only_is_refused(files, tmp_path, capsys, which, only):
    emb = _emb(100, seed=4)
    keep = emb.label == only
    one = EmbeddingSet(emb.vectors[keep], emb.utt_id[keep], emb.label[keep], emb.attack[keep],
                       emb.meta)  # fmt: skip
    path = write_embeddings(tmp_path / "one.npz", one)
    train = path if which == "train" else files["train"]
    dev = path if which == "dev" else files["dev"]
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "logreg", str(train), "--dev", str(dev), "--out",
            str(out)]  # fmt: skip
    name = "bona fide" if only == 1 else "spoof"
    role = {"train": "training", "dev": "dev"}[which]
    msg = f"{path}: {role} embeddings hold one class only ({len(one)} {name})"
    _assert_refused(capsys, argv, msg, out, tmp_path)


def test_unlabelled_training_embeddings_are_refused(tmp_path, capsys):
    path = write_embeddings(tmp_path / "nokey.npz", _emb(50, keys=False))
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "plda", str(path), "--out", str(out)]
    _assert_refused(capsys, argv, "50 training embedding(s) have no key", out, tmp_path)


def test_dimension_mismatch_is_refused_naming_both(files, tmp_path, capsys):
    backend = save_backend(tmp_path / "p.npz", fit_backend(files["train"], kind="plda"))
    other = write_embeddings(tmp_path / "e16.npz", _emb(60, d=16))
    out = tmp_path / "s.txt"
    argv = ["backend", "score", str(backend), str(other), "--out", str(out)]
    msg = (
        f"{other}: embeddings of dimension 16, but back-end {backend} was trained on "
        "embeddings of dimension 8"
    )
    _assert_refused(capsys, argv, msg, out, tmp_path)
    # --force does not override a dimension
    _assert_refused(capsys, [*argv, "--force"], "dimension 16", out, tmp_path)
    # nor does a dev file of another dimension pass fit
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "plda", str(files["train"]), "--dev", str(other),
            "--out", str(out)]  # fmt: skip
    _assert_refused(capsys, argv, "embeddings of dimension 16, but", out, tmp_path)


def test_model_mismatch_is_refused_unless_forced(files, tmp_path, capsys):
    backend = save_backend(tmp_path / "p.npz", fit_backend(files["train"], kind="gmm"))
    other = write_embeddings(tmp_path / "lcnn.npz", _emb(60, model="lcnn"))
    out = tmp_path / "s.txt"
    argv = ["backend", "score", str(backend), str(other), "--out", str(out)]
    msg = (
        f"{other}: embeddings of model 'lcnn', but back-end {backend} was trained on "
        "embeddings of model 'grcnn'"
    )
    _assert_refused(capsys, argv, msg, out, tmp_path)
    rc, _, err = run([*argv, "--force"], capsys)
    assert rc == 0, err
    assert out.exists()


def test_unknown_kind_option_and_2019_without_keys_are_refused(files, tmp_path, capsys):
    out = tmp_path / "b.npz"
    argv = ["backend", "fit", "--kind", "svm", str(files["train"]), "--out", str(out)]
    _assert_refused(capsys, argv, "unknown back-end kind 'svm'", out, tmp_path)
    argv = ["backend", "fit", "--kind", "cosine", "--components", "4", str(files["train"]),
            "--out", str(out)]  # fmt: skip
    _assert_refused(capsys, argv, "back-end 'cosine' has no option 'components'", out, tmp_path)
    backend = save_backend(tmp_path / "c.npz", fit_backend(files["train"], kind="cosine"))
    ev = write_embeddings(tmp_path / "nokey.npz", _emb(20, keys=False))
    out = tmp_path / "s.txt"
    argv = ["backend", "score", str(backend), str(ev), "--out", str(out), "--format",
            "asvspoof2019"]  # fmt: skip
    _assert_refused(capsys, argv, "the asvspoof2019 layout needs keys", out, tmp_path)


def test_unwritable_destination_is_an_environment_fault(files, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "b.npz"  # its parent is a file: cannot be created
    rc, _, err = run(
        ["backend", "fit", "--kind", "cosine", str(files["train"]), "--out", str(out)], capsys
    )
    assert rc == 1
    assert err.startswith(f"error: {out}: cannot write") and len(err.strip().splitlines()) == 1
    backend = save_backend(tmp_path / "c.npz", fit_backend(files["train"], kind="cosine"))
    with pytest.raises(SystemExit) as exc:
        main(["backend", "score", str(backend), str(files["eval"]), "--out", str(out)])
    assert exc.value.code == 1


def test_api_takes_records_as_well_as_paths(tmp_path):
    trained = fit_backend(_emb(200), kind="plda", dev=_emb(100, seed=1, prefix="D"))
    assert trained.dev is not None and trained.dev["path"] is None
    assert trained.dev["n"] == 100 and 0 <= trained.dev["eer"] < 0.3
    out = score_embeddings(trained, _emb(50, seed=3, prefix="E"), tmp_path / "s.txt")
    side = json.loads(out.with_name("s.txt.json").read_text())
    assert side["backend"]["path"] is None and side["n_utterances"] == 50
    assert "log mean_k N(x; attack k)" in side["score"]


def test_gmm_thread_limit_does_not_change_the_fit():
    emb = _emb(400)
    one = GmmBackend.fit(emb.vectors, emb.label, emb.attack, components=2, threads=1)
    lib = GmmBackend.fit(emb.vectors, emb.label, emb.attack, components=2, threads=None)
    np.testing.assert_allclose(one.score(emb.vectors), lib.score(emb.vectors), rtol=1e-9)


def test_importing_backends_and_embeddings_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, trainer.backends, trainer.embeddings, trainer.cli; "
        "heavy = [m for m in ('sklearn', 'torch', 'zarr', 'threadpoolctl') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
