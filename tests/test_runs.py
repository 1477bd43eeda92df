"""trainer.runs / trainer.checkpoint records: latest run, config.json, metrics.csv, typed
checkpoints validated at the I/O edge; trainer.inference.resolve_device."""

from __future__ import annotations

import json
import math
import os
import pickle

import pytest
import torch

from trainer import checkpoint
from trainer.checkpoint import Checkpoint, TrainingState
from trainer.config import FitConfig
from trainer.errors import TrainingError
from trainer.inference import resolve_device
from trainer.runs import (
    METRICS_COLUMNS,
    ModelRecord,
    RunRecord,
    RuntimeRecord,
    StoreRecord,
    latest_run,
    read_metrics,
    read_run_record,
    write_metrics,
    write_run_record,
)


def _record(**fit) -> RunRecord:
    return RunRecord(
        fit=FitConfig(store="s.zarr", model="lcnn", **fit),
        store=StoreRecord(path="/data/s.zarr", fingerprint="ab" * 32, format="zarr"),
        model=ModelRecord(
            name="lcnn",
            kwargs={"n_bins": 20},
            features=("lfcc",),
            n_bins={"lfcc": 20},
            train_frames=24,
            eval_window=None,
            eval_hop=None,
            parameters=123,
        ),
        runtime=RuntimeRecord(device="cpu", precision="fp32", world_size=1, torch="2", version="1"),
    )


def _touch(path, t: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (t, t))


def test_latest_run_of_a_model_by_checkpoint_time(tmp_path):
    _touch(tmp_path / "grcnn-20260101-000000" / "last.pt", 500)  # later name, older checkpoint
    _touch(tmp_path / "grcnn-20250101-000000" / "last.pt", 900)
    _touch(tmp_path / "lcnn-20240101-000000" / "last.pt", 999)
    assert latest_run(tmp_path) == tmp_path / "lcnn-20240101-000000"
    assert latest_run(tmp_path, model="grcnn") == tmp_path / "grcnn-20250101-000000"
    with pytest.raises(TrainingError, match="no runs under"):
        latest_run(tmp_path, model="vgg10")


def test_run_record_round_trips_through_config_json(tmp_path):
    record = _record(cache_dir="/scratch/cache")
    path = write_run_record(tmp_path, record)
    data = json.loads(path.read_text())
    assert "cache_dir" not in data["fit"]  # a property of the machine, not of the run
    assert data["model"]["features"] == ["lfcc"] and data["store"]["format"] == "zarr"
    again = read_run_record(tmp_path)
    assert again == RunRecord.from_dict(record.to_dict(), "x")
    assert again.fit.cache_dir is None and again.model == record.model
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("section", "name"), [("store", "fingerprint"), ("model", "eval_window"), ("runtime", "device")]
)
def test_run_record_names_the_file_and_the_missing_field(tmp_path, section, name):
    data = _record().to_dict()
    del data[section][name]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(
        TrainingError, match=rf"config\.json: the run record has no {section}.{name}"
    ):
        read_run_record(tmp_path)
    data = _record().to_dict()
    data["fit"]["epochz"] = 3
    with pytest.raises(TrainingError, match=r"unknown fit field.*epochz"):
        RunRecord.from_dict(data, "somewhere")
    with pytest.raises(TrainingError, match="cannot read the run record"):
        read_run_record(tmp_path / "nowhere")


def test_metrics_csv_round_trip(tmp_path):
    rows = [
        {c: (i + 1 if c in ("epoch", "step") else 0.5 * i) for c in METRICS_COLUMNS}
        for i in range(3)
    ]
    rows[0]["dev_eer"] = math.nan
    write_metrics(tmp_path / "metrics.csv", rows)
    back = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in back] == [1, 2, 3] and math.isnan(back[0]["dev_eer"])
    assert back[2]["lr"] == 1.0
    assert read_metrics(tmp_path / "missing.csv") == []


def test_checkpoint_round_trip_and_validation(tmp_path):
    training = TrainingState(
        optimizer={"state": {}, "param_groups": []},
        scheduler={"last_epoch": 3},
        scaler={},
        step=3,
        best_dev_eer=0.25,
        best_epoch=1,
        bad_epochs=0,
        rng=[checkpoint.capture_rng_state()],
    )
    stats = {"lfcc": (torch.zeros(20).numpy(), torch.ones(20).numpy())}
    ckpt = Checkpoint(
        weights={"w": torch.ones(2)},
        epoch=1,
        dev_eer=0.25,
        run=_record(),
        normalizer=stats,
        training=training,
    )
    path = checkpoint.save_checkpoint(tmp_path / "last.pt", ckpt)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["config"] == _record().to_dict()
    assert raw["step"] == 3 and raw["normalizer"]["lfcc"]["std"].tolist() == [1.0] * 20
    back = checkpoint.read_checkpoint(path)
    assert back.epoch == 1 and back.run == _record() and back.training.step == 3
    assert torch.equal(back.weights["w"], torch.ones(2))
    assert back.normalizer["lfcc"][1].tolist() == [1.0] * 20

    weights_only = Checkpoint(weights={"w": torch.ones(2)}, epoch=0)
    back = Checkpoint.from_dict(weights_only.to_dict(), "w.pt")
    assert back.run is None and back.training is None and math.isnan(back.dev_eer)
    for missing in ("model", "epoch"):
        data = ckpt.to_dict()
        del data[missing]
        with pytest.raises(
            TrainingError, match=rf"x\.pt: not a trainer checkpoint \(no '{missing}'"
        ):
            Checkpoint.from_dict(data, "x.pt")
    data = ckpt.to_dict()
    del data["rng"]  # a partial training state is an error, not a guess
    with pytest.raises(TrainingError, match="no 'rng' field"):
        Checkpoint.from_dict(data, "x.pt")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", auto_cuda=False) == torch.device("cpu")
    with pytest.raises(TrainingError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda", index=0) == torch.device("cuda", 0)
        assert resolve_device("auto") == torch.device("cuda", 0)
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(TrainingError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_store_view_keeps_the_cache_dir_across_pickling(tmp_path):
    from test_data import build_store

    from featstore import open_store
    from trainer.data import StoreView

    path = build_store(tmp_path, n_train=3, n_dev=2)
    view = StoreView(open_store(path, cache_dir=tmp_path / "cache"))
    again = pickle.loads(pickle.dumps(view))
    assert again.cache_dir == view.cache_dir == os.fspath(tmp_path / "cache")
    assert again.store.cache_dir == os.fspath(tmp_path / "cache")


def test_run_records_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, trainer, trainer.runs, trainer.config; trainer.FitConfig; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
