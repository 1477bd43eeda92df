"""bench/gpu_check.sh runs end to end on a CPU with tiny sizes (the GPU run is by hand)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_gpu_check_runs_on_cpu_with_tiny_sizes(tmp_path):
    figures = tmp_path / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_TIMEOUT": "600"}
    args = ["--device", "cpu", "--tiny", "--workdir", str(tmp_path / "w"), "--json", str(figures)]
    done = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=660,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("gpu check: PASS")
    result = json.loads(figures.read_text())
    assert result["train_eager"]["steps"] == 4 and result["train_eager"]["utt_per_s"] > 0
    assert result["score_bf16"]["utt_per_s"] > 0
    assert result["cpu_scores"]["ok"] and result["cpu_scores"]["max_abs_diff"] <= 1e-3
    assert result["resume"]["ok"] and result["resume"]["exit_codes"] == {
        "killed": -9,
        "reference": 0,
        "resumed": 0,
    }
    for stage in ("[store]", "[train eager]", "[score bf16]", "[cpu scores]", "[resume]"):
        assert stage in done.stdout


def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run(
        [str(SCRIPT), "--device", "cuda", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "error: --device cuda asked for, but CUDA is not available" in done.stderr
