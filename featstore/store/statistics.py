"""Per-bin sums and sums of squares of feature rows, the running state of the store's
normalisation statistics (``mean`` and ``std`` per split, feature and bin).

The build accumulates, per utterance, ``sum_i y[i, j]`` and ``sum_i y[i, j]^2`` in float64
and adds them up in manifest order, so the statistics do not depend on ``--jobs``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["column_moments"]


@njit(cache=True, nogil=True)
def _column_moments(y, sums, squares):  # pragma: no cover - compiled
    # row by row, the inner loop runs over contiguous bins: one pass, float64 accumulators,
    # no float64 copy of the block
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            v = np.float64(y[i, j])
            sums[j] += v
            squares[j] += v * v


def column_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column sums and sums of squares, accumulated in float64.

    Parameters
    ----------
    rows : np.ndarray
        float32 or float64 ``(n_rows, n_bins)``.

    Returns
    -------
    sums, squares : np.ndarray
        float64 ``(n_bins,)`` each. Non-finite inputs make the matching entries non-finite.

    Examples
    --------
    >>> s, q = column_moments(np.array([[1.0, 2.0], [3.0, -4.0]], dtype=np.float32))
    >>> s.tolist(), q.tolist()
    ([4.0, -2.0], [10.0, 20.0])
    """
    y = np.ascontiguousarray(rows)
    if y.ndim != 2:
        raise ValueError(f"rows must be 2-D, got shape {y.shape}")
    sums = np.zeros(y.shape[1])
    squares = np.zeros(y.shape[1])
    _column_moments(y, sums, squares)
    return sums, squares
