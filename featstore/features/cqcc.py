"""Constant-Q cepstral coefficients (CQCC), the front end of the ASVspoof CQCC-GMM baselines.

We follow ``cqcc.m`` of the ASVspoof 2019/2021 baselines (Todisco, Delgado, Evans, Odyssey
2016; ``asvspoof-challenge/2021``, ``LA/Baseline-CQCC-GMM/matlab/CQCC``), which calls the CQT
toolbox of Schörkhuber, Klapuri, Holighaus and Dörfler (``cqt.m``, ``nsgcqwin.m``,
``nsgtf_real.m``: a non-stationary Gabor transform computed from the DFT of the whole
utterance), with the parameters of the 2019 baseline
(``cqcc(x, fs, 96, fs/2, fs/2^10, 16, cf, 'ZsdD')``): 96 bins per octave from
``fmin = 15.625`` Hz (``fs / 2^10``, nine octaves below Nyquist) to ``fmax = 8000`` Hz,
``d = 16``, 19 coefficients plus the 0th, with deltas and double deltas (60 dims).

1. **Constant-Q transform** (``cqt(x, B, fs, fmin, fmax, 'rasterize', 'full', 'gamma',
   gamma)``): centre frequencies ``f_k = fmin * 2^(k/B)`` for ``k = 0 .. floor(B log2(fmax /
   fmin))``, bandwidths ``bw_k = Q f_k + gamma_hz`` with ``Q = 2^(1/B) - 2^(-1/B)`` and
   ``gamma_hz = 228.7 * Q`` (``gamma = 228.7``: ERB-like widths at low frequencies; 0 gives a
   constant-Q transform). Bins whose band reaches past Nyquist are dropped (at the defaults
   863 bins, 15.6 Hz .. 7885 Hz). With ``L`` the DFT length, bin ``k`` is a Hann window in
   frequency, ``w(j) = 0.5 + 0.5 cos(2 pi j / N_k)`` for ``j = -floor(N_k/2) .. ceil(N_k/2)-1``
   DFT bins around ``floor(f_k L / sr)``, ``N_k = max(4, round(bw_k L / sr))``, and
   ``c_k(t) = (2 / L) sum_j X[p_k + j] w(j) e^{2 pi i (p_k + j) t / L}`` ("sine"
   normalisation: a sinusoid of amplitude ``A`` at ``f_k`` gives ``|c_k| = A``). As in the
   toolbox, ``c_k`` is sampled on one time grid for every bin ("full" rasterisation) by
   inverse FFTs of ``M = L / hop_length`` points, which is exact while every window fits in
   ``M`` bins (:func:`max_hop_length`).
2. ``log(|c_k(t)|^2 + eps)`` with MATLAB's ``eps`` (2.2e-16).
3. **Uniform resampling** (``resample(LogP, FreqVec, 1 / (fmin (2^(kl/B) - 1)), 1, 1,
   'spline')`` with ``kl = B log2(1 + 1/d)``): a not-a-knot cubic spline through the bins at
   their frequencies, evaluated every ``fmin / d`` Hz from ``fmin`` to the highest bin
   (``d`` samples in the first octave; 8059 samples at the defaults).
4. **DCT**: orthonormal DCT-II (MATLAB ``dct``) of the resampled log spectrum; coefficients
   ``0 .. n_ceps - 1`` kept (``'Z'``: the 0th included).
5. **Deltas** (``Deltas(x, 3)`` of ``cqcc.m``, the HTK regression):
   ``d[t] = sum_{k=1..W} k (c[t+k] - c[t-k]) / (2 sum_k k^2)`` with ``W = delta_width = 3``,
   the first and last frames replicated; double deltas are the deltas of the deltas.
   Output ``[c, d, dd]``.

Steps 3 and 4 are linear in the log spectrum, so we apply them as one precomputed
``(n_ceps, n_bins)`` matrix (the spline's and the DCT's, multiplied once per parameter set):
the same numbers without resampling every frame to 8059 points.

**Frames.** The toolbox samples ``M = round(bw_top L / sr)`` instants over the whole
utterance, a hop of ``sr / bw_top`` = 136.6 samples (8.5 ms) at the defaults that changes
slightly with the length of each utterance. We use a fixed integer hop (``hop_length = 136``
samples, the largest that keeps every window unaliased) so that frames line up with the
store's bookkeeping: frame ``i`` is the transform at sample ``i * hop_length +
win_length // 2`` (the centre of frame ``[i hop, i hop + win)`` as every feature here
counts them, :func:`~featstore.features.framing.num_frames`). Like the toolbox the DFT is
circular over the utterance; we zero-pad it by less than one hop to a multiple of
``hop_length`` (at least four hops), where the toolbox's DFT length is the utterance's.

**librosa.** ``librosa.cqt``/``vqt`` is not this transform: it convolves time-domain
Hann-windowed complex exponentials (normalised by their L1 norm) over a centred, padded
signal, octave by octave with downsampling, so its filter shapes and per-bin gains differ
from the toolbox's Hann windows in frequency with "sine" normalisation; a per-bin gain is an
offset of the log spectrum and shifts every cepstral coefficient. Its 15.6 Hz filters are
also about nine seconds long. The toolbox's transform, from one DFT and one batch of small
inverse FFTs, is both the baseline's definition and fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.interpolate

from featstore.errors import ConfigError
from featstore.features.framing import num_frames
from featstore.signal import SAMPLE_RATE, as_float_signal

__all__ = [
    "ConstantQBins",
    "constant_q_bins",
    "cqcc",
    "cqt_log_power",
    "hop_limit",
    "regression_delta",
]

MATLAB_EPS = float(np.finfo(np.float64).eps)
"""MATLAB's ``eps``, the offset of the log power spectrum."""

_MIN_WINDOW = 4  # nsgcqwin's min_win: no window narrower than 4 DFT bins
_MIN_HOPS = 4  # so that the 4-bin windows fit in the M = L / hop points of a short signal


@dataclass(frozen=True)
class ConstantQBins:
    """Centre frequencies and bandwidths of the constant-Q bins (``nsgcqwin.m``).

    Attributes
    ----------
    frequencies : np.ndarray
        float64 ``(n_bins,)`` centre frequencies in Hz, ``fmin * 2^(k / B)``.
    bandwidths : np.ndarray
        float64 ``(n_bins,)`` bandwidths in Hz, ``Q f_k + gamma_hz``.
    """

    frequencies: np.ndarray
    bandwidths: np.ndarray

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.frequencies.size)


def constant_q_bins(
    bins_per_octave: int = 96,
    fmin: float = 15.625,
    fmax: float = 8000.0,
    gamma: float = 228.7,
    sr: int = SAMPLE_RATE,
) -> ConstantQBins:
    """The bins of the baseline's constant-Q transform.

    Parameters
    ----------
    bins_per_octave : int, default 96
        ``B``.
    fmin, fmax : float, default 15.625, 8000.0
        Lowest centre frequency and the upper limit (Hz); bins whose band reaches past
        ``min(fmax, sr / 2)`` are dropped.
    gamma : float, default 228.7
        Bandwidth offset factor: ``gamma_hz = gamma * (2^(1/B) - 2^(-1/B))`` (``cqcc.m``).
    sr : int, default 16000
        Sample rate in Hz.

    Returns
    -------
    ConstantQBins

    Raises
    ------
    ConfigError
        No bin fits between ``fmin`` and ``fmax``, or the lowest band reaches below 0 Hz.

    Examples
    --------
    >>> b = constant_q_bins()
    >>> b.n_bins, round(float(b.frequencies[-1]), 1), round(float(b.bandwidths[-1]), 2)
    (863, 7885.3, 117.17)
    """
    if bins_per_octave < 1:
        raise ConfigError(f"bins_per_octave must be >= 1, got {bins_per_octave}")
    if not 0 < fmin < fmax:
        raise ConfigError(f"need 0 < fmin < fmax, got fmin={fmin!r}, fmax={fmax!r}")
    nyquist = sr / 2
    fmax = min(fmax, nyquist)
    q = 2.0 ** (1.0 / bins_per_octave) - 2.0 ** (-1.0 / bins_per_octave)
    top = math.floor(bins_per_octave * math.log2(fmax / fmin)) if fmax > fmin else -1
    freqs = fmin * 2.0 ** (np.arange(top + 1) / bins_per_octave)
    bandwidths = q * freqs + gamma * q
    beyond = np.flatnonzero(freqs + bandwidths / 2 > nyquist)
    if beyond.size:
        freqs, bandwidths = freqs[: beyond[0]], bandwidths[: beyond[0]]
    if freqs.size == 0:
        raise ConfigError(
            f"no constant-Q bin fits between fmin={fmin!r} Hz and fmax={fmax!r} Hz (each band "
            f"must end below the Nyquist frequency, {nyquist:g} Hz)"
        )
    if freqs[0] - bandwidths[0] / 2 < 0:
        raise ConfigError(
            f"fmin={fmin!r} Hz is too low: the band of the lowest bin "
            f"({bandwidths[0]:.4g} Hz wide) would reach below 0 Hz"
        )
    return ConstantQBins(frequencies=freqs, bandwidths=bandwidths)


def hop_limit(bins: ConstantQBins, sr: int = SAMPLE_RATE) -> int:
    """The largest hop (samples) at which every bin's window fits in ``L / hop`` points.

    Parameters
    ----------
    bins : ConstantQBins
        The transform's bins.
    sr : int, default 16000
        Sample rate in Hz.

    Returns
    -------
    int
        ``floor(sr / max(bandwidths))`` (136 at the defaults).

    Examples
    --------
    >>> hop_limit(constant_q_bins())
    136
    """
    return math.floor(sr / float(bins.bandwidths.max()))


def _matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round`` of non-negative values: halves away from zero."""
    return np.floor(x + 0.5)


def cqt_log_power(
    signal: np.ndarray,
    bins: ConstantQBins,
    hop_length: int,
    offset: int,
    n_frames: int,
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """``log(|c_k(t)|^2 + eps)`` at ``t = offset + i * hop_length`` (the module's step 1-2).

    Parameters
    ----------
    signal : np.ndarray
        1-D float64 samples.
    bins : ConstantQBins
        The transform's bins (:func:`constant_q_bins`).
    hop_length : int
        Time step in samples (at most :func:`hop_limit`).
    offset : int
        Sample of the first instant.
    n_frames : int
        Instants returned (at most ``ceil(len(signal) / hop_length)``).
    sr : int, default 16000
        Sample rate in Hz.

    Returns
    -------
    np.ndarray
        float64 ``(n_bins, n_frames)``.

    Raises
    ------
    ConfigError
        ``hop_length`` above :func:`hop_limit` (the inverse FFTs would alias).
    """
    n = signal.shape[0]
    m = max(-(-n // hop_length), _MIN_HOPS)  # time instants on the circular grid
    length = m * hop_length  # DFT length: the signal zero-padded to a multiple of the hop
    spectrum = scipy.fft.rfft(signal, n=length, workers=1)
    resolution = sr / length
    widths = np.maximum(_matlab_round(bins.bandwidths / resolution), _MIN_WINDOW).astype(np.int64)
    if int(widths.max()) > m:
        raise ConfigError(
            f"cqcc: hop_length={hop_length!r} is too long: the widest constant-Q window needs "
            f"a hop of at most {hop_limit(bins, sr)} samples"
        )
    centres = np.floor(bins.frequencies / resolution).astype(np.int64)
    # every (bin, window tap) pair, flattened: bin index, tap offset j, DFT bin p_k + j
    rows = np.repeat(np.arange(bins.n_bins), widths)
    starts = np.cumsum(widths) - widths
    taps = np.arange(rows.size) - starts[rows] - widths[rows] // 2
    source = centres[rows] + taps
    weights = 0.5 + 0.5 * np.cos(2 * np.pi * taps / widths[rows])
    # time shift by `offset` samples: X[l] e^{2 pi i l offset / L}
    phase = np.exp(2j * np.pi * ((source * offset) % length) / length)
    grid = np.zeros((bins.n_bins, m), dtype=np.complex128)
    grid[rows, taps % m] = spectrum[source] * phase * weights
    coefficients = scipy.fft.ifft(grid, axis=1, workers=1)[:, :n_frames]
    # ifft divides by m; the transform is (2 / L) sum(...) = (2 m / L) ifft = (2 / hop) ifft
    power = np.abs(coefficients) ** 2 * (2.0 / hop_length) ** 2
    return np.log(power + MATLAB_EPS)


def uniform_samples(bins: ConstantQBins, first_octave_samples: int = 16) -> int:
    """Points of the uniform resampling: every ``fmin / d`` Hz from the lowest to the highest bin.

    Examples
    --------
    >>> uniform_samples(constant_q_bins())
    8059
    """
    freqs = bins.frequencies
    step = freqs[0] / first_octave_samples
    return math.floor((freqs[-1] - freqs[0]) / step * (1 + 1e-12)) + 1


@lru_cache(maxsize=8)
def _cepstrum_matrix(
    bins_per_octave: int, fmin: float, fmax: float, gamma: float, d: int, n_ceps: int
) -> np.ndarray:
    """The spline resampling and the DCT as one ``(n_ceps, n_bins)`` matrix (read-only)."""
    bins = constant_q_bins(bins_per_octave, fmin, fmax, gamma)
    freqs = bins.frequencies
    step = fmin / d  # = 1 / (fmin (2^(kl/B) - 1)) samples per Hz, kl = B log2(1 + 1/d)
    n_uniform = uniform_samples(bins, d)
    if n_ceps > n_uniform:
        raise ConfigError(
            f"cqcc: n_ceps={n_ceps!r} must be <= {n_uniform} (the uniformly resampled bins)"
        )
    uniform = freqs[0] + step * np.arange(n_uniform)
    if bins.n_bins >= 4:
        resample = scipy.interpolate.CubicSpline(freqs, np.eye(bins.n_bins), axis=0)(uniform)
    else:  # too few knots for a not-a-knot cubic: piecewise linear
        resample = np.stack([np.interp(uniform, freqs, e) for e in np.eye(bins.n_bins)], axis=1)
    # rows 0 .. n_ceps - 1 of the orthonormal DCT-II matrix (MATLAB dct, scipy norm="ortho")
    q = np.arange(n_ceps)[:, None]
    dct = np.cos(np.pi * q * (2 * np.arange(n_uniform) + 1) / (2 * n_uniform))
    dct *= np.where(q == 0, math.sqrt(1 / n_uniform), math.sqrt(2 / n_uniform))
    matrix = dct @ resample
    matrix.flags.writeable = False
    return matrix


def regression_delta(features: np.ndarray, width: int = 3) -> np.ndarray:
    """HTK regression deltas along axis 0, the edge frames replicated (``Deltas`` of cqcc.m).

    ``d[t] = sum_{k=1..width} k (x[t+k] - x[t-k]) / (2 sum_k k^2)``.

    Parameters
    ----------
    features : np.ndarray
        ``(n_frames, n_dims)``.
    width : int, default 3
        Regression half-width ``W``.

    Returns
    -------
    np.ndarray
        Same shape and dtype.

    Examples
    --------
    >>> regression_delta(np.arange(5.0)[:, None], width=1)[:, 0]
    array([0.5, 1. , 1. , 1. , 0.5])
    """
    n = features.shape[0]
    out = np.zeros_like(features)
    if n == 0:
        return out
    padded = np.concatenate(
        [np.repeat(features[:1], width, axis=0), features, np.repeat(features[-1:], width, axis=0)]
    )
    for k in range(1, width + 1):
        out += k * (padded[width + k : width + k + n] - padded[width - k : width - k + n])
    out /= 2 * sum(k * k for k in range(1, width + 1))
    return out


def cqcc(
    signal: np.ndarray,
    *,
    bins_per_octave: int = 96,
    fmin: float = 15.625,
    fmax: float = 8000.0,
    gamma: float = 228.7,
    first_octave_samples: int = 16,
    n_ceps: int = 20,
    win_length: int = 136,
    hop_length: int = 136,
    delta_width: int = 3,
    deltas: bool = True,
) -> np.ndarray:
    """CQCCs (+ deltas and double deltas) as in the ASVspoof CQCC-GMM baseline.

    See the module docstring for every convention and its source.

    Parameters
    ----------
    signal : np.ndarray
        1-D float32/float64 samples at 16 kHz.
    bins_per_octave : int, default 96
        ``B``.
    fmin, fmax : float, default 15.625, 8000.0
        Frequency range in Hz (``fs / 2^10`` to Nyquist: nine octaves).
    gamma : float, default 228.7
        Bandwidth offset factor (``gamma_hz = gamma * (2^(1/B) - 2^(-1/B))``; 0:
        constant Q).
    first_octave_samples : int, default 16
        ``d``: uniform resampling step ``fmin / d`` Hz.
    n_ceps : int, default 20
        Cepstral coefficients kept, the 0th included (``cf = n_ceps - 1 = 19``).
    win_length, hop_length : int, default 136, 136
        Frames as every feature counts them; frame ``i`` is the transform at sample
        ``i * hop_length + win_length // 2``. ``hop_length`` is at most the widest
        window's limit (136 samples = 8.5 ms at the defaults).
    delta_width : int, default 3
        Half-width of the delta regression.
    deltas : bool, default True
        Append deltas and double deltas (``3 * n_ceps`` columns).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_ceps * (3 if deltas else 1))``; zero rows for signals
        shorter than one frame.

    Raises
    ------
    ConfigError
        Parameters no signal can be analysed with (see :func:`constant_q_bins`).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> cqcc(x).shape
    (117, 60)
    """
    if n_ceps < 1:
        raise ConfigError(f"cqcc: n_ceps must be >= 1, got {n_ceps}")
    if first_octave_samples < 1 or delta_width < 1:
        raise ConfigError("cqcc: first_octave_samples and delta_width must be >= 1")
    n_out = n_ceps * (3 if deltas else 1)
    x = as_float_signal(signal)
    bins = constant_q_bins(bins_per_octave, float(fmin), float(fmax), float(gamma))
    matrix = _cepstrum_matrix(
        int(bins_per_octave),
        float(fmin),
        float(fmax),
        float(gamma),
        int(first_octave_samples),
        int(n_ceps),
    )
    n_frames = num_frames(x.shape[0], win_length, hop_length)
    if n_frames == 0:
        return np.zeros((0, n_out), dtype=np.float32)
    log_power = cqt_log_power(x, bins, int(hop_length), int(win_length) // 2, n_frames)
    ceps = (matrix @ log_power).T
    if not deltas:
        return ceps.astype(np.float32)
    d = regression_delta(ceps, delta_width)
    out = np.empty((n_frames, n_out), dtype=np.float32)
    out[:, :n_ceps] = ceps
    out[:, n_ceps : 2 * n_ceps] = d
    out[:, 2 * n_ceps :] = regression_delta(d, delta_width)
    return out
