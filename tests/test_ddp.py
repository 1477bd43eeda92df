"""``torchrun --nproc_per_node 2 -m trainer fit`` on CPU (gloo): DDP trains and rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_data import build_store

from trainer import checkpoint


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    store = build_store(tmp_path, n_train=16, n_dev=6, seconds=(0.25, 0.5))
    (tmp_path / "small.toml").write_text(
        "model_kwargs = { n_bins = 32, embedding_size = 32, eval_window = 32 }\n"
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "trainer", "fit", store, "--out", "ddp", "--epochs", "1", "--batch-size", "4",
        "--crop-frames", "32", "--workers", "0", "--threads", "1", "--device", "cpu",
        "--config", "small.toml",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: ddp") == 1  # only rank 0 reports
    run = tmp_path / "ddp"
    config = json.loads((run / "config.json").read_text())
    assert config["runtime"]["world_size"] == 2
    state = checkpoint.load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1
    assert state["step"] == (16 // 4) // 2  # each rank ran its half of the epoch's batches
    assert len(state["rng"]) == 2  # every rank's RNG state, for an exact resume
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    assert not list(run.glob(".*tmp*"))
