"""Feature registry: name -> kernel, default parameters, output size and hop.

The registry only names kernels by import path, so reading it (``FEATURES``) imports no
Numba code; the kernel module is imported on first use. A store records
:meth:`FeatureSpec.describe` of each feature it holds, so it says exactly what produced it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from featstore.errors import FeatureError
from featstore.signal import SAMPLE_RATE, as_float_signal, resample

Kernel = Callable[..., np.ndarray]


@dataclass(frozen=True)
class FeatureSpec:
    """What a registered feature is and how to compute it.

    Attributes
    ----------
    name : str
        Registry name (``"mgd"``, ``"logmel"``, ...).
    kernel : str
        ``"module:function"`` of the pure kernel ``f(signal, **params) -> (n_frames, n_bins)``
        float32, ``signal`` being float64 at 16 kHz.
    defaults : Mapping[str, Any]
        Every parameter of the kernel with its default.
    n_bins : Callable[[Mapping[str, Any]], int]
        Output width for given (resolved) parameters.
    description : str
        One line for ``featstore info`` and the docs.
    """

    name: str
    kernel: str
    defaults: Mapping[str, Any]
    n_bins: Callable[[Mapping[str, Any]], int]
    description: str
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def function(self) -> Kernel:
        """The kernel function (imported on first access)."""
        if "fn" not in self._cache:
            module, _, attr = self.kernel.partition(":")
            self._cache["fn"] = getattr(importlib.import_module(module), attr)
        return self._cache["fn"]

    def resolve(self, **overrides: Any) -> dict[str, Any]:
        """Defaults updated with ``overrides``; unknown names raise :class:`FeatureError`."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise FeatureError(
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


def _mgd_params(**extra: Any) -> dict[str, Any]:
    return {
        "rho": 0.1,
        "gamma": 0.3,
        "win_length": 400,
        "hop_length": 160,
        "n_fft": 512,
        "preemphasis": 0.97,
        "median_order": 5,
        "n_smooth": 30,
        **extra,
    }


_SPECS = (
    FeatureSpec(
        name="mgd",
        kernel="featstore.features.mgd:mgd",
        defaults=_mgd_params(),
        n_bins=lambda p: p["n_fft"] // 2 + 1,
        description="modified group delay (Hegde/Murthy; covarep), globally max-normalised",
    ),
    FeatureSpec(
        name="mgd_cep",
        kernel="featstore.features.mgd:mgd_cep",
        defaults=_mgd_params(n_ceps=12),
        n_bins=lambda p: p["n_ceps"],
        description="cepstral coefficients 1..n_ceps (orthonormal DCT-II) of the MGD",
    ),
    FeatureSpec(
        name="logmel",
        kernel="featstore.features.spectral:logmel",
        defaults={
            "n_mels": 256,
            "fmin": 20.0,
            "fmax": 8000.0,
            "n_fft": 1024,
            "win_length": 400,
            "hop_length": 160,
            "window": "blackman",
            "log_offset": 1e-6,
        },
        n_bins=lambda p: p["n_mels"],
        description="natural-log Slaney mel power spectrum (GRCNN second stream), MGD framing",
    ),
    FeatureSpec(
        name="fbank",
        kernel="featstore.features.spectral:fbank",
        defaults={
            "n_mels": 64,
            "fmin": 0.0,
            "fmax": 8000.0,
            "n_fft": 2048,
            "win_length": 400,
            "hop_length": 80,
            "window": "hamming",
        },
        n_bins=lambda p: p["n_mels"],
        description="log10 mel filterbank energies (VGG input), 5 ms hop",
    ),
    FeatureSpec(
        name="lfcc",
        kernel="featstore.features.lfcc:lfcc",
        defaults={
            "n_filters": 20,
            "n_ceps": 20,
            "win_length": 320,
            "hop_length": 160,
            "n_fft": 512,
            "preemphasis": 0.97,
            "with_energy": True,
            "deltas": True,
        },
        n_bins=lambda p: p["n_ceps"] * (3 if p["deltas"] else 1),
        description="linear-frequency cepstral coefficients + deltas (ASVspoof baseline)",
    ),
)

FEATURES: Mapping[str, FeatureSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Every registered feature by name (read-only)."""


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
        Unknown feature or parameter.
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
