"""A run SIGKILLed mid-training and resumed ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_data import build_store

from trainer import checkpoint

TOML = """
model = "grcnn"
model_kwargs = { n_bins = 32, embedding_size = 32, eval_window = 32, eval_hop = 32 }
epochs = 3
batch_size = 4
crop_frames = 32
workers = 0
threads = 1
deterministic = true
progress = false
"""

# Runs fit in a child process that SIGKILLs itself at the 2nd optimizer step after the first
# epoch's last.pt was written: a hard kill in the middle of epoch 2, at a reproducible point.
KILLER = """
import os, signal, sys, torch
from trainer import checkpoint
from trainer.training import fit
store, out = sys.argv[1], sys.argv[2]
real_save, real_clip = checkpoint.save_checkpoint, torch.nn.utils.clip_grad_norm_
seen = {"last": False, "steps": 0}
def save(path, state):
    result = real_save(path, state)
    seen["last"] = seen["last"] or os.path.basename(path) == "last.pt"
    return result
def clip(*args, **kwargs):
    if seen["last"]:
        seen["steps"] += 1
        if seen["steps"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_clip(*args, **kwargs)
checkpoint.save_checkpoint = save
torch.nn.utils.clip_grad_norm_ = clip
fit(store, out=out, config=sys.argv[3])
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    store = build_store(tmp_path, n_train=12, n_dev=6, seconds=(0.25, 0.5))
    (tmp_path / "train.toml").write_text(TOML)
    (tmp_path / "killer.py").write_text(KILLER)

    killed = _run(["killer.py", store, "killed", "train.toml"], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint.load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1

    common = ["-m", "trainer", "fit", store, "--config", "train.toml", "--quiet"]
    resumed = _run([*common, "--out", "killed", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = _run([*common, "--out", "reference"], tmp_path)
    assert reference.returncode == 0, reference.stderr

    a = checkpoint.load_checkpoint(tmp_path / "reference" / "last.pt")
    b = checkpoint.load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        x, y = a["model"][name], b["model"][name]
        assert torch.equal(x, y), f"{name}: max |diff| {(x - y).abs().max().item():.3g}"
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    with open(tmp_path / "killed" / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]


def test_checkpoint_roundtrip_restores_rng(tmp_path):
    import random

    import numpy as np

    state = checkpoint.capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    path = checkpoint.save_checkpoint(tmp_path / "x.pt", {"rng": state, "epoch": 1})
    checkpoint.restore_rng_state(torch.load(path, weights_only=True)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left


def test_corrupt_checkpoint_is_a_training_error(tmp_path):
    from trainer.errors import TrainingError

    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=r"last\.pt is corrupt or not a spoofstore"):
        checkpoint.load_checkpoint(bad)
    with pytest.raises(TrainingError, match="no such checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")
