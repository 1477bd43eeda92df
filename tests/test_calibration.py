"""Calibration and fusion: the API (trainer.calibration), the score-file workflow
(trainer.calibration_files) and ``trainer calibrate`` / ``trainer fuse`` with bad input."""

from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featstore.errors import ResourceError
from trainer.calibration import Calibration, CalibrationError, calibrate, effective_prior, fuse
from trainer.cli import main
from trainer.metrics import act_dcf, cllr, compute_eer, min_dcf

# two Gaussians, bona fide N(3, 1) and spoof N(1, 1): true LLR 2 x - 4; the raw scores are
# an affine distortion of x, raw = 0.3 x + 5, whose true LLR is (2 / 0.3) raw - 4 - 10 / 0.3
TRUE_SLOPE, TRUE_OFFSET = 2 / 0.3, -4 - 2 * 5 / 0.3


def gaussian_scores(n_bona: int, n_spoof: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(3, 1, n_bona), rng.normal(1, 1, n_spoof)])
    return 0.3 * x + 5, np.repeat([1, 0], [n_bona, n_spoof])


def split(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return scores[labels == 1], scores[labels == 0]


# --- the API ----------------------------------------------------------------------------------


def test_recovers_the_true_llr_and_actdcf_meets_mindcf():
    raw, labels = gaussian_scores(20_000, 80_000, seed=1)
    cal = calibrate(raw, labels)
    assert cal.weights[0] == pytest.approx(TRUE_SLOPE, rel=0.02)
    assert cal.offset == pytest.approx(TRUE_OFFSET, rel=0.02)
    # on fresh eval scores of the same systems the Bayes decision is (nearly) the best one
    ev, ev_labels = gaussian_scores(50_000, 200_000, seed=2)
    bona, spoof = split(cal.apply(ev), ev_labels)
    assert act_dcf(bona, spoof) == pytest.approx(min_dcf(bona, spoof), rel=0.01)
    assert act_dcf(bona, spoof) >= min_dcf(bona, spoof)
    raw_bona, raw_spoof = split(ev, ev_labels)
    assert cllr(bona, spoof) < cllr(raw_bona, raw_spoof)


def test_matches_the_literal_objective_minimised_independently():
    # the textbook objective on raw (unstandardised) scores, minimised by Nelder-Mead
    from scipy.optimize import minimize

    raw, labels = gaussian_scores(300, 1200, seed=3)
    p = effective_prior(0.05, 1.0, 10.0)
    tau = math.log(p / (1 - p))

    def objective(theta):
        s = theta[0] * raw + theta[1]
        bona, spoof = split(s, labels)
        return p * np.mean(np.logaddexp(0, -(bona + tau))) + (1 - p) * np.mean(
            np.logaddexp(0, spoof + tau)
        )

    ref = minimize(objective, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10,
                   "fatol": 1e-14, "maxiter": 20_000}).x  # fmt: skip
    cal = calibrate(raw, labels)
    assert cal.weights[0] == pytest.approx(ref[0], rel=1e-4)
    assert cal.offset == pytest.approx(ref[1], rel=1e-4)


def test_prior_is_the_spoof_prior_of_the_asvspoof5_cost_model():
    # the optimum's offset gradient vanishes at the effective bona fide prior 0.655 of
    # (p_spoof 0.05, Cmiss 1, Cfa 10), not at a bona fide prior of 0.05
    assert effective_prior() == pytest.approx(0.95 / (0.95 + 0.5))
    rng = np.random.default_rng(4)  # unequal variances: the prior moves the affine fit
    raw = np.concatenate([rng.normal(2, 0.5, 5000), rng.normal(0, 2, 20_000)])
    labels = np.repeat([1, 0], [5000, 20_000])
    cal = calibrate(raw, labels)
    assert cal.prior == 0.05 and cal.effective_prior == pytest.approx(0.6552, abs=1e-4)
    bona, spoof = split(cal.apply(raw), labels)

    def offset_gradient(p: float) -> float:
        t = math.log(p / (1 - p))
        sig = 1 / (1 + np.exp(bona + t))  # sigmoid(-(s + t))
        return -p * sig.mean() + (1 - p) * (1 / (1 + np.exp(-(spoof + t)))).mean()

    assert abs(offset_gradient(cal.effective_prior)) < 1e-8
    assert abs(offset_gradient(0.05)) > 1e-3
    other = calibrate(raw, labels, prior=0.5)
    assert other.weights[0] != pytest.approx(cal.weights[0], rel=0.01)
    # calibrated at the operating point, actDCF is better there than with another prior
    assert act_dcf(bona, spoof) < act_dcf(*split(other.apply(raw), labels))


def test_calibration_keeps_the_ranking():
    raw, labels = gaussian_scores(2000, 8000, seed=5)
    cal = calibrate(raw, labels)
    assert cal.weights[0] > 0
    before, after = split(raw, labels), split(cal.apply(raw), labels)
    assert compute_eer(*after)[0] == compute_eer(*before)[0]
    assert min_dcf(*after) == min_dcf(*before)


def test_fusion_beats_each_system():
    def systems(seed: int, n_bona: int, n_spoof: int):
        rng = np.random.default_rng(seed)
        z = np.concatenate([rng.normal(2, 1, n_bona), rng.normal(0, 1, n_spoof)])
        a = 3 * (z + rng.normal(0, 1, z.size)) - 1  # two noisy views, different scales
        b = 0.5 * (z + rng.normal(0, 1.2, z.size)) + 4
        return a, b, np.repeat([1, 0], [n_bona, n_spoof])

    a, b, labels = systems(6, 5000, 20_000)
    fused = fuse([a, b], labels)
    assert len(fused.weights) == 2 and all(w > 0 for w in fused.weights)
    ea, eb, ev_labels = systems(7, 5000, 20_000)
    f = split(fused.apply([ea, eb]), ev_labels)
    for raw in (a, b):
        single = calibrate(raw, labels)
        s = split(single.apply(ea if raw is a else eb), ev_labels)
        assert min_dcf(*f) < min_dcf(*s)
        assert act_dcf(*f) < act_dcf(*s)
        assert cllr(*f) < cllr(*s)
    # an (n, k) ndarray is the same input as a list of k systems
    np.testing.assert_array_equal(fused.apply(np.column_stack([ea, eb])), fused.apply([ea, eb]))
    assert fuse(np.column_stack([a, b]), labels) == fused


def test_separable_dev_scores_give_finite_weights():
    cal = calibrate([5.0, 6.0, 7.0, 1.0, 2.0, 3.0], [1, 1, 1, 0, 0, 0])
    assert all(math.isfinite(v) for v in (*cal.weights, cal.offset))
    assert cal.apply([4.0])[0] > cal.apply([3.5])[0]


def test_apply_and_records():
    cal = Calibration(weights=(2.0, -1.0), offset=0.5, prior=0.1)
    np.testing.assert_array_equal(cal.apply([[1.0, 2.0], [3.0, 4.0]]), [-0.5, 0.5])  # 2 systems
    with pytest.raises(CalibrationError, match="takes 2 system"):
        cal.apply([1.0, 2.0])
    with pytest.raises(CalibrationError, match="not finite"):
        cal.apply([[1.0, np.nan], [3.0, 5.0]])
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    with pytest.raises(CalibrationError, match="not a calibration record"):
        Calibration.from_dict({"offset": 1.0})


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([1.0, 2.0, 3.0], [1, 1, 1], "no spoof dev trials"),
        ([1.0, 2.0, 3.0], [0, 0, 0], "no bona fide dev trials"),
        ([1.0, np.nan, 3.0], [1, 0, 0], "not finite"),
        ([1.0, np.inf, 3.0], [1, 0, 0], "not finite"),
        ([2.0, 2.0, 2.0], [1, 0, 0], "same score to every dev trial"),
        ([1.0, 2.0, 3.0], [1, 0, 2], "labels must be 1"),
        ([1.0, 2.0, 3.0], [1, 0], "labels of shape"),
    ],
)
def test_bad_input_raises(scores, labels, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate(scores, labels)


@pytest.mark.parametrize(
    ("prior", "costs"), [(0.0, {}), (1.0, {}), (-0.1, {}), (0.05, {"c_fa": 0})]
)
def test_bad_operating_point_raises(prior, costs):
    with pytest.raises(CalibrationError, match=r"prior|c_fa"):
        calibrate([1.0, 2.0, 3.0], [1, 0, 0], prior=prior, **costs)


def test_fuse_rejects_ragged_and_constant_systems():
    with pytest.raises(CalibrationError, match="different numbers"):
        fuse([[1.0, 2.0, 3.0], [1.0, 2.0]], [1, 0, 0])
    with pytest.raises(CalibrationError, match="system 2 gives the same score"):
        fuse([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], [1, 0, 0])


def test_module_does_not_import_torch():
    code = (
        "import sys, trainer.calibration, trainer.calibration_files; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the command line -------------------------------------------------------------------------


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def write_2019(path: Path, ids, scores, labels, attacks=None, speakers=None) -> Path:
    rows = []
    for i, (u, s, k) in enumerate(zip(ids, scores, labels, strict=True)):
        att = "-" if k == 1 else (attacks[i] if attacks is not None else "A07")
        spk = speakers[i] if speakers is not None else f"LA_{i % 7:04d}"
        rows.append(f"{spk} {u} - {att} {'bonafide' if k == 1 else 'spoof'} {float(s)!r}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def sets(tmp_path: Path) -> dict[str, object]:
    """Dev and eval 2019 files of two systems (b is a noisy second view, shuffled)."""
    rng = np.random.default_rng(8)
    out: dict[str, object] = {}
    for name, n_bona, n_spoof in (("dev", 300, 1200), ("eval", 400, 1600)):
        labels = np.repeat([1, 0], [n_bona, n_spoof])
        z = np.where(labels == 1, 2.0, 0.0) + rng.normal(0, 1, labels.size)
        a = 0.3 * z + 5
        b = z + rng.normal(0, 1, z.size)
        ids = [f"LA_{name[0].upper()}_{i:07d}" for i in range(labels.size)]
        attacks = [f"A{(i % 6) + 7:02d}" for i in range(labels.size)]
        out[f"{name}_a"] = write_2019(tmp_path / f"{name}_a.txt", ids, a, labels, attacks)
        perm = rng.permutation(labels.size)
        out[f"{name}_b"] = write_2019(
            tmp_path / f"{name}_b.txt",
            [ids[i] for i in perm],
            b[perm],
            labels[perm],
            [attacks[i] for i in perm],
        )
        out[f"{name}_ids"], out[f"{name}_labels"] = ids, labels
        out[f"{name}_raw"] = (a, b)
    return out


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(out.name + ".json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files


def test_calibrate_cli_writes_llrs_in_the_input_layout(sets, tmp_path, capsys):
    out = tmp_path / "cal" / "eval_cal.txt"
    rc, text, err = run(
        ["calibrate", sets["dev_a"], "--apply", sets["eval_a"], "--out", out], capsys
    )
    assert rc == 0, err
    assert "weight" in text and "offset" in text and "eval  calibrated" in text
    record = json.loads(out.with_name("eval_cal.txt.json").read_text())
    cal = Calibration.from_dict(record["calibration"])
    src = [ln.split() for ln in Path(sets["eval_a"]).read_text().splitlines()]
    got = [ln.split() for ln in out.read_text().splitlines()]
    assert [r[:5] for r in got] == [r[:5] for r in src]  # speaker, id, -, attack, key kept
    np.testing.assert_allclose(
        [float(r[5]) for r in got], cal.apply([float(r[5]) for r in src]), rtol=0, atol=0
    )
    assert record["kind"] == "calibration" and record["format"] == "asvspoof2019"
    assert record["n_dev"] == 1500 and record["n_eval"] == 2000
    assert record["calibration"]["prior"] == 0.05
    assert record["cost_model"] == {"p_spoof": 0.05, "c_miss": 1.0, "c_fa": 10.0}
    ev = record["metrics"]["eval"]
    assert ev["after"]["mindcf"] == pytest.approx(ev["before"][0]["mindcf"])
    assert ev["after"]["actdcf"] < ev["before"][0]["actdcf"]
    assert ev["after"]["cllr"] < ev["before"][0]["cllr"]
    import hashlib

    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_calibrate_cli_prior_option(sets, tmp_path, capsys):
    out = tmp_path / "c.txt"
    argv = ["calibrate", sets["dev_a"], "--apply", sets["eval_a"], "--out", out, "--prior", "0.2"]
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    record = json.loads(out.with_name("c.txt.json").read_text())
    assert record["calibration"]["prior"] == 0.2 and record["cost_model"]["p_spoof"] == 0.2


def test_keyless_eval_is_calibrated_without_metrics(sets, tmp_path, capsys):
    ids, (a, _) = sets["eval_ids"], sets["eval_raw"]
    ev21 = tmp_path / "eval21.txt"
    ev21.write_text("".join(f"{u} {float(s)!r}\n" for u, s in zip(ids, a, strict=True)))
    out = tmp_path / "o.txt"
    rc, text, err = run(["calibrate", sets["dev_a"], "--apply", ev21, "--out", out], capsys)
    assert rc == 0, err
    assert "no keys" in text
    lines = out.read_text().splitlines()
    assert len(lines) == len(ids) and len(lines[0].split()) == 2  # the 2021 layout
    assert json.loads(out.with_name("o.txt.json").read_text())["metrics"]["eval"] is None
    # with the eval key file the eval metrics are back
    key = tmp_path / "eval_key.txt"
    labels = sets["eval_labels"]
    key.write_text(
        "".join(
            f"LA_0001 {u} - {'-' if k else 'A07'} {'bonafide' if k else 'spoof'}\n"
            for u, k in zip(ids, labels, strict=True)
        )
    )
    argv = ["calibrate", sets["dev_a"], "--apply", ev21, "--out", out, "--eval-protocol", key]
    rc, text, err = run(argv, capsys)
    assert rc == 0, err
    assert "eval  calibrated" in text
    assert json.loads(out.with_name("o.txt.json").read_text())["metrics"]["eval"] is not None


def test_fuse_cli(sets, tmp_path, capsys):
    out = tmp_path / "fused.txt"
    argv = ["fuse", sets["dev_a"], sets["dev_b"], "--apply", sets["eval_a"], sets["eval_b"],
            "--out", out]  # fmt: skip
    rc, text, err = run(argv, capsys)
    assert rc == 0, err
    assert "eval  fused" in text
    record = json.loads(out.with_name("fused.txt.json").read_text())
    assert record["kind"] == "fusion" and len(record["systems"]) == 2
    # output in the first eval file's order, each id fused with its own score of system b
    a, b = sets["eval_raw"]
    cal = Calibration.from_dict(record["calibration"])
    got = out.read_text().splitlines()
    assert [ln.split()[1] for ln in got] == sets["eval_ids"]
    np.testing.assert_allclose([float(ln.split()[5]) for ln in got], cal.apply([a, b]))
    m = record["metrics"]["eval"]
    assert all(m["after"]["cllr"] < s["cllr"] for s in m["before"])


# --- bad input: one error line, exit 2, nothing written ---------------------------------------


def edit(path: Path, tmp_path: Path, name: str, fn) -> Path:
    lines = Path(path).read_text().splitlines()
    new = tmp_path / name
    new.write_text("\n".join(fn(lines)) + "\n")
    return new


def replace_score(line: str, value: str) -> str:
    return " ".join([*line.split()[:5], value])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one_class_dev", "no spoof trials"),
        ("nan_dev", "score 'nan' is not finite"),
        ("inf_eval", "score 'inf' is not finite"),
        ("missing_id", "has no score in"),
        ("extra_id", "is not in"),
        ("duplicate_id", "duplicate utterance"),
        ("key_disagrees", "disagrees with"),
        ("constant_dev", "same score to every dev trial"),
        ("dev_without_keys", "give the key file"),
    ],
)
def test_bad_input_exit_2_nothing_written(case, message, sets, tmp_path, capsys):
    dev_a, dev_b, ev_a, ev_b = sets["dev_a"], sets["dev_b"], sets["eval_a"], sets["eval_b"]
    if case == "one_class_dev":
        dev_a = edit(dev_a, tmp_path, "x.txt", lambda ls: [ln for ln in ls if "bonafide" in ln])
        dev_b = None
    elif case == "nan_dev":
        dev_b = edit(dev_b, tmp_path, "x.txt", lambda ls: [*ls[:5], replace_score(ls[5], "nan"),
                                                           *ls[6:]])  # fmt: skip
    elif case == "inf_eval":
        ev_b = edit(ev_b, tmp_path, "x.txt", lambda ls: [replace_score(ls[0], "inf"), *ls[1:]])
    elif case == "missing_id":
        dev_b = edit(dev_b, tmp_path, "x.txt", lambda ls: ls[:-1])
    elif case == "extra_id":
        ev_b = edit(ev_b, tmp_path, "x.txt", lambda ls: [*ls, "LA_0001 LA_E_9 - - bonafide 1.0"])
    elif case == "duplicate_id":
        ev_b = edit(ev_b, tmp_path, "x.txt", lambda ls: [*ls, ls[3]])
    elif case == "key_disagrees":
        flip = {"bonafide": "spoof", "spoof": "bonafide"}

        def fn(ls):
            f = ls[0].split()
            return [" ".join([f[0], f[1], "-", "A07", flip[f[4]], f[5]]), *ls[1:]]

        dev_b = edit(dev_b, tmp_path, "x.txt", fn)
    elif case == "constant_dev":
        dev_a = edit(dev_a, tmp_path, "x.txt", lambda ls: [replace_score(ln, "0.5") for ln in ls])
        dev_b = None
    elif case == "dev_without_keys":
        dev_a = edit(dev_a, tmp_path, "x.txt", lambda ls: [" ".join(ln.split()[1::4]) for ln in ls])
        dev_b = None
    out = tmp_path / "res" / "out.txt"
    if dev_b is None:
        argv = ["calibrate", dev_a, "--apply", ev_a, "--out", out]
    else:
        argv = ["fuse", dev_a, dev_b, "--apply", ev_a, ev_b, "--out", out]
    rc, text, err = run(argv, capsys)
    assert rc == 2, (text, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    if case in ("nan_dev", "missing_id", "extra_id", "duplicate_id", "key_disagrees"):
        assert ".txt:" in err  # names the file and line
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (["--apply", "E1"], "two or more systems"),
        (["D2", "--apply", "E1"], "one eval file per system"),
        (["D2", "E1", "E2"], "after one --apply"),
        (["D2", "--apply", "E1", "E2", "--priorr", "0.1"], "no such option"),
    ],
)
def test_fuse_usage_errors(tail, message, sets, tmp_path, capsys):
    names = {"D2": sets["dev_b"], "E1": sets["eval_a"], "E2": sets["eval_b"]}
    out = tmp_path / "o.txt"
    argv = ["fuse", sets["dev_a"], *[names.get(t, t) for t in tail], "--out", out]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and message in err
    assert not out.exists()


def test_bad_prior_is_exit_2(sets, tmp_path, capsys):
    out = tmp_path / "o.txt"
    argv = ["calibrate", sets["dev_a"], "--apply", sets["eval_a"], "--out", out, "--prior", "1.5"]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "error: prior must be a spoof prior in (0, 1)" in err
    assert not out.exists()


# --- environment faults: exit 1, nothing written ----------------------------------------------


@pytest.mark.parametrize("fails", ["score_file", "sidecar"])
def test_disk_full_is_exit_1_and_writes_nothing(fails, sets, tmp_path, capsys, monkeypatch):
    method = "write_bytes" if fails == "score_file" else "write_text"
    original = getattr(Path, method)

    def full(self, *args, **kwargs):
        if self.name.startswith("."):  # the temporary siblings of the outputs
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, full)
    out = tmp_path / "o.txt"
    rc, _, err = run(["calibrate", sets["dev_a"], "--apply", sets["eval_a"], "--out", out], capsys)
    assert rc == 1, err
    assert err == f"error: {out}: cannot write: No space left on device\n"
    assert_nothing_written(tmp_path, out)


def test_resource_error_exits_1(capsys):
    import click

    from featstore.cli_runner import run_cli

    @click.command()
    def boom() -> None:
        raise ResourceError("lock held by pid 7")

    with pytest.raises(SystemExit) as exc:
        run_cli(boom, "x", [])
    assert exc.value.code == 1
    assert capsys.readouterr().err == "error: lock held by pid 7\n"


# --- real scores (../shared/data) -------------------------------------------------------------


@pytest.mark.shared
def test_real_asvspoof2019_scores(shared_data, tmp_path, capsys):
    d = shared_data / "asvspoof2019_la_scores"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    out = tmp_path / "fused.txt"
    dev = [d / "dev/cm_lfcc_hr_gmm.txt", d / "dev/cm_gmm_baseline.txt"]
    ev = [d / "eval/cm_lfcc_hr_gmm.txt", d / "eval/cm_B02_lfcc_gmm.txt"]
    argv = ["fuse", *dev, "--apply", *ev, "--out", out]
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    m = json.loads(out.with_name("fused.txt.json").read_text())["metrics"]
    assert m["dev"]["after"]["cllr"] < min(s["cllr"] for s in m["dev"]["before"])
    assert m["eval"]["after"]["mindcf"] < min(s["mindcf"] for s in m["eval"]["before"])
    assert m["eval"]["after"]["actdcf"] < min(s["actdcf"] for s in m["eval"]["before"])


def test_fusing_a_system_with_itself_is_its_calibration(sets, tmp_path, capsys):
    # same ids in the same order (no lookups) and collinear systems: the L2 penalty splits
    # the weight, the fused LLR is the calibrated one (up to that penalty)
    out, single = tmp_path / "f.txt", tmp_path / "c.txt"
    dev, ev = sets["dev_a"], sets["eval_a"]
    rc, _, err = run(["fuse", dev, dev, "--apply", ev, ev, "--out", out], capsys)
    assert rc == 0, err
    rc, _, err = run(["calibrate", dev, "--apply", ev, "--out", single], capsys)
    assert rc == 0, err
    fused = json.loads(out.with_name("f.txt.json").read_text())["calibration"]
    cal = json.loads(single.with_name("c.txt.json").read_text())["calibration"]
    assert fused["weights"][0] == pytest.approx(fused["weights"][1], rel=1e-6)
    assert sum(fused["weights"]) == pytest.approx(cal["weights"][0], rel=1e-3)
    assert fused["offset"] == pytest.approx(cal["offset"], rel=1e-3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("LA_E_1 0.5\nLA_E_2 0.1 x\n", "2: expected 2 columns, got 3"),
        ("LA_E_1 0.5\nLA_E_2 abc\n", "2: score 'abc' is not a number"),
        ("LA_E_1 0.5\nLA_E_2 nan\n", "2: score 'nan' is not finite"),
        ("LA_E_1 0.5\n\nLA_E_1 0.7\n", "3: duplicate utterance 'LA_E_1' (first on line 1)"),
        ("filename\tcm-score\n", " score file has a header but no scores"),
        ("cm-score\tx\nLA_E_1\t0.5\n", "1: header has 'cm-score' but no 'filename' column"),
    ],
)
def test_keyless_eval_bad_input(text, message, sets, tmp_path, capsys):
    ev = tmp_path / "eval.txt"
    ev.write_text(text)
    out = tmp_path / "o.txt"
    rc, _, err = run(["calibrate", sets["dev_a"], "--apply", ev, "--out", out], capsys)
    assert rc == 2 and err == f"error: {ev}:{message}\n"  # file, line, what; one line
    assert not out.exists()


def test_keyless_asvspoof5_eval_keeps_its_layout(sets, tmp_path, capsys):
    ids, (a, _) = sets["eval_ids"], sets["eval_raw"]
    ev = tmp_path / "eval.tsv"
    rows = "".join(f"{u}\t{float(s)!r}\n" for u, s in zip(ids, a, strict=True))
    ev.write_text("filename\tcm-score\n" + rows)
    out = tmp_path / "o.tsv"
    rc, _, err = run(["calibrate", sets["dev_a"], "--apply", ev, "--out", out], capsys)
    assert rc == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "filename\tcm-score" and len(lines) == len(ids) + 1
    assert [ln.split("\t")[0] for ln in lines[1:]] == ids
