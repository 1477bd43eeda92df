"""validate_feature_params: every parameter checked once, before any extraction."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from featstore.errors import ConfigError, FeatureError
from featstore.features import FEATURES, register_feature, validate_feature_params
from featstore.features import registry as feature_registry

BUILTINS = ("mgd", "mgd_cep", "logmel", "fbank", "lfcc", "cqcc")


@pytest.fixture(autouse=True)
def restore_registry():
    """Registrations made by a test are undone after it."""
    saved = dict(feature_registry._REGISTRY)
    yield
    feature_registry._REGISTRY.clear()
    feature_registry._REGISTRY.update(saved)


@pytest.mark.parametrize("name", BUILTINS)
def test_defaults_validate_and_resolve_as_extraction_does(name):
    spec = FEATURES[name]
    assert validate_feature_params(name, {}) == spec.resolve()
    assert validate_feature_params(name) == spec.resolve()
    assert validate_feature_params(name, {"hop_length": 100}) == spec.resolve(hop_length=100)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("lfcc", {"n_filters": 60, "n_ceps": 70}, "lfcc: n_ceps=70 must be <= n_filters=60"),
        ("lfcc", {"n_filters": 10}, "lfcc: n_filters=10 must be >= n_ceps=20"),
        ("lfcc", {"n_ceps": 0}, "lfcc: n_ceps=0 must be >= 1"),
        ("lfcc", {"n_filters": 300, "n_ceps": 20}, "lfcc: n_filters=300 must be <= 257"),
        ("lfcc", {"preemphasis": -0.5}, "lfcc: preemphasis=-0.5 must be in [0, 1]"),
        ("lfcc", {"deltas": 1}, "lfcc: deltas=1 must be true or false"),
        ("lfcc", {"win_length": 600}, "lfcc: win_length=600 must be <= n_fft=512"),
        ("lfcc", {"n_fft": 256}, "lfcc: n_fft=256 must be >= win_length=320"),
        ("fbank", {"n_fft": 300000, "win_length": 400}, "fbank: n_fft=300000 must be <= 65536"),
        ("fbank", {"fmax": 9000.0}, "fbank: fmax=9000.0 must be <= 8000 Hz"),
        ("fbank", {"fmin": -1}, "fbank: fmin=-1 must be >= 0"),
        ("fbank", {"fmin": 4000, "fmax": 4000}, "fbank: fmax=4000 must be at least one FFT bin"),
        ("fbank", {"fmin": 8000}, "fbank: fmin=8000 must be at least one FFT bin"),
        ("fbank", {"n_mels": 0}, "fbank: n_mels=0 must be >= 1"),
        ("fbank", {"n_mels": 2000}, "fbank: n_mels=2000 must be <= 1025 (n_fft=2048"),
        ("fbank", {"n_fft": 256}, "fbank: n_fft=256 must be >= win_length=400"),
        ("logmel", {"n_fft": 400}, "logmel: n_fft=400 gives 201 bins: too few for n_mels=256"),
        ("logmel", {"window": "nope"}, "logmel: window='nope' is not a window"),
        ("logmel", {"window": "kaiser"}, "logmel: window='kaiser' is not a window"),
        ("logmel", {"window": 3}, "logmel: window=3 must be a string"),
        ("logmel", {"log_offset": 0.0}, "logmel: log_offset=0.0 must be in [1.18e-38"),
        ("logmel", {"log_offset": 1e-300}, "logmel: log_offset=1e-300 must be in"),
        ("logmel", {"n_mels": 64.0}, "logmel: n_mels=64.0 must be an integer"),
        ("logmel", {"n_mels": True}, "logmel: n_mels=True must be an integer"),
        ("mgd", {"hop_length": 0}, "mgd: hop_length=0 must be >= 1"),
        ("mgd", {"win_length": -5}, "mgd: win_length=-5 must be >= 1"),
        ("mgd", {"rho": float("nan")}, "mgd: rho=nan must be finite"),
        ("mgd", {"rho": 5}, "mgd: rho=5 must be in [0, 1]"),
        ("mgd", {"gamma": 0.0}, "mgd: gamma=0.0 must be in (0, 1]"),
        ("mgd", {"gamma": "0.3"}, "mgd: gamma='0.3' must be a number"),
        ("mgd", {"median_order": 0}, "mgd: median_order=0 must be >= 1"),
        ("mgd", {"median_order": 300}, "mgd: median_order=300 must be <= 257"),
        ("mgd", {"n_smooth": 0}, "mgd: n_smooth=0 must be >= 1"),
        (
            "mgd",
            {"n_fft": 16, "win_length": 16},
            "mgd: n_fft=16 gives 9 bins: too few for n_smooth",
        ),
        ("mgd_cep", {"n_ceps": 257}, "mgd_cep: n_ceps=257 must be <= 256 (n_fft=512 gives 257"),
        ("mgd_cep", {"n_ceps": 0}, "mgd_cep: n_ceps=0 must be >= 1"),
        ("mgd", {"bogus": 1}, "feature 'mgd' has no parameter(s) bogus"),
    ],
)
def test_bad_values_name_the_feature_and_the_parameter(name, params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_feature_params(name, params)


def test_unknown_feature_and_bad_tables():
    with pytest.raises(FeatureError, match="unknown feature 'nope'"):
        validate_feature_params("nope", {})
    with pytest.raises(ConfigError, match="lfcc: parameters must be a table"):
        validate_feature_params("lfcc", 3)  # type: ignore[arg-type]


# --- every ConfigError of the kernels is raised by the validator first -------------------------

KERNEL_ERRORS = [  # (feature, parameters, the kernel's own message)
    ("lfcc", {"n_filters": 0}, "n_ceps must be in 1..n_filters"),  # also triangular_filterbank's
    ("lfcc", {"n_ceps": 21}, "n_ceps must be in 1..n_filters"),
    ("lfcc", {"hop_length": 0}, "win_length and hop_length must be positive"),
    ("lfcc", {"n_fft": 256}, r"n_fft \(256\) must be at least win_length"),
    ("fbank", {"window": "nope"}, "unknown window"),
    ("fbank", {"n_mels": 0}, "n_mels must be positive"),
    ("fbank", {"fmax": 9000.0}, "mel band edges must satisfy"),
    ("logmel", {"fmin": 8000.0}, "mel band edges must satisfy"),
    ("logmel", {"win_length": 0}, "win_length and hop_length must be positive"),
    ("mgd", {"win_length": 0}, "win_length and hop_length must be positive"),
    ("mgd", {"n_fft": 256}, r"n_fft \(256\) must be at least win_length"),
    ("mgd", {"median_order": 0}, "median_order must be at least 1"),
    ("mgd", {"n_smooth": 258}, "n_smooth must be in 1..257"),
    ("mgd_cep", {"n_ceps": 257}, "n_ceps must be in 1..256"),
]


@pytest.mark.parametrize(("name", "params", "kernel_message"), KERNEL_ERRORS)
def test_each_kernel_config_error_is_caught_by_the_validator(name, params, kernel_message):
    spec = FEATURES[name]
    with pytest.raises(ConfigError, match=kernel_message):
        spec.function(np.zeros(4000), **spec.resolve(**params))
    with pytest.raises(ConfigError, match=f"^{name}: "):
        validate_feature_params(name, params)


# --- property: accepted parameters run; refused ones include everything the kernel refuses ----

_FRAMING = {
    "win_length": st.sampled_from([-1, 0, 1, 2, 7, 64, 320, 400, 513, 600]),
    "hop_length": st.sampled_from([-3, 0, 1, 80, 160, 1000]),
    "n_fft": st.sampled_from([0, 1, 2, 3, 8, 63, 64, 256, 400, 512, 1024, 2048]),
}
_PREEMPHASIS = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.97, 1.0]))
_MGD = {
    **_FRAMING,
    "rho": st.one_of(st.floats(-0.5, 2.0), st.sampled_from([0.0, 1.0, 50.0])),
    "gamma": st.one_of(st.floats(-0.5, 2.0), st.sampled_from([0.0, 1.0, 20.0])),
    "preemphasis": _PREEMPHASIS,
    "median_order": st.integers(-1, 40),
    "n_smooth": st.sampled_from([-1, 0, 1, 2, 5, 30, 129, 257, 258, 600]),
}
_MEL = {
    **_FRAMING,
    "n_mels": st.sampled_from([-1, 0, 1, 2, 40, 64, 256, 513, 1025, 2000]),
    "fmin": st.one_of(st.floats(-100.0, 9000.0), st.sampled_from([0.0, 7990.0, 7999.999])),
    "fmax": st.one_of(st.floats(-100.0, 9000.0), st.sampled_from([8000.0, 0.001, 8000.001])),
    "window": st.sampled_from(["hann", "hamming", "blackman", "boxcar", "triang", "nope"]),
}
STRATEGIES = {
    "mgd": _MGD,
    "mgd_cep": {**_MGD, "n_ceps": st.sampled_from([-1, 0, 1, 12, 128, 256, 257, 600])},
    "logmel": {
        **_MEL,
        "log_offset": st.sampled_from([-1.0, 0.0, 1e-300, 1e-45, 1e-37, 1e-6, 1.0, 1e29, 1e31]),
    },
    "fbank": _MEL,
    "lfcc": {
        **_FRAMING,
        "n_filters": st.sampled_from([-1, 0, 1, 2, 20, 60, 129, 257, 258, 1000]),
        "n_ceps": st.sampled_from([-1, 0, 1, 2, 20, 40, 60, 70]),
        "preemphasis": _PREEMPHASIS,
        "with_energy": st.booleans(),
        "deltas": st.booleans(),
    },
    "cqcc": {  # few distinct values: each (B, fmin, fmax, gamma, d, n_ceps) builds a matrix
        "win_length": st.sampled_from([-1, 0, 1, 136, 400]),
        "hop_length": st.sampled_from([-3, 0, 1, 32, 136, 137, 160]),
        "bins_per_octave": st.sampled_from([-1, 0, 1, 12, 96]),
        "fmin": st.sampled_from([-1.0, 0.0, 1.0, 15.625, 62.5, 7000.0, 8000.0]),
        "fmax": st.sampled_from([10.0, 4000.0, 8000.0, 9000.0]),
        "gamma": st.sampled_from([-1.0, 0.0, 228.7]),
        "first_octave_samples": st.sampled_from([0, 1, 16]),
        "n_ceps": st.sampled_from([-1, 0, 1, 20, 9000]),
        "delta_width": st.sampled_from([0, 1, 3]),
        "deltas": st.booleans(),
    },
}


def _params(name: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=STRATEGIES[name])


def _audio() -> st.SearchStrategy[np.ndarray]:
    return st.builds(
        lambda n, level, seed: np.random.default_rng(seed).standard_normal(n) * level,
        st.integers(0, 4000),
        st.sampled_from([0.0, 1e-5, 0.1, 0.9]),
        st.integers(0, 2**16),
    ).map(lambda x: np.clip(x, -1.0, 1.0 - 2.0**-15))


@pytest.mark.parametrize("name", BUILTINS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepted_parameters_run_and_kernel_errors_are_refused(name, data):
    params = data.draw(_params(name), label="params")
    signal = data.draw(_audio(), label="signal")
    spec = FEATURES[name]
    try:
        resolved = validate_feature_params(name, params)
    except ConfigError as exc:
        assert str(exc).startswith((f"{name}: ", f"feature {name!r}")), exc
        event("refused")
        return  # refused: whatever the kernel does with it is never run by a build
    event("accepted")
    out = spec.function(signal, **resolved)  # accepted: no error on any audio
    assert out.dtype == np.float32
    assert out.shape[1] == spec.n_bins(resolved)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", BUILTINS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_accepted_parameters_run_on_silence_and_full_scale(name, data):
    params = data.draw(_params(name), label="params")
    try:
        resolved = validate_feature_params(name, params)
    except ConfigError:
        return
    spec = FEATURES[name]
    for signal in (np.zeros(3000), np.full(3000, 0.99), np.tile([0.99, -0.99], 1500)):
        assert np.isfinite(spec.function(signal, **resolved)).all()


# --- user features: generic checks and a dry run ---------------------------------------------


def _energy(signal, win_length=400, hop_length=160, floor=1e-10, scale=1, log=True):
    from featstore.features.framing import frame_signal

    if floor < 0:
        raise ValueError("floor must be >= 0")
    frames = frame_signal(signal, win_length, hop_length)
    energy = np.sum(frames**2, axis=1, keepdims=True) * scale + floor
    return (np.log(energy) if log else energy).astype(np.float32)


def test_user_feature_gets_generic_checks_and_a_dry_run():
    register_feature("energy", _energy, n_bins=1)
    assert validate_feature_params("energy", {"floor": 0.5})["floor"] == 0.5
    with pytest.raises(ConfigError, match=r"feature 'energy' has no parameter.* n_fft"):
        validate_feature_params("energy", {"n_fft": 512})
    with pytest.raises(ConfigError, match="energy: hop_length=0 must be >= 1"):
        validate_feature_params("energy", {"hop_length": 0})
    with pytest.raises(ConfigError, match=r"energy: scale=1\.5 must be an integer"):
        validate_feature_params("energy", {"scale": 1.5})
    with pytest.raises(ConfigError, match="energy: log='yes' must be true or false"):
        validate_feature_params("energy", {"log": "yes"})
    with pytest.raises(ConfigError, match="energy: floor=inf must be finite"):
        validate_feature_params("energy", {"floor": float("inf")})
    with pytest.raises(
        ConfigError, match=r"energy: the kernel fails with floor=-1.0 .*: floor must be >= 0"
    ):
        validate_feature_params("energy", {"floor": -1.0})
    with pytest.raises(ConfigError, match=r"energy: with floor=0.0, scale=0 .* non-finite"):
        validate_feature_params("energy", {"floor": 0.0, "scale": 0})


def test_user_feature_with_a_wrong_width_or_type_is_refused():
    register_feature("energy", _energy, n_bins=lambda p: 2)
    with pytest.raises(ConfigError, match=r"energy: .* returned 1 columns, but n_bins gives 2"):
        validate_feature_params("energy", {})
    register_feature(
        "energy", lambda signal, win_length=400, hop_length=160: signal, n_bins=1, replace=True
    )
    with pytest.raises(ConfigError, match=r"not a float32 .n_frames, n_bins. array"):
        validate_feature_params("energy", {})


def test_a_builtin_name_with_another_kernel_is_checked_as_a_user_feature():
    register_feature("lfcc", _energy, n_bins=1, replace=True)
    assert validate_feature_params("lfcc", {"floor": 1.0})["floor"] == 1.0
