"""lfcc against a direct implementation of the documented formula, deltas and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore import FEATURES, compute_feature
from featstore.errors import FeatureError
from featstore.features.framing import num_frames
from featstore.features.lfcc import delta, lfcc, triangular_filterbank

F32_EPS = float(np.finfo(np.float32).eps)


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 15))
    noise = scipy.signal.lfilter([1.0], [1.0, -1.2, 0.5], rng.standard_normal(n))
    return 0.05 * voiced + 0.02 * noise


def trimf(x: float, a: float, b: float, c: float) -> float:
    """MATLAB's trimf at one point."""
    if x == b:
        return 1.0
    if a < x < b:
        return (x - a) / (b - a)
    if b < x < c:
        return (c - x) / (c - b)
    return 0.0


def reference_lfcc(x: np.ndarray, with_energy: bool = True) -> np.ndarray:
    """The documented recipe written out plainly (loops, explicit formulas)."""
    n_fft, win, hop, n_filt = 512, 320, 160, 20
    y = scipy.signal.lfilter([1.0, -0.97], [1.0], x)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hamming
    freqs = np.linspace(0, 8000, n_fft // 2 + 1)
    edges = np.linspace(0, 8000, n_filt + 2)
    bank = np.array(
        [[trimf(f, edges[m], edges[m + 1], edges[m + 2]) for f in freqs] for m in range(n_filt)]
    )
    k = np.arange(n_filt)
    dct = np.array(
        [
            math.sqrt((1 if q == 0 else 2) / n_filt)
            * np.cos(np.pi * q * (2 * k + 1) / (2 * n_filt))
            for q in range(n_filt)
        ]
    )
    static = []
    for i in range(num_frames(x.size, win, hop)):
        power = np.abs(np.fft.rfft(y[hop * i : hop * i + win] * window, n_fft)) ** 2
        c = dct @ np.log10(bank @ power + F32_EPS)
        if with_energy:
            c[0] = np.log10(power.sum() / n_fft + F32_EPS)
        static.append(c)
    static = np.array(static).reshape(-1, n_filt)

    def deltas(c):
        padded = np.concatenate([c[:1], c, c[-1:]])
        return np.array([padded[t + 2] - padded[t] for t in range(c.shape[0])]).reshape(c.shape)

    d = deltas(static)
    return np.hstack([static, d, deltas(d)])


def test_lfcc_matches_the_documented_formula():
    x = speechlike(12345)
    ours = lfcc(x)
    ref = reference_lfcc(x)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (num_frames(x.size, 320, 160), 60)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_without_energy_coefficient_zero_is_the_dct_term():
    x = speechlike(4000, seed=2)
    ours = lfcc(x, with_energy=False, deltas=False)
    ref = reference_lfcc(x, with_energy=False)[:, :20]
    assert ours.shape == (num_frames(x.size, 320, 160), 20)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_registry_defaults_are_the_baseline_configuration():
    d = FEATURES["lfcc"].describe()
    assert (d["win_length"], d["hop_length"], d["n_fft"]) == (320, 160, 512)
    assert (d["n_filters"], d["n_ceps"], d["n_bins"]) == (20, 20, 60)
    assert d["with_energy"] is True and d["preemphasis"] == 0.97
    x = speechlike(3000)
    np.testing.assert_array_equal(compute_feature("lfcc", x), lfcc(x))


def test_triangular_filterbank_is_matlab_trimf():
    fb = triangular_filterbank(20, 512)
    assert fb.shape == (20, 257)
    edges = np.linspace(0, 8000, 22)
    freqs = np.linspace(0, 8000, 257)
    for m in (0, 7, 19):
        expected = [trimf(f, edges[m], edges[m + 1], edges[m + 2]) for f in freqs]
        np.testing.assert_allclose(fb[m], expected, atol=1e-12)
    # overlapping triangles sum to one between the first and the last peak
    inner = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[:, inner].sum(axis=0), 1.0, atol=1e-12)


def test_delta_replicates_edge_frames():
    c = np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 5.0], [7.0, 5.0]])
    np.testing.assert_array_equal(delta(c), [[2, 0], [3, 4], [5, 4], [4, 0]])
    np.testing.assert_array_equal(delta(c[:1]), [[0, 0]])
    assert delta(np.zeros((0, 3))).shape == (0, 3)


@settings(max_examples=20, deadline=None)
@given(st.integers(320, 6000), st.integers(0, 3000), st.integers(0, 1000))
def test_lfcc_of_a_prefix_only_changes_at_its_end(n, extra, seed):
    # deltas use only the utterance's own frames: cutting the audio changes the last two
    # frames' deltas (edge replication) and nothing else
    x = speechlike(n + extra, seed=seed)
    full = lfcc(x)
    part = lfcc(x[:n])
    m = part.shape[0]
    np.testing.assert_array_equal(part[:, :20], full[:m, :20])
    keep_d, keep_dd = max(m - 1, 0), max(m - 2, 0)
    np.testing.assert_allclose(part[:keep_d, 20:40], full[:keep_d, 20:40], atol=1e-5)
    np.testing.assert_allclose(part[:keep_dd, 40:], full[:keep_dd, 40:], atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 20.0), st.integers(0, 1000))
def test_gain_only_moves_the_energy(gain, seed):
    x = np.random.default_rng(seed).standard_normal(3000) * 0.1
    a, b = lfcc(x), lfcc(gain * x)
    np.testing.assert_allclose(b[:, 0], a[:, 0] + 2 * np.log10(gain), atol=1e-4)
    np.testing.assert_allclose(b[:, 1:], a[:, 1:], atol=2e-4)


@pytest.mark.parametrize("n", [0, 1, 319, 320, 479, 480, 16000])
def test_frame_counts_and_short_inputs(n):
    out = lfcc(speechlike(n))
    assert out.shape == (num_frames(n, 320, 160), 60) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert lfcc(speechlike(n), deltas=False).shape == (num_frames(n, 320, 160), 20)


def test_silence_is_finite():
    out = lfcc(np.zeros(4000))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], np.log10(F32_EPS), rtol=1e-6)
    np.testing.assert_allclose(out[:, 20:], 0.0)


def test_float32_and_float64_inputs_agree():
    x32 = speechlike(5000).astype(np.float32)
    np.testing.assert_array_equal(lfcc(x32), lfcc(x32.astype(np.float64)))


def test_is_deterministic():
    x = speechlike(7000, seed=5)
    np.testing.assert_array_equal(lfcc(x), lfcc(x.copy()))


def test_bad_parameters_are_feature_errors():
    with pytest.raises(FeatureError, match="n_ceps"):
        lfcc(np.zeros(1000), n_ceps=30)
    with pytest.raises(FeatureError, match="n_fft"):
        lfcc(np.zeros(1000), n_fft=256)


def test_real_audio(la_mini):
    from featstore.audio import load_audio

    path = sorted((la_mini / "flac").glob("*.flac"))[-1]
    x = load_audio(path).signal
    out = compute_feature("lfcc", x)
    assert out.shape == (num_frames(x.size, 320, 160), 60)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference_lfcc(x), rtol=1e-5, atol=1e-4)
