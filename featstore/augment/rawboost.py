"""RawBoost: linear/non-linear convolutive, impulsive and coloured additive noise.

After H. Tak, M. Kamble, J. Patino, M. Todisco, N. Evans, "RawBoost: a raw data boosting and
augmentation method applied to automatic speaker verification anti-spoofing", ICASSP 2022,
and the defaults of its reference implementation (github.com/TakHemlata/RawBoost-antispoofing,
``main.py`` arguments). Written from those descriptions; what differs from the reference:

- all randomness comes from the ``rng`` argument (the reference uses NumPy's global RNG);
- filters are aligned on their exact group delay, ``(len(b) - 1) / 2`` samples (every
  filter here is a linear-phase FIR of odd length; the reference is one sample late);
- an output that leaves [-1, 1) is scaled into it (:func:`~featstore.augment.levels.fit_to_range`)
  after *every* algorithm, coloured noise included (the reference leaves that one unscaled).

Algorithms by number, as in the paper: 1 :func:`rawboost_lnl`, 2 :func:`rawboost_isd`,
3 :func:`rawboost_ssi`, 4 = 1+2+3 in series, 5 = 1+2 in series (the usual choice for LA),
6 = 1+3, 7 = 2+3, 8 = 1 and 2 in parallel (their outputs summed). The combinations take the
union of their stages' parameters (LnL and SSI share the filter parameters, as in the
reference).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from featstore.augment._params import check_input, check_positive, check_range
from featstore.augment.filtering import fir_aligned
from featstore.augment.levels import fit_to_range, noise_at_snr
from featstore.augment.tracing import returns_signal
from featstore.signal import SAMPLE_RATE

_NYQUIST = SAMPLE_RATE / 2


def notch_filter(
    rng: np.random.Generator,
    n_bands: int,
    min_freq: float,
    max_freq: float,
    min_bw: float,
    max_bw: float,
    min_coeff: int,
    max_coeff: int,
    min_gain: float,
    max_gain: float,
) -> tuple[np.ndarray, float]:
    """A random multi-band notch FIR filter (RawBoost's ``genNotchCoeffs``).

    ``n_bands`` band-stop Hamming-window FIR filters, each with a centre frequency uniform in
    ``[min_freq, max_freq]`` Hz, a bandwidth uniform in ``[min_bw, max_bw]`` Hz and an odd
    number of coefficients in ``[min_coeff, max_coeff]``, are cascaded; the cascade is
    normalised to a peak magnitude response of 1 and scaled by a gain uniform in
    ``[min_gain, max_gain]`` dB.

    Parameters
    ----------
    rng : np.random.Generator
        Source of every random draw.
    n_bands, min_freq, max_freq, min_bw, max_bw, min_coeff, max_coeff, min_gain, max_gain
        As above.

    Returns
    -------
    b : np.ndarray
        The FIR coefficients (odd length, linear phase).
    gain_db : float
        The drawn gain.

    Examples
    --------
    >>> b, g = notch_filter(np.random.default_rng(0), 5, 20, 8000, 100, 1000, 10, 100, 0, 0)
    >>> len(b) % 2, g
    (1, 0.0)
    """
    import scipy.signal

    b = np.ones(1)
    for _ in range(n_bands):
        fc = rng.uniform(min_freq, max_freq)
        bw = rng.uniform(min_bw, max_bw)
        taps = int(rng.integers(min_coeff, max(max_coeff, min_coeff + 1))) | 1  # odd
        f1 = max(fc - bw / 2, 1e-3)
        f2 = min(fc + bw / 2, _NYQUIST - 1e-3)
        band = scipy.signal.firwin(taps, [f1, f2], window="hamming", fs=SAMPLE_RATE)
        b = np.convolve(band, b)
    gain_db = float(rng.uniform(min_gain, max_gain))
    _, h = scipy.signal.freqz(b, 1, fs=SAMPLE_RATE)
    b = 10.0 ** (gain_db / 20.0) * b / np.max(np.abs(h))
    return b, gain_db


def _check_filter(
    aug: str,
    n_bands: int,
    min_freq: float,
    max_freq: float,
    min_bw: float,
    max_bw: float,
    min_coeff: int,
    max_coeff: int,
    min_gain: float,
    max_gain: float,
) -> None:
    if n_bands < 0:
        raise_config(aug, f"n_bands={n_bands} must be >= 0")
    check_range(aug, "min_freq", min_freq, "max_freq", max_freq, minimum=0, maximum=_NYQUIST)
    check_range(aug, "min_bw", min_bw, "max_bw", max_bw)
    check_positive(aug, "min_bw", min_bw)
    check_range(aug, "min_coeff", min_coeff, "max_coeff", max_coeff, minimum=1)
    check_range(aug, "min_gain", min_gain, "max_gain", max_gain)


def raise_config(aug: str, message: str) -> None:
    """Raise :class:`ConfigError` ``augmentation 'aug': message``."""
    from featstore.errors import ConfigError

    raise ConfigError(f"augmentation {aug!r}: {message}")


def _check_lnl(
    n_f=5,
    n_bands=5,
    min_freq=20.0,
    max_freq=8000.0,
    min_bw=100.0,
    max_bw=1000.0,
    min_coeff=10,
    max_coeff=100,
    min_gain=0.0,
    max_gain=0.0,
    min_bias=5.0,
    max_bias=20.0,
) -> None:
    if n_f < 1:
        raise_config("rawboost-lnl", f"n_f={n_f} must be >= 1")
    _check_filter(
        "rawboost-lnl",
        n_bands,
        min_freq,
        max_freq,
        min_bw,
        max_bw,
        min_coeff,
        max_coeff,
        min_gain,
        max_gain,
    )
    check_range("rawboost-lnl", "min_bias", min_bias, "max_bias", max_bias)


def _rawboost_lnl(
    signal: np.ndarray,
    rng: np.random.Generator,
    n_f: int = 5,
    n_bands: int = 5,
    min_freq: float = 20.0,
    max_freq: float = 8000.0,
    min_bw: float = 100.0,
    max_bw: float = 1000.0,
    min_coeff: int = 10,
    max_coeff: int = 100,
    min_gain: float = 0.0,
    max_gain: float = 0.0,
    min_bias: float = 5.0,
    max_bias: float = 20.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Linear and non-linear convolutive noise (RawBoost algorithm 1).

    ``y = sum_{j=1..n_f} h_j * x^j``: each power of the signal goes through its own random
    notch filter (:func:`notch_filter`); the linear term's gain is drawn in
    ``[min_gain, max_gain]`` dB, the non-linear terms' in
    ``[min_gain - max_bias, max_gain - min_bias]`` dB (by default -20 to -5 dB: the
    non-linear components are weaker). The sum loses its mean and is scaled into [-1, 1)
    where it overflows.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    n_f : int, default 5
        Order of the non-linearity (1: linear only).
    n_bands : int, default 5
        Notch bands per filter.
    min_freq, max_freq : float, default 20, 8000
        Range of the bands' centre frequencies (Hz).
    min_bw, max_bw : float, default 100, 1000
        Range of the bands' widths (Hz).
    min_coeff, max_coeff : int, default 10, 100
        Range of each band filter's length (made odd).
    min_gain, max_gain : float, default 0, 0
        Gain range of the linear component (dB).
    min_bias, max_bias : float, default 5, 20
        How much weaker (dB) the non-linear components are.

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> rawboost_lnl(x, np.random.default_rng(0)).shape
    (16000,)
    """
    _check_lnl(
        n_f,
        n_bands,
        min_freq,
        max_freq,
        min_bw,
        max_bw,
        min_coeff,
        max_coeff,
        min_gain,
        max_gain,
        min_bias,
        max_bias,
    )
    x = check_input(signal, rng)
    y = np.zeros_like(x)
    gains = []
    lo, hi = min_gain, max_gain
    power = np.ones_like(x)
    for order in range(1, n_f + 1):
        power *= x  # x**order by repeated products: far cheaper than np.power
        if order == 2:
            lo, hi = sorted((min_gain - max_bias, max_gain - min_bias))
        b, gain_db = notch_filter(
            rng, n_bands, min_freq, max_freq, min_bw, max_bw, min_coeff, max_coeff, lo, hi
        )
        gains.append(gain_db)
        y += fir_aligned(power, b)
    if y.size:
        y -= y.mean()
    return fit_to_range(y), {"gains_db": gains}


def _check_isd(max_percent=10.0, g_sd=2.0) -> None:
    check_range("rawboost-isd", "max_percent", 0.0, "max_percent", max_percent, maximum=100)
    if g_sd < 0:
        raise_config("rawboost-isd", f"g_sd={g_sd} must be >= 0")


def _rawboost_isd(
    signal: np.ndarray, rng: np.random.Generator, max_percent: float = 10.0, g_sd: float = 2.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Impulsive signal-dependent additive noise (RawBoost algorithm 2).

    A fraction of the samples, uniform in ``[0, max_percent]`` %, drawn at random positions
    without repetition, becomes ``x[i] * (1 + g_sd * u1 * u2)`` with ``u1, u2`` uniform in
    [-1, 1]; the result is scaled into [-1, 1) where it overflows.

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    max_percent : float, default 10
        Upper bound of the share of samples hit (the paper's P, in %).
    g_sd : float, default 2
        Gain of the impulses (the paper's g_sd).

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> y = rawboost_isd(x, np.random.default_rng(0))
    >>> bool(0 < np.count_nonzero(y != x) <= 1600)
    True
    """
    _check_isd(max_percent, g_sd)
    x = check_input(signal, rng)
    percent = float(rng.uniform(0.0, max_percent))
    n = int(x.size * percent / 100.0)
    where = np.sort(rng.choice(x.size, size=n, replace=False)) if n else np.zeros(0, np.int64)
    f_r = (2.0 * rng.random(n) - 1.0) * (2.0 * rng.random(n) - 1.0)
    y = x.copy()
    y[where] = x[where] * (1.0 + g_sd * f_r)
    return fit_to_range(y), {"percent": percent, "n_impulses": n, "positions": where}


def _check_ssi(
    snr_min=10.0,
    snr_max=40.0,
    n_bands=5,
    min_freq=20.0,
    max_freq=8000.0,
    min_bw=100.0,
    max_bw=1000.0,
    min_coeff=10,
    max_coeff=100,
    min_gain=0.0,
    max_gain=0.0,
) -> None:
    check_range("rawboost-ssi", "snr_min", snr_min, "snr_max", snr_max)
    _check_filter(
        "rawboost-ssi",
        n_bands,
        min_freq,
        max_freq,
        min_bw,
        max_bw,
        min_coeff,
        max_coeff,
        min_gain,
        max_gain,
    )


def _rawboost_ssi(
    signal: np.ndarray,
    rng: np.random.Generator,
    snr_min: float = 10.0,
    snr_max: float = 40.0,
    n_bands: int = 5,
    min_freq: float = 20.0,
    max_freq: float = 8000.0,
    min_bw: float = 100.0,
    max_bw: float = 1000.0,
    min_coeff: int = 10,
    max_coeff: int = 100,
    min_gain: float = 0.0,
    max_gain: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stationary signal-independent coloured additive noise (RawBoost algorithm 3).

    White Gaussian noise through a random notch filter (:func:`notch_filter`), added at an
    SNR uniform in ``[snr_min, snr_max]`` dB (signal and noise power over the whole
    utterance); the sum is scaled into [-1, 1) where it overflows (which keeps the SNR).
    A silent signal stays silent (noise at an SNR relative to zero power is zero).

    Parameters
    ----------
    signal : np.ndarray
        1-D float samples at 16 kHz.
    rng : np.random.Generator
        Source of every random draw.
    snr_min, snr_max : float, default 10, 40
        SNR range (dB).
    n_bands, min_freq, max_freq, min_bw, max_bw, min_coeff, max_coeff, min_gain, max_gain
        The colouring filter, as in :func:`rawboost_lnl`.

    Returns
    -------
    np.ndarray
        float64, same length, in [-1, 1).

    Examples
    --------
    >>> x = 0.1 * np.sin(np.arange(16000) * 0.05)
    >>> y, drawn = rawboost_ssi.with_params(x, np.random.default_rng(0))
    >>> 10 <= drawn["snr_db"] <= 40
    True
    """
    _check_ssi(
        snr_min,
        snr_max,
        n_bands,
        min_freq,
        max_freq,
        min_bw,
        max_bw,
        min_coeff,
        max_coeff,
        min_gain,
        max_gain,
    )
    x = check_input(signal, rng)
    white = rng.standard_normal(x.size)
    b, _ = notch_filter(
        rng, n_bands, min_freq, max_freq, min_bw, max_bw, min_coeff, max_coeff, min_gain, max_gain
    )
    coloured = fir_aligned(white, b)
    snr = float(rng.uniform(snr_min, snr_max))
    if not np.any(coloured) or not np.any(x):
        return x.copy(), {"snr_db": snr, "noise": np.zeros_like(x)}
    noise = noise_at_snr(x, coloured, snr)
    return fit_to_range(x + noise), {"snr_db": snr, "noise": noise}


rawboost_lnl = returns_signal(_rawboost_lnl, _check_lnl)
rawboost_isd = returns_signal(_rawboost_isd, _check_isd)
rawboost_ssi = returns_signal(_rawboost_ssi, _check_ssi)


def _combine(
    name: str, stages: Sequence[Callable[..., np.ndarray]], parallel: bool, doc: str
) -> Callable[..., np.ndarray]:
    """An augmentation running ``stages`` in series (or on the same input, summed), whose
    parameters are the union of the stages' (each stage gets the ones it knows)."""
    merged: dict[str, inspect.Parameter] = {}
    for stage in stages:
        for p in list(inspect.signature(stage).parameters.values())[2:]:
            merged.setdefault(p.name, p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = [list(inspect.signature(s).parameters)[2:] for s in stages]

    def check(**params: Any) -> None:
        for stage, own in zip(stages, names, strict=True):
            stage.check(**{k: params[k] for k in own if k in params})

    def traced(
        signal: np.ndarray, rng: np.random.Generator, **params: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        full = {k: p.default for k, p in merged.items()} | params
        unknown = sorted(set(params) - set(merged))
        if unknown:
            raise_config(name, f"no parameter(s) {', '.join(unknown)}")
        x = check_input(signal, rng)
        drawn: dict[str, Any] = {}
        outputs = []
        y = x
        for stage, own in zip(stages, names, strict=True):
            source = x if parallel else y
            y, d = stage.with_params(source, rng, **{k: full[k] for k in own})
            drawn[stage.__name__.lstrip("_")] = d
            outputs.append(y)
        if parallel:
            y = fit_to_range(np.sum(outputs, axis=0))
        return y, drawn

    first = inspect.Parameter
    traced.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            first("signal", first.POSITIONAL_OR_KEYWORD, annotation="np.ndarray"),
            first("rng", first.POSITIONAL_OR_KEYWORD, annotation="np.random.Generator"),
            *merged.values(),
        ]
    )
    traced.__name__ = traced.__qualname__ = name
    traced.__doc__ = doc
    return returns_signal(traced, check)


_COMBINED_DOC = """RawBoost algorithm {n}: {what}.

Parameters: the union of those of {stages} (same names and defaults; a parameter both have
goes to both). Returns float64, same length, in [-1, 1).
"""

rawboost_4 = _combine(
    "rawboost_4",
    (rawboost_lnl, rawboost_isd, rawboost_ssi),
    False,
    _COMBINED_DOC.format(n=4, what="LnL, ISD and SSI in series", stages="all three"),
)
rawboost_5 = _combine(
    "rawboost_5",
    (rawboost_lnl, rawboost_isd),
    False,
    _COMBINED_DOC.format(n=5, what="LnL then ISD", stages="rawboost_lnl and rawboost_isd"),
)
rawboost_6 = _combine(
    "rawboost_6",
    (rawboost_lnl, rawboost_ssi),
    False,
    _COMBINED_DOC.format(n=6, what="LnL then SSI", stages="rawboost_lnl and rawboost_ssi"),
)
rawboost_7 = _combine(
    "rawboost_7",
    (rawboost_isd, rawboost_ssi),
    False,
    _COMBINED_DOC.format(n=7, what="ISD then SSI", stages="rawboost_isd and rawboost_ssi"),
)
rawboost_8 = _combine(
    "rawboost_8",
    (rawboost_lnl, rawboost_isd),
    True,
    _COMBINED_DOC.format(
        n=8,
        what="LnL and ISD in parallel (each on the clean signal, outputs summed)",
        stages="rawboost_lnl and rawboost_isd",
    ),
)
