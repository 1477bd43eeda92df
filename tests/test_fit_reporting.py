"""What a run says and keeps: train.log, training_curves.png, TensorBoard, CPU estimates."""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from test_data import build_store

import trainer
import trainer.training
from featstore.errors import ResourceError
from trainer import memory
from trainer.config import FitConfig
from trainer.errors import TrainingError
from trainer.runlog import CURVES, TRAIN_LOG

SMALL_GRCNN = {"n_bins": 32, "embedding_size": 32, "eval_window": 32, "eval_hop": 32}
FAST = dict(
    epochs=1,
    batch_size=4,
    crop_frames=32,
    workers=0,
    threads=1,
    progress=False,
    model_kwargs=SMALL_GRCNN,
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(
        tmp_path_factory.mktemp("report"),
        features=("mgd", "logmel"),
        n_train=18,
        n_dev=9,
        seconds=(0.25, 0.5),
    )


def _log(run: Path) -> str:
    return (run / TRAIN_LOG).read_text()


# --- train.log --------------------------------------------------------------------------------


def test_train_log_keeps_every_session_with_lines_and_warnings(store_path, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="fp16 autocast needs CUDA"):
        trainer.fit(store_path, out=out, **{**FAST, "progress": True}, precision="fp16")
    printed = capsys.readouterr().out
    with pytest.warns(UserWarning, match="fp16 autocast needs CUDA"):  # fp16 was recorded
        trainer.fit(store_path, out=out, resume=True, **{**FAST, "epochs": 2})
    log = _log(out)
    sessions = log.split("==== ")[1:]
    assert len(sessions) == 2
    first, second = sessions
    assert "new run: model=grcnn" in first and "precision=fp32" in first
    assert "command line: " in first
    assert "warning: fp16 autocast needs CUDA; training in fp32 on CPU" in first
    assert f"run directory: {out}" in first
    assert "epoch 1/1: train_loss" in first and "session done" in first
    assert "resumed after epoch 1" in second and "resuming from" in second
    assert "epoch 2/2: train_loss" in second and "epoch 1/1" not in second
    # every line printed on the terminal is in the log; no progress-bar redraws
    for line in printed.splitlines():
        assert line in log
    assert "\r" not in log and "batch/s" not in log
    # lines are stamped with the time
    assert all(ln[:4].isdigit() or ln.startswith("==== ") for ln in log.splitlines())


def test_train_log_records_the_error_that_ended_a_session(store_path, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TrainingError("boom: the disk ate the batch")

    monkeypatch.setattr(trainer.training, "_train_epoch", broken)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="boom"):
        trainer.fit(store_path, out=out, **FAST)
    log = _log(out)
    assert log.rstrip().endswith("error: boom: the disk ate the batch")
    assert "session done" not in log


def test_a_resume_that_cannot_start_is_logged_in_the_run(store_path, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer.fit(store_path, out=out, **FAST)
    import featstore

    real_open = featstore.open_store

    def other_store(*args, **kwargs):
        st = real_open(*args, **kwargs)
        monkeypatch.setattr(type(st), "fingerprint", property(lambda self: "0" * 16))
        return st

    monkeypatch.setattr(trainer.training, "open_store", other_store)
    with pytest.raises(TrainingError, match="fingerprint"):
        trainer.fit(store_path, out=out, resume=True, **{**FAST, "epochs": 2})
    second = _log(out).split("==== ")[2]
    assert "resumed after epoch 1" in second and "error: " in second and "fingerprint" in second


def test_train_log_cannot_be_written_is_a_resource_error(tmp_path):
    from trainer.runlog import RunLog

    log = RunLog(echo=False)
    with pytest.raises(ResourceError, match="cannot write the training log"):
        log.open(tmp_path / "missing-dir", "new run")


# --- training curves --------------------------------------------------------------------------


def test_curves_are_redrawn_after_every_epoch(store_path, tmp_path, monkeypatch):
    import trainer.plots

    drawn = []
    real = trainer.plots.plot_training_curves

    def spy(metrics_csv, path):
        drawn.append(Path(metrics_csv).read_text().count("\n") - 1)  # rows so far
        return real(metrics_csv, path)

    monkeypatch.setattr(trainer.plots, "plot_training_curves", spy)
    out = tmp_path / "run"
    trainer.fit(store_path, out=out, **{**FAST, "epochs": 2})
    assert drawn == [1, 2]
    assert (out / CURVES).read_bytes().startswith(PNG)
    hidden = [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert not hidden  # no temporary left (.lock: the run directory's writer lock)


def test_curves_that_cannot_be_drawn_warn_once_and_training_goes_on(
    store_path, tmp_path, monkeypatch
):
    import trainer.plots

    def broken(metrics_csv, path):
        raise RuntimeError("no display for you")

    monkeypatch.setattr(trainer.plots, "plot_training_curves", broken)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="cannot draw the training curves") as caught:
        result = trainer.fit(store_path, out=out, **{**FAST, "epochs": 2})
    assert result.epochs_done == 2
    assert len([w for w in caught if "training curves" in str(w.message)]) == 1
    assert _log(out).count("cannot draw the training curves (no display for you)") == 1
    assert not (out / CURVES).exists()


# --- TensorBoard ------------------------------------------------------------------------------


def _fake_tensorboard(monkeypatch) -> list:
    made = []

    class SummaryWriter:
        def __init__(self, path):
            made.append(path)

        def add_scalar(self, *args):
            pass

        def flush(self):
            pass

        def close(self):
            pass

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    return made


def test_tensorboard_asked_but_not_installed_fails_before_the_run(store_path, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
        with pytest.raises(ResourceError, match=r"pip install 'spoofstore\[tensorboard\]'"):
            trainer.fit(store_path, out=tmp_path / "tb", **FAST, tensorboard=True)
        assert not (tmp_path / "tb").exists()
        # not asked for: no events, no error
        trainer.fit(store_path, out=tmp_path / "auto", **FAST)
        assert not (tmp_path / "auto" / "tb").exists()


def test_tensorboard_on_off_and_auto(store_path, tmp_path, monkeypatch):
    made = _fake_tensorboard(monkeypatch)
    trainer.fit(store_path, out=tmp_path / "auto", **FAST)
    trainer.fit(store_path, out=tmp_path / "on", **FAST, tensorboard=True)
    trainer.fit(store_path, out=tmp_path / "off", **FAST, tensorboard=False)
    assert made == [str(tmp_path / "auto" / "tb"), str(tmp_path / "on" / "tb")]


def test_cli_tensorboard_missing_exits_1_with_one_line(store_path, tmp_path):
    code = (
        "import sys; sys.modules['torch.utils.tensorboard'] = None; "
        "from trainer.cli import main; main(sys.argv[1:])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "fit", store_path, "--out", str(tmp_path / "r"),
         "--tensorboard", "--workers", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: --tensorboard needs the tensorboard package")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_pyproject_declares_the_tensorboard_extra():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"]["tensorboard"]
    assert any(req.startswith("tensorboard") for req in extra)


# --- CPU: epoch-time estimate and memory ------------------------------------------------------


def test_cpu_run_logs_an_epoch_time_estimate_once(store_path, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.training, "_ESTIMATE_BATCHES", 2)
    out = tmp_path / "run"
    trainer.fit(store_path, out=out, **{**FAST, "epochs": 2, "batch_size": 2})  # 9 batches
    log = _log(out)
    assert log.count("estimate: ") == 1
    assert "estimate: epoch 1 takes about" in log and "s per batch x 9 batches" in log


def test_duration_format():
    assert trainer.training._duration(42.4) == "42 s"
    assert trainer.training._duration(750) == "12 min 30 s"
    assert trainer.training._duration(3 * 3600 + 300) == "3 h 05 min"


def test_memory_estimate_matches_the_measured_grcnn():
    # README: ~0.35 GB per crop, 4.4 GB RSS at batch 8 and ~12 GB at 32 (256-frame crops)
    assert memory.estimate_training_memory("grcnn", 32, 256) / 1e9 == pytest.approx(12, rel=0.1)
    assert memory.estimate_training_memory("grcnn", 8, 256) / 1e9 == pytest.approx(4.4, rel=0.2)
    half = memory.estimate_training_memory("grcnn", 32, 128)
    assert half < memory.estimate_training_memory("grcnn", 32, 256)
    assert memory.estimate_training_memory("lcnn", 32, 400) < 2e9
    assert memory.estimate_training_memory("not-a-model", 32, 256) is None
    neural = {name for name, spec in trainer.MODELS.items() if spec.family == "neural"}
    assert set(memory.MEMORY_PER_CROP) == neural
    budget = 8e9
    fits = memory.fitting_batch_size("grcnn", 256, budget)
    assert memory.estimate_training_memory("grcnn", fits, 256) <= budget
    assert memory.estimate_training_memory("grcnn", fits + 1, 256) > budget


def test_available_memory_and_cgroup_headroom(tmp_path):
    assert memory.available_memory() > 0
    (tmp_path / "memory.max").write_text("4000000000\n")
    (tmp_path / "memory.current").write_text("1000000000\n")
    assert memory._cgroup_headroom(tmp_path) == 3_000_000_000
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(tmp_path) is None
    assert memory._cgroup_headroom(tmp_path / "none") is None


def test_too_big_a_batch_on_cpu_warns_with_a_batch_size(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 8_000_000_000)
    cfg = FitConfig(store="s", model="grcnn", batch_size=32, crop_frames=256)
    with pytest.warns(UserWarning, match=r"needs about 12\.2 GB.*8\.0 GB is available; try "):
        trainer.training._warn_if_batch_too_big(cfg)
    fits = memory.fitting_batch_size("grcnn", 256, 0.9 * 8e9)
    with pytest.warns(UserWarning, match=f"--batch-size {fits}, or --checkpoint-windows$"):
        trainer.training._warn_if_batch_too_big(cfg)
    monkeypatch.setattr(memory, "available_memory", lambda: 500_000_000)
    with pytest.warns(UserWarning, match="even --batch-size 1 may not fit"):
        trainer.training._warn_if_batch_too_big(cfg)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # checkpointed windows: the estimate (all activations kept) does not apply
        trainer.training._warn_if_batch_too_big(replace(cfg, checkpoint_windows=True))
    monkeypatch.setattr(memory, "available_memory", lambda: 64_000_000_000)
    lcnn = FitConfig(store="s", model="lcnn", batch_size=4096, crop_frames=400)
    with pytest.warns(UserWarning, match=r"try --batch-size \d+$"):  # no checkpointing there
        trainer.training._warn_if_batch_too_big(lcnn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.training._warn_if_batch_too_big(cfg)  # fits: no warning


def test_memory_warning_comes_before_training_and_lands_in_the_log(
    store_path, tmp_path, monkeypatch
):
    monkeypatch.setattr(memory, "available_memory", lambda: 1_000_000)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="grcnn at --batch-size 4 with 32-frame crops"):
        trainer.fit(store_path, out=out, **FAST)
    log = _log(out)
    assert log.index("warning: grcnn at --batch-size 4") < log.index("epoch 1/1: train_loss")


@pytest.mark.slow
def test_cli_prints_warnings_as_one_line_and_the_estimate(store_path, tmp_path):
    code = (
        "import sys, trainer.memory, trainer.training; "
        "trainer.memory.available_memory = lambda: 1_000_000; "
        "trainer.training._ESTIMATE_BATCHES = 2; "
        "from trainer.cli import main; main(sys.argv[1:])"
    )
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-c", code, "fit", store_path, "--out", str(out), "--epochs", "1",
         "--batch-size", "2", "--crop-frames", "32", "--workers", "0", "--threads", "1",
         "--model-arg", "n_bins=32", "--model-arg", "embedding_size=32",
         "--model-arg", "eval_window=32", "--model-arg", "eval_hop=32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if "grcnn at --batch-size 2" in ln]
    assert len(warning) == 1 and warning[0].lstrip().startswith("warning: grcnn at")
    assert "UserWarning" not in proc.stderr
    assert "estimate: epoch 1 takes about" in proc.stdout
    log = _log(out)
    assert "warning: grcnn at --batch-size 2" in log and "estimate: epoch 1" in log
    assert "--model-arg n_bins=32" in log  # the session header keeps the command line
