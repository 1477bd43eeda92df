"""Framing shared by every feature: complete frames only, no centring, no padding.

Frame ``i`` covers samples ``[hop * i, hop * i + win)``; a trailing partial frame is dropped
(the ``enframe`` convention of the MATLAB reference code). Features with the same ``hop`` and
``win`` therefore describe the same audio at the same frame index.
"""

from __future__ import annotations

import numpy as np


def num_frames(n_samples: int, win_length: int, hop_length: int) -> int:
    """Number of complete frames of ``win_length`` samples every ``hop_length``.

    Parameters
    ----------
    n_samples : int
        Signal length in samples.
    win_length : int
        Frame length in samples.
    hop_length : int
        Frame step in samples.

    Returns
    -------
    int
        ``1 + (n_samples - win_length) // hop_length`` when ``n_samples >= win_length``,
        else 0.

    Examples
    --------
    >>> num_frames(23488, 400, 160)
    145
    >>> num_frames(399, 400, 160)
    0
    """
    if win_length <= 0 or hop_length <= 0:
        raise ValueError("win_length and hop_length must be positive")
    if n_samples < win_length:
        return 0
    return 1 + (n_samples - win_length) // hop_length


def frame_signal(signal: np.ndarray, win_length: int, hop_length: int) -> np.ndarray:
    """A read-only ``(n_frames, win_length)`` strided view of the complete frames.

    Parameters
    ----------
    signal : np.ndarray
        1-D samples.
    win_length, hop_length : int
        Frame length and step in samples.

    Returns
    -------
    np.ndarray
        View of ``signal`` (no copy); ``(0, win_length)`` when the signal is too short.

    Examples
    --------
    >>> frame_signal(np.arange(10.0), 4, 3)
    array([[0., 1., 2., 3.],
           [3., 4., 5., 6.],
           [6., 7., 8., 9.]])
    """
    n = num_frames(signal.shape[0], win_length, hop_length)
    if n == 0:
        return np.zeros((0, win_length), dtype=signal.dtype)
    view = np.lib.stride_tricks.sliding_window_view(signal, win_length)[::hop_length]
    return view[:n]
