"""Modified group delay (MGD) features: the covarep ``modified_group_delay_feature``.

Per complete frame (400 samples every 160 at 16 kHz, :mod:`featstore.features.framing`) of
the pre-emphasised signal (``y[n] = x[n] - 0.97 x[n-1]``, zero initial state):

1. ``X = FFT(w x)`` and ``Y = FFT(n w x)`` (``w`` the symmetric Hamming window, ``n = 1..400``,
   ``n_fft`` points, bins ``0..n_fft/2``);
2. ``S`` = cepstrally smoothed ``log|X|``: median filter of order 5 along frequency (zero
   padded edges), orthonormal DCT-II, keep 30 coefficients, orthonormal inverse;
3. ``tau = (Re X Re Y + Im X Im Y) / exp(S)^(2 rho)`` and ``mgd = sign(tau) |tau|^gamma``;
4. divide by ``max |mgd|`` over the whole utterance; NaN (silent frames) -> 0.

``mgd_cep`` is the orthonormal DCT-II of each normalised frame, coefficients ``1..n_ceps``.
Both match the original MATLAB/Octave outputs to ~1e-7 (the float32 rounding of the result).

Implementation (fast path): one complex FFT of ``w y + 1j n w y`` per frame (``scipy.fft``,
blocks of frames) gives both spectra, split by conjugate symmetry. The rest runs per frame in
Numba kernels: the median of ``log|X|`` is taken on ``|X|^2`` (log is monotonic), ``log`` and
``exp`` are SIMD-friendly polynomial versions (relative error ~1e-10), the smoothing is a
float32 projection on the kept DCT rows using their (anti)symmetry, and
``sign(tau)|tau|^gamma = sign(tau) exp(gamma log|tau_num| - 2 rho gamma S)``. Even median
orders and extreme signal levels (subnormal spectra, peaks beyond ``exp(+-80)``) use an
exact float64 path with libm ``log``/``exp`` instead. Kernels compile lazily on first call;
``cache=True`` lets later processes load them from disk.

Level: MGD is nearly, not exactly, scale invariant: the normalisation removes a global gain
but the zero padding of ``log|X|`` in the median filter does not scale.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import scipy.fft
from numba import njit

from featstore.errors import ConfigError
from featstore.features.framing import num_frames
from featstore.signal import as_float_signal

__all__ = ["mgd", "mgd_cep"]


# --------------------------------------------------------------------------------------------
# constants


@functools.lru_cache(maxsize=16)
def _dct_basis(n_coefs: int, n: int) -> np.ndarray:
    """Rows ``0..n_coefs-1`` of the orthonormal DCT-II matrix of size ``n`` (read-only)."""
    q = np.arange(n_coefs, dtype=np.float64)[:, None]
    k = np.arange(n, dtype=np.float64)[None, :]
    basis = np.cos(np.pi * q * (2.0 * k + 1.0) / (2.0 * n)) * math.sqrt(2.0 / n)
    basis[0] *= math.sqrt(0.5)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=16)
def _smoothing_rows(n_smooth: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 halves of the kept DCT-II rows for :func:`_smooth` (read-only).

    Even rows over bins ``0 .. n_bins - n_bins // 2 - 1`` and odd rows over bins
    ``0 .. n_bins // 2 - 1``, each padded with zero rows to a multiple of 8.
    """
    basis = _dct_basis(n_smooth, n_bins)
    half = n_bins // 2
    parts = []
    for rows in (basis[0::2, : n_bins - half], basis[1::2, :half]):
        padded = np.zeros((-(-rows.shape[0] // 8) * 8, rows.shape[1]), dtype=np.float32)
        padded[: rows.shape[0]] = rows
        padded.setflags(write=False)
        parts.append(padded)
    return parts[0], parts[1]


@functools.lru_cache(maxsize=16)
def _windows(win_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric Hamming window and the same window times ``n = 1..win_length`` (read-only)."""
    k = np.arange(win_length, dtype=np.float64)
    if win_length > 1:
        window = 0.54 - 0.46 * np.cos(2.0 * np.pi * k / (win_length - 1))
    else:
        window = np.ones(win_length)
    ramp = window * (k + 1.0)
    window.setflags(write=False)
    ramp.setflags(write=False)
    return window, ramp


# --------------------------------------------------------------------------------------------
# Numba kernels (compiled on first call)

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_EXP_BIAS = 4503599627371519.0  # 2**52 + 1023: float whose low bits hold a biased exponent
_EXP_MAGIC = 0x4330000000000000  # bit pattern of 2**52
_MANT_MASK = 0x000FFFFFFFFFFFFF
_EXP_MASK = 0x7FF0000000000000
_SQRT2_MANT = 0x6A09E667F3BCD  # mantissa bits of sqrt(2)
_HALF_BITS = 0x3FE0000000000000
_ONE_BITS = 0x3FF0000000000000
_PEAK_RANGE = (math.exp(-80.0), math.exp(80.0))  # peaks whose float32 values lose nothing


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _count_nonfinite(x: np.ndarray) -> int:  # pragma: no cover - compiled
    """How many samples are NaN or infinite (exponent bits all ones), vectorised."""
    bits = x.view(np.int64)
    count = 0
    for i in range(bits.shape[0]):
        count += (bits[i] & _EXP_MASK) == _EXP_MASK
    return count


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _fill_frames(
    x: np.ndarray,
    coef: float,
    first: int,
    hop: int,
    window: np.ndarray,
    ramp: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Row ``j`` of ``out``: ``window * f + 1j * ramp * f`` zero padded, ``f`` the frame
    ``first + j`` of the pre-emphasised signal ``y[n] = x[n] - coef x[n-1]`` (``y[0] = x[0]``).
    """
    n_rows, n_fft = out.shape
    win = window.shape[0]
    flat = out.view(np.float64)
    for j in range(n_rows):
        start = (first + j) * hop
        row = flat[j]
        if start == 0:  # zero initial state
            frame = x[:win]
            row[0] = window[0] * frame[0]
            row[1] = ramp[0] * frame[0]
            for k in range(win - 1):
                v = frame[k + 1] - coef * frame[k]
                row[2 * k + 2] = window[k + 1] * v
                row[2 * k + 3] = ramp[k + 1] * v
        else:
            frame = x[start - 1 : start + win]  # a view: no per-sample negative-index fix-up
            for k in range(win):
                v = frame[k + 1] - coef * frame[k]
                row[2 * k] = window[k] * v
                row[2 * k + 1] = ramp[k] * v
        for k in range(2 * win, 2 * n_fft):
            row[k] = 0.0


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _split_spectra(z: np.ndarray, power: np.ndarray, numer: np.ndarray) -> None:  # pragma: no cover
    """``|X|^2`` and ``Re X Re Y + Im X Im Y`` from one row ``z = FFT(a + 1j b)``.

    With ``Z[k] = p + iq`` and ``Z[-k] = r + is``: ``X = (Z[k] + conj Z[-k]) / 2`` and
    ``Y = (Z[k] - conj Z[-k]) / 2i``, so ``|X|^2 = ((p+r)^2 + (q-s)^2) / 4`` and
    ``Re X Re Y + Im X Im Y = (ps + qr) / 2``.
    """
    n_fft = z.shape[0]
    p = z[0].real
    q = z[0].imag
    power[0] = p * p
    numer[0] = p * q
    for k in range(1, power.shape[0]):
        a = z[k]
        b = z[np.uint64(n_fft - k)]  # unsigned: no negative-index fix-up, so it vectorises
        p = a.real
        q = a.imag
        r = b.real
        s = b.imag
        power[k] = 0.25 * ((p + r) * (p + r) + (q - s) * (q - s))
        numer[k] = 0.5 * (p * s + q * r)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _median5(a: float, b: float, c: float, d: float, e: float) -> float:  # pragma: no cover
    """Median of five values by a min/max network (no branches)."""
    # the smaller of the two pair minima and the larger of the two pair maxima are not the
    # median; the median of five is the median of the three values left
    lo = max(min(a, b), min(c, d))
    hi = min(max(a, b), max(c, d))
    return max(min(lo, hi), min(max(lo, hi), e))


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _median_filter(
    values: np.ndarray, order: int, pad: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Running median of one row, ``pad`` outside the row (``medfilt1`` zero padding).

    Odd ``order``: window ``i - order//2 .. i + order//2``; even: ``i - order/2 ..
    i + order/2 - 1`` and the mean of the two middle values (MATLAB ``medfilt1``).
    """
    n = values.shape[0]
    half = order // 2
    if order == 5 and n >= 4:
        out[0] = _median5(pad, pad, values[0], values[1], values[2])
        out[1] = _median5(pad, values[0], values[1], values[2], values[3])
        for i in range(n - 4):  # non-negative offsets keep this loop vectorised
            out[i + 2] = _median5(
                values[i], values[i + 1], values[i + 2], values[i + 3], values[i + 4]
            )
        out[n - 2] = _median5(values[n - 4], values[n - 3], values[n - 2], values[n - 1], pad)
        out[n - 1] = _median5(values[n - 3], values[n - 2], values[n - 1], pad, pad)
        return
    buf = np.empty(order)
    for i in range(n):
        for m in range(order):
            idx = i - half + m
            buf[m] = values[idx] if 0 <= idx < n else pad
        buf.sort()
        if order % 2 == 1:
            out[i] = buf[half]
        else:
            out[i] = 0.5 * (buf[half - 1] + buf[half])


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _log_normal(
    x: np.ndarray, scale: float, out: np.ndarray, exps: np.ndarray, mants: np.ndarray
) -> int:  # pragma: no cover - compiled
    """``scale * log|x|`` of finite ``x`` in SIMD-friendly loops (relative error ~1e-10).

    ``exps`` and ``mants`` are int64 scratch rows as long as ``x``. Returns how many inputs
    were zero or subnormal: their results are wrong (about -709, finite), the caller decides.
    """
    n = x.shape[0]
    bits = x.view(np.int64)
    n_tiny = 0
    for i in range(n):  # x = 2^e m, m in [sqrt(1/2), sqrt(2)), by bit manipulation
        b = bits[i]
        mant = b & _MANT_MASK
        big = mant > _SQRT2_MANT
        exps[i] = (((b & _EXP_MASK) >> 52) + (1 if big else 0)) | _EXP_MAGIC  # 2**52 + e + 1023
        mants[i] = mant | (_HALF_BITS if big else _ONE_BITS)
        n_tiny += (b & _EXP_MASK) == 0
    expf = exps.view(np.float64)
    mantf = mants.view(np.float64)
    for i in range(n):
        e = expf[i] - _EXP_BIAS
        m = mantf[i]
        # log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: series to s^11 (rel. 1e-10;
        # the output moves by ~1e-11, far below float32 rounding)
        s = (m - 1.0) / (m + 1.0)
        z = s * s
        poly = 1.0 / 11.0
        poly = poly * z + 1.0 / 9.0
        poly = poly * z + 1.0 / 7.0
        poly = poly * z + 1.0 / 5.0
        poly = poly * z + 1.0 / 3.0
        two_s = s + s
        out[i] = scale * (e * _LN2_HI + (two_s + (two_s * z * poly + e * _LN2_LO)))
    return n_tiny


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _project_rows(rows: np.ndarray, vec: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover
    """``acc += rows.T @ (rows @ vec)``, eight rows at a time (``len(rows) % 8 == 0``).

    Eight independent dot products per pass hide the FMA latency, and each load of ``vec``
    and ``acc`` serves eight rows.
    """
    n_rows, m = rows.shape
    for c in range(0, n_rows, 8):
        r0 = rows[c]
        r1 = rows[c + 1]
        r2 = rows[c + 2]
        r3 = rows[c + 3]
        r4 = rows[c + 4]
        r5 = rows[c + 5]
        r6 = rows[c + 6]
        r7 = rows[c + 7]
        d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = np.float32(0.0)
        for k in range(m):
            v = vec[k]
            d0 += r0[k] * v
            d1 += r1[k] * v
            d2 += r2[k] * v
            d3 += r3[k] * v
            d4 += r4[k] * v
            d5 += r5[k] * v
            d6 += r6[k] * v
            d7 += r7[k] * v
        for k in range(m):
            acc[k] += (d0 * r0[k] + d1 * r1[k] + d2 * r2[k] + d3 * r3[k]) + (
                d4 * r4[k] + d5 * r5[k] + d6 * r6[k] + d7 * r7[k]
            )


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _smooth(
    logmag: np.ndarray,
    even_rows: np.ndarray,
    odd_rows: np.ndarray,
    work: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out = basis.T @ (basis @ logmag)`` (float32 inside) from the (anti)symmetric halves.

    Even DCT-II rows are symmetric about the middle bin and odd rows antisymmetric, so
    ``even_rows``/``odd_rows`` (see :func:`_smoothing_rows`) hold half of each row and the
    products run over half the bins. ``work`` is float32 scratch ``(4, n_bins // 2 + 1)``.
    float32 moves the smoothed log spectrum by ~1e-6 and the output by ~1e-7 (its exponent
    is ``-2 rho gamma``, -0.06 by default).
    """
    n = logmag.shape[0]
    half = n // 2
    m = n - half  # bins 0..m-1: the symmetric half, with the middle bin when n is odd
    sym = work[0, :m]
    anti = work[1, :half]
    even = work[2, :m]
    odd = work[3, :half]
    # float32 works on log|X| minus its mean (the projection keeps constants exactly), so
    # the rounding does not grow with the signal level
    mean = 0.0
    for k in range(n):
        mean += logmag[k]
    mean /= n
    for k in range(half):
        a = logmag[k] - mean
        b = logmag[np.uint64(n - 1 - k)] - mean  # unsigned index: no wrap-around, vectorises
        sym[k] = a + b
        anti[k] = a - b
    if m > half:
        sym[half] = logmag[half] - mean
    even[:] = 0.0
    odd[:] = 0.0
    _project_rows(even_rows, sym, even)
    _project_rows(odd_rows, anti, odd)
    for k in range(half):
        e = even[k]
        o = odd[k]
        out[k] = (e + o) + mean
        out[np.uint64(n - 1 - k)] = (e - o) + mean
    if m > half:
        out[half] = even[half] + mean


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _compress(
    numer: np.ndarray,
    smooth: np.ndarray,
    gamma: float,
    exponent: float,
    out: np.ndarray,
    peaks: np.ndarray,
    logs: np.ndarray,
    exps: np.ndarray,
    mants: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out = sign(numer) |numer|^gamma exp(S)^exponent`` (float32); ``peaks = max |out|``.

    Computed as ``exp(gamma log|numer| + exponent S)``. ``numer == 0`` (or subnormal) gives
    about ``exp(-212)``: 0 in float32 and far below any peak the fast path accepts.
    """
    n = numer.shape[0]
    _log_normal(numer, 1.0, logs, exps, mants)  # log|numer| (the sign bit is ignored)
    expf = exps.view(np.float64)
    mantf = mants.view(np.float64)
    for i in range(n):
        t = gamma * logs[i] + exponent * smooth[i]
        t = min(max(t, -700.0), 700.0)
        kf = np.floor(t * _LOG2E + 0.5)
        r = (t - kf * _LN2_HI) - kf * _LN2_LO  # |r| <= 0.347: Taylor to r^8 (rel. 2e-10)
        p = 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        mantf[i] = p
        expf[i] = kf + _EXP_BIAS  # low bits: k + 1023
    for i in range(n):  # 2**k from the biased exponent held in the low bits
        exps[i] = (exps[i] - _EXP_MAGIC) << 52
    for i in range(n):
        v = mantf[i] * expf[i]
        out[i] = math.copysign(v, numer[i])
        peaks[i] = np.maximum(peaks[i], v)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _group_delay_block(
    spectra: np.ndarray,
    even_rows: np.ndarray,
    odd_rows: np.ndarray,
    gamma: float,
    exponent: float,
    median_order: int,
    out: np.ndarray,
    peaks: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Unnormalised MGD of a block of frames into float32 ``out`` (fast path).

    ``spectra`` holds ``FFT(w y + 1j n w y)`` per row, ``even_rows``/``odd_rows`` the
    smoothing rows of :func:`_smoothing_rows`, ``exponent = -2 rho gamma``; ``peaks`` (per
    bin) is updated with the max ``|mgd|``.
    Frames whose smoothed log spectrum is not finite (silence: ``log 0``) give zeros, as
    NaN -> 0 does in the reference.
    """
    n_frames = spectra.shape[0]
    n_bins = out.shape[1]
    power = np.empty(n_bins)
    numer = np.empty(n_bins)
    median = np.empty(n_bins)
    logmag = np.empty(n_bins)
    smooth = np.empty(n_bins)
    work = np.empty((4, n_bins // 2 + 1), dtype=np.float32)
    exps = np.empty(n_bins, dtype=np.int64)
    mants = np.empty(n_bins, dtype=np.int64)
    for j in range(n_frames):
        _split_spectra(spectra[j], power, numer)
        # median of log|X| = log of the median of |X|^2, halved; padding log|X| = 0 is |X|^2 = 1
        _median_filter(power, median_order, 1.0, median)
        row = out[j]
        if _log_normal(median, 0.5, logmag, exps, mants) > 0:  # zeros (silence) or subnormal
            finite = True
            for k in range(n_bins):
                v = 0.5 * math.log(median[k])
                logmag[k] = v
                finite &= v > -np.inf
            if not finite:  # log 0 somewhere: the reference smoothing gives NaN -> zeros
                row[:] = 0.0
                continue
        _smooth(logmag, even_rows, odd_rows, work, smooth)
        _compress(numer, smooth, gamma, exponent, row, peaks, logmag, exps, mants)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _group_delay_exact(
    spectra: np.ndarray,
    basis: np.ndarray,
    rho: float,
    gamma: float,
    median_order: int,
    scale: float,
    out: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """MGD in float64 with libm ``log``/``exp``, in the reference's order of operations.

    The exact path, for even median orders and extreme levels. Returns the max ``|mgd|`` of
    the block (``inf`` if a value overflows: the reference then gives all zeros); writes
    ``mgd * scale`` as float32 into ``out`` unless ``scale`` is 0.
    """
    n_frames = spectra.shape[0]
    n_bins = out.shape[1]
    n_smooth = basis.shape[0]
    power = np.empty(n_bins)
    numer = np.empty(n_bins)
    logmag = np.empty(n_bins)
    smooth = np.empty(n_bins)
    peak = 0.0
    for j in range(n_frames):
        _split_spectra(spectra[j], power, numer)
        for k in range(n_bins):
            power[k] = math.log(math.sqrt(power[k]))
        _median_filter(power, median_order, 0.0, logmag)
        finite = True
        for k in range(n_bins):
            finite &= math.isfinite(logmag[k])
        if not finite:  # log 0: NaN after the reference's DCT -> zeros
            if scale != 0.0:
                out[j] = 0.0
            continue
        smooth[:] = 0.0
        for c in range(n_smooth):
            b = basis[c]
            acc = 0.0
            for k in range(n_bins):
                acc += b[k] * logmag[k]
            for k in range(n_bins):
                smooth[k] += acc * b[k]
        for k in range(n_bins):
            tau = numer[k] / math.exp(smooth[k]) ** (2.0 * rho)
            v = abs(tau) ** gamma
            v = -v if tau < 0.0 else v
            v = 0.0 if (tau == 0.0 or math.isnan(tau)) else v
            peak = max(peak, abs(v))
            if scale != 0.0:
                out[j, k] = v * scale
    return peak


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _scale_inplace(values: np.ndarray, scale: float) -> None:  # pragma: no cover - compiled
    """``values *= scale`` for a float32 array, the product taken in float64."""
    flat = values.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = flat[i] * scale


# --------------------------------------------------------------------------------------------
# public kernels


def _check_params(
    win_length: int, hop_length: int, n_fft: int, median_order: int, n_smooth: int
) -> None:
    if win_length < 1 or hop_length < 1:
        raise ConfigError(
            f"win_length and hop_length must be positive, got {win_length}, {hop_length}"
        )
    if n_fft < win_length:
        raise ConfigError(f"n_fft ({n_fft}) must be at least win_length ({win_length})")
    if median_order < 1:
        raise ConfigError(f"median_order must be at least 1, got {median_order}")
    n_bins = n_fft // 2 + 1
    if not 1 <= n_smooth <= n_bins:
        raise ConfigError(f"n_smooth must be in 1..{n_bins}, got {n_smooth}")


def _as_signal(signal: Any) -> np.ndarray:
    """C-contiguous float64 1-D view/copy of ``signal`` (integer PCM scaled like soundfile)."""
    x = np.asarray(signal)
    if x.dtype == np.float64 and x.ndim == 1:
        return np.ascontiguousarray(x)
    return as_float_signal(x)


_BLOCK_FRAMES = 128  # frames per FFT call: amortises call overhead, bounds memory


def _mgd_normalised(
    signal: Any,
    rho: float,
    gamma: float,
    win_length: int,
    hop_length: int,
    n_fft: int,
    preemphasis: float,
    median_order: int,
    n_smooth: int,
) -> np.ndarray:
    """The MGD spectrogram ``(n_frames, n_fft//2+1)`` float32, divided by its max ``|.|``."""
    win_length, hop_length, n_fft = int(win_length), int(hop_length), int(n_fft)
    median_order, n_smooth = int(median_order), int(n_smooth)
    rho, gamma, preemphasis = float(rho), float(gamma), float(preemphasis)
    _check_params(win_length, hop_length, n_fft, median_order, n_smooth)
    x = _as_signal(signal)
    n_bins = n_fft // 2 + 1
    n = num_frames(x.shape[0], win_length, hop_length)
    if _count_nonfinite(x):
        raise ValueError("signal holds non-finite samples (NaN or inf)")
    out = np.zeros((n, n_bins), dtype=np.float32)
    if n == 0:
        return out
    window, ramp = _windows(win_length)
    buffer = np.empty((min(n, _BLOCK_FRAMES), n_fft), dtype=np.complex128)

    def spectra(first: int) -> np.ndarray:  # FFTs of frames first.., one block, in place
        block = buffer[: min(_BLOCK_FRAMES, n - first)]
        _fill_frames(x, preemphasis, first, hop_length, window, ramp, block)
        return scipy.fft.fft(block, axis=-1, overwrite_x=True, workers=1)

    if median_order % 2 == 1:  # fast path: unnormalised float32, then scaled in place
        even_rows, odd_rows = _smoothing_rows(n_smooth, n_bins)
        peaks = np.zeros(n_bins)
        exponent = -2.0 * rho * gamma
        for first in range(0, n, _BLOCK_FRAMES):
            block = spectra(first)
            rows = out[first : first + block.shape[0]]
            _group_delay_block(
                block, even_rows, odd_rows, gamma, exponent, median_order, rows, peaks
            )
        peak = float(peaks.max())
        if peak == 0.0:  # every frame silent
            return out
        if _PEAK_RANGE[0] <= peak <= _PEAK_RANGE[1]:
            # divide by the stored (float32) peak so that it maps to exactly 1
            _scale_inplace(out, 1.0 / float(np.float32(peak)))
            return out
    # exact path (even median orders, extreme levels): one pass for the peak, one to write
    basis = _dct_basis(n_smooth, n_bins)
    peak = 0.0
    for first in range(0, n, _BLOCK_FRAMES):
        block = spectra(first)
        rows = out[first : first + block.shape[0]]
        peak = max(peak, _group_delay_exact(block, basis, rho, gamma, median_order, 0.0, rows))
    out[:] = 0.0
    if peak > 0.0 and math.isfinite(peak):
        for first in range(0, n, _BLOCK_FRAMES):
            block = spectra(first)
            rows = out[first : first + block.shape[0]]
            _group_delay_exact(block, basis, rho, gamma, median_order, 1.0 / peak, rows)
    return out


def mgd(
    signal: np.ndarray,
    rho: float = 0.1,
    gamma: float = 0.3,
    win_length: int = 400,
    hop_length: int = 160,
    n_fft: int = 512,
    preemphasis: float = 0.97,
    median_order: int = 5,
    n_smooth: int = 30,
) -> np.ndarray:
    """Modified group delay spectrogram, normalised by the utterance's max ``|.|``.

    Parameters
    ----------
    signal : np.ndarray
        1-D samples at 16 kHz, float in [-1, 1) (float32 or float64; integer PCM is scaled
        by its full-scale value). Must be finite.
    rho : float, default 0.1
        Exponent of the smoothed spectrum in the denominator, ``exp(S)^(2 rho)``.
    gamma : float, default 0.3
        Compression exponent, ``sign(tau) |tau|^gamma``.
    win_length, hop_length : int, default 400, 160
        Frame length and step in samples (complete frames only).
    n_fft : int, default 512
        FFT size; ``n_fft // 2 + 1`` output bins.
    preemphasis : float, default 0.97
        ``y[n] = x[n] - preemphasis * x[n-1]``, ``y[0] = x[0]``.
    median_order : int, default 5
        Median filter length along frequency applied to ``log|X|`` (zero padded edges).
    n_smooth : int, default 30
        Orthonormal DCT-II coefficients of the filtered ``log|X|`` kept for smoothing.

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_fft // 2 + 1)`` in [-1, 1]; ``max |.| == 1`` unless every frame
        is silent (then all zeros); ``(0, n_bins)`` for signals shorter than one frame.

    Raises
    ------
    ConfigError
        Out-of-range framing/smoothing parameters.
    ValueError
        The signal is not 1-D or holds NaN/inf samples.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> feats = mgd(x)
    >>> feats.shape, feats.dtype, float(np.abs(feats).max())
    ((98, 257), dtype('float32'), 1.0)
    """
    return _mgd_normalised(
        signal, rho, gamma, win_length, hop_length, n_fft, preemphasis, median_order, n_smooth
    )


def mgd_cep(
    signal: np.ndarray,
    rho: float = 0.1,
    gamma: float = 0.3,
    win_length: int = 400,
    hop_length: int = 160,
    n_fft: int = 512,
    preemphasis: float = 0.97,
    median_order: int = 5,
    n_smooth: int = 30,
    n_ceps: int = 12,
) -> np.ndarray:
    """Cepstral coefficients ``1..n_ceps`` (orthonormal DCT-II) of the normalised MGD.

    Parameters
    ----------
    signal : np.ndarray
        1-D samples at 16 kHz (see :func:`mgd`).
    rho, gamma, win_length, hop_length, n_fft, preemphasis, median_order, n_smooth
        As in :func:`mgd`.
    n_ceps : int, default 12
        Number of coefficients, counted from coefficient 1 (coefficient 0 is dropped).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_ceps)``.

    Raises
    ------
    ConfigError
        Out-of-range parameters.
    ValueError
        The signal is not 1-D or holds NaN/inf samples.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> mgd_cep(x).shape
    (98, 12)
    """
    n_ceps = int(n_ceps)
    n_bins = int(n_fft) // 2 + 1
    if not 1 <= n_ceps < n_bins:
        raise ConfigError(f"n_ceps must be in 1..{n_bins - 1}, got {n_ceps}")
    values = _mgd_normalised(
        signal, rho, gamma, win_length, hop_length, n_fft, preemphasis, median_order, n_smooth
    )
    basis = _dct_basis(n_ceps + 1, n_bins)[1:]
    return (values.astype(np.float64) @ basis.T).astype(np.float32)
