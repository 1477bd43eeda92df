"""Augmentation registry: name -> function, parameter defaults and description.

As for the features (:mod:`featstore.features.registry`), an augmentation's parameters and
their defaults are the keyword parameters of its function, read from its signature: written
once, where the function is. The built-ins are named by import path, so reading
``AUGMENTATIONS`` imports neither SciPy nor any augmentation module. A store records
:meth:`AugmentationSpec.describe` of what produced each view.

An augmentation is ``f(signal, rng, **params) -> np.ndarray``: ``signal`` float64 at 16 kHz,
``rng`` a ``numpy.random.Generator`` (its only source of randomness); it returns as many
samples as it got, finite and in [-1, 1).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from featstore.augment.tracing import with_params
from featstore.errors import ConfigError

Augmentation = Callable[..., np.ndarray]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class AugmentationSpec:
    """What a registered augmentation is and how to call it.

    Attributes
    ----------
    name : str
        Registry name (``"rawboost-5"``, ``"codec"``, ...).
    function : str or callable
        ``f(signal, rng, **params) -> np.ndarray`` or its ``"module:function"`` path.
    description : str
        One line for the docs and ``featstore info``.
    check : callable, optional
        ``check(**params)`` raising :class:`ConfigError` for bad values without a signal;
        defaults to the function's ``check`` attribute (the built-ins have one).
    """

    name: str
    function: str | Augmentation
    description: str = ""
    check: Callable[..., None] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def fn(self) -> Augmentation:
        """The function (imported on first access)."""
        if "fn" not in self._cache:
            if callable(self.function):
                self._cache["fn"] = self.function
            else:
                module, _, attr = self.function.partition(":")
                self._cache["fn"] = getattr(importlib.import_module(module), attr)
        return self._cache["fn"]

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Every parameter with its default, from the function's signature."""
        if "defaults" not in self._cache:
            self._cache["defaults"] = MappingProxyType(_signature_defaults(self.name, self.fn))
        return self._cache["defaults"]

    def resolve(self, **overrides: Any) -> dict[str, Any]:
        """Defaults updated with ``overrides``, type-checked and range-checked.

        Raises
        ------
        ConfigError
            Unknown parameter (the valid ones are listed), a value of the wrong type, or a
            value the augmentation rejects (range, missing noise directory, ...).
        """
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"augmentation {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(self.defaults) or 'none'}"
            )
        params = dict(self.defaults)
        for key, value in overrides.items():
            params[key] = _coerce(self.name, key, value, self.defaults[key])
        check = self.check or getattr(self.fn, "check", None)
        if check is not None:
            check(**params)
        return params

    def describe(self, **overrides: Any) -> dict[str, Any]:
        """JSON-ready record: ``{"name": ..., "params": {every parameter: value}}``."""
        return {"name": self.name, "params": self.resolve(**overrides)}

    def __call__(self, signal: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
        """Apply the augmentation (parameters default as in :attr:`defaults`)."""
        return self.fn(signal, rng, **params)

    def with_params(
        self, signal: np.ndarray, rng: np.random.Generator, **params: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Apply it and also return what it drew (``{}`` if it does not say)."""
        return with_params(self.fn, signal, rng, **params)


def _coerce(aug: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the parameter's default, or :class:`ConfigError`."""

    def bad(kind: str) -> ConfigError:
        return ConfigError(f"augmentation {aug!r}: {key} must be {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise bad("a number")
        if not np.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if isinstance(default, str) or default is None:
        if value is not None and not isinstance(value, str):
            raise bad("a string")
        return value
    return value


def _signature_defaults(name: str, function: Augmentation) -> dict[str, Any]:
    """The parameters of ``function`` after ``(signal, rng)``, with their defaults."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"augmentation {name!r}: cannot read its signature ({exc})") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) < 2 or any(p.kind not in positional for p in params[:2]):
        raise ConfigError(f"augmentation {name!r}: the function must take (signal, rng) first")
    defaults = {}
    for p in params[2:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigError(
                f"augmentation {name!r}: the function must name its parameters (no *args/**kwargs)"
            )
        if p.default is inspect.Parameter.empty or p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"augmentation {name!r}: parameter {p.name!r} needs a default and must be "
                "passable by keyword"
            )
        defaults[p.name] = p.default
    return defaults


_REGISTRY: dict[str, AugmentationSpec] = {}

AUGMENTATIONS: Mapping[str, AugmentationSpec] = MappingProxyType(_REGISTRY)
"""Every registered augmentation by name (read-only; see :func:`register_augmentation`)."""


def register_augmentation(
    name: str,
    function: Augmentation | str,
    description: str = "",
    *,
    check: Callable[..., None] | None = None,
    replace: bool = False,
) -> AugmentationSpec:
    """Add an augmentation to the registry, so that recipes can name it.

    Parameters
    ----------
    name : str
        A letter, then letters, digits, ``_`` or ``-``.
    function : callable or str
        ``f(signal, rng, **params) -> np.ndarray`` (same length, finite, in [-1, 1)), every
        parameter after ``rng`` with a default; or its ``"module:function"`` path.
    description : str, default ""
        One line for the docs.
    check : callable, optional
        ``check(**params)`` raising :class:`ConfigError` for bad parameter values.
    replace : bool, default False
        Replace an augmentation already registered under ``name``.

    Returns
    -------
    AugmentationSpec

    Raises
    ------
    ConfigError
        Invalid or taken name, or a signature that cannot serve as parameters.

    Notes
    -----
    Like features, the registry lives in the calling process: a build that uses an
    augmentation registered from a script runs with ``jobs=1``.

    Examples
    --------
    >>> def invert(signal, rng, probability=0.5):
    ...     return -signal if rng.random() < probability else signal.copy()
    >>> register_augmentation("invert", invert, replace=True).defaults["probability"]
    0.5
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"augmentation name must be a letter then letters, digits, '_' or '-', got {name!r}"
        )
    if name in _REGISTRY and not replace:
        raise ConfigError(f"augmentation {name!r} is already registered; pass replace=True")
    if not (callable(function) or (isinstance(function, str) and ":" in function)):
        raise ConfigError(
            f"augmentation {name!r}: function must be callable or 'module:function', "
            f"got {function!r}"
        )
    spec = AugmentationSpec(name=name, function=function, description=description, check=check)
    _signature_defaults(name, spec.fn)  # a bad signature fails here, not at first use
    _REGISTRY[name] = spec
    return spec


def get_augmentation(name: str) -> AugmentationSpec:
    """The spec called ``name``; an unknown name is a :class:`ConfigError` listing them all."""
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}"
        ) from None


def _builtin(name: str, function: str, description: str) -> None:
    _REGISTRY[name] = AugmentationSpec(name=name, function=function, description=description)


_RB = "featstore.augment.rawboost"
_builtin("rawboost-lnl", f"{_RB}:rawboost_lnl", "RawBoost 1: (non-)linear convolutive noise")
_builtin("rawboost-isd", f"{_RB}:rawboost_isd", "RawBoost 2: impulsive signal-dependent noise")
_builtin("rawboost-ssi", f"{_RB}:rawboost_ssi", "RawBoost 3: coloured additive noise, 10-40 dB")
_builtin("rawboost-1", f"{_RB}:rawboost_lnl", "RawBoost 1 (= rawboost-lnl)")
_builtin("rawboost-2", f"{_RB}:rawboost_isd", "RawBoost 2 (= rawboost-isd)")
_builtin("rawboost-3", f"{_RB}:rawboost_ssi", "RawBoost 3 (= rawboost-ssi; DF-style)")
_builtin("rawboost-4", f"{_RB}:rawboost_4", "RawBoost 4: LnL, ISD, SSI in series")
_builtin("rawboost-5", f"{_RB}:rawboost_5", "RawBoost 5: LnL then ISD (LA-style)")
_builtin("rawboost-6", f"{_RB}:rawboost_6", "RawBoost 6: LnL then SSI")
_builtin("rawboost-7", f"{_RB}:rawboost_7", "RawBoost 7: ISD then SSI")
_builtin("rawboost-8", f"{_RB}:rawboost_8", "RawBoost 8: LnL and ISD in parallel")
_builtin("codec", "featstore.augment.codec:codec", "MP3/Vorbis/Opus at 8-128 kbit/s, G.711")
_builtin("noise", "featstore.augment.noise:noise", "additive noise at 5-20 dB SNR")
_builtin("reverb", "featstore.augment.reverb:reverb", "room impulse response, RT60 0.2-1 s")
_builtin("gain", "featstore.augment.channel:gain", "random gain, -12 to +6 dB")
_builtin("bandlimit", "featstore.augment.channel:bandlimit", "random low-pass, 3.4-7.8 kHz")
