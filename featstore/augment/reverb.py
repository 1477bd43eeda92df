"""Reverberation: convolution with a room impulse response, direct path aligned.

With ``rir_dir`` (e.g. the RIRS_NOISES ``simulated_rirs``/``real_rirs_isotropic_noises``
folders, or any folder of impulse responses) a file is drawn uniformly; otherwise a synthetic
response is made: a unit direct path followed by exponentially decaying Gaussian noise with
an RT60 and a direct-to-reverberant ratio (DRR) drawn from their ranges.

Either way the response starts at its direct path (a file's samples before its largest
one are dropped) and is scaled so that the direct path is 1: the output's sample ``i`` is the
input's sample ``i`` plus its reflections, and the time axis does not shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.augment._params import check_input, check_positive, check_range
from featstore.augment.levels import fit_to_range
from featstore.augment.sources import audio_bank, read_whole
from featstore.augment.tracing import returns_signal
from featstore.errors import AudioError
from featstore.signal import SAMPLE_RATE

_LN_1000 = float(np.log(1000.0))  # 60 dB of amplitude decay


def synthetic_rir(rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response at 16 kHz.

    ``h[0] = 1`` (the direct path), then Gaussian noise decaying by 60 dB in ``rt60``
    seconds, scaled so that the tail's energy is ``drr_db`` dB below the direct path's; the
    response is cut where it has decayed by 60 dB.

    Parameters
    ----------
    rt60 : float
        Reverberation time (s).
    drr_db : float
        Direct-to-reverberant energy ratio (dB).
    rng : np.random.Generator
        Source of the noise.

    Returns
    -------
    np.ndarray
        float64, ``round(rt60 * 16000) + 1`` samples, ``h[0] == 1``.

    Examples
    --------
    >>> h = synthetic_rir(0.5, 5.0, np.random.default_rng(0))
    >>> h.size, float(h[0]), round(float(10 * np.log10(1 / np.sum(h[1:] ** 2))), 6)
    (8001, 1.0, 5.0)
    """
    n = max(round(rt60 * SAMPLE_RATE), 1)
    t = np.arange(1, n + 1) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-_LN_1000 * t / rt60)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    return np.concatenate(([1.0], tail))


def aligned_rir(h: np.ndarray) -> np.ndarray:
    """A measured response from its direct path (largest magnitude) on, scaled so it is 1.

    Examples
    --------
    >>> aligned_rir(np.array([0.0, 0.1, -2.0, 0.5])).tolist()
    [1.0, -0.25]
    """
    peak = int(np.argmax(np.abs(h)))
    if h.size == 0 or h[peak] == 0:
        raise ValueError("the impulse response is silent")
    return h[peak:] / h[peak]


def _check_reverb(
    rt60_min: float = 0.2,
    rt60_max: float = 1.0,
    drr_min: float = 0.0,
    drr_max: float = 10.0,
    rir_dir: str | None = None,
) -> None:
    check_range("reverb", "rt60_min", rt60_min, "rt60_max", rt60_max)
    check_positive("reverb", "rt60_min", rt60_min)
    check_range("reverb", "drr_min", drr_min, "drr_max", drr_max)
    if rir_dir:
        audio_bank(rir_dir, "augmentation 'reverb': rir_dir")


def _reverb(
    signal: np.ndarray,
    rng: np.random.Generator,
    rt60_min: float = 0.2,
    rt60_max: float = 1.0,
    drr_min: float = 0.0,
    drr_max: float = 10.0,
    rir_dir: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Convolve with a room impulse response, keeping the direct path at lag 0.

    The output is the first ``len(signal)`` samples of the convolution (the reverberant
    tail past the end is dropped, as a recording would stop), scaled into [-1, 1) where it
    overflows.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    rt60_min, rt60_max : float, default 0.2, 1.0
        RT60 range (s) of synthetic responses.
    drr_min, drr_max : float, default 0, 10
        Direct-to-reverberant ratio range (dB) of synthetic responses.
    rir_dir : str, optional
        A directory of impulse responses (searched recursively, resampled to 16 kHz); the
        RT60/DRR ranges are then unused.

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Raises
    ------
    ConfigError
        Bad ranges; ``rir_dir`` missing, unreadable, or holding no audio.
    AudioError
        The drawn response is silent or became unreadable.

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> y, drawn = reverb.with_params(x, np.random.default_rng(0))
    >>> y.shape, 0.2 <= drawn["rt60"] <= 1.0
    ((16000,), True)
    """
    import scipy.signal

    _check_reverb(rt60_min, rt60_max, drr_min, drr_max, rir_dir)
    x = check_input(signal, rng)
    if rir_dir:
        bank = audio_bank(rir_dir, "augmentation 'reverb': rir_dir")
        file = bank[int(rng.integers(len(bank)))]
        try:
            h = aligned_rir(read_whole(file))
        except ValueError:
            raise AudioError(file.path, "the impulse response is silent") from None
        drawn: dict[str, Any] = {"source": file.path}
    else:
        rt60 = float(rng.uniform(rt60_min, rt60_max))
        drr = float(rng.uniform(drr_min, drr_max))
        h = synthetic_rir(rt60, drr, rng)
        drawn = {"source": "synthetic", "rt60": rt60, "drr_db": drr}
    if x.size == 0:
        return x.copy(), drawn
    h = h[: x.size]  # reflections past the end of the signal never reach the output
    wet = scipy.signal.oaconvolve(x, h)[: x.size] if h.size > 1 else x * h[0]
    drawn["rir"] = h
    return fit_to_range(wet), drawn


reverb = returns_signal(_reverb, _check_reverb)
