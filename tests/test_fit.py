"""trainer.fit: run directory, learning on an easy task, NaN handling, config, CLI."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import build_store

import trainer
from trainer import checkpoint
from trainer.config import FitConfig, load_config_file
from trainer.errors import TrainingError
from trainer.runs import METRICS_COLUMNS

REPO = Path(__file__).resolve().parents[1]
# Real models, made small (fewer bins, narrower embedding) so that CPU tests stay fast.
SMALL = {
    "grcnn": {"n_bins": 32, "embedding_size": 32, "eval_window": 32, "eval_hop": 32},
    "vgg10": {"n_bins": 32, "hidden": 64},
    "lcnn": {"train_frames": 32},
}
SMALL_TOML = "model_kwargs = { n_bins = 32, embedding_size = 32, eval_window = 32 }"
FAST = dict(
    epochs=1,
    batch_size=4,
    crop_frames=32,
    workers=0,
    threads=1,
    progress=False,
    model_kwargs=SMALL["grcnn"],
)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(
        tmp_path_factory.mktemp("fit"),
        features=("mgd", "logmel", "fbank", "lfcc"),
        n_train=18,
        n_dev=9,
        seconds=(0.25, 0.5),
    )


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_directory_holds_everything(store_path, tmp_path):
    out = tmp_path / "run"
    result = trainer.fit(store_path, model="grcnn", out=out, **FAST)
    assert result.out == out and result.epochs_done == 1 and result.best_epoch == 1
    assert {"config.json", "best.pt", "last.pt", "metrics.csv"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    import featstore

    st = featstore.open_store(store_path)
    assert config["store"]["path"] == str(Path(store_path).resolve())
    assert config["store"]["fingerprint"] == st.fingerprint
    assert config["fit"]["model"] == "grcnn" and config["fit"]["crop_frames"] == 32
    assert config["model"]["features"] == ["mgd", "logmel"]
    assert config["runtime"]["device"] == "cpu"
    rows = _metrics(out)
    assert list(rows[0]) == list(METRICS_COLUMNS) and len(rows) == 1
    assert 0.0 <= float(rows[0]["dev_eer"]) <= 1.0
    assert float(rows[0]["dev_eer"]) == pytest.approx(result.best_dev_eer, abs=1e-6)
    state = torch.load(out / "last.pt", weights_only=True)  # no pickled code in checkpoints
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "config"):
        assert key in state
    assert state["epoch"] == 1 and state["config"]["store"]["fingerprint"] == st.fingerprint
    # the training normalisation travels with the checkpoint (scoring needs no train store)
    for f in ("mgd", "logmel"):
        mean, std = st.stats(f)
        n = trainer.build_model("grcnn", **SMALL["grcnn"]).n_bins[f]
        np.testing.assert_array_equal(state["normalizer"][f]["mean"].numpy(), mean[:n])
        np.testing.assert_array_equal(state["normalizer"][f]["std"].numpy(), std[:n])
    model = trainer.build_model("grcnn", **SMALL["grcnn"])
    model.load_state_dict(state["model"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grcnn", "vgg10", "lcnn"])
def test_loss_falls_on_an_easy_task(store_path, tmp_path, name):
    settings = {**FAST, "epochs": 6, "lr": 5e-3, "warmup": 0.0}
    settings["model_kwargs"] = SMALL.get(name, {})
    if name != "grcnn":
        settings["crop_frames"] = None  # the model's own training length
    result = trainer.fit(store_path, model=name, out=tmp_path / name, **settings)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert min(losses[-2:]) < 0.5 * losses[0], losses


def test_nan_loss_stops_with_last_good_checkpoint(store_path, tmp_path, monkeypatch):
    import trainer.models

    real_build = trainer.models.build_model
    calls = {"train": 0}

    def poisoned(name, **kwargs):
        model = real_build(name, **kwargs)

        def hook(module, inputs, output):
            if module.training:
                calls["train"] += 1
                if calls["train"] > 4:  # epoch 1 has 18 // 4 = 4 steps
                    return output * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer.models, "build_model", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"non-finite training loss.*epoch 2.*last\.pt"):
        trainer.fit(store_path, model="grcnn", out=out, **{**FAST, "epochs": 3})
    state = checkpoint.load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(_metrics(out)) == 1


def test_nan_in_first_epoch_says_no_checkpoint(store_path, tmp_path, monkeypatch):
    import trainer.models

    real_build = trainer.models.build_model

    def poisoned(name, **kwargs):
        model = real_build(name, **kwargs)
        model.register_forward_hook(lambda m, i, o: o * float("inf"))
        return model

    monkeypatch.setattr(trainer.models, "build_model", poisoned)
    with pytest.raises(TrainingError, match="no checkpoint was written yet"):
        trainer.fit(store_path, model="grcnn", out=tmp_path / "inf", **FAST)


def test_balanced_sampling_and_cpu_precisions(store_path, tmp_path):
    run = trainer.fit(store_path, out=tmp_path / "bal", **FAST, balance=True, precision="bf16")
    config = json.loads((run.out / "config.json").read_text())
    assert config["fit"]["balance"] is True and config["runtime"]["precision"] == "bf16"
    assert math.isfinite(run.history[0]["train_loss"])
    with pytest.warns(UserWarning, match="fp16 autocast needs CUDA"):
        run = trainer.fit(store_path, out=tmp_path / "fp16", **FAST, precision="fp16")
    assert json.loads((run.out / "config.json").read_text())["runtime"]["precision"] == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_is_bf16_where_native(store_path, tmp_path, monkeypatch, native):
    from trainer import cpu_features

    monkeypatch.setattr(cpu_features, "has_native_bf16", lambda: native)
    run = trainer.fit(store_path, out=tmp_path / "auto", **{**FAST, "precision": "auto"})
    config = json.loads((run.out / "config.json").read_text())
    assert config["fit"]["precision"] == "auto"
    assert config["runtime"]["precision"] == ("bf16" if native else "fp32")


def test_checkpoint_windows_trains_the_same_weights(store_path, tmp_path):
    settings = {**FAST, "precision": "fp32", "epochs": 2}
    plain = trainer.fit(store_path, out=tmp_path / "plain", **settings)
    ck = trainer.fit(store_path, out=tmp_path / "ck", **settings, checkpoint_windows=True)
    config = json.loads((ck.out / "config.json").read_text())
    assert config["fit"]["checkpoint_windows"] is True
    a = checkpoint.load_checkpoint(plain.last)["model"]
    b = checkpoint.load_checkpoint(ck.last)["model"]
    for name, weight in a.items():
        torch.testing.assert_close(b[name], weight, atol=1e-5, rtol=1e-4, msg=name)
    assert [r["dev_eer"] for r in ck.history] == pytest.approx(
        [r["dev_eer"] for r in plain.history], abs=0.12
    )
    with pytest.raises(TrainingError, match="model 'lcnn' has no per-window activation check"):
        trainer.fit(
            store_path, model="lcnn", out=tmp_path / "lcnn", **{**FAST, "model_kwargs": {}},
            checkpoint_windows=True,
        )  # fmt: skip


def test_patience_stops_early(store_path, tmp_path):
    # a learning rate this small leaves the dev EER where it is: no improvement after epoch 1
    result = trainer.fit(
        store_path,
        model="grcnn",
        out=tmp_path / "p",
        **{**FAST, "epochs": 4, "lr": 1e-12},
        patience=1,
    )
    assert result.stopped_early and result.epochs_done == 2 and result.best_epoch == 1


def test_existing_run_needs_resume_and_same_settings(store_path, tmp_path):
    out = tmp_path / "run"
    trainer.fit(store_path, model="grcnn", out=out, **FAST)
    with pytest.raises(TrainingError, match="--resume"):
        trainer.fit(store_path, model="grcnn", out=out, **FAST)
    with pytest.raises(TrainingError, match=r"lr \(0\.0003 -> 0\.1\)"):
        trainer.fit(store_path, model="grcnn", out=out, resume=True, **{**FAST, "lr": 0.1})
    done = trainer.fit(store_path, out=out, resume=True, epochs=1, progress=False)
    assert done.epochs_done == 1  # nothing left to do


def test_bad_settings_are_training_errors(store_path, tmp_path):
    with pytest.raises(TrainingError, match="batch_size"):
        trainer.fit(store_path, out=tmp_path / "a", **{**FAST, "batch_size": 0})
    with pytest.raises(TrainingError, match="unknown model"):
        trainer.fit(store_path, model="nope", out=tmp_path / "b", **FAST)
    with pytest.raises(TypeError, match="unknown setting"):
        trainer.fit(store_path, out=tmp_path / "c", epochz=1)
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            trainer.fit(store_path, out=tmp_path / "d", **{**FAST, "device": "cuda"})


def test_config_file_fields(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("[fit]\nepochs = 3\nbatch-size = 8\nmodel_kwargs = { }\n")
    assert load_config_file(path) == {"epochs": 3, "batch_size": 8, "model_kwargs": {}}
    path.write_text("epochs = 3\nbogus = 1\n")
    with pytest.raises(TrainingError, match=r"train\.toml: unknown key 'bogus'"):
        load_config_file(path)
    path.write_text("epochs = \n")
    with pytest.raises(TrainingError, match="invalid TOML"):
        load_config_file(path)
    assert FitConfig(store="x").validate().model == "grcnn"


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_default_out_dir_and_config_file(store_path, tmp_path):
    # default --workers (2): batches come from worker processes through shared slots
    (tmp_path / "train.toml").write_text(
        "epochs = 1\nbatch-size = 4\ncrop-frames = 32\nthreads = 1\nseed = 7\n" + SMALL_TOML + "\n"
    )
    proc = _cli(["fit", store_path, "--config", "train.toml", "--seed", "9"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"run directory: (runs/grcnn-\d{8}-\d{6})", proc.stdout)
    assert match, proc.stdout
    run = tmp_path / match.group(1)
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    config = json.loads((run / "config.json").read_text())["fit"]
    assert config["seed"] == 9 and config["epochs"] == 1 and config["batch_size"] == 4
    assert "best dev EER" in proc.stdout


def test_cli_errors_are_one_line(store_path, tmp_path, capsys):
    from trainer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(tmp_path / "missing.zarr"), "--workers", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "bad.toml").write_text("epochz = 1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", store_path, "--config", str(tmp_path / "bad.toml")])
    assert exit_info.value.code == 2
    assert "bad.toml: unknown key 'epochz'" in capsys.readouterr().err
