"""GPU check: the whole train/score path on one CUDA GPU, timed, in a few minutes.

Run through ``bench/gpu_check.sh`` (same arguments). Stages, each printed as it ends:

1. a small corpus from :mod:`pipelines.demo_corpus` and a ``mgd,logmel`` store of it;
2. GRCNN trained for a fixed number of optimizer steps under bf16 autocast, once without and
   once with ``torch.compile``: utterances/s (training crops per second of the last epoch,
   which leaves compilation out) and peak GPU memory (``torch.cuda.max_memory_allocated``);
3. scoring the eval split in bf16: utterances/s and peak GPU memory;
4. the checkpoint trained on the device scored on the CPU (fp32) against the device's fp32
   scores (TF32 off): equal to ``--tolerance`` (1e-3);
5. a deterministic run (2 epochs) SIGKILLed in its second epoch and resumed against an uninterrupted
   one: identical weights.

``--device cpu --tiny`` runs the same stages with tiny sizes and without the compiled run
(inductor's C++ build alone takes minutes on 2 cores; ``--compile`` forces it), about a
minute on 2 idle cores; CI runs it in ``tests/test_gpu_check.py``. Exit code 0 when every
check passes, 1 otherwise; the last line is ``gpu check: PASS`` or ``gpu check: FAIL (...)``.
``--json FILE`` writes the figures.

Usage::

    bench/gpu_check.sh [--device cuda] [--tiny] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """Corpus, model and training sizes of one mode (full or ``--tiny``)."""

    n_train: int
    n_dev: int
    n_eval: int
    max_duration: float
    batch_size: int
    crop_frames: int
    epochs: int
    model_kwargs: dict

    @property
    def steps(self) -> int:
        """Optimizer steps of a training run (every epoch has ``n_train // batch`` steps)."""
        return self.epochs * math.ceil(self.n_train / self.batch_size)


FULL = Sizes(256, 64, 128, 4.0, 32, 256, 2, {})
"""On a GPU: the GRCNN of the paper, batch 32 of 256-frame crops, 16 steps per run."""

TINY = Sizes(8, 4, 4, 1.0, 4, 32, 2, {"n_bins": 32, "embedding_size": 32, "eval_window": 32})
"""``--tiny`` (CI on a CPU): a small GRCNN, 4 steps per run."""


def log(message: str) -> None:
    print(message, flush=True)


def make_store(work: Path, sizes: Sizes) -> str:
    """Generate the corpus and build its ``mgd,logmel`` store (reused when present)."""
    import featstore
    from pipelines.demo_corpus import PROTOCOL_DIR, CorpusConfig, generate

    corpus = work / "corpus"
    config = CorpusConfig(
        n_train=sizes.n_train,
        n_dev=sizes.n_dev,
        n_eval=sizes.n_eval,
        min_duration=min(1.0, sizes.max_duration),
        max_duration=sizes.max_duration,
    )
    t0 = time.perf_counter()
    generate(corpus, config, jobs=min(2, os.cpu_count() or 1))
    store = work / "store.zarr"
    if not store.exists():
        featstore.build(
            corpus / PROTOCOL_DIR, corpus, store, features="mgd,logmel", jobs=1, quiet=True
        )
    log(f"[store] {store} ({time.perf_counter() - t0:.1f} s)")
    return str(store)


def fit_settings(sizes: Sizes, device: str) -> dict:
    return dict(
        model="grcnn",
        epochs=sizes.epochs,
        batch_size=sizes.batch_size,
        crop_frames=sizes.crop_frames,
        model_kwargs=dict(sizes.model_kwargs),
        device=device,
        precision="bf16",
        workers=0 if device == "cpu" else 2,
        progress=False,
        tensorboard=False,
    )


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return float("nan")


def train(store: str, work: Path, sizes: Sizes, device: str, compile_: bool) -> dict:
    """Train with bf16 autocast (optionally compiled); throughput and peak memory."""
    import trainer

    _reset_peak(device)
    t0 = time.perf_counter()
    result = trainer.fit(
        store, out=work / ("fit-compiled" if compile_ else "fit"), compile=compile_,
        **fit_settings(sizes, device),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    figures = {
        "steps": sizes.steps,
        "utt_per_s": float(result.history[-1]["examples_per_s"]),
        "seconds": seconds,
        "peak_gb": _peak_gb(device),
        "run": str(result.out),
    }
    name = "compiled" if compile_ else "eager"
    log(
        f"[train {name}] {sizes.steps} steps of {sizes.batch_size} x {sizes.crop_frames} frames "
        f"in {seconds:.1f} s; last epoch {figures['utt_per_s']:.1f} utt/s; "
        f"peak GPU memory {figures['peak_gb']:.2f} GB"
    )
    return figures


def score_run(run: str, work: Path, device: str, precision: str, name: str) -> dict:
    """Score the eval split; scores by utterance, throughput and peak memory."""
    import torch

    import trainer
    from trainer.scorefiles import read_cm_scores

    _reset_peak(device)
    t0 = time.perf_counter()
    path = trainer.score(
        run, split="eval", checkpoint="last", out=work / f"scores_{name}.txt", device=device,
        precision=precision, progress=False, force=True,
    )  # fmt: skip
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cm = read_cm_scores(path)
    return {
        "scores": dict(zip(cm.utt_ids, cm.scores.tolist(), strict=True)),
        "utt_per_s": len(cm.utt_ids) / seconds,
        "seconds": seconds,
        "peak_gb": _peak_gb(device),
    }


def check_cpu_scores(run: str, work: Path, device: str, tolerance: float) -> dict:
    """The device-trained checkpoint scores the same on the CPU as on the device (fp32)."""
    import torch

    if device.startswith("cuda"):  # exact fp32 on the GPU, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    on_device = score_run(run, work, device, "fp32", "device_fp32")
    on_cpu = score_run(run, work, "cpu", "fp32", "cpu_fp32")
    a, b = on_device["scores"], on_cpu["scores"]
    worst = max(abs(a[u] - b[u]) for u in a) if a.keys() == b.keys() else math.inf
    ok = worst <= tolerance
    log(
        f"[cpu scores] {len(b)} utterances, max |device - cpu| = {worst:.2e} "
        f"({'ok' if ok else 'FAIL'}, tolerance {tolerance:g})"
    )
    return {"max_abs_diff": worst, "ok": ok}


KILLER = """
import os, signal, sys, torch
from trainer import checkpoint
from trainer.training import fit
real_save, real_step = checkpoint.save_checkpoint, torch.optim.AdamW.step
seen = {"last": False, "steps": 0}
def save(path, state):
    result = real_save(path, state)
    seen["last"] = seen["last"] or os.path.basename(path) == "last.pt"
    return result
def step(self, *args, **kwargs):
    if seen["last"]:
        seen["steps"] += 1
        if seen["steps"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)
checkpoint.save_checkpoint = save
torch.optim.AdamW.step = step
fit(sys.argv[1], out=sys.argv[2], config=sys.argv[3])
"""
"""Runs fit and SIGKILLs itself at the 2nd optimizer step after the first last.pt."""


def check_resume(store: str, work: Path, sizes: Sizes, device: str) -> dict:
    """A run SIGKILLed in epoch 2 and resumed ends with the weights of an uninterrupted one."""
    import torch

    from trainer import checkpoint

    # killed at the 2nd step of epoch 2 (every epoch has at least 2 steps)
    settings = {**fit_settings(sizes, device), "epochs": 2, "deterministic": True}
    settings["workers"] = 0
    config = work / "resume.toml"
    config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))
    killer = work / "killer.py"
    killer.write_text(KILLER)
    fit_cmd = ["-m", "trainer", "fit", store, "--config", str(config), "--quiet"]
    runs: dict[str, int] = {}
    # the killed and the uninterrupted run side by side, then the resumption
    for stage in (
        {
            "killed": [str(killer), store, str(work / "killed"), str(config)],
            "reference": [*fit_cmd, "--out", str(work / "reference")],
        },
        {"resumed": [*fit_cmd, "--out", str(work / "killed"), "--resume"]},
    ):
        procs = {name: _start(args, work) for name, args in stage.items()}
        for name, proc in procs.items():
            _, stderr = proc.communicate()
            runs[name] = proc.returncode
            expected = -signal.SIGKILL if name == "killed" else 0
            if proc.returncode != expected:
                log(f"[resume] {name} run exited {proc.returncode}: {stderr.strip()[-500:]}")
                return {"ok": False, "max_abs_diff": math.inf, "exit_codes": runs}
    a = checkpoint.load_checkpoint(work / "reference" / "last.pt")
    b = checkpoint.load_checkpoint(work / "killed" / "last.pt")
    worst = max(
        (a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"]
    )
    same = a["epoch"] == b["epoch"]
    same = same and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    log(
        f"[resume] killed in epoch 2, resumed to epoch {b['epoch']}: weights "
        f"{'identical' if same else 'DIFFER'} (max |diff| {worst:.2e})"
    )
    return {"ok": same, "max_abs_diff": worst, "exit_codes": runs}


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores)"


def run_check(args: argparse.Namespace) -> dict:
    """All stages; returns the figures (``"failures"`` lists the failed checks)."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but CUDA is not available")
    sizes = TINY if args.tiny else FULL
    on_cpu = args.device == "cpu"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"gpu check on {device_name(args.device)}, torch {torch.__version__}, work dir {work}")
    figures: dict = {"device": device_name(args.device), "torch": str(torch.__version__)}
    t0 = time.perf_counter()
    store = make_store(work, sizes)
    figures["train_eager"] = train(store, work, sizes, args.device, compile_=False)
    compile_ = args.compile if args.compile is not None else not (args.tiny and on_cpu)
    if compile_:
        figures["train_compiled"] = train(store, work, sizes, args.device, compile_=True)
    else:
        log("[train compiled] skipped (--tiny on a CPU: inductor's C++ build takes minutes)")
    run = figures["train_eager"]["run"]
    bf16 = score_run(run, work, args.device, "bf16", "device_bf16")
    log(
        f"[score bf16] {len(bf16['scores'])} utterances: {bf16['utt_per_s']:.1f} utt/s, "
        f"peak GPU memory {bf16['peak_gb']:.2f} GB"
    )
    figures["score_bf16"] = {k: v for k, v in bf16.items() if k != "scores"}
    figures["cpu_scores"] = check_cpu_scores(run, work, args.device, args.tolerance)
    figures["resume"] = check_resume(store, work, sizes, args.device)
    figures["seconds"] = time.perf_counter() - t0
    figures["failures"] = [k for k in ("cpu_scores", "resume") if not figures[k]["ok"]]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu [default: cuda]")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CI on a CPU)")
    parser.add_argument("--workdir", default=None, help="work directory [default: a new tmp]")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train under torch.compile [default: yes, except --tiny on a CPU]",
    )
    parser.add_argument("--tolerance", type=float, default=1e-3, help="CPU vs device scores")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="model 'grcnn' uses only the first")
    figures = run_check(args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    failures = figures["failures"]
    log(f"total {figures['seconds']:.0f} s")
    log("gpu check: PASS" if not failures else f"gpu check: FAIL ({', '.join(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
