"""Check a feature's parameters once, before any audio is extracted.

A parameter that no utterance can be extracted with (``n_ceps`` above ``n_filters``, a window
longer than the FFT, ``fmax`` above the Nyquist frequency, ...) would otherwise fail or give
non-finite values on every utterance, and a build would quarantine them all and succeed.
:func:`validate_feature_params` resolves the parameters as extraction does and refuses such
values with a :class:`~featstore.errors.ConfigError` that names the feature and the parameter.

Built-in features are checked against the constraints of their kernels (and a few more that
keep their output finite and meaningful); a feature registered with
:func:`~featstore.features.registry.register_feature` gets generic checks and a dry run of
its kernel on half a second of noise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import numpy as np

from featstore.errors import ConfigError
from featstore.features.registry import get_feature
from featstore.signal import SAMPLE_RATE

__all__ = ["MAX_N_FFT", "validate_feature_params"]

MAX_N_FFT = 65536
"""Largest FFT size accepted (4.1 s at 16 kHz); larger sizes only exhaust memory."""

_NYQUIST = SAMPLE_RATE / 2
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smaller log offsets round to 0 in float32
_MAX_LOG_OFFSET = 1e30  # far above the power of any frame in [-1, 1); float32 stays finite
_DRY_RUN_SECONDS = 0.5


def validate_feature_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve a feature's parameters as extraction does and check every one of them.

    Parameters
    ----------
    name : str
        Registered feature name (``"mgd"``, ``"mgd_cep"``, ``"logmel"``, ``"fbank"``,
        ``"lfcc"`` or one added with ``register_feature``).
    params : mapping, optional
        Parameters that differ from the feature's defaults (a ``[features.NAME]`` table).

    Returns
    -------
    dict
        The kernel's defaults updated with ``params`` (``FEATURES[name].resolve(**params)``),
        the keyword arguments extraction passes to the kernel.

    Raises
    ------
    FeatureError
        Unknown feature name.
    ConfigError
        An unknown parameter, a value of the wrong type, or a value no utterance can be
        extracted with; the message names the feature and the parameter, e.g.
        ``lfcc: n_ceps=70 must be <= n_filters=60``. For a user-registered feature, also a
        kernel that raises ``ValueError`` on 0.5 s of noise at 16 kHz with these parameters,
        or returns something else than finite float32 ``(n_frames, n_bins)``.

    Notes
    -----
    Built-in features (recognised by their kernel, so a built-in name re-registered with
    another kernel is checked as a user feature) are checked against their kernels' own
    ``ConfigError`` conditions and these, which keep their output finite and meaningful:
    ``n_fft <= 65536``; ``n_mels`` and ``n_filters`` at most ``n_fft // 2 + 1`` (the number
    of FFT bins); a mel band at least one FFT bin wide; ``log_offset`` between 1.2e-38 (the
    smallest normal float32) and 1e30; ``preemphasis`` in [0, 1]; MGD's ``rho`` in [0, 1] and
    ``gamma`` in (0, 1] (beyond, the normalisation overflows and frames come out all zero).

    Examples
    --------
    >>> validate_feature_params("lfcc", {"n_filters": 60, "n_ceps": 40})["n_ceps"]
    40
    >>> validate_feature_params("lfcc", {"n_filters": 60, "n_ceps": 70})
    Traceback (most recent call last):
    ...
    featstore.errors.ConfigError: lfcc: n_ceps=70 must be <= n_filters=60
    """
    spec = get_feature(name)
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{name}: parameters must be a table of name = value, got {type(params).__name__}"
        )
    overrides = dict(params)
    bad_keys = [k for k in overrides if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{name}: parameter names must be strings, got {bad_keys[0]!r}")
    resolved = spec.resolve(**overrides)
    check = _Check(name, resolved, overrides)
    for key, default in spec.defaults.items():
        check.type_like(key, default)
    check.framing()
    builtin = _BUILTIN_CHECKS.get(spec.kernel) if isinstance(spec.kernel, str) else None
    if builtin is not None:
        builtin(check)
    else:
        _dry_run(name, resolved, overrides)
    return resolved


class _Check:
    """Checks on one feature's resolved parameters; each failure raises ``ConfigError``."""

    def __init__(self, feature: str, params: dict[str, Any], overrides: Mapping[str, Any]):
        self.feature = feature
        self.p = params
        self.overrides = overrides

    def fail(self, key: str, rule: str) -> NoReturn:
        raise ConfigError(f"{self.feature}: {key}={self.p[key]!r} {rule}")

    # -- types -------------------------------------------------------------------------------

    def type_like(self, key: str, default: Any) -> None:
        """``key`` has the type of its default (ints for ints, finite reals for floats...)."""
        value = self.p[key]
        if isinstance(default, bool | np.bool_):
            if not isinstance(value, bool | np.bool_):
                self.fail(key, "must be true or false")
        elif isinstance(default, numbers.Integral):
            if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
                self.fail(key, "must be an integer")
        elif isinstance(default, numbers.Real):
            if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
                self.fail(key, "must be a number")
            if not _finite(value):
                self.fail(key, "must be finite")
        elif isinstance(default, str) and not isinstance(value, str):
            self.fail(key, "must be a string")

    # -- ranges ------------------------------------------------------------------------------

    def at_least(self, key: str, low: float, why: str = "") -> None:
        if self.p[key] < low:
            self.fail(key, f"must be >= {low:g}{why}")

    def between(self, key: str, low: float, high: float, why: str = "") -> None:
        if not low <= self.p[key] <= high:
            self.fail(key, f"must be in [{low:g}, {high:g}]{why}")

    def ordered(self, small: str, large: str, *, strict: bool = False, why: str = "") -> None:
        """``p[small] <= p[large]`` (``<`` when ``strict``), blaming the one overridden.

        When only ``large`` was given, the message is about ``large`` (``n_filters=10 must be
        >= n_ceps=20``); otherwise about ``small`` (``n_ceps=70 must be <= n_filters=60``).
        """
        a, b = self.p[small], self.p[large]
        if a < b or (a == b and not strict):
            return
        if large in self.overrides and small not in self.overrides:
            self.fail(large, f"must be {'>' if strict else '>='} {small}={a!r}{why}")
        self.fail(small, f"must be {'<' if strict else '<='} {large}={b!r}{why}")

    # -- shared groups -----------------------------------------------------------------------

    def framing(self) -> None:
        """Frame length and step (every feature has them): positive integers."""
        for key in ("win_length", "hop_length"):
            if isinstance(self.p[key], numbers.Integral):
                self.at_least(key, 1)

    def fft(self) -> int:
        """``win_length <= n_fft <= MAX_N_FFT``; returns the number of bins."""
        self.ordered("win_length", "n_fft", why=" (each frame is zero-padded to n_fft)")
        if self.p["n_fft"] > MAX_N_FFT:
            self.fail("n_fft", f"must be <= {MAX_N_FFT}")
        return int(self.p["n_fft"]) // 2 + 1

    def bins(self, key: str, n_bins: int, *, dropped: int = 0) -> None:
        """``1 <= p[key] <= n_bins - dropped``, ``n_bins`` the number of FFT bins."""
        value, limit = self.p[key], n_bins - dropped
        if value < 1:
            self.fail(key, "must be >= 1")
        if value > limit:
            bins = f"n_fft={self.p['n_fft']!r} gives {n_bins} bins"
            if dropped:
                bins += ", coefficient 0 dropped"
            if "n_fft" in self.overrides and key not in self.overrides:
                raise ConfigError(f"{self.feature}: {bins}: too few for {key}={value!r}")
            self.fail(key, f"must be <= {limit} ({bins})")

    def window(self) -> None:
        # the kernel's own default is known good; only a chosen window is looked up (which
        # imports the Numba kernel module, and scipy.signal for the less common windows)
        if "window" not in self.overrides:
            return
        from featstore.features.spectral import get_window

        try:
            values = get_window(self.p["window"], int(self.p["win_length"]))
        except ValueError as exc:  # ConfigError is a ValueError
            reason = str(exc).split(": ", 1)[-1]
            self.fail("window", f"is not a window scipy.signal.get_window knows: {reason}")
        if not np.isfinite(values).all():
            self.fail("window", "gives non-finite values")

    def mel_band(self, n_bins: int) -> None:
        self.at_least("fmin", 0.0, " Hz")
        if self.p["fmax"] > _NYQUIST:
            self.fail("fmax", f"must be <= {_NYQUIST:g} Hz (the Nyquist frequency at 16 kHz)")
        bin_hz = SAMPLE_RATE / self.p["n_fft"]
        if self.p["fmax"] - self.p["fmin"] < bin_hz:
            key = "fmin" if "fmin" in self.overrides and "fmax" not in self.overrides else "fmax"
            other = "fmax" if key == "fmin" else "fmin"
            relation = "below" if key == "fmin" else "above"
            self.fail(
                key,
                f"must be at least one FFT bin ({bin_hz:.4g} Hz at n_fft={self.p['n_fft']!r}) "
                f"{relation} {other}={self.p[other]!r}",
            )
        self.bins("n_mels", n_bins)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range
        return False


def _check_mgd(check: _Check) -> None:
    n_bins = check.fft()
    check.between("rho", 0.0, 1.0, " (exp(S)^(2 rho); beyond, the normalisation overflows)")
    if not 0.0 < check.p["gamma"] <= 1.0:
        check.fail("gamma", "must be in (0, 1] (the compression exponent |tau|^gamma)")
    check.between("preemphasis", 0.0, 1.0)
    check.bins("median_order", n_bins)
    check.bins("n_smooth", n_bins)


def _check_mgd_cep(check: _Check) -> None:
    _check_mgd(check)
    check.bins("n_ceps", int(check.p["n_fft"]) // 2 + 1, dropped=1)  # coefficient 0


def _check_mel(check: _Check) -> None:
    n_bins = check.fft()
    check.mel_band(n_bins)
    check.window()


def _check_logmel(check: _Check) -> None:
    _check_mel(check)
    offset = check.p["log_offset"]
    if not _FLOAT32_TINY <= offset <= _MAX_LOG_OFFSET:
        check.fail(
            "log_offset",
            f"must be in [{_FLOAT32_TINY:.3g}, {_MAX_LOG_OFFSET:g}] (a smaller offset rounds to "
            "0 in float32 and silent frames give log(0) = -inf)",
        )


def _check_lfcc(check: _Check) -> None:
    n_bins = check.fft()
    if check.p["n_ceps"] < 1:
        check.fail("n_ceps", "must be >= 1")
    check.ordered("n_ceps", "n_filters")
    check.bins("n_filters", n_bins)
    check.between("preemphasis", 0.0, 1.0)


def _check_cqcc(check: _Check) -> None:
    from featstore.features.cqcc import constant_q_bins, hop_limit, uniform_samples

    p = check.p
    check.at_least("bins_per_octave", 1)
    if not p["fmin"] > 0:
        check.fail("fmin", "must be > 0 Hz")
    if p["fmax"] > _NYQUIST:
        check.fail("fmax", f"must be <= {_NYQUIST:g} Hz (the Nyquist frequency at 16 kHz)")
    check.ordered("fmin", "fmax", strict=True)
    check.at_least("gamma", 0.0)
    check.at_least("first_octave_samples", 1)
    check.at_least("n_ceps", 1)
    check.at_least("delta_width", 1)
    try:
        bins = constant_q_bins(p["bins_per_octave"], p["fmin"], p["fmax"], p["gamma"])
    except ConfigError as exc:
        raise ConfigError(f"{check.feature}: {exc}") from None
    limit = hop_limit(bins)
    if p["hop_length"] > limit:
        check.fail(
            "hop_length",
            f"must be <= {limit} (the widest constant-Q window, {bins.bandwidths.max():.4g} Hz, "
            "would alias at a longer hop)",
        )
    n_uniform = uniform_samples(bins, p["first_octave_samples"])
    if p["n_ceps"] > n_uniform:
        check.fail("n_ceps", f"must be <= {n_uniform} (the uniformly resampled bins)")


_BUILTIN_CHECKS: dict[str, Callable[[_Check], None]] = {
    "featstore.features.mgd:mgd": _check_mgd,
    "featstore.features.mgd:mgd_cep": _check_mgd_cep,
    "featstore.features.spectral:logmel": _check_logmel,
    "featstore.features.spectral:fbank": _check_mel,
    "featstore.features.lfcc:lfcc": _check_lfcc,
    "featstore.features.cqcc:cqcc": _check_cqcc,
}


def _dry_run(name: str, params: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Run a user feature's kernel on 0.5 s of deterministic noise; refuse what fails."""
    spec = get_feature(name)
    given = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "its default parameters"
    noise = np.random.default_rng(0).standard_normal(int(_DRY_RUN_SECONDS * SAMPLE_RATE)) * 0.1
    try:
        with np.errstate(all="ignore"):  # non-finite output is reported below, once
            out = spec.function(noise, **params)
        n_bins = int(spec.n_bins(params))
    except ValueError as exc:
        raise ConfigError(
            f"{name}: the kernel fails with {given} on 0.5 s of noise at 16 kHz: {exc}"
        ) from None
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.ndim != 2:
        shape = getattr(out, "shape", None)
        raise ConfigError(
            f"{name}: with {given} the kernel returned {type(out).__name__} "
            f"{getattr(out, 'dtype', '')} {shape}, not a float32 (n_frames, n_bins) array"
        )
    if out.shape[1] != n_bins:
        raise ConfigError(
            f"{name}: with {given} the kernel returned {out.shape[1]} columns, but n_bins "
            f"gives {n_bins}"
        )
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise ConfigError(
            f"{name}: with {given} the kernel returned {bad} non-finite values on 0.5 s of noise"
        )
