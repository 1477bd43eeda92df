"""Linear-phase FIR filtering that keeps the time axis: output sample i lines up with input i."""

from __future__ import annotations

import numpy as np


def fir_aligned(signal: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Filter with a linear-phase FIR of odd length, compensating its delay exactly.

    Returns the ``len(signal)`` samples of the full convolution that start at the group delay
    ``(len(b) - 1) // 2``, so output sample ``i`` lines up with input sample ``i``.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples.
    b : np.ndarray
        FIR coefficients, odd length, symmetric (linear phase).

    Returns
    -------
    np.ndarray
        float64, ``len(signal)`` samples.

    Examples
    --------
    >>> y = fir_aligned(np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.25, 0.5, 0.25]))
    >>> np.round(y, 12).tolist()
    [0.25, 0.5, 0.25, 0.0]
    """
    import scipy.signal

    n = signal.size
    if n == 0:
        return np.zeros(0)
    delay = (b.size - 1) // 2
    full = scipy.signal.oaconvolve(signal, b) if n > 1 and b.size > 1 else np.convolve(signal, b)
    return np.ascontiguousarray(full[delay : delay + n])
