"""Linear-frequency cepstral coefficients (LFCC), the ASVspoof 2019/2021 baseline front end.

We follow the LFCC of Xin Wang's LFCC-LCNN baselines (``project-NN-Pytorch-scripts``,
``sandbox/util_frontend.py``, class ``LFCC``, as configured by the LFCC-LCNN models of
``project/03-asvspoof-mega``: 20 ms / 10 ms frames, 512-point FFT, 20 filters over 0..8 kHz,
``with_energy=True``, ``with_delta=True``; the official ASVspoof 2021 LA baseline uses the same
class with a 1024-point FFT and filters over 0..4 kHz only). That code ports the ASVspoof 2019
MATLAB baseline LFCC by Md Sahidullah (read as ``extract_lfcc.m``, which calls Dan Ellis'
``deltas.m``), and so do we:

- pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` over the whole utterance, ``y[0] = x[0]``
  (MATLAB ``filter([1 -0.97], 1, x)``);
- frames from :func:`~featstore.features.framing.frame_signal` (no centring, no padding, as
  every feature here; the PyTorch baseline centres frames with ``torch.stft(center=True)``,
  the MATLAB one uses ``buffer(x, win, win/2, 'nodelay')``, which zero-fills a last partial
  frame that we drop);
- periodic Hamming window (``torch.hamming_window`` default; MATLAB's ``hamming`` is
  symmetric), zero-padded to ``n_fft``;
- power spectrum ``|X|^2`` (no ``1/n_fft``) through ``n_filters`` triangular filters
  ``trimf(f, [b_m, b_{m+1}, b_{m+2}])`` with ``f = linspace(0, 8000, n_fft/2 + 1)`` and edges
  ``b = linspace(0, 8000, n_filters + 2)`` (MATLAB ``trimf``: value 1 at the peak, 0 at and
  beyond both feet);
- ``log10(energies + eps)`` with ``eps`` the float32 machine epsilon (the PyTorch baseline's
  ``torch.finfo(torch.float32).eps``; MATLAB adds its double ``eps``);
- orthonormal DCT-II (MATLAB ``dct``, ``LinearDCT(norm='ortho')``), first ``n_ceps`` kept;
- ``with_energy``: coefficient 0 replaced by ``log10(sum_k |X_k|^2 / n_fft + eps)`` over the
  one-sided bins, as the LFCC-LCNN baseline does;
- deltas ``d[t] = c[t+1] - c[t-1]`` (regression width 3, no normalisation; ``deltas(x, 3)``
  of the MATLAB baseline and ``delta()`` of the PyTorch one) with the first and last frame
  replicated at the edges, computed from the utterance's own frames only; double deltas are
  the deltas of the deltas. Output ``[c, d, dd]``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

from featstore.errors import ConfigError
from featstore.features.spectral import Filterbank, stft_filterbank
from featstore.signal import SAMPLE_RATE, as_float_signal

_LOG_EPS = float(np.finfo(np.float32).eps)


def triangular_filterbank(n_filters: int, n_fft: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Linearly spaced triangular filters over ``0 .. sr / 2`` (MATLAB ``trimf``).

    Parameters
    ----------
    n_filters : int
        Number of filters; their feet and peaks are ``linspace(0, sr / 2, n_filters + 2)``.
    n_fft : int
        FFT size; the filters are sampled at ``linspace(0, sr / 2, n_fft // 2 + 1)``.
    sr : int, default 16000
        Sample rate in Hz.

    Returns
    -------
    np.ndarray
        float64 ``(n_filters, n_fft // 2 + 1)``, peak value 1.

    Examples
    --------
    >>> triangular_filterbank(2, 8, sr=12).round(3)
    array([[0.  , 0.75, 0.5 , 0.  , 0.  ],
           [0.  , 0.  , 0.5 , 0.75, 0.  ]])
    """
    if n_filters < 1:
        raise ConfigError(f"n_filters must be positive, got {n_filters}")
    f = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = np.linspace(0.0, sr / 2, n_filters + 2)
    a, b, c = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = np.where((a < f) & (f < b), (f - a) / (b - a), 0.0)
    falling = np.where((b < f) & (f < c), (c - f) / (c - b), 0.0)
    return np.where(f == b, 1.0, rising + falling)


@lru_cache(maxsize=8)
def _lfcc_bank(n_filters: int, n_fft: int, with_energy: bool) -> Filterbank:
    weights = triangular_filterbank(n_filters, n_fft)
    if with_energy:  # one more "filter": the frame energy sum_k |X_k|^2 / n_fft
        weights = np.vstack([weights, np.full((1, weights.shape[1]), 1.0 / n_fft)])
    return Filterbank.from_weights(weights)


def delta(features: np.ndarray) -> np.ndarray:
    """``d[t] = x[t+1] - x[t-1]`` along axis 0, the edge frames replicated.

    Parameters
    ----------
    features : np.ndarray
        ``(n_frames, n_dims)``.

    Returns
    -------
    np.ndarray
        Same shape and dtype; all zeros for a single frame.

    Examples
    --------
    >>> delta(np.array([[0.0], [1.0], [4.0]]))[:, 0]
    array([1., 4., 3.])
    """
    out = np.empty_like(features)
    n = features.shape[0]
    if n == 0:
        return out
    if n == 1:
        out[:] = 0
        return out
    out[1:-1] = features[2:] - features[:-2]
    out[0] = features[1] - features[0]
    out[-1] = features[-1] - features[-2]
    return out


def lfcc(
    signal: np.ndarray,
    *,
    n_filters: int = 20,
    n_ceps: int = 20,
    win_length: int = 320,
    hop_length: int = 160,
    n_fft: int = 512,
    preemphasis: float = 0.97,
    with_energy: bool = True,
    deltas: bool = True,
) -> np.ndarray:
    """LFCCs (+ deltas and double deltas) as in the ASVspoof LFCC-LCNN baseline.

    See the module docstring for every convention and its source.

    Parameters
    ----------
    signal : np.ndarray
        1-D float32/float64 samples at 16 kHz.
    n_filters : int, default 20
        Linear triangular filters over 0..8 kHz.
    n_ceps : int, default 20
        Cepstral coefficients kept (``<= n_filters``).
    win_length, hop_length : int, default 320, 160
        20 ms frames every 10 ms.
    n_fft : int, default 512
        FFT size.
    preemphasis : float, default 0.97
        Pre-emphasis coefficient (0 disables it).
    with_energy : bool, default True
        Replace coefficient 0 by the log10 frame energy.
    deltas : bool, default True
        Append deltas and double deltas (``3 * n_ceps`` columns).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_ceps * (3 if deltas else 1))``; zero rows for signals shorter
        than one frame.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> lfcc(x).shape
    (99, 60)
    """
    with_deltas = deltas
    if not 1 <= n_ceps <= n_filters:
        raise ConfigError(f"n_ceps must be in 1..n_filters ({n_filters}), got {n_ceps}")
    n_out = n_ceps * (3 if with_deltas else 1)
    x = as_float_signal(signal)
    if preemphasis:
        y = np.empty_like(x)
        y[:1] = x[:1]
        np.subtract(x[1:], preemphasis * x[:-1], out=y[1:])
        x = y
    bank = _lfcc_bank(int(n_filters), int(n_fft), bool(with_energy))
    energies = stft_filterbank(
        x,
        bank,
        win_length=win_length,
        hop_length=hop_length,
        n_fft=n_fft,
        window="hamming",
        offset=_LOG_EPS,
        dtype=np.float64,
    )
    if energies.shape[0] == 0:
        return np.zeros((0, n_out), dtype=np.float32)
    log_energies = np.log10(energies, out=energies)
    ceps = scipy.fft.dct(log_energies[:, :n_filters], type=2, norm="ortho", axis=-1)
    ceps = ceps[:, :n_ceps]
    if with_energy:
        ceps[:, 0] = log_energies[:, n_filters]
    if not with_deltas:
        return ceps.astype(np.float32)
    d = delta(ceps)
    out = np.empty((ceps.shape[0], n_out), dtype=np.float32)
    out[:, :n_ceps] = ceps
    out[:, n_ceps : 2 * n_ceps] = d
    out[:, 2 * n_ceps :] = delta(d)
    return out
