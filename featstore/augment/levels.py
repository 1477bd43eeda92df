"""Signal levels shared by the augmentations: keeping output in range, measuring power and SNR.

Every augmentation ends with :func:`fit_to_range`: an output that would leave [-1, 1) is
*scaled* down as a whole (its waveform shape, and any SNR it was built with, are kept), never
clipped.
"""

from __future__ import annotations

import numpy as np

HEADROOM = 1.0 - 2.0**-15
"""The peak an overflowing output is scaled to: one 16-bit step below full scale."""


def fit_to_range(signal: np.ndarray) -> np.ndarray:
    """Scale ``signal`` down, as a whole, when it leaves [-1, 1); otherwise return it as is.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples, finite.

    Returns
    -------
    np.ndarray
        float64, same length, every sample in ``[-HEADROOM, HEADROOM]`` when the input's peak
        reached 1 (scaled by ``HEADROOM / peak``), else the input unchanged.

    Examples
    --------
    >>> fit_to_range(np.array([0.5, -2.0])).tolist()
    [0.24999237060546875, -0.999969482421875]
    """
    y = np.asarray(signal, dtype=np.float64)
    if y.size == 0:
        return y
    peak = float(np.max(np.abs(y)))
    if peak < 1.0:
        return y
    return y * (HEADROOM / peak)


def mean_power(signal: np.ndarray) -> float:
    """Mean squared sample value (0 for an empty signal).

    Examples
    --------
    >>> mean_power(np.array([1.0, -1.0, 0.0, 0.0]))
    0.5
    """
    x = np.asarray(signal, dtype=np.float64)
    return float(np.dot(x, x) / x.size) if x.size else 0.0


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio ``10 log10(P_clean / P_noise)`` in dB (inf for zero noise).

    Examples
    --------
    >>> round(snr_db(np.ones(4), np.full(4, 0.1)), 6)
    20.0
    """
    p_noise = mean_power(noise)
    if p_noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(mean_power(clean) / p_noise))


def noise_at_snr(clean: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``noise`` scaled so that ``snr_db(clean, result) == snr``.

    Parameters
    ----------
    clean, noise : np.ndarray
        Same length; ``noise`` must not be all zeros.
    snr : float
        Wanted SNR in dB.

    Returns
    -------
    np.ndarray
        The scaled noise (all zeros when ``clean`` is silent: 0 power at any SNR).

    Examples
    --------
    >>> n = noise_at_snr(np.ones(8), np.arange(8.0), 10.0)
    >>> round(snr_db(np.ones(8), n), 9)
    10.0
    """
    p_noise = mean_power(noise)
    if p_noise == 0.0:
        raise ValueError("cannot scale an all-zero noise to an SNR")
    target = mean_power(clean) / 10.0 ** (snr / 10.0)
    return np.asarray(noise, dtype=np.float64) * np.sqrt(target / p_noise)
