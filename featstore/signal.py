"""Turn user-provided sample arrays into the float64 signal the kernels expect.

Kernels work on a 1-D float64 array in [-1, 1) at 16 kHz. This module converts integer PCM,
checks for non-finite samples and resamples with soxr. It holds no I/O (see ``audio.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 16000
"""The sample rate every feature kernel works at (Hz)."""


def as_float_signal(signal: npt.ArrayLike) -> np.ndarray:
    """Convert a 1-D signal to float64 in [-1, 1), checking that it is finite.

    Parameters
    ----------
    signal : array_like
        1-D samples: float in [-1, 1), or integer PCM (int8/uint8/int16/int32/int64),
        which is scaled by its full-scale value (``int16 / 32768``, as audioread and
        soundfile do).

    Returns
    -------
    np.ndarray
        float64 array, same length, C-contiguous.

    Raises
    ------
    ValueError
        If the array is not 1-D or holds NaN or infinite samples.

    Examples
    --------
    >>> as_float_signal(np.array([0, 16384, -32768], dtype=np.int16))
    array([ 0. ,  0.5, -1. ])
    """
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ValueError(f"signal must be 1-D (mono samples), got shape {x.shape}")
    if x.dtype.kind == "u":
        bits = 8 * x.dtype.itemsize
        x = (x.astype(np.float64) - 2.0 ** (bits - 1)) / 2.0 ** (bits - 1)
    elif x.dtype.kind == "i":
        bits = 8 * x.dtype.itemsize
        x = x.astype(np.float64) / 2.0 ** (bits - 1)
    elif x.dtype.kind in "fb":
        x = x.astype(np.float64, copy=False)
    else:
        raise ValueError(f"signal must hold real numbers, got dtype {x.dtype}")
    # the sum of finite samples in [-1, 1) is finite, and a NaN or infinity makes it
    # non-finite: one pass without a temporary in the common case
    if not np.isfinite(np.add.reduce(x)) and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        kind = "NaN" if np.isnan(x[bad[0]]) else "infinite"
        raise ValueError(
            f"signal holds {bad.size} non-finite sample(s); first is {kind} at sample {bad[0]}"
        )
    return np.ascontiguousarray(x)


def resample(signal: np.ndarray, sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a float signal with soxr (high quality), a no-op when rates match.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples.
    sr : int
        Sample rate of ``signal`` in Hz.
    target_sr : int, default 16000
        Wanted sample rate in Hz.

    Returns
    -------
    np.ndarray
        float64 samples at ``target_sr``.

    Examples
    --------
    >>> resample(np.zeros(44100), 44100).shape
    (16000,)
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if sr == target_sr or signal.size == 0:
        return np.asarray(signal, dtype=np.float64)
    return np.asarray(soxr.resample(signal, sr, target_sr, quality="HQ"), dtype=np.float64)
