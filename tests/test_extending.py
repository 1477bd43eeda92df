"""Registering features and models from Python, and the README's "Extending" examples.

The examples run as written: the registered feature is built into a store by
``featstore.build`` and the registered model is built by ``build_model``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_fixture import make_corpus

from featstore.errors import ConfigError, FeatureError
from featstore.features import FEATURES, compute_feature, register_feature
from featstore.features import registry as feature_registry
from featstore.features.framing import frame_signal
from featstore.store import open_store
from trainer.models import (
    MODELS,
    CountermeasureModel,
    ModelConfigError,
    ModelError,
    build_model,
    register_model,
)
from trainer.models import registry as model_registry

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def restore_registries():
    """Registrations made by a test are undone after it."""
    saved = [(r, dict(r)) for r in (feature_registry._REGISTRY, model_registry._REGISTRY)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def _extending_blocks() -> list[str]:
    """The ```python blocks of the README's "## Extending" section, in order."""
    section = README.read_text().split("\n## Extending\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_examples_build_a_store_and_a_model(tmp_path: Path, monkeypatch) -> None:
    feature_block, model_block = _extending_blocks()
    make_corpus(tmp_path / "LA", {"train": 4, "dev": 3}, seed=5)
    (tmp_path / "LA" / "protocols").rename(tmp_path / "protocols")
    monkeypatch.chdir(tmp_path)

    namespace: dict = {"__name__": "readme_feature"}
    exec(compile(feature_block, "README.md (feature)", "exec"), namespace)
    assert "log_energy" in FEATURES
    with open_store(tmp_path / "store.zarr", mode="r") as store:
        assert set(store.features) == {"logmel", "log_energy"}
        record = store.features["log_energy"]
        assert (record["win_length"], record["hop_length"], record["n_bins"]) == (400, 160, 1)
        for split in ("train", "dev"):
            frames = store.array(split, "log_energy")[:]
            assert frames.shape[1] == 1 and np.isfinite(frames).all()
            assert frames.shape[0] == store.array(split, "logmel").shape[0]  # same framing

    namespace = {"__name__": "readme_model"}
    exec(compile(model_block, "README.md (model)", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, CountermeasureModel) and model.train_frames == 100
    assert MODELS["energy-stats"].features == ("log_energy",)
    with open_store(tmp_path / "store.zarr", mode="r") as store:
        crop = torch.from_numpy(np.ascontiguousarray(store.array("dev", "log_energy")[:50]))
    logits = model(log_energy=crop[None])
    assert logits.shape == (1, 2)
    with pytest.raises(ModelConfigError, match="no parameter"):
        build_model("energy-stats", n_bins=3)


def _log_energy(signal, win_length=400, hop_length=160, floor=1e-10):
    frames = frame_signal(signal, win_length, hop_length)
    return np.log(np.sum(frames**2, axis=1, keepdims=True) + floor).astype(np.float32)


def test_registered_feature_defaults_come_from_the_kernel_signature() -> None:
    spec = register_feature("energy", _log_energy, n_bins=1, description="log energy")
    assert dict(spec.defaults) == {"win_length": 400, "hop_length": 160, "floor": 1e-10}
    assert spec.describe(hop_length=80)["hop_length"] == 80
    assert compute_feature("energy", np.ones(16000), hop_length=80).shape == (196, 1)
    with pytest.raises(ConfigError, match=r"no parameter.*bogus"):
        compute_feature("energy", np.ones(16000), bogus=1)


def test_registered_feature_by_import_path_and_n_bins_function() -> None:
    spec = register_feature(
        "mgd_small", "featstore.features.mgd:mgd", n_bins=lambda p: p["n_fft"] // 2 + 1
    )
    assert spec.describe(n_fft=256)["n_bins"] == 129
    assert spec.defaults == FEATURES["mgd"].defaults


def test_register_feature_refuses_bad_registrations() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_feature("mgd", _log_energy, n_bins=1)
    register_feature("mgd", _log_energy, n_bins=1, replace=True)
    assert FEATURES["mgd"].function is _log_energy
    with pytest.raises(ConfigError, match="feature name"):
        register_feature("bad name", _log_energy, n_bins=1)
    with pytest.raises(ConfigError, match="needs a default"):
        register_feature("x", lambda signal, hop_length, win_length=1: signal, n_bins=1)
    with pytest.raises(ConfigError, match=r"\*\*kwargs"):
        register_feature("x", lambda signal, **params: signal, n_bins=1)
    with pytest.raises(ConfigError, match="win_length"):
        register_feature("x", lambda signal, hop_length=1: signal, n_bins=1)
    with pytest.raises(ConfigError, match="n_bins"):
        register_feature("x", _log_energy, n_bins=0)
    with pytest.raises(ConfigError, match="kernel must be"):
        register_feature("x", "no_module_path", n_bins=1)
    assert "x" not in FEATURES


class _Tiny(CountermeasureModel):
    def __init__(self, n_bins: int = 4, streams: tuple[str, ...] = ("lfcc",)):
        super().__init__()
        self.features = tuple(streams)
        self.n_bins = dict.fromkeys(self.features, n_bins)
        self.train_frames, self.eval_window, self.eval_hop, self.min_frames = 10, None, None, 1
        self.linear = torch.nn.Linear(n_bins * len(self.features), 2)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([x.mean(dim=1) for x in self.inputs(features)], dim=1))


def test_register_model_and_fixed_parameters() -> None:
    register_model("tiny-two", _Tiny, ("lfcc", "mgd"), fixed={"streams": ("lfcc", "mgd")})
    model = build_model("tiny-two", n_bins=3)
    assert model.features == ("lfcc", "mgd") and model.n_bins == {"lfcc": 3, "mgd": 3}
    with pytest.raises(ModelConfigError, match=r"no parameter.*streams"):
        build_model("tiny-two", streams=("mgd",))
    with pytest.raises(ModelConfigError, match="already registered"):
        register_model("tiny-two", _Tiny, ("lfcc",))
    with pytest.raises(ModelConfigError, match="features"):
        register_model("tiny-none", _Tiny, ())
    with pytest.raises(ModelConfigError, match="class or"):
        register_model("tiny-instance", _Tiny(), ("lfcc",))
    assert "tiny-none" not in MODELS and "tiny-instance" not in MODELS


def test_configuration_errors_are_config_errors() -> None:
    x = np.random.default_rng(0).standard_normal(4000) * 0.1
    for name, params in [
        ("mgd", {"n_smooth": 0}),
        ("mgd_cep", {"n_ceps": 1000}),
        ("logmel", {"n_mels": 0}),
        ("fbank", {"window": "no-such-window"}),
        ("lfcc", {"n_ceps": 30}),
        ("lfcc", {"n_fft": 64}),
        ("mgd", {"nope": 1}),
    ]:
        with pytest.raises(ConfigError):
            compute_feature(name, x, **params)
    with pytest.raises(FeatureError, match="unknown feature") as info:
        compute_feature("nope", x)
    assert not isinstance(info.value, ConfigError)
    for name, params in [("vgg10", {"dropout": 1.5}), ("lcnn", {"n_bins": 3}), ("grcnn", {"x": 1})]:
        with pytest.raises(ConfigError):
            build_model(name, **params)
    with pytest.raises(ModelError, match="unknown model") as info:
        build_model("nope")
    assert not isinstance(info.value, ConfigError)


def test_builtin_defaults_are_the_kernel_signatures() -> None:
    for name, spec in FEATURES.items():
        params = list(inspect.signature(spec.function).parameters.values())[1:]
        assert dict(spec.defaults) == {p.name: p.default for p in params}, name
