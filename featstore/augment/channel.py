"""Cheap channel variation: a random gain, a random low-pass band limit."""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.augment._params import check_input, check_positive, check_range
from featstore.augment.filtering import fir_aligned
from featstore.augment.levels import fit_to_range
from featstore.augment.tracing import returns_signal
from featstore.signal import SAMPLE_RATE


def _check_gain(min_db: float = -12.0, max_db: float = 6.0) -> None:
    check_range("gain", "min_db", min_db, "max_db", max_db)


def _gain(
    signal: np.ndarray, rng: np.random.Generator, min_db: float = -12.0, max_db: float = 6.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Multiply by a gain drawn uniformly in ``[min_db, max_db]`` dB.

    A gain that would take the signal out of [-1, 1) is reduced to just fit (scaled, not
    clipped); ``drawn["applied_db"]`` is the gain actually applied.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of the draw.
    min_db, max_db : float, default -12, 6
        Gain range (dB).

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Examples
    --------
    >>> y, drawn = gain.with_params(np.full(4, 0.1), np.random.default_rng(0), min_db=-6, max_db=-6)
    >>> round(float(y[0]), 4), drawn["gain_db"]
    (0.0501, -6.0)
    """
    _check_gain(min_db, max_db)
    x = check_input(signal, rng)
    db = float(rng.uniform(min_db, max_db))
    y = fit_to_range(x * 10.0 ** (db / 20.0))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    applied = 20.0 * np.log10(float(np.max(np.abs(y))) / peak) if peak > 0 else db
    return y, {"gain_db": db, "applied_db": float(applied)}


def _check_bandlimit(
    min_cutoff: float = 3400.0, max_cutoff: float = 7800.0, n_taps: int = 101
) -> None:
    nyquist = SAMPLE_RATE / 2 - 1
    check_range("bandlimit", "min_cutoff", min_cutoff, "max_cutoff", max_cutoff, maximum=nyquist)
    check_positive("bandlimit", "min_cutoff", min_cutoff)
    check_positive("bandlimit", "n_taps", n_taps)


def _bandlimit(
    signal: np.ndarray,
    rng: np.random.Generator,
    min_cutoff: float = 3400.0,
    max_cutoff: float = 7800.0,
    n_taps: int = 101,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Low-pass at a cutoff drawn uniformly in ``[min_cutoff, max_cutoff]`` Hz.

    A linear-phase Hamming-window FIR (``n_taps``, made odd) with its delay removed, so the
    time axis does not shift.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of the draw.
    min_cutoff, max_cutoff : float, default 3400, 7800
        Cutoff range (Hz, below 8000).
    n_taps : int, default 101
        Filter length (transition band about ``3.3 * 16000 / n_taps`` Hz wide).

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Examples
    --------
    >>> x = np.random.default_rng(1).standard_normal(16000) * 0.1
    >>> y, drawn = bandlimit.with_params(x, np.random.default_rng(0))
    >>> 3400 <= drawn["cutoff_hz"] <= 7800
    True
    """
    import scipy.signal

    _check_bandlimit(min_cutoff, max_cutoff, n_taps)
    x = check_input(signal, rng)
    cutoff = float(rng.uniform(min_cutoff, max_cutoff))
    b = scipy.signal.firwin(int(n_taps) | 1, cutoff, window="hamming", fs=SAMPLE_RATE)
    return fit_to_range(fir_aligned(x, b)), {"cutoff_hz": cutoff}


gain = returns_signal(_gain, _check_gain)
bandlimit = returns_signal(_bandlimit, _check_bandlimit)
