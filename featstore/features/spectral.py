"""Spectral front ends: log-mel power (GRCNN second stream) and log10 mel filterbanks (VGG).

Both kernels share one pipeline, also used by :mod:`featstore.features.lfcc`:

1. complete frames from :func:`~featstore.features.framing.frame_signal` (frame ``i`` covers
   samples ``[hop * i, hop * i + win)``; no centring, no padding);
2. a periodic window (``scipy.signal.get_window(window, win_length)``, the convention of
   librosa and ``torch.*_window``), zero-padded to ``n_fft`` by batched ``scipy.fft.rfft``
   calls over chunks of frames (bounded memory for long recordings, see
   :func:`stft_filterbank`);
3. a filterbank applied to the power spectrum ``|X|^2`` by :func:`filterbank_energies`, a
   Numba kernel that only visits each filter's non-zero bins (a Slaney mel filter covers a
   handful of bins: ``logmel`` has ~1000 non-zero weights against the 513 x 256 of a dense
   matrix product, which would cost about as much as the FFT itself);
4. the logarithm, in place, on the float32 output.

Window convention of ``logmel``: we found no public feature code of the GRCNN paper itself
(Gomez-Alanis et al., "A gated recurrent convolutional neural network for robust spoofing
detection", IEEE/ACM TASLP 2019). Its first author's public ASVspoof 2019 code
(github.com/alexgomezalanis/asvspoof19-loss-functions and .../gkde-loss-function,
``dataset.py``) computes the Blackman STFT with ``scipy.signal.stft(..., window='blackman')``,
i.e. ``scipy.signal.get_window('blackman', nperseg)``: the periodic window. We use the same
(it is also librosa's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import numpy.typing as npt
import scipy.fft

from featstore.errors import ConfigError
from featstore.features.framing import frame_signal, num_frames
from featstore.signal import SAMPLE_RATE, as_float_signal

_EPS64 = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, eq=False)
class Filterbank:
    """A filterbank stored with the band of non-zero bins of each filter.

    Attributes
    ----------
    weights : np.ndarray
        float64 ``(n_filters, n_fft // 2 + 1)``, read-only.
    start, stop : np.ndarray
        int64 ``(n_filters,)``: filter ``m`` is zero outside bins ``[start[m], stop[m])``
        (``start == stop`` for an empty filter).
    packed : np.ndarray
        float64: the weights of every filter's band, filter after filter (filter ``m`` at
        ``packed[offset[m] : offset[m] + stop[m] - start[m]]``). A few KiB, so the kernel
        reads it from L1 cache instead of striding through the dense matrix.
    offset : np.ndarray
        int64 ``(n_filters,)``: where each filter starts in ``packed``.
    """

    weights: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    packed: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_weights(cls, weights: np.ndarray) -> Filterbank:
        """Wrap a dense ``(n_filters, n_bins)`` weight matrix, finding each filter's band.

        Parameters
        ----------
        weights : np.ndarray
            Non-negative filter weights, one row per filter.

        Returns
        -------
        Filterbank

        Examples
        --------
        >>> fb = Filterbank.from_weights(np.array([[0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        >>> fb.start.tolist(), fb.stop.tolist(), fb.packed.tolist()
        ([1, 0], [3, 0], [1.0, 0.5])
        """
        w = np.ascontiguousarray(weights, dtype=np.float64)
        nonzero = w != 0
        has_any = nonzero.any(axis=1)
        start = np.where(has_any, nonzero.argmax(axis=1), 0).astype(np.int64)
        stop = np.where(has_any, w.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0).astype(np.int64)
        lengths = stop - start
        offset = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        packed = np.concatenate([w[m, start[m] : stop[m]] for m in range(w.shape[0])] + [[]])
        for array in (w, start, stop, packed, offset):
            array.setflags(write=False)
        return cls(w, start, stop, packed.astype(np.float64), offset)

    @property
    def n_filters(self) -> int:
        """Number of filters."""
        return int(self.weights.shape[0])


_BLOCK = 16  # frames per block: the block's power spectra stay in L1/L2 cache


@numba.njit(cache=True, nogil=True)
def _filterbank_kernel(spectrum, packed, offset, start, stop, add, floor, out):  # pragma: no cover
    # Blocks of frames, bins-major inside a block, so the innermost loop runs over the
    # block's frames with one weight: contiguous, branch-free and SIMD-vectorised, instead of
    # a short loop of variable length per (frame, filter).
    n_frames, n_bins = spectrum.shape
    n_filters = start.shape[0]
    lo = n_bins
    hi = 0
    for m in range(n_filters):
        if stop[m] > start[m]:
            lo = min(lo, start[m])
            hi = max(hi, stop[m])
    power = np.zeros((n_bins, _BLOCK))
    acc = np.empty((n_filters, _BLOCK))
    for i0 in range(0, n_frames, _BLOCK):
        nb = min(_BLOCK, n_frames - i0)
        for j in range(nb):
            for k in range(lo, hi):
                z = spectrum[i0 + j, k]
                power[k, j] = z.real * z.real + z.imag * z.imag
        for m in range(n_filters):
            for j in range(nb):
                acc[m, j] = 0.0
            base = offset[m] - start[m]
            for k in range(start[m], stop[m]):
                weight = packed[base + k]
                for j in range(nb):
                    acc[m, j] += weight * power[k, j]
        for j in range(nb):
            for m in range(n_filters):
                out[i0 + j, m] = max(acc[m, j] + add, floor)
    return out


@numba.njit(cache=True, nogil=True)
def _fill_windowed(x, first, hop, window, out):  # pragma: no cover - compiled
    # row j of out[:, :win] = window * frame (first + j); the zero padding after column win
    # is left as it is
    win = window.shape[0]
    for j in range(out.shape[0]):
        start = (first + j) * hop
        for k in range(win):
            out[j, k] = x[start + k] * window[k]


def filterbank_energies(
    spectrum: np.ndarray,
    bank: Filterbank,
    *,
    offset: float = 0.0,
    floor: float = 0.0,
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """Filterbank energies ``max(weights @ |X|^2 + offset, floor)`` of every frame.

    Parameters
    ----------
    spectrum : np.ndarray
        complex128 ``(n_frames, n_fft // 2 + 1)`` one-sided spectra (e.g. from :func:`stft`).
    bank : Filterbank
        Filters over the same bins.
    offset : float, default 0.0
        Added to every energy (e.g. the ``1e-6`` of ``log(mel + 1e-6)``).
    floor : float, default 0.0
        Lower bound applied after the offset (e.g. machine epsilon before ``log10``).
    dtype : numpy dtype, default float32
        Output type; the sums are accumulated in float64 either way.

    Returns
    -------
    np.ndarray
        ``(n_frames, bank.n_filters)`` of ``dtype``.

    Examples
    --------
    >>> spec = np.array([[1 + 1j, 2.0, 0.0]])
    >>> bank = Filterbank.from_weights(np.array([[1.0, 0.5, 0.0]]))
    >>> filterbank_energies(spec, bank, offset=1.0, dtype=np.float64)
    array([[5.]])
    """
    spec = np.ascontiguousarray(spectrum, dtype=np.complex128)
    if spec.ndim != 2 or spec.shape[1] != bank.weights.shape[1]:
        raise ValueError(
            f"spectrum of shape {spec.shape} does not match a filterbank over "
            f"{bank.weights.shape[1]} bins"
        )
    out = np.empty((spec.shape[0], bank.n_filters), dtype=dtype)
    if spec.shape[0] == 0:
        return out
    return _filterbank_kernel(
        spec, bank.packed, bank.offset, bank.start, bank.stop, float(offset), float(floor), out
    )


@lru_cache(maxsize=16)
def get_window(window: str, win_length: int) -> np.ndarray:
    """The periodic analysis window (``scipy.signal.get_window(window, win_length)``).

    Parameters
    ----------
    window : str
        Any window name scipy knows (``"blackman"``, ``"hamming"``, ``"hann"``, ...).
    win_length : int
        Length in samples.

    Returns
    -------
    np.ndarray
        float64 ``(win_length,)``, read-only (cached).

    Raises
    ------
    ConfigError
        Unknown window name.

    Examples
    --------
    >>> get_window("hann", 4)
    array([0. , 0.5, 1. , 0.5])
    """
    if window in _COSINE_WINDOWS:  # the common ones without importing scipy.signal (~0.8 s)
        w = _periodic_cosine_window(_COSINE_WINDOWS[window], win_length)
    else:
        import scipy.signal

        try:
            w = scipy.signal.get_window(window, win_length, fftbins=True).astype(np.float64)
        except ValueError as exc:
            raise ConfigError(f"unknown window {window!r}: {exc}") from None
    w.setflags(write=False)
    return w


_COSINE_WINDOWS = {
    "boxcar": (1.0,),
    "hann": (0.5, 0.5),
    "hamming": (0.54, 1.0 - 0.54),  # as scipy writes it (not 0.46: one ulp apart)
    "blackman": (0.42, 0.50, 0.08),
}
"""Generalised cosine windows ``sum_k a_k cos(k x)``, ``x`` over ``[-pi, pi]``."""


def _periodic_cosine_window(coefs: tuple[float, ...], win_length: int) -> np.ndarray:
    # scipy.signal.windows.general_cosine(win_length + 1, coefs)[:-1], computed the same way
    if win_length <= 1:
        return np.ones(win_length)
    x = np.linspace(-np.pi, np.pi, win_length + 1)
    w = np.zeros(win_length + 1)
    for k, a in enumerate(coefs):
        w += a * np.cos(k * x)
    return w[:-1]


def _check_frame_params(n_fft: int, win_length: int, hop_length: int) -> None:
    if win_length <= 0 or hop_length <= 0:
        raise ConfigError(
            f"win_length and hop_length must be positive, got {win_length} and {hop_length}"
        )
    if n_fft < win_length:
        raise ConfigError(f"n_fft ({n_fft}) must be at least win_length ({win_length})")


def stft(
    signal: np.ndarray, *, win_length: int, hop_length: int, n_fft: int, window: str
) -> np.ndarray:
    """One-sided spectra of the complete, windowed frames, zero-padded to ``n_fft``.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples.
    win_length, hop_length : int
        Frame length and step in samples (frame ``i`` is ``signal[hop * i : hop * i + win]``).
    n_fft : int
        FFT size (``>= win_length``); each windowed frame is zero-padded at its end.
    window : str
        Periodic window name (see :func:`get_window`).

    Returns
    -------
    np.ndarray
        complex128 ``(n_frames, n_fft // 2 + 1)``.

    Examples
    --------
    >>> stft(np.ones(10), win_length=4, hop_length=3, n_fft=8, window="boxcar").shape
    (3, 5)
    """
    _check_frame_params(n_fft, win_length, hop_length)
    x = as_float_signal(signal)
    w = get_window(window, win_length)
    frames = frame_signal(x, win_length, hop_length)
    if frames.shape[0] == 0:
        return np.zeros((0, n_fft // 2 + 1), dtype=np.complex128)
    windowed = frames * w
    return scipy.fft.rfft(windowed, n=n_fft, axis=-1, workers=1, overwrite_x=True)


def stft_filterbank(
    signal: np.ndarray,
    bank: Filterbank,
    *,
    win_length: int,
    hop_length: int,
    n_fft: int,
    window: str,
    offset: float = 0.0,
    floor: float = 0.0,
    dtype: npt.DTypeLike = np.float32,
    chunk_frames: int = 32,
) -> np.ndarray:
    """:func:`filterbank_energies` of :func:`stft`, computed a chunk of frames at a time.

    Equal to ``filterbank_energies(stft(signal, ...), bank, ...)``, but never holds more than
    ``chunk_frames`` spectra: memory stays bounded for long recordings (a 10-minute file has
    120 000 ``fbank`` frames, 2 GB of complex spectra at once) and each chunk's spectra are
    still in cache when the filterbank kernel reads them.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples.
    bank : Filterbank
        Filters over the ``n_fft // 2 + 1`` bins.
    win_length, hop_length, n_fft, window
        As for :func:`stft`.
    offset, floor, dtype
        As for :func:`filterbank_energies`.
    chunk_frames : int, default 32
        Frames per FFT batch (32 keeps a batch's spectra, ~260 KB at ``n_fft=1024``, in
        cache for the filterbank kernel).

    Returns
    -------
    np.ndarray
        ``(n_frames, bank.n_filters)`` of ``dtype``.

    Examples
    --------
    >>> bank = mel_filterbank(40, 0.0, 8000.0, 512)
    >>> stft_filterbank(np.ones(1000), bank, win_length=400, hop_length=160, n_fft=512,
    ...                 window="hann").shape
    (4, 40)
    """
    _check_frame_params(n_fft, win_length, hop_length)
    if bank.weights.shape[1] != n_fft // 2 + 1:
        raise ValueError(f"filterbank over {bank.weights.shape[1]} bins used with n_fft={n_fft}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    x = as_float_signal(signal)
    w = get_window(window, win_length)
    n_frames = num_frames(x.shape[0], win_length, hop_length)
    out = np.empty((n_frames, bank.n_filters), dtype=dtype)
    # one zero-padded block reused for every chunk: its tail stays zero, and nothing of the
    # size of the whole recording is allocated (fresh multi-MB arrays cost page faults that
    # took as long as the FFTs on 4-second utterances)
    block = np.zeros((min(chunk_frames, n_frames), n_fft))
    for a in range(0, n_frames, chunk_frames):
        rows = block[: min(chunk_frames, n_frames - a)]
        _fill_windowed(x, a, hop_length, w, rows)
        spec = scipy.fft.rfft(rows, axis=-1, workers=1)
        _filterbank_kernel(
            spec,
            bank.packed,
            bank.offset,
            bank.start,
            bank.stop,
            float(offset),
            float(floor),
            out[a : a + len(rows)],
        )
    return out


@lru_cache(maxsize=16)
def mel_filterbank(n_mels: int, fmin: float, fmax: float, n_fft: int) -> Filterbank:
    """librosa's Slaney mel filterbank (``htk=False, norm="slaney"``) at 16 kHz, in float64.

    Parameters
    ----------
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Band edges in Hz (``0 <= fmin < fmax <= 8000``).
    n_fft : int
        FFT size.

    Returns
    -------
    Filterbank
        Weights equal to ``librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels,
        fmin=fmin, fmax=fmax, dtype=np.float64)``.

    Raises
    ------
    ConfigError
        Band edges outside ``[0, 8000]`` or ``n_mels < 1``.

    Examples
    --------
    >>> mel_filterbank(64, 0.0, 8000.0, 2048).weights.shape
    (64, 1025)
    """
    if n_mels < 1:
        raise ConfigError(f"n_mels must be positive, got {n_mels}")
    if not 0.0 <= fmin < fmax <= SAMPLE_RATE / 2:
        raise ConfigError(
            f"mel band edges must satisfy 0 <= fmin < fmax <= {SAMPLE_RATE // 2}, "
            f"got fmin={fmin}, fmax={fmax}"
        )
    # librosa.filters.mel(htk=False, norm="slaney"), written out: importing librosa costs a
    # worker ~0.2 s of start-up. Triangles between n_mels + 2 points evenly spaced in Slaney
    # mels, each scaled to unit area (2 / bandwidth in Hz).
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, d=1.0 / SAMPLE_RATE)
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, bins)
    weights = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        rising = -ramps[m] / widths[m]
        falling = ramps[m + 2] / widths[m + 1]
        weights[m] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return Filterbank.from_weights(weights)


_MEL_LINEAR_HZ = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (15 mels), log above
_MEL_LOG_START_HZ = 1000.0
_MEL_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz >= _MEL_LOG_START_HZ:
        start = _MEL_LOG_START_HZ / _MEL_LINEAR_HZ
        return float(start + np.log(hz / _MEL_LOG_START_HZ) / _MEL_LOG_STEP)
    return hz / _MEL_LINEAR_HZ


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _MEL_LINEAR_HZ * mels
    start = _MEL_LOG_START_HZ / _MEL_LINEAR_HZ
    log = mels >= start
    hz[log] = _MEL_LOG_START_HZ * np.exp(_MEL_LOG_STEP * (mels[log] - start))
    return hz


def logmel(
    signal: np.ndarray,
    *,
    n_mels: int = 256,
    fmin: float = 20.0,
    fmax: float = 8000.0,
    n_fft: int = 1024,
    win_length: int = 400,
    hop_length: int = 160,
    window: str = "blackman",
    log_offset: float = 1e-6,
) -> np.ndarray:
    """Natural log of the Slaney mel power spectrum (the GRCNN paper's second stream).

    ``log(M @ |rfft(w * frame, n_fft)|^2 + log_offset)`` with ``M`` librosa's Slaney mel
    filterbank and ``w`` a periodic window, on the same frames as ``mgd`` (frame ``i`` covers
    samples ``[160 i, 160 i + 400)``), so both streams describe the same audio per frame.

    Parameters
    ----------
    signal : np.ndarray
        1-D float32/float64 samples at 16 kHz.
    n_mels : int, default 256
        Number of mel bands.
    fmin, fmax : float, default 20, 8000
        Mel band edges in Hz.
    n_fft : int, default 1024
        FFT size; each ``win_length`` frame is zero-padded to it.
    win_length, hop_length : int, default 400, 160
        25 ms frames every 10 ms.
    window : str, default "blackman"
        Periodic window (see :func:`get_window`).
    log_offset : float, default 1e-6
        Added to the mel power before the log (silence gives ``log(1e-6)``, never ``-inf``).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_mels)``; ``(0, n_mels)`` for signals shorter than one frame.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> logmel(x).shape
    (98, 256)
    """
    bank = mel_filterbank(int(n_mels), float(fmin), float(fmax), int(n_fft))
    out = stft_filterbank(
        signal,
        bank,
        win_length=win_length,
        hop_length=hop_length,
        n_fft=n_fft,
        window=window,
        offset=log_offset,
    )
    return np.log(out, out=out)


def fbank(
    signal: np.ndarray,
    *,
    n_mels: int = 64,
    fmin: float = 0.0,
    fmax: float = 8000.0,
    n_fft: int = 2048,
    win_length: int = 400,
    hop_length: int = 80,
    window: str = "hamming",
) -> np.ndarray:
    """log10 mel filterbank energies (the VGG model's input).

    ``log10(max(M @ (|rfft(w * frame, n_fft)|^2 / n_fft), eps))`` with ``M`` librosa's Slaney
    mel filterbank (as for :func:`logmel`; ``htk=False, norm="slaney"``), ``w`` a periodic
    window and ``eps = np.finfo(float).eps``.

    Parameters
    ----------
    signal : np.ndarray
        1-D float32/float64 samples at 16 kHz.
    n_mels : int, default 64
        Number of mel bands.
    fmin, fmax : float, default 0, 8000
        Mel band edges in Hz.
    n_fft : int, default 2048
        FFT size; each ``win_length`` frame is zero-padded to it.
    win_length, hop_length : int, default 400, 80
        25 ms frames every 5 ms.
    window : str, default "hamming"
        Periodic window (see :func:`get_window`).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_mels)``; ``(0, n_mels)`` for signals shorter than one frame.

    Examples
    --------
    >>> fbank(np.zeros(800)).shape
    (6, 64)
    """
    mel = mel_filterbank(int(n_mels), float(fmin), float(fmax), int(n_fft))
    bank = _scaled(mel, 1.0 / n_fft)
    out = stft_filterbank(
        signal,
        bank,
        win_length=win_length,
        hop_length=hop_length,
        n_fft=n_fft,
        window=window,
        floor=_EPS64,
    )
    return np.log10(out, out=out)


@lru_cache(maxsize=16)
def _scaled(bank: Filterbank, factor: float) -> Filterbank:
    return Filterbank.from_weights(bank.weights * factor)
