"""cqcc against a direct implementation of the baseline's recipe, the CQT's sine normalisation,
frames, registration and parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import scipy.interpolate
import scipy.signal

from featstore import FEATURES, compute_feature
from featstore.errors import ConfigError
from featstore.features import validate_feature_params
from featstore.features.cqcc import constant_q_bins, cqcc, cqt_log_power, hop_limit
from featstore.features.framing import num_frames

SR = 16000


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    voiced = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 20))
    noise = scipy.signal.lfilter([1.0], [1.0, -1.2, 0.5], rng.standard_normal(n))
    return 0.05 * voiced + 0.02 * noise


def reference_cqcc(x: np.ndarray, hop: int = 136, n_ceps: int = 20) -> np.ndarray:
    """cqcc.m + cqt.m written out plainly: explicit DFT, each coefficient evaluated directly
    at its instant by explicit complex exponentials, a spline per frame, a full DCT, loops."""
    B, fmin, nyq = 96, 15.625, SR / 2
    Q = 2 ** (1 / B) - 2 ** (-1 / B)
    gamma_hz = 228.7 * Q
    freqs, bws = [], []
    for k in range(math.floor(B * math.log2(nyq / fmin)) + 1):
        f = fmin * 2 ** (k / B)
        if f + (Q * f + gamma_hz) / 2 > nyq:
            break
        freqs.append(f)
        bws.append(Q * f + gamma_hz)
    n = x.size
    L = max(math.ceil(n / hop), 4) * hop
    xp = np.concatenate([x, np.zeros(L - n)])
    ls = np.arange(L)
    X = np.array([np.sum(xp * np.exp(-2j * np.pi * ls * l / L)) for l in range(L // 2 + 1)])
    instants = [i * hop + hop // 2 for i in range(num_frames(n, hop, hop))]
    logp = np.zeros((len(freqs), len(instants)))
    for k, (f, bw) in enumerate(zip(freqs, bws, strict=True)):
        width = max(4, math.floor(bw * L / SR + 0.5))
        centre = math.floor(f * L / SR)
        taps = np.arange(-(width // 2), -(-width // 2))
        window = 0.5 + 0.5 * np.cos(2 * np.pi * taps / width)
        bins = centre + taps
        for i, t in enumerate(instants):
            c = 2 / L * np.sum(X[bins] * window * np.exp(2j * np.pi * bins * t / L))
            logp[k, i] = math.log(abs(c) ** 2 + np.finfo(float).eps)
    freqs = np.array(freqs)
    step = fmin / 16
    grid = np.arange(freqs[0], freqs[-1] + 1e-9, step)
    static = []
    for i in range(len(instants)):
        resampled = scipy.interpolate.CubicSpline(freqs, logp[:, i])(grid)  # not-a-knot
        static.append(scipy.fft.dct(resampled, type=2, norm="ortho")[:n_ceps])
    static = np.array(static)

    def deltas(c: np.ndarray, w: int = 3) -> np.ndarray:
        out = np.zeros_like(c)
        T = c.shape[0]
        for t in range(T):
            acc = 0
            for k in range(1, w + 1):
                acc = acc + k * (c[min(t + k, T - 1)] - c[max(t - k, 0)])
            out[t] = acc / (2 * sum(j * j for j in range(1, w + 1)))
        return out

    d = deltas(static)
    return np.hstack([static, d, deltas(d)])


@pytest.mark.parametrize("n", [136 * 14, 136 * 14 + 77])  # a multiple of the hop, and padded
def test_cqcc_matches_the_direct_recipe(n):
    x = speechlike(n, seed=n)
    ours = cqcc(x)
    ref = reference_cqcc(x)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (num_frames(n, 136, 136), 60)
    scale = np.abs(ref).max(axis=0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * scale.max())
    np.testing.assert_allclose(ours[:, :20], ref[:, :20], rtol=2e-5, atol=1e-3)


def test_constant_q_bins_of_the_baseline():
    bins = constant_q_bins()
    assert bins.n_bins == 863  # the baseline's LogP_absCQT has 863 rows
    assert bins.frequencies[0] == 15.625
    np.testing.assert_allclose(bins.frequencies[-1], 8000 * 2 ** (-2 / 96))
    assert hop_limit(bins) == 136 == FEATURES["cqcc"].hop_length


def test_a_sinusoid_of_amplitude_a_gives_a_at_its_bin():
    """'sine' normalisation: |c_k| = A for a sinusoid of amplitude A at bin k's centre (on a
    DFT bin of the utterance, so that it is periodic in the transform's circular DFT)."""
    bins = constant_q_bins()
    n = 136 * 118  # a multiple of the hop: the DFT length is the signal's
    t = np.arange(n) / SR
    for k in (300, 600, 860):
        f = math.floor(bins.frequencies[k] * n / SR) * SR / n
        x = 0.3 * np.cos(2 * np.pi * f * t + 0.4)
        logp = cqt_log_power(x, bins, 136, 68, 118)
        np.testing.assert_allclose(np.sqrt(np.exp(logp[k])), 0.3, rtol=1e-9)
        assert np.argmax(logp[:, 50]) == k


def test_frames_follow_the_store_convention():
    for n in (135, 136, 137, 16000, 16000 * 3 + 5):
        out = compute_feature("cqcc", speechlike(n))
        assert out.shape == (num_frames(n, 136, 136), 60)
    assert compute_feature("cqcc", np.zeros(100)).shape == (0, 60)
    assert np.isfinite(compute_feature("cqcc", np.zeros(16000))).all()  # log(0 + eps)
    described = FEATURES["cqcc"].describe()
    assert described["n_bins"] == 60 and described["hop_length"] == 136
    assert compute_feature("cqcc", speechlike(4000), deltas=False, n_ceps=30).shape[1] == 30


def test_a_tone_burst_shows_in_the_frames_around_it():
    x = np.zeros(SR)
    burst = slice(8000, 8800)  # 0.50 .. 0.55 s
    x[burst] = 0.5 * np.sin(2 * np.pi * 2000 * np.arange(800) / SR)
    bins = constant_q_bins()
    n = num_frames(SR, 136, 136)
    logp = cqt_log_power(x, bins, 136, 68, n)
    k = int(np.argmin(np.abs(bins.frequencies - 2000)))
    loud = np.flatnonzero(logp[k] > logp[k].max() - 3)
    centres = loud * 136 + 68
    assert centres.min() >= 8000 - 400 and centres.max() <= 8800 + 400


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hop_length": 160}, "cqcc: hop_length=160 must be <= 136"),
        ({"fmin": 1.0}, "cqcc: fmin=1.0 Hz is too low"),
        ({"fmax": 9000.0}, "cqcc: fmax=9000.0 must be <= 8000 Hz"),
        ({"fmin": 9000.0, "fmax": 8000.0}, "cqcc: fmin=9000.0 must be < fmax=8000.0"),
        ({"n_ceps": 0}, "cqcc: n_ceps=0 must be >= 1"),
        ({"bins_per_octave": 0}, "cqcc: bins_per_octave=0 must be >= 1"),
        ({"gamma": -1.0}, "cqcc: gamma=-1.0 must be >= 0"),
        ({"n_ceps": 9000}, "cqcc: n_ceps=9000 must be <= 8059"),
        ({"deltas": 1}, "cqcc: deltas=1 must be true or false"),
    ],
)
def test_bad_parameters_are_refused_before_extraction(params, message):
    with pytest.raises(ConfigError) as exc:
        validate_feature_params("cqcc", params)
    assert message in str(exc.value)


def test_the_asvspoof2021_la_configuration_needs_its_short_hop():
    """The 2021 LA baseline (B=12, 62.5 Hz .. 4 kHz: "high-time resolution" CQCC) has
    493 Hz wide top bins: the toolbox's hop there is 32.4 samples; 136 is refused."""
    params = {"bins_per_octave": 12, "fmin": 62.5, "fmax": 4000.0}
    limit = hop_limit(constant_q_bins(12, 62.5, 4000.0))
    assert limit == 32
    with pytest.raises(ConfigError, match="hop_length=136 must be <= 32"):
        validate_feature_params("cqcc", params)
    short = {**params, "hop_length": limit, "win_length": limit}
    validate_feature_params("cqcc", short)
    assert compute_feature("cqcc", speechlike(8000), **short).shape == (250, 60)
