"""trainer.fit with augmented views, feature masking, crops per utterance and chosen features.

Augmented views come from stores given fake views (see ``test_train_views.with_views``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_data import build_store
from test_train_views import fake_mask, with_views  # noqa: F401 - a fixture

import trainer
from trainer import checkpoint, data
from trainer.data import SpecMasker
from trainer.errors import TrainingError

pytestmark = pytest.mark.filterwarnings("ignore:model '.*' uses only the first")

FAST = dict(
    batch_size=4,
    crop_frames=32,
    workers=0,
    threads=1,
    progress=False,
    deterministic=True,
    model="lcnn",
    model_kwargs={"train_frames": 32, "n_bins": 16},
)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(
        tmp_path_factory.mktemp("fitaug"),
        features=("mgd", "logmel", "fbank", "lfcc"),
        n_train=12,
        n_dev=6,
        seconds=(0.25, 0.5),
    )


def _weights(run) -> dict:
    return checkpoint.load_checkpoint(run / "last.pt")["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- feature masking ----------------------------------------------------------------------------


def test_masks_are_a_function_of_seed_epoch_and_step():
    masker = SpecMasker(0, time_masks=2, freq_masks=2, time_mask_width=6, freq_mask_width=5)
    batch = {"a": torch.ones(8, 30, 20), "b": torch.ones(8, 30, 10), "label": torch.ones(8)}
    x = masker(batch, epoch=1, step=7)
    assert torch.equal(x["a"], masker(batch, epoch=1, step=7)["a"])
    assert not torch.equal(x["a"], masker(batch, epoch=1, step=8)["a"])
    assert not torch.equal(x["a"], masker(batch, epoch=2, step=7)["a"])
    assert torch.equal(x["label"], batch["label"])  # only (B, frames, bins) tensors
    # the same frames are masked in every feature (a crop's features are the same frames)
    time_a, time_b = (x["a"] == 0).all(dim=2), (x["b"] == 0).all(dim=2)
    assert torch.equal(time_a, time_b) and time_a.any()
    # at most 2 masks of at most 6 frames / 5 bins each
    assert int(time_a.sum(dim=1).max()) <= 12
    bins_a = (x["a"] == 0).all(dim=1)
    assert bins_a.any() and int(bins_a.sum(dim=1).max()) <= 10


def test_masks_are_at_most_half_an_axis_and_can_be_off():
    masker = SpecMasker(3, time_masks=1, freq_masks=1, time_mask_width=100, freq_mask_width=100)
    x = masker({"f": torch.ones(64, 17, 8)}, epoch=0, step=0)["f"]
    assert int((x == 0).all(dim=2).sum(dim=1).max()) <= 8
    assert int((x == 0).all(dim=1).sum(dim=1).max()) <= 4
    off = SpecMasker(3, time_masks=0, freq_masks=0, time_mask_width=9, freq_mask_width=9)
    y = torch.randn(4, 17, 8)
    assert torch.equal(off({"f": y}, epoch=0, step=0)["f"], y)


def test_masking_applies_to_training_batches_only(store_path, tmp_path, monkeypatch):
    calls = []
    real = SpecMasker.__call__

    def counting(self, batch, *, epoch, step):
        calls.append((epoch, step))
        return real(self, batch, epoch=epoch, step=step)

    monkeypatch.setattr(SpecMasker, "__call__", counting)
    result = trainer.fit(store_path, out=tmp_path / "run", epochs=2, spec_mask=True, **FAST)
    steps = result.history[-1]["step"]
    assert calls == [(e, s) for e in (0, 1) for s in range(e * steps // 2, (e + 1) * steps // 2)]
    masked = _weights(tmp_path / "run")
    trainer.fit(store_path, out=tmp_path / "plain", epochs=2, **FAST)
    assert not _same(masked, _weights(tmp_path / "plain"))


# --- resume ----------------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a run right after its first last.pt (an interruption between epochs)."""


def test_resume_is_identical_with_views_masking_and_crops(
    store_path,
    tmp_path,
    with_views,  # noqa: F811
    monkeypatch,
):
    settings = dict(FAST, spec_mask=True, views="all", clean_prob=0.3, crops_per_utt=3)
    whole = trainer.fit(store_path, out=tmp_path / "whole", epochs=3, **settings)
    real_save = checkpoint.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        if path.name == "last.pt":
            raise _Stop

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_checkpoint", save_then_stop)
        with pytest.raises(_Stop):
            trainer.fit(store_path, out=tmp_path / "parts", epochs=3, **settings)
    assert checkpoint.load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 1
    parts = trainer.fit(store_path, out=tmp_path / "parts", epochs=3, resume=True, **settings)
    assert parts.history[-1]["step"] == whole.history[-1]["step"] == 3 * (12 * 3 // 4)
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "parts"))
    trainer.fit(store_path, out=tmp_path / "clean", epochs=3, **{**settings, "clean_prob": 1.0})
    assert not _same(_weights(tmp_path / "whole"), _weights(tmp_path / "clean"))


def test_views_reach_training_batches(store_path, tmp_path, with_views, monkeypatch):  # noqa: F811
    seen = []
    real = data._gather

    def spy(ds, utts, starts, length, views=None):
        batch = real(ds, utts, starts, length, views)
        if views is not None:
            seen.append((utts.copy(), np.asarray(views).copy()))
        return batch

    monkeypatch.setattr(data, "_gather", spy)
    trainer.fit(store_path, out=tmp_path / "aug", epochs=1, views="aug", **FAST)
    utts = np.concatenate([u for u, _ in seen])
    views = np.concatenate([v for _, v in seen])
    mask = fake_mask(12)
    assert np.all(mask[utts, views])
    assert np.all(views[utts != 1] > 0) and np.all(views[utts == 1] == 0)


def test_settings_that_change_the_data_cannot_change_on_resume(store_path, tmp_path):
    trainer.fit(store_path, out=tmp_path / "run", epochs=1, **FAST)
    for change in ({"spec_mask": True}, {"crops_per_utt": 2}, {"views": "clean"}):
        with pytest.raises(TrainingError, match="cannot resume with different"):
            trainer.fit(store_path, out=tmp_path / "run", epochs=2, resume=True, **FAST, **change)


# --- crops per utterance -------------------------------------------------------------------


def test_crops_per_utt_default_comes_from_the_model(store_path, tmp_path):
    small = {"n_bins": 32, "hidden": 16}
    base = dict(FAST, model="vgg10", model_kwargs=small, crop_frames=None, epochs=1)
    run = trainer.fit(store_path, out=tmp_path / "vgg", **base)
    config = json.loads((tmp_path / "vgg" / "config.json").read_text())["fit"]
    assert config["crops_per_utt"] == 32 and run.history[0]["step"] == 12 * 32 // 4
    log = (tmp_path / "vgg" / "train.log").read_text()
    assert "crops_per_utt=32 views=all spec_mask=False" in log
    run = trainer.fit(store_path, out=tmp_path / "vgg2", **{**base, "crops_per_utt": 2})
    assert run.history[0]["step"] == 12 * 2 // 4
    trainer.fit(store_path, out=tmp_path / "lcnn", epochs=1, **FAST)
    config = json.loads((tmp_path / "lcnn" / "config.json").read_text())["fit"]
    assert config["crops_per_utt"] == 1


# --- features --------------------------------------------------------------------------------


def test_chosen_features_are_channels_and_scoring_rebuilds_the_model(store_path, tmp_path):
    settings = dict(FAST, model_kwargs={"train_frames": 32})
    trainer.fit(store_path, out=tmp_path / "run", epochs=1, features="mgd,logmel", **settings)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["fit"]["features"] == "mgd,logmel"
    assert record["model"]["features"] == ["mgd", "logmel"]
    assert record["model"]["n_bins"] == {"mgd": 256, "logmel": 256}  # MGD's Nyquist bin left out
    assert record["model"]["kwargs"]["features"] == ["mgd", "logmel"]
    net = trainer.build_model("lcnn", **record["model"]["kwargs"])
    assert net.cnn[0].in_channels == 2
    scores = trainer.score(run=tmp_path / "run", split="dev", progress=False)
    lines = scores.read_text().splitlines()
    assert len([x for x in lines if not x.startswith("#")]) == 6


def test_one_feature_sets_the_input_size_from_the_store(store_path, tmp_path):
    settings = dict(FAST, model_kwargs={"train_frames": 32})
    trainer.fit(store_path, out=tmp_path / "run", epochs=1, features="fbank", **settings)
    record = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert record["features"] == ["fbank"] and record["n_bins"] == {"fbank": 64}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "grcnn", "features": "mgd"}, "reads fixed features.*grcnn-mgd"),
        ({"features": "cqcc"}, "reads feature.*cqcc.*the store has"),
        ({"features": "fbank,logmel"}, "same number of bins"),
        ({"features": "mgd,,logmel"}, "feature names separated by commas"),
        ({"views": "clean", "clean_prob": 0.5}, "clean_prob applies to views 'all'"),
        ({"views": "aug"}, "no augmented views"),
        ({"clean_prob": 1.5}, r"probability in \[0, 1\]"),
        ({"time_masks": -1}, "time_masks must be an integer >= 0"),
        ({"crops_per_utt": 0}, "crops_per_utt must be a positive integer"),
    ],
)
def test_bad_settings_are_training_errors(store_path, tmp_path, settings, message):
    base = dict(FAST, model_kwargs={})
    with pytest.raises(TrainingError, match=message):
        trainer.fit(store_path, out=tmp_path / "run", epochs=1, **{**base, **settings})
    assert not (tmp_path / "run").exists()


def test_cli_bad_view_settings_exit_2_with_one_line(store_path, tmp_path):
    for args in (["--views", "aug"], ["--views", "clean", "--clean-prob", "0.5"]):
        proc = subprocess.run(
            [sys.executable, "-m", "trainer", "fit", store_path, "--model", "lcnn", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
