"""trainer.metrics: hand-computed cases, official reference values, properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.errors import MetricsError
from trainer.metrics import (
    AsvScores,
    act_dcf,
    asv_error_rates,
    cllr,
    compute_eer,
    compute_metrics,
    det_curve,
    format_metrics,
    format_summary,
    min_dcf,
    min_tdcf,
    tdcf_curve,
)

# --- hand-computed ----------------------------------------------------------------------------

# bona fide 0.5 0.5 0.5 0.9 0.9, spoof 0.5 0.5 0.5 0.1 0.1 (= ties_example.txt). Stable sort of
# bona fide then spoof: s s b b b s s s b b (0.1 0.1 0.5x6 0.9 0.9); bona fide first in the tie.
TIE_BONA = [0.5, 0.5, 0.5, 0.9, 0.9]
TIE_SPOOF = [0.5, 0.5, 0.5, 0.1, 0.1]
TIE_PMISS = [0, 0, 0, 0.2, 0.4, 0.6, 0.6, 0.6, 0.6, 0.8, 1.0]
TIE_PFA = [1.0, 0.8, 0.6, 0.6, 0.6, 0.6, 0.4, 0.2, 0, 0, 0]


def test_det_points_with_ties_are_not_merged():
    d = det_curve(TIE_BONA, TIE_SPOOF)
    np.testing.assert_allclose(d.pmiss, TIE_PMISS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.pfa, TIE_PFA, rtol=0, atol=1e-15)
    # official thresholds: lowest score - 0.001, then the sorted scores
    np.testing.assert_allclose(d.thresholds, [0.099, 0.1, 0.1, *[0.5] * 6, 0.9, 0.9])
    assert d.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]


def test_eer_with_ties_is_first_minimum_without_interpolation():
    # |pmiss - pfa| is 0 only at point 5 (pmiss = pfa = 0.6); merging the tie would give
    # the points (0, 0.6) and (0.6, 0) instead.
    eer, thr = compute_eer(TIE_BONA, TIE_SPOOF)
    assert eer == pytest.approx(0.6, abs=1e-15)
    assert thr == 0.5


def test_eer_takes_first_of_equal_minima():
    # bona 2, spoof 1: points (0,1) (0.5,1) (0.5,0) (1,0)?  sorted: s(1) b(2) ->
    # i0 (0,1) i1 (0,0) i2 (1,0): EER 0 at i1, threshold = 1 (highest rejected score)
    assert compute_eer([2.0], [1.0]) == (0.0, 1.0)
    # a worst-case system: bona 1 < spoof 2: i0 (0,1) i1 (1,1) i2 (1,0) -> first minimum i1
    assert compute_eer([1.0], [2.0]) == (1.0, 1.0)
    # two points with |diff| = 0.5: i0 (0, 1)... bona [1, 3], spoof [2]
    # sorted b1 s2 b3: i0 (0,1) i1 (.5,1) i2 (.5,0) i3 (1,0); |diff| 1 .5 .5 1 -> i1
    eer, thr = compute_eer([1.0, 3.0], [2.0])
    assert (eer, thr) == (0.75, 1.0)


def test_min_dcf_act_dcf_cllr_on_ties():
    # c(i) = 0.95 pmiss + 0.5 pfa, normalised by 0.5: minimum 0.3 at point 2 -> 0.6
    assert min_dcf(TIE_BONA, TIE_SPOOF) == pytest.approx(0.6, abs=1e-15)
    # Bayes threshold -ln(0.95 / 0.5) = -0.642: everything accepted -> 0.05*10*1 / 0.5 = 1
    assert act_dcf(TIE_BONA, TIE_SPOOF) == 1.0
    want = 0.5 * (
        (3 * math.log2(1 + math.exp(-0.5)) + 2 * math.log2(1 + math.exp(-0.9))) / 5
        + (3 * math.log2(1 + math.exp(0.5)) + 2 * math.log2(1 + math.exp(0.1))) / 5
    )
    assert cllr(TIE_BONA, TIE_SPOOF) == pytest.approx(want, rel=1e-14)


def test_act_dcf_threshold_sides():
    t = -math.log(0.95 / 0.5)
    # bona fide exactly at the threshold is kept (missed only when < t); spoof at t accepted
    assert act_dcf([t], [t - 1]) == 0.0
    assert act_dcf([t - 1e-9], [t - 1]) == pytest.approx(0.95 / 0.5)
    assert act_dcf([t + 1], [t]) == pytest.approx(1.0)


# ASV: target [3, 4], non-target [1, 2], spoof [2.5, 3.5, 0]. ASV DET: n1 n2 t3 t4, EER 0 at
# point 2, threshold 2 (the highest rejected score), then ">= 2" accepts the non-target 2:
# Pfa_asv 0.5, Pmiss_asv 0, Pfa_spoof_asv 2/3, Pmiss_spoof_asv 1/3.
ASV = AsvScores(np.array([3.0, 4.0]), np.array([1.0, 2.0]), np.array([2.5, 3.5, 0.0]))


def test_asv_error_rates_by_hand():
    r = asv_error_rates(ASV.target, ASV.nontarget, ASV.spoof)
    assert (r.threshold, r.eer, r.pfa, r.pmiss) == (2.0, 0.0, 0.5, 0.0)
    assert r.pfa_spoof == pytest.approx(2 / 3) and r.pmiss_spoof == pytest.approx(1 / 3)
    assert asv_error_rates([3.0], [1.0]).pfa_spoof is None


def test_tdcf_curves_by_hand():
    r = asv_error_rates(ASV.target, ASV.nontarget, ASV.spoof)
    d = det_curve([1.0, 2.0], [0.0, 0.5])  # pmiss 0 0 0 .5 1, pfa 1 .5 0 0 0
    ptar, pnon = 0.95 * 0.99, 0.95 * 0.01
    c0 = pnon * 10 * 0.5
    c1 = ptar - c0
    c2 = 0.05 * 10 * (2 / 3)
    want = (c0 + c1 * d.pmiss + c2 * d.pfa) / (c0 + min(c1, c2))
    np.testing.assert_allclose(tdcf_curve(d, r), want, rtol=1e-14)
    assert tdcf_curve(d, r)[0] == pytest.approx(1.0)  # accept-all CM costs 1 by design
    assert min_tdcf([1.0, 2.0], [0.0, 0.5], r) == pytest.approx(c0 / (c0 + c2))
    # legacy: C1 = Ptar (1 - Pmiss_asv) - Pnon 10 Pfa_asv, C2 = 10 Pspoof (1 - Pmiss_spoof_asv)
    l1, l2 = ptar * 1 - pnon * 10 * 0.5, 10 * 0.05 * (1 - 1 / 3)
    want_l = (l1 * d.pmiss + l2 * d.pfa) / min(l1, l2)
    np.testing.assert_allclose(tdcf_curve(d, r, legacy=True), want_l, rtol=1e-14)
    assert min_tdcf([1.0, 2.0], [0.0, 0.5], r, legacy=True) == 0.0


def test_tdcf_needs_spoofed_asv_trials():
    r = asv_error_rates([3.0, 4.0], [1.0, 2.0])
    with pytest.raises(MetricsError, match="spoof"):
        tdcf_curve(det_curve([1.0], [0.0]), r)
    with pytest.raises(MetricsError, match="spoof"):
        compute_metrics([1.0, 0.0], [1, 0], asv=AsvScores(ASV.target, ASV.nontarget, np.empty(0)))


def test_compute_metrics_groups():
    scores = [0.9, 0.8, 0.7, 0.3, 0.85, 0.1, 0.2]
    labels = [1, 1, 1, 0, 0, 0, 0]
    attacks = ["-", "-", "-", "A01", "A02", "A10", "A02"]
    codec = ["none", "gsm", "none", "none", "gsm", "gsm", "none"]
    m = compute_metrics(scores, labels, attacks=attacks, conditions={"codec": codec}, asv=ASV)
    assert list(m.per_attack) == ["A01", "A02", "A10"]  # natural order, bona fide excluded
    assert m.per_attack["A01"].n_bonafide == 3 and m.per_attack["A02"].n_spoof == 2
    assert m.per_attack["A01"].eer == compute_eer([0.9, 0.8, 0.7], [0.3])[0]
    assert m.per_attack["A02"].eer == compute_eer([0.9, 0.8, 0.7], [0.85, 0.2])[0]
    # codec varies on bona fide too: each value's bona fide vs that value's spoofs
    g = m.per_condition["codec"]
    assert g["gsm"].eer == compute_eer([0.8], [0.85, 0.1])[0]
    assert g["none"].n_bonafide == 2 and g["none"].n_spoof == 2
    d = m.to_dict()
    assert d["min_tdcf"] is not None and d["min_tdcf_legacy"] is not None
    assert set(d["per_attack"]["A01"]) >= {"eer", "mindcf", "actdcf", "cllr", "min_tdcf"}
    assert d["per_condition"]["codec"]["gsm"]["n_bonafide"] == 1
    # an attack-side column (one value on all bona fide) compares all bona fide
    m2 = compute_metrics(scores, labels, conditions={"att": attacks})
    assert m2.per_condition["att"]["A01"].n_bonafide == 3
    assert "-" not in m2.per_condition["att"]
    # a condition with no spoof (or no bona fide) trials gets None metrics, not an error
    m3 = compute_metrics([1.0, 0.5, 0.0], [1, 1, 0], conditions={"c": ["x", "y", "x"]})
    assert m3.per_condition["c"]["y"].eer is None and m3.per_condition["c"]["x"].eer == 0.0


def test_per_attack_tdcf_needs_the_asv_spoofs_of_every_attack():
    scores, labels = [0.9, 0.8, 0.3, 0.85, 0.1], [1, 1, 0, 0, 0]
    attacks = ["-", "-", "A01", "A02", "-"]  # "-": a spoof of unknown attack
    spoof = np.array([2.5, 3.5, 0.0])
    with_attacks = AsvScores(ASV.target, ASV.nontarget, spoof, np.array(["A01", "A01", "A03"]))
    with pytest.raises(
        MetricsError,
        match=r"no spoof trials of attack\(s\) A02 of the CM scores \(they hold A01, A03\)",
    ):
        compute_metrics(scores, labels, attacks=attacks, asv=with_attacks)
    # each attack uses its own ASV spoofs; without attack ids (or for "-") the pooled ones
    both = AsvScores(ASV.target, ASV.nontarget, spoof, np.array(["A01", "A02", "A02"]))
    m = compute_metrics(scores, labels, attacks=attacks, asv=both)
    pooled = compute_metrics(scores, labels, attacks=attacks, asv=ASV)
    assert m.min_tdcf == pooled.min_tdcf
    assert m.per_attack["-"].min_tdcf == pooled.per_attack["-"].min_tdcf
    a01 = asv_error_rates(ASV.target, ASV.nontarget, spoof[:1])
    assert m.per_attack["A01"].min_tdcf == pytest.approx(min_tdcf([0.9, 0.8], [0.3], a01))


def test_compute_metrics_without_asv_has_null_tdcf():
    d = compute_metrics([1.0, 0.0], [1, 0]).to_dict()
    assert d["min_tdcf"] is None and d["min_tdcf_legacy"] is None and d["asv"] is None


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([1.0, 2.0], [1, 1], "no spoof"),
        ([1.0, 2.0], [0, 0], "no bona fide"),
        ([1.0, float("nan")], [1, 0], "NaN or inf"),
        ([1.0, float("inf")], [1, 0], "NaN or inf"),
        ([1.0, 2.0], [1, 2], "labels"),
        ([1.0, 2.0], [1], "labels"),
    ],
)
def test_compute_metrics_rejects_bad_input(scores, labels, match):
    with pytest.raises(MetricsError, match=match):
        compute_metrics(scores, labels)


def test_asv_without_target_or_nontarget():
    with pytest.raises(MetricsError, match="target"):
        asv_error_rates([], [1.0])
    with pytest.raises(MetricsError, match="non-target"):
        asv_error_rates([1.0], [])


def test_cllr_uninformative_and_extreme_scores():
    assert cllr(np.zeros(7), np.zeros(3)) == 1.0
    assert cllr([1e5], [-1e5]) == 0.0  # no overflow in exp
    assert cllr([-1e5], [1e5]) == pytest.approx(1e5 / math.log(2))
    assert act_dcf(np.zeros(4), np.zeros(4)) == 1.0


def test_tables():
    m = compute_metrics([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], attacks=["-", "-", "A01", "A02"])
    text = format_metrics(m, title="x.txt")
    assert text.splitlines()[0] == "x.txt" and "A02" in text and "needs --asv-scores" in text
    m2 = compute_metrics(
        [0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], attacks=["-", "-", "A01", "A02"], asv=ASV
    )
    assert "legacy 2019" in format_metrics(m2, legacy_tdcf=True)
    assert len(format_summary([("a", m), ("b", m2)]).splitlines()) == 3


# --- properties -------------------------------------------------------------------------------

int_scores = st.lists(st.integers(-20, 20), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(int_scores, int_scores)
def test_eer_and_rates_in_unit_interval(b, s):
    d = det_curve(b, s)
    assert 0 <= d.eer <= 1
    assert d.pmiss[0] == 0 and d.pmiss[-1] == 1 and d.pfa[0] == 1 and d.pfa[-1] == 0
    assert np.all(np.diff(d.pmiss) >= 0) and np.all(np.diff(d.pfa) <= 0)
    assert 0 <= min_dcf(b, s) <= 1 + 1e-12  # accept-all or reject-all costs at most 1
    assert 0 <= act_dcf(b, s)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=60, unique=True), st.data())
def test_swapping_classes_and_negating_mirrors_the_curve(values, data):
    # without ties the DET curve of (-spoof, -bona) is the mirrored curve
    k = data.draw(st.integers(1, len(values) - 1))
    b, s = np.array(values[:k], float), np.array(values[k:], float)
    d, m = det_curve(b, s), det_curve(-s, -b)
    np.testing.assert_array_equal(m.pmiss, d.pfa[::-1])
    np.testing.assert_array_equal(m.pfa, d.pmiss[::-1])
    # the EER may pick the other of two adjacent points: differs by at most one step / 2
    step = max(1 / b.size, 1 / s.size)
    assert abs(m.eer - d.eer) <= step / 2 + 1e-12
    assert min_dcf(b, s) >= 0


MONOTONE = [lambda x: 3 * x + 7, lambda x: x**3, lambda x: np.exp(x / 7), lambda x: -1 / (x + 100)]


@settings(max_examples=100, deadline=None)
@given(int_scores, int_scores, st.sampled_from(range(len(MONOTONE))))
def test_monotone_transform_invariance(b, s, which):
    f = MONOTONE[which]
    b, s = np.array(b, float), np.array(s, float)
    asv = asv_error_rates(ASV.target, ASV.nontarget, ASV.spoof)
    assert compute_eer(f(b), f(s))[0] == compute_eer(b, s)[0]
    assert min_dcf(f(b), f(s)) == min_dcf(b, s)
    assert min_tdcf(f(b), f(s), asv) == min_tdcf(b, s, asv)
    assert min_tdcf(f(b), f(s), asv, legacy=True) == min_tdcf(b, s, asv, legacy=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=30), st.floats(-50, 50))
def test_cllr_of_constant_zero_is_one_and_nonnegative(b, c):
    assert cllr(np.zeros(len(b)), np.zeros(3)) == pytest.approx(1.0, rel=1e-15)  # mean rounding
    assert cllr(b, [c]) >= 0


# --- official reference values (../shared/data) -----------------------------------------------

REF_DEV_GRCNN = {
    "eer": 1.4924536097456288 / 100,
    "min_tdcf": 0.10022192844773287,
    "min_tdcf_legacy": 0.04072125679470328,
    "mindcf": 0.03705331267225776,
    "actdcf": 1.0,
    "cllr": 0.7369767698710837,
}
REF_DEV_GRCNN_ATTACK_EER = {
    "A01": 0.19230346771481632,
    "A02": 2.4741539407847263,
    "A03": 2.9849072194912576,
    "A04": 0.271915920462745,
    "A05": 0.8622816519172048,
    "A06": 0.19230346771481632,
}


@pytest.fixture(scope="module")
def la_scores(shared_data: Path) -> Path:
    path = shared_data / "asvspoof2019_la_scores"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def test_official_reference_values(la_scores):
    from trainer.scorefiles import read_asv_scores, read_cm_scores

    cm = read_cm_scores(la_scores / "dev" / "cm_grcnn_seed.txt")
    asv = read_asv_scores(la_scores / "dev" / "asv_official.txt")
    m = compute_metrics(cm.scores, cm.labels, attacks=cm.attacks, asv=asv)
    for name, want in REF_DEV_GRCNN.items():
        assert getattr(m, name) == pytest.approx(want, abs=1e-12, rel=0), name
    for attack, want in REF_DEV_GRCNN_ATTACK_EER.items():
        assert 100 * m.per_attack[attack].eer == pytest.approx(want, abs=1e-12, rel=0), attack
    assert (m.n_bonafide, m.n_spoof) == (2548, 22296)
    # the EER threshold is the official one: a score of the file (the highest rejected one)
    assert m.eer_threshold in set(cm.scores.tolist())


def test_ties_example_file(la_scores):
    from trainer.scorefiles import read_cm_scores

    cm = read_cm_scores(la_scores / "ties_example.txt")
    d = det_curve(cm.bonafide, cm.spoof)
    np.testing.assert_allclose(d.pmiss, TIE_PMISS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.pfa, TIE_PFA, rtol=0, atol=1e-15)
    assert compute_eer(cm.bonafide, cm.spoof) == (pytest.approx(0.6, abs=1e-15), 0.5)


def test_undefined_legacy_tdcf_is_none():
    # the ASV rejects every spoof: legacy C2 = 0 -> min(C1, C2) = 0, the legacy t-DCF is 0/0;
    # the revised one stays defined (its normaliser is C0 + 0 > 0)
    asv = AsvScores(np.array([3.0, 4.0]), np.array([1.0, 2.0]), np.array([0.0]))
    m = compute_metrics([1.0, 2.0, 0.0, 0.5], [1, 1, 0, 0], asv=asv)
    assert m.min_tdcf_legacy is None and m.min_tdcf == pytest.approx(1.0)
    assert "legacy -" in format_metrics(m)


def test_metric_modules_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, trainer, trainer.metrics, trainer.scorefiles, trainer.plots; "
        "trainer.compute_metrics; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
