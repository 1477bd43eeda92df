"""Augmentations: the contract every one keeps, and each family's measurable effect."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from featstore.augment import AUGMENTATIONS, get_augmentation
from featstore.augment.codec import CODECS, available_codecs, codec
from featstore.augment.levels import HEADROOM, fit_to_range, snr_db
from featstore.augment.noise import coloured_noise, noise
from featstore.augment.rawboost import (
    notch_filter,
    rawboost_isd,
    rawboost_lnl,
    rawboost_ssi,
)
from featstore.augment.reverb import reverb, synthetic_rir

SR = 16000


def speechlike(n: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Resonant noise plus harmonics, bursty: broadband, a wide dynamic range."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    noise_ = scipy.signal.lfilter([1.0], [1.0, -1.6, 0.9], rng.standard_normal(n))
    x = 0.5 * voiced / np.max(np.abs(voiced)) + noise_ / np.max(np.abs(noise_))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2  # syllable-like envelope
    return level * x / np.max(np.abs(x))


def xcorr_lag(y: np.ndarray, x: np.ndarray, max_lag: int = 200) -> int:
    """The lag (samples) of y's largest cross-correlation with x, within +-max_lag."""
    n = x.size - 2 * max_lag
    corr = [np.dot(y[max_lag + k : max_lag + k + n], x[max_lag : max_lag + n])
            for k in range(-max_lag, max_lag + 1)]  # fmt: skip
    return int(np.argmax(corr)) - max_lag


# -- the contract, for every registered augmentation -------------------------------------

ALL = sorted(AUGMENTATIONS)


@pytest.mark.parametrize("name", ALL)
def test_keeps_length_finite_bounded_and_is_deterministic(name):
    spec = get_augmentation(name)
    x = speechlike(12000, seed=1, level=0.9)
    a = spec(x, np.random.default_rng(7))
    b = spec(x, np.random.default_rng(7))
    assert a.shape == x.shape and a.dtype == np.float64
    assert np.isfinite(a).all() and np.abs(a).max() < 1.0
    assert np.array_equal(a, b)  # same generator state, same bytes
    assert not np.array_equal(a, x)  # it does something
    c = spec(x, np.random.default_rng(8))
    assert not np.array_equal(a, c) or name == "codec"  # draws from rng
    assert np.array_equal(x, speechlike(12000, seed=1, level=0.9))  # input untouched


@pytest.mark.slow
@settings(max_examples=15)
@given(
    name=st.sampled_from(ALL),
    x=arrays(np.float64, st.integers(0, 3000), elements=st.floats(-1.0, 0.999, width=64)),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_random_signals(name, x, seed):
    y = get_augmentation(name)(x, np.random.default_rng(seed))
    assert y.shape == x.shape
    assert np.isfinite(y).all()
    assert y.size == 0 or (y.min() >= -1.0 and y.max() < 1.0)


@pytest.mark.parametrize("name", ["noise", "rawboost-ssi", "reverb", "gain", "codec"])
def test_silence_and_loud_input(name):
    spec = get_augmentation(name)
    silent = spec(np.zeros(4000), np.random.default_rng(0))
    assert silent.shape == (4000,) and np.isfinite(silent).all()
    loud = spec(np.full(4000, 0.999) * np.sign(np.sin(np.arange(4000))), np.random.default_rng(0))
    assert np.abs(loud).max() < 1.0


def test_bad_signal_and_rng_are_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        noise(np.array([0.0, np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        noise(np.zeros((2, 2)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        noise(np.zeros(10), 0)


def test_fit_to_range_scales_instead_of_clipping():
    x = np.array([0.5, -2.0, 1.0])
    y = fit_to_range(x)
    assert np.abs(y).max() == pytest.approx(HEADROOM) and np.abs(y).max() < 1
    assert np.allclose(y / x, y[0] / x[0])  # one factor: the shape is kept
    assert fit_to_range(np.array([0.5, -0.99])) is not None
    assert np.array_equal(fit_to_range(np.array([0.5, -0.99])), [0.5, -0.99])


# -- RawBoost ---------------------------------------------------------------------------


def test_notch_filter_matches_the_reference_design():
    b, g = notch_filter(np.random.default_rng(3), 5, 20, 8000, 100, 1000, 10, 100, 0, 0)
    assert b.size % 2 == 1 and np.allclose(b, b[::-1])  # linear phase, odd length
    _, h = scipy.signal.freqz(b, 1, fs=SR)
    assert np.max(np.abs(h)) == pytest.approx(1.0, rel=1e-9) and g == 0.0
    assert np.min(np.abs(h)) < 0.5  # it notches something
    _, g2 = notch_filter(np.random.default_rng(3), 1, 20, 8000, 100, 1000, 10, 100, -20, -5)
    assert -20 <= g2 <= -5


def test_lnl_is_aligned_and_nonlinear_terms_are_weaker():
    x = speechlike(16000)
    y, drawn = rawboost_lnl.with_params(x, np.random.default_rng(0))
    assert drawn["gains_db"][0] == 0.0
    assert all(-20 <= g <= -5 for g in drawn["gains_db"][1:]) and len(drawn["gains_db"]) == 5
    assert xcorr_lag(y, x) == 0
    assert abs(float(np.mean(y))) < 1e-12  # mean removed
    linear = rawboost_lnl(x, np.random.default_rng(0), n_f=1)
    assert not np.allclose(linear, y)


def test_isd_hits_at_most_p_percent_of_samples_by_at_most_g_sd():
    x = speechlike(20000)
    y, drawn = rawboost_isd.with_params(x, np.random.default_rng(1), max_percent=10, g_sd=2)
    changed = np.flatnonzero(y != x)
    assert 0 <= drawn["percent"] <= 10
    assert changed.size <= drawn["n_impulses"] == int(20000 * drawn["percent"] / 100)
    assert set(changed) <= set(drawn["positions"].tolist())
    ratio = y[changed] / x[changed]
    assert np.all((ratio >= -1 - 1e-12) & (ratio <= 3 + 1e-12))  # 1 + 2 * [-1, 1]


def test_ssi_adds_noise_at_the_drawn_snr():
    x = speechlike(16000, level=0.2)
    y, drawn = rawboost_ssi.with_params(x, np.random.default_rng(2))
    assert 10 <= drawn["snr_db"] <= 40
    assert snr_db(x, y - x) == pytest.approx(drawn["snr_db"], abs=0.01)


def test_rawboost_combinations_run_their_stages_in_series_or_parallel():
    x = speechlike(8000)
    r5 = get_augmentation("rawboost-5")
    y5, drawn = r5.with_params(x, np.random.default_rng(4))
    # series: LnL then ISD with the same generator, in that order
    rng = np.random.default_rng(4)
    expected = rawboost_isd(rawboost_lnl(x, rng), rng)
    assert np.array_equal(y5, expected) and set(drawn) == {"rawboost_lnl", "rawboost_isd"}
    rng = np.random.default_rng(4)
    parallel = fit_to_range(rawboost_lnl(x, rng) + rawboost_isd(x, rng))
    assert np.array_equal(get_augmentation("rawboost-8")(x, np.random.default_rng(4)), parallel)
    assert set(get_augmentation("rawboost-4").defaults) == (
        set(rawboost_lnl_defaults()) | {"max_percent", "g_sd", "snr_min", "snr_max"}
    )
    assert get_augmentation("rawboost-3").fn is rawboost_ssi


def rawboost_lnl_defaults():
    return get_augmentation("rawboost-lnl").defaults


def test_rawboost_defaults_are_the_reference_ones():
    d = get_augmentation("rawboost-4").defaults
    assert (d["n_bands"], d["min_freq"], d["max_freq"], d["min_bw"], d["max_bw"]) == (
        5, 20.0, 8000.0, 100.0, 1000.0,
    )  # fmt: skip
    assert (d["min_coeff"], d["max_coeff"], d["min_gain"], d["max_gain"]) == (10, 100, 0.0, 0.0)
    assert (d["min_bias"], d["max_bias"], d["n_f"]) == (5.0, 20.0, 5)
    assert (d["max_percent"], d["g_sd"], d["snr_min"], d["snr_max"]) == (10.0, 2.0, 10.0, 40.0)


# -- noise ------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_generated_noise_lands_within_half_a_db_of_the_drawn_snr(colour):
    x = speechlike(16000, level=0.3)
    for seed in range(5):
        y, drawn = noise.with_params(x, np.random.default_rng(seed), colours=colour)
        assert drawn["source"] == colour and 5 <= drawn["snr_db"] <= 20
        # undo the overflow scaling (if any), then measure what was added
        measured = snr_db(x, y / drawn["scale"] - x)
        assert abs(measured - drawn["snr_db"]) < 0.5


def test_noise_snr_survives_the_overflow_scaling():
    x = speechlike(16000, level=0.99)
    y, drawn = noise.with_params(x, np.random.default_rng(0), snr_min=0, snr_max=0)
    assert drawn["scale"] < 1 and np.abs(y).max() < 1
    assert abs(snr_db(x, y / drawn["scale"] - x) - 0.0) < 0.5


def test_coloured_noise_slopes():
    n = 2**16
    for colour, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        f, p = scipy.signal.welch(coloured_noise(n, colour, np.random.default_rng(0)), nperseg=4096)
        band = (f > 0.005) & (f < 0.2)
        fitted = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.15), colour


# -- codecs -----------------------------------------------------------------------------


def test_available_codecs_are_known():
    assert set(available_codecs()) <= set(CODECS)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("kbps", [8.0, 32.0, 128.0])
def test_codec_output_differs_and_stays_aligned(name, kbps):
    if name not in available_codecs():
        pytest.skip(f"libsndfile here has no {name}")
    if name in ("mulaw", "alaw", "gsm") and kbps != 32.0:
        pytest.skip("fixed-rate codec")
    x = speechlike(24000)
    y, drawn = codec.with_params(
        x, np.random.default_rng(0), codecs=name, min_kbps=kbps, max_kbps=kbps
    )
    assert drawn["codec"] == name and y.shape == x.shape
    assert not np.allclose(y, x, atol=1e-3)
    assert xcorr_lag(y, x) == 0
    assert np.corrcoef(y, x)[0, 1] > 0.5  # still the same audio


def test_g711_keeps_only_the_telephone_band():
    if "mulaw" not in available_codecs():
        pytest.skip("no mulaw")
    x = np.random.default_rng(0).standard_normal(32000) * 0.1
    y = codec(x, np.random.default_rng(0), codecs="mulaw")
    f, p = scipy.signal.welch(y, fs=SR, nperseg=1024)
    inside = p[(f > 500) & (f < 3000)].mean()
    assert p[f > 4500].mean() < inside * 1e-3  # 8 kHz sampling
    assert p[f < 100].mean() < inside * 0.1  # the 300 Hz high-pass


def test_codec_bitrate_follows_the_target():
    x = speechlike(32000)
    kbps = []
    for target in (16.0, 64.0, 128.0):
        _, d = codec.with_params(x, np.random.default_rng(0), codecs="opus",
                                 min_kbps=target, max_kbps=target)  # fmt: skip
        kbps.append(d["kbps"])
    assert kbps[0] < kbps[1] < kbps[2]
    assert kbps[1] == pytest.approx(64.0, rel=0.25)


# -- reverb -----------------------------------------------------------------------------


def test_synthetic_rir_has_its_rt60_and_drr():
    h = synthetic_rir(0.6, 4.0, np.random.default_rng(0))
    assert h[0] == 1.0 and h.size == round(0.6 * SR) + 1
    assert 10 * np.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(4.0)
    # Schroeder backward integration: 60 dB decay at about rt60 (T20 fit, -5..-25 dB)
    energy = np.cumsum(h[1:][::-1] ** 2)[::-1]
    edc = 10 * np.log10(energy / energy[0])
    t = np.arange(edc.size) / SR
    fit = (edc < -5) & (edc > -25)
    slope = np.polyfit(t[fit], edc[fit], 1)[0]
    assert -60 / slope == pytest.approx(0.6, rel=0.1)


def test_reverb_keeps_the_direct_path_at_lag_zero():
    x = speechlike(24000)
    for seed in range(3):
        y, drawn = reverb.with_params(x, np.random.default_rng(seed))
        assert 0.2 <= drawn["rt60"] <= 1.0 and 0 <= drawn["drr_db"] <= 10
        assert xcorr_lag(y, x) == 0
        assert not np.allclose(y, x, atol=1e-3)


# -- channel ----------------------------------------------------------------------------


def test_gain_and_bandlimit():
    x = speechlike(16000, level=0.1)
    gain = get_augmentation("gain")
    y, d = gain.with_params(x, np.random.default_rng(0), min_db=-6, max_db=-6)
    assert np.allclose(y, x * 10 ** (-6 / 20)) and d["applied_db"] == pytest.approx(-6)
    y, d = gain.with_params(x, np.random.default_rng(0), min_db=30, max_db=30)
    assert np.abs(y).max() == pytest.approx(HEADROOM) and d["applied_db"] < 30
    white = np.random.default_rng(1).standard_normal(32000) * 0.1
    y, d = get_augmentation("bandlimit").with_params(
        white, np.random.default_rng(0), min_cutoff=4000, max_cutoff=4000
    )
    f, p = scipy.signal.welch(y, fs=SR, nperseg=1024)
    assert p[f > 5000].mean() < 1e-3 * p[f < 3000].mean()
    assert xcorr_lag(y, white) == 0
