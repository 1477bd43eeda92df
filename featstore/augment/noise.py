"""Additive noise at a random SNR: from a directory of noise files, or generated.

With ``noise_dir`` (MUSAN's ``noise/`` or ``music/``, or any folder of audio), each call draws
a file uniformly and a random excerpt of it (:mod:`featstore.augment.sources`: files at
another rate are resampled, files shorter than the utterance looped). Without it, white,
pink (1/f power) or brown (1/f^2) Gaussian noise is generated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.augment._params import check_input, check_range, split_names
from featstore.augment.levels import fit_to_range, noise_at_snr
from featstore.augment.sources import audio_bank, read_excerpt
from featstore.augment.tracing import returns_signal
from featstore.errors import AudioError

COLOURS = ("white", "pink", "brown")
"""Generated noise colours: power spectral density slope 0, -1 and -2 (per decade: 0, -10,
-20 dB)."""

_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as ``1 / f**k`` (white k=0, pink 1, brown 2).

    Shaped in the frequency domain (the DC bin is zeroed), normalised to unit power.

    Parameters
    ----------
    n : int
        Length in samples.
    colour : {"white", "pink", "brown"}
        The spectral slope.
    rng : np.random.Generator
        Source of the noise.

    Returns
    -------
    np.ndarray
        float64, ``n`` samples, mean power 1 (all zeros for ``n < 2`` non-white).

    Examples
    --------
    >>> x = coloured_noise(16000, "pink", np.random.default_rng(0))
    >>> round(float(np.mean(x**2)), 6)
    1.0
    """
    white = rng.standard_normal(n)
    k = _EXPONENT[colour]
    if k == 0.0 or n < 2:
        shaped = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = np.inf  # no DC
        shaped = np.fft.irfft(spectrum / f ** (k / 2.0), n)
    power = np.mean(shaped**2) if n else 0.0
    return shaped / np.sqrt(power) if power > 0 else np.zeros(n)


def _check_noise(
    snr_min: float = 5.0,
    snr_max: float = 20.0,
    noise_dir: str | None = None,
    colours: str = "white,pink,brown",
) -> None:
    check_range("noise", "snr_min", snr_min, "snr_max", snr_max)
    if noise_dir:
        audio_bank(noise_dir, "augmentation 'noise': noise_dir")
    else:
        split_names("noise", "colours", colours, COLOURS)


def _noise(
    signal: np.ndarray,
    rng: np.random.Generator,
    snr_min: float = 5.0,
    snr_max: float = 20.0,
    noise_dir: str | None = None,
    colours: str = "white,pink,brown",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Add noise at an SNR drawn uniformly in ``[snr_min, snr_max]`` dB.

    The SNR is that of the whole utterance (mean power of signal over mean power of the
    added noise). Where the sum would leave [-1, 1) it is scaled down as a whole, which
    keeps the SNR. A silent signal stays silent.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    snr_min, snr_max : float, default 5, 20
        SNR range (dB).
    noise_dir : str, optional
        A directory of noise files (searched recursively); a file is drawn uniformly, then
        an excerpt. Without it, generated noise is used.
    colours : str, default "white,pink,brown"
        Comma-separated colours to draw from when generating (ignored with ``noise_dir``).

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Raises
    ------
    ConfigError
        Bad ranges or colours; ``noise_dir`` missing, unreadable, or holding no audio.
    AudioError
        The drawn excerpt is silent, or the file became unreadable.

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> y, drawn = noise.with_params(x, np.random.default_rng(0))
    >>> 5 <= drawn["snr_db"] <= 20, drawn["source"] in COLOURS
    (True, True)
    """
    _check_noise(snr_min, snr_max, noise_dir, colours)
    x = check_input(signal, rng)
    snr = float(rng.uniform(snr_min, snr_max))
    drawn: dict[str, Any] = {"snr_db": snr}
    if noise_dir:
        bank = audio_bank(noise_dir, "augmentation 'noise': noise_dir")
        file = bank[int(rng.integers(len(bank)))]
        raw, where = read_excerpt(file, x.size, rng)
        drawn.update(source=file.path, **where)
        if x.size and not np.any(raw):
            raise AudioError(file.path, f"the noise excerpt at {where['start']:.2f} s is silent")
    else:
        names = split_names("noise", "colours", colours, COLOURS)
        colour = names[int(rng.integers(len(names)))]
        raw = coloured_noise(x.size, colour, rng)
        drawn["source"] = colour
    if not np.any(x) or not np.any(raw):
        drawn.update(noise=np.zeros_like(x), scale=1.0)
        return x.copy(), drawn
    added = noise_at_snr(x, raw, snr)
    y = fit_to_range(x + added)
    drawn.update(noise=added, scale=_scale(x + added, y))
    return y, drawn


def _scale(before: np.ndarray, after: np.ndarray) -> float:
    """The factor :func:`fit_to_range` applied (1.0 when it left the signal alone)."""
    i = int(np.argmax(np.abs(before)))
    return float(after[i] / before[i]) if before[i] != 0 else 1.0


noise = returns_signal(_noise, _check_noise)
