"""Range checks for augmentation parameters: one clear :class:`ConfigError` per bad value."""

from __future__ import annotations

import numpy as np

from featstore.errors import ConfigError
from featstore.signal import as_float_signal


def check_range(
    aug: str,
    lo_name: str,
    lo: float,
    hi_name: str,
    hi: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> None:
    """Check ``minimum <= lo <= hi <= maximum`` for an augmentation's (lo, hi) parameter pair.

    Raises
    ------
    ConfigError
        Naming the augmentation, the parameters and their values.
    """
    if lo > hi:
        raise ConfigError(f"augmentation {aug!r}: {lo_name}={lo} is above {hi_name}={hi}")
    if minimum is not None and lo < minimum:
        raise ConfigError(f"augmentation {aug!r}: {lo_name}={lo} must be >= {minimum}")
    if maximum is not None and hi > maximum:
        raise ConfigError(f"augmentation {aug!r}: {hi_name}={hi} must be <= {maximum}")


def check_positive(aug: str, name: str, value: float) -> None:
    """Check ``value > 0``; :class:`ConfigError` naming the augmentation and parameter."""
    if not value > 0:
        raise ConfigError(f"augmentation {aug!r}: {name}={value} must be > 0")


def split_names(aug: str, name: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Parse a comma-separated list of choices (``"mp3,opus"``), each one of ``allowed``.

    Raises
    ------
    ConfigError
        Empty list or an unknown choice (the valid ones are listed).
    """
    names = tuple(n.strip() for n in str(value).split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        what = f"unknown {', '.join(unknown)}" if unknown else "empty list"
        raise ConfigError(
            f"augmentation {aug!r}: {name}={value!r}: {what}; choose from {', '.join(allowed)}"
        )
    return names


def check_input(signal: object, rng: object) -> np.ndarray:
    """The signal as float64 (see :func:`featstore.signal.as_float_signal`), after checking
    that ``rng`` is a ``numpy.random.Generator`` (all randomness comes from it).

    Raises
    ------
    TypeError
        ``rng`` is not a Generator (e.g. a seed or the legacy ``RandomState``).
    ValueError
        The signal is not 1-D or holds NaN/inf samples.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return as_float_signal(signal)
