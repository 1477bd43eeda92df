"""Feature registry: name -> kernel, output size and description.

A feature's parameters and their defaults are the keyword parameters of its kernel, read
from the kernel's signature: they are written down once, where the kernel is. The built-in
features name their kernels by import path, so reading the registry (``FEATURES``) imports
no Numba code; a kernel module is imported the first time its defaults or its function are
needed. :func:`register_feature` adds a feature from Python. A store records
:meth:`FeatureSpec.describe` of each feature it holds, so it says exactly what produced it.
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

from featstore.errors import ConfigError, FeatureError
from featstore.signal import SAMPLE_RATE, as_float_signal, resample

Kernel = Callable[..., np.ndarray]

_FRAMING = ("win_length", "hop_length")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class FeatureSpec:
    """What a registered feature is and how to compute it.

    Attributes
    ----------
    name : str
        Registry name (``"mgd"``, ``"logmel"``, ...).
    kernel : str or callable
        The pure kernel ``f(signal, **params) -> (n_frames, n_bins)`` float32, ``signal``
        being float64 at 16 kHz, or its ``"module:function"`` import path. Every parameter
        after ``signal`` has a default; ``win_length`` and ``hop_length`` (samples) are
        among them.
    n_bins : Callable[[Mapping[str, Any]], int]
        Output width for given (resolved) parameters.
    description : str
        One line for ``featstore features`` and the docs.
    """

    name: str
    kernel: str | Kernel
    n_bins: Callable[[Mapping[str, Any]], int]
    description: str
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def function(self) -> Kernel:
        """The kernel function (imported on first access)."""
        if "fn" not in self._cache:
            if callable(self.kernel):
                self._cache["fn"] = self.kernel
            else:
                module, _, attr = self.kernel.partition(":")
                self._cache["fn"] = getattr(importlib.import_module(module), attr)
        return self._cache["fn"]

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Every parameter of the kernel with its default, from the kernel's signature."""
        if "defaults" not in self._cache:
            defaults = _kernel_defaults(self.name, self.function)
            self._cache["defaults"] = MappingProxyType(defaults)
        return self._cache["defaults"]

    def resolve(self, **overrides: Any) -> dict[str, Any]:
        """Defaults updated with ``overrides``; unknown names raise :class:`ConfigError`."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"feature {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.defaults))}"
            )
        params = dict(self.defaults)
        params.update(overrides)
        return params

    @property
    def hop_length(self) -> int:
        """Frame step in samples at 16 kHz (default parameters)."""
        return int(self.defaults["hop_length"])

    @property
    def win_length(self) -> int:
        """Frame length in samples at 16 kHz (default parameters)."""
        return int(self.defaults["win_length"])

    def describe(self, **overrides: Any) -> dict[str, Any]:
        """JSON-ready record of the resolved parameters, ``n_bins`` and the sample rate."""
        params = self.resolve(**overrides)
        return {
            "name": self.name,
            **params,
            "n_bins": int(self.n_bins(params)),
            "sample_rate": SAMPLE_RATE,
        }


def _kernel_defaults(name: str, kernel: Kernel) -> dict[str, Any]:
    """The keyword parameters of ``kernel`` after the signal, with their defaults.

    Raises :class:`ConfigError` when the signature cannot serve as a feature's parameters:
    no signal parameter, a parameter without a default, ``*args``/``**kwargs``, or no
    ``win_length``/``hop_length``.
    """
    try:
        params = list(inspect.signature(kernel).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"feature {name!r}: cannot read the kernel's signature ({exc})") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise ConfigError(f"feature {name!r}: the kernel must take the signal first")
    defaults = {}
    for p in params[1:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigError(
                f"feature {name!r}: the kernel must name its parameters (no *args/**kwargs)"
            )
        if p.default is inspect.Parameter.empty or p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"feature {name!r}: kernel parameter {p.name!r} needs a default and must be "
                "passable by keyword"
            )
        defaults[p.name] = p.default
    missing = [p for p in _FRAMING if p not in defaults]
    if missing:
        raise ConfigError(
            f"feature {name!r}: the kernel needs parameter(s) {', '.join(missing)} "
            "(frame length and step in samples at 16 kHz)"
        )
    return defaults


_REGISTRY: dict[str, FeatureSpec] = {}

FEATURES: Mapping[str, FeatureSpec] = MappingProxyType(_REGISTRY)
"""Every registered feature by name (a read-only view; see :func:`register_feature`)."""


def register_feature(
    name: str,
    kernel: Kernel | str,
    n_bins: int | Callable[[Mapping[str, Any]], int],
    description: str = "",
    *,
    replace: bool = False,
) -> FeatureSpec:
    """Add a feature to the registry, so that ``compute_feature`` and ``build`` know it.

    Parameters
    ----------
    name : str
        Registry name: a letter, then letters, digits or ``_``.
    kernel : callable or str
        The pure function ``kernel(signal, **params) -> np.ndarray`` (float32
        ``(n_frames, n_bins)``; ``signal`` is float64 at 16 kHz), or its
        ``"module:function"`` import path. Its keyword parameters, each with a default,
        are the feature's parameters; ``win_length`` and ``hop_length`` (samples) must be
        among them.
    n_bins : int or callable
        Output width, or a function of the resolved parameters returning it.
    description : str, default ""
        One line for ``featstore features``.
    replace : bool, default False
        Replace a feature already registered under ``name``.

    Returns
    -------
    FeatureSpec
        The registered feature.

    Raises
    ------
    ConfigError
        Invalid name, ``name`` taken (and ``replace`` is false), or a kernel signature that
        cannot serve as the feature's parameters.

    Notes
    -----
    The registry lives in the process that calls this function. ``featstore.build`` runs
    kernels in its worker processes, so a feature registered from a script is built with
    ``jobs=1``.

    Examples
    --------
    >>> from featstore.features.framing import frame_signal
    >>> def log_energy(signal, win_length=400, hop_length=160):
    ...     frames = frame_signal(signal, win_length, hop_length)
    ...     energy = np.log(np.sum(frames**2, axis=1, keepdims=True) + 1e-10)
    ...     return energy.astype(np.float32)
    >>> spec = register_feature("log_energy", log_energy, n_bins=1, replace=True)
    >>> spec.defaults["hop_length"], compute_feature("log_energy", np.ones(16000)).shape
    (160, (98, 1))
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"feature name must be a letter then letters, digits or '_', got {name!r}"
        )
    if name in _REGISTRY and not replace:
        raise ConfigError(f"feature {name!r} is already registered; pass replace=True")
    if not (callable(kernel) or (isinstance(kernel, str) and ":" in kernel)):
        raise ConfigError(
            f"feature {name!r}: kernel must be a function or 'module:function', got {kernel!r}"
        )
    width = _constant_width(n_bins) if isinstance(n_bins, int) else n_bins
    spec = FeatureSpec(name=name, kernel=kernel, n_bins=width, description=description)
    _kernel_defaults(name, spec.function)  # a bad signature fails here, not at first use
    _REGISTRY[name] = spec
    return spec


def _constant_width(n_bins: int) -> Callable[[Mapping[str, Any]], int]:
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")

    def width(params: Mapping[str, Any]) -> int:
        return n_bins

    return width


def _add_builtin(name: str, kernel: str, n_bins: Callable, description: str) -> None:
    """Register a built-in feature without importing its kernel module."""
    _REGISTRY[name] = FeatureSpec(name=name, kernel=kernel, n_bins=n_bins, description=description)


_add_builtin(
    "mgd",
    "featstore.features.mgd:mgd",
    lambda p: p["n_fft"] // 2 + 1,
    "modified group delay (Hegde/Murthy; covarep), globally max-normalised",
)
_add_builtin(
    "mgd_cep",
    "featstore.features.mgd:mgd_cep",
    lambda p: p["n_ceps"],
    "cepstral coefficients 1..n_ceps (orthonormal DCT-II) of the MGD",
)
_add_builtin(
    "logmel",
    "featstore.features.spectral:logmel",
    lambda p: p["n_mels"],
    "natural-log Slaney mel power spectrum (GRCNN second stream), MGD framing",
)
_add_builtin(
    "fbank",
    "featstore.features.spectral:fbank",
    lambda p: p["n_mels"],
    "log10 mel filterbank energies (VGG input), 5 ms hop",
)
_add_builtin(
    "lfcc",
    "featstore.features.lfcc:lfcc",
    lambda p: p["n_ceps"] * (3 if p["deltas"] else 1),
    "linear-frequency cepstral coefficients + deltas (ASVspoof baseline)",
)
_add_builtin(
    "cqcc",
    "featstore.features.cqcc:cqcc",
    lambda p: p["n_ceps"] * (3 if p["deltas"] else 1),
    "constant-Q cepstral coefficients + deltas (ASVspoof CQCC-GMM baseline), 8.5 ms hop",
)


def get_feature(name: str) -> FeatureSpec:
    """The :class:`FeatureSpec` called ``name``; unknown names raise :class:`FeatureError`."""
    try:
        return FEATURES[name]
    except KeyError:
        raise FeatureError(
            f"unknown feature {name!r}; available: {', '.join(sorted(FEATURES))}"
        ) from None


def compute_feature(
    name: str, signal: np.ndarray, sr: int = SAMPLE_RATE, **overrides: Any
) -> np.ndarray:
    """Compute a registered feature of one signal.

    Parameters
    ----------
    name : str
        Registry name, one of ``sorted(FEATURES)``.
    signal : np.ndarray
        1-D samples, float in [-1, 1) or integer PCM (scaled to [-1, 1)).
    sr : int, default 16000
        Sample rate of ``signal``; other rates are resampled to 16 kHz with soxr.
    **overrides
        Parameters that differ from the feature's defaults (see ``FEATURES[name].defaults``).

    Returns
    -------
    np.ndarray
        float32 ``(n_frames, n_bins)``; ``(0, n_bins)`` for signals shorter than one frame.

    Raises
    ------
    FeatureError
        Unknown feature.
    ConfigError
        Unknown parameter, or a parameter value out of range (a :class:`FeatureError`).
    ValueError
        The signal is not 1-D or holds NaN/inf samples.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(16000) * 0.1
    >>> compute_feature("mgd", x).shape
    (98, 257)
    """
    spec = get_feature(name)
    params = spec.resolve(**overrides)
    x = as_float_signal(signal)
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    out = spec.function(x, **params)
    expected = int(spec.n_bins(params))
    if out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != expected:
        raise AssertionError(  # a kernel bug, not bad input
            f"kernel {spec.kernel} returned {out.dtype} {out.shape}, "
            f"expected (n, {expected}) float32"
        )
    return out
