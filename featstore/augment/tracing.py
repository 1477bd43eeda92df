"""Augmentations that also say what they drew.

An augmentation is called as ``f(signal, rng, **params) -> np.ndarray``. Tests (and a store
that wants to log it) also need the values it drew from ``rng``: the SNR, the codec and its
bitrate, the RT60. Each built-in augmentation is therefore written once, as a function
returning ``(signal, drawn)``, and :func:`returns_signal` turns it into the plain form,
keeping the traced one as its ``with_params`` attribute::

    y = noise(x, rng)                      # the augmentation
    y, drawn = noise.with_params(x, rng)   # the same call, plus {"snr_db": 12.3, ...}
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

Traced = Callable[..., tuple[np.ndarray, dict[str, Any]]]


def returns_signal(
    traced: Traced, check: Callable[..., None] | None = None
) -> Callable[..., np.ndarray]:
    """Wrap ``traced(signal, rng, **params) -> (signal, drawn)`` as ``f(...) -> signal``.

    The wrapper has the traced function's name, docstring and parameters (so the registry
    reads the same defaults from it), returns only the signal, and keeps ``traced`` as its
    ``with_params`` attribute and ``check`` (``check(**params)`` raising
    :class:`~featstore.errors.ConfigError` for bad values, without touching a signal) as its
    ``check`` attribute.
    """

    @functools.wraps(traced)
    def plain(signal: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
        return traced(signal, rng, **params)[0]

    sig = inspect.signature(traced)
    plain.__signature__ = sig.replace(return_annotation="np.ndarray")  # type: ignore[attr-defined]
    plain.__name__ = plain.__qualname__ = traced.__name__.lstrip("_")
    plain.with_params = traced  # type: ignore[attr-defined]
    plain.check = check  # type: ignore[attr-defined]
    return plain


def with_params(
    function: Callable[..., Any], signal: np.ndarray, rng: np.random.Generator, **params: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Call an augmentation and return ``(signal, drawn)``; ``drawn`` is ``{}`` for
    augmentations that do not report their draws (plain user functions)."""
    traced = getattr(function, "with_params", None)
    if traced is not None:
        return traced(signal, rng, **params)
    return function(signal, rng, **params), {}
