"""logmel and fbank against straightforward reference computations, framing and edge cases."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore import FEATURES, compute_feature
from featstore.errors import FeatureError
from featstore.features.framing import num_frames
from featstore.features.spectral import (
    Filterbank,
    fbank,
    filterbank_energies,
    get_window,
    logmel,
    mel_filterbank,
    stft,
    stft_filterbank,
)

EPS = np.finfo(float).eps


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Noise through a resonator plus a few harmonics: a wide dynamic range across bins."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    noise = scipy.signal.lfilter([1.0], [1.0, -1.6, 0.9], rng.standard_normal(n))
    return 0.05 * voiced + 0.01 * noise


def librosa_logmel(x: np.ndarray) -> np.ndarray:
    """librosa's log-mel of frames [160 i, 160 i + 400).

    librosa centres a ``win_length`` window inside each ``n_fft`` frame (312 zeros on the
    left), so padding the signal by 312 samples on both sides puts its frame ``i`` window on
    samples ``[160 i, 160 i + 400)`` of ``x`` and gives the same number of frames.
    """
    pad = (1024 - 400) // 2
    y = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=16000,
        n_fft=1024,
        hop_length=160,
        win_length=400,
        window="blackman",
        center=False,
        power=2.0,
        n_mels=256,
        fmin=20,
        fmax=8000,
        htk=False,
        norm="slaney",
        dtype=np.float64,
    )
    return np.log(mel.T + 1e-6)


def numpy_fbank(x: np.ndarray) -> np.ndarray:
    """The documented fbank formula, one frame at a time."""
    mel = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=64, fmin=0, fmax=8000, dtype=np.float64)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hamming
    rows = []
    for i in range(num_frames(x.size, 400, 80)):
        frame = x[80 * i : 80 * i + 400] * window
        power = np.abs(np.fft.rfft(frame, 2048)) ** 2 / 2048
        rows.append(np.log10(np.maximum(mel @ power, EPS)))
    return np.array(rows).reshape(-1, 64)


def test_logmel_matches_librosa_melspectrogram():
    x = speechlike(16000 + 123)
    ours = logmel(x)
    ref = librosa_logmel(x)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (num_frames(x.size, 400, 160), 256)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)


def test_fbank_matches_direct_numpy_formula():
    x = speechlike(9000, seed=3)
    ours = fbank(x)
    ref = numpy_fbank(x)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (108, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)


def test_blackman_window_is_periodic_as_in_librosa():
    w = get_window("blackman", 400)
    n = np.arange(400)
    periodic = 0.42 - 0.5 * np.cos(2 * np.pi * n / 400) + 0.08 * np.cos(4 * np.pi * n / 400)
    np.testing.assert_allclose(w, periodic, atol=1e-12)
    np.testing.assert_allclose(w, librosa.filters.get_window("blackman", 400), atol=1e-12)


@pytest.mark.parametrize(
    ("n_mels", "fmin", "fmax", "n_fft"),
    [
        (256, 20.0, 8000.0, 1024),
        (64, 0.0, 8000.0, 2048),
        (40, 133.0, 6855.0, 512),
        (8, 999.0, 1000.5, 4096),  # both sides of the 1 kHz linear/log knee
        (3, 2500.0, 2600.0, 64),  # narrow bands: some filters are empty
    ],
)
def test_mel_filterbank_is_librosa_slaney(n_mels, fmin, fmax, n_fft):
    bank = mel_filterbank(n_mels, fmin, fmax, n_fft)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty filters
        ref = librosa.filters.mel(
            sr=16000,
            n_fft=n_fft,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            htk=False,
            norm="slaney",
            dtype=np.float64,
        )
    np.testing.assert_allclose(bank.weights, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["boxcar", "hann", "hamming", "blackman", "bartlett"])
@pytest.mark.parametrize("n", [1, 2, 3, 400, 401, 512])
def test_windows_equal_scipy_periodic_windows(name, n):
    import scipy.signal

    np.testing.assert_allclose(
        get_window(name, n), scipy.signal.get_window(name, n, fftbins=True), rtol=0, atol=1e-15
    )


@pytest.mark.parametrize("n", [0, 1, 399, 400, 559, 560, 16000, 16001])
@pytest.mark.parametrize(
    ("kernel", "win", "hop", "bins"), [(logmel, 400, 160, 256), (fbank, 400, 80, 64)]
)
def test_frame_counts_and_short_inputs(n, kernel, win, hop, bins):
    out = kernel(speechlike(n))
    assert out.shape == (num_frames(n, win, hop), bins)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_logmel_has_the_mgd_framing():
    spec = FEATURES["logmel"].describe()
    mgd = FEATURES["mgd"].describe()
    assert (spec["win_length"], spec["hop_length"]) == (mgd["win_length"], mgd["hop_length"])
    assert logmel(speechlike(23488)).shape[0] == 145  # the MGD reference file's frame count
    pytest.importorskip("featstore.features.mgd")
    for n in (399, 400, 4321, 23488):
        x = speechlike(n)
        assert compute_feature("mgd", x).shape[0] == compute_feature("logmel", x).shape[0]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 20), st.integers(0, 2**32 - 1))
def test_logmel_frame_depends_only_on_its_samples(i, seed):
    rng = np.random.default_rng(seed)
    x = speechlike(4000, seed=seed % 7)
    before = logmel(x)
    inside = np.zeros(x.size, dtype=bool)
    inside[160 * i : 160 * i + 400] = True
    y = x.copy()
    y[~inside] += rng.standard_normal((~inside).sum())
    after = logmel(y)
    np.testing.assert_allclose(after[i], before[i], rtol=1e-6, atol=1e-6)
    z = x.copy()
    z[160 * i + 200] += 0.5  # inside the frame: it must change
    assert not np.allclose(logmel(z)[i], before[i])


def test_silence_is_finite_and_at_the_floor():
    zeros = np.zeros(8000)
    lm = logmel(zeros)
    fb = fbank(zeros)
    assert np.isfinite(lm).all() and np.isfinite(fb).all()
    np.testing.assert_allclose(lm, np.log(1e-6), rtol=1e-6)
    np.testing.assert_allclose(fb, np.log10(EPS), rtol=1e-6)


def test_empty_signal_gives_zero_rows():
    for name, bins in (("logmel", 256), ("fbank", 64)):
        out = FEATURES[name].function(np.zeros(0))
        assert out.shape == (0, bins) and out.dtype == np.float32


def test_float32_and_float64_inputs_agree():
    x32 = speechlike(6000).astype(np.float32)
    for kernel in (logmel, fbank):
        np.testing.assert_array_equal(kernel(x32), kernel(x32.astype(np.float64)))


def test_compute_feature_uses_the_kernels_with_registry_defaults():
    x = speechlike(5000)
    pcm = np.round(x * 32767).astype(np.int16)
    np.testing.assert_array_equal(compute_feature("logmel", pcm), logmel(pcm / 32768.0))
    np.testing.assert_array_equal(compute_feature("fbank", x), fbank(x))


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 20.0), st.integers(0, 1000))
def test_fbank_gain_adds_a_constant(gain, seed):
    # log10(M |a X|^2 / N) = log10(M |X|^2 / N) + 2 log10(a) above the floor
    x = np.random.default_rng(seed).standard_normal(2000) * 0.1
    np.testing.assert_allclose(fbank(gain * x), fbank(x) + 2 * np.log10(gain), atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40), st.integers(1, 40), st.integers(0, 1000))  # frames span blocks
def test_filterbank_energies_equal_a_dense_product(n_frames, n_bins, seed):
    rng = np.random.default_rng(seed)
    weights = np.maximum(rng.standard_normal((5, n_bins)), 0.0)
    weights[rng.integers(0, 5)] = 0.0  # an empty filter
    spec = rng.standard_normal((n_frames, n_bins)) + 1j * rng.standard_normal((n_frames, n_bins))
    bank = Filterbank.from_weights(weights)
    out = filterbank_energies(spec, bank, offset=0.5, floor=0.75, dtype=np.float64)
    ref = np.maximum(np.abs(spec) ** 2 @ weights.T + 0.5, 0.75)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_stft_frames_are_windowed_and_zero_padded():
    x = speechlike(1000)
    spec = stft(x, win_length=400, hop_length=160, n_fft=1024, window="hann")
    w = get_window("hann", 400)
    np.testing.assert_allclose(spec[2], np.fft.rfft(x[320:720] * w, 1024), atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 7, 32, 1024])
def test_chunked_pipeline_equals_stft_then_filterbank(chunk):
    x = speechlike(5000, seed=4)
    bank = mel_filterbank(64, 0.0, 8000.0, 2048)
    kwargs = {"win_length": 400, "hop_length": 80, "n_fft": 2048, "window": "hamming"}
    whole = filterbank_energies(stft(x, **kwargs), bank, offset=1e-3)
    chunked = stft_filterbank(x, bank, offset=1e-3, chunk_frames=chunk, **kwargs)
    np.testing.assert_array_equal(chunked, whole)


def test_bad_parameters_are_feature_errors():
    x = speechlike(2000)
    with pytest.raises(FeatureError, match="n_fft"):
        logmel(x, n_fft=256)
    with pytest.raises(FeatureError, match="window"):
        logmel(x, window="no-such-window")
    with pytest.raises(FeatureError, match="fmax"):
        fbank(x, fmax=9000.0)
    with pytest.raises(ValueError, match="1-D"):
        logmel(np.zeros((2, 800)))


def test_real_audio(la_mini):
    from featstore.audio import load_audio

    path = sorted((la_mini / "flac").glob("*.flac"))[0]
    x = load_audio(path).signal
    lm = compute_feature("logmel", x)
    fb = compute_feature("fbank", x)
    assert lm.shape == (num_frames(x.size, 400, 160), 256)
    assert fb.shape == (num_frames(x.size, 400, 80), 64)
    assert np.isfinite(lm).all() and np.isfinite(fb).all()
    np.testing.assert_allclose(lm, librosa_logmel(x), rtol=0, atol=5e-5)
    # speech: the mel spectrum spans a wide range, well above the silence floor on average
    assert lm.mean() > np.log(1e-6) + 3 and lm.max() - lm.min() > 10
