"""Benchmark: GRCNN training-step throughput in fp32 and bf16 against a straightforward one.

Compares ``trainer.models.build_model("grcnn")`` with :class:`ReferenceGRCNN`, the same
architecture written the obvious way: window by window, every gate with its own input and
state convolution, and maxout as a Python ``torch.autograd.Function``. Both get identical
weights (copied across) and are checked to give the same logits and gradients before timing.

A step is forward + backward + AdamW on a batch of ``--batch`` (8) utterances of
``--frames`` (256) frames of both streams on the CPU. Timed: the reference in float32 (the
baseline), the GRCNN in float32 and the GRCNN under bf16 autocast; the trainer's default
CPU precision (``--precision auto``: bf16 on CPUs with AVX-512 BF16 or AMX, else fp32) is
marked. Steps of all variants alternate (after ``--warmup`` steps each), so load on a
shared machine hits them alike; the script prints medians, speed-ups against the baseline,
the load average, and the achieved GFLOP/s (convolution/linear FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode``) against a large matmul in the same precision
measured between the steps of the same run.

``--memory`` instead measures the peak RSS (``ru_maxrss`` of a child process per setting)
of one training step at ``--batch`` 32 with and without ``--checkpoint-windows``.

Usage::

    .venv/bin/python bench/bench_grcnn.py [--steps 3] [--warmup 1] [--batch 8] [--threads N]
    .venv/bin/python bench/bench_grcnn.py --memory --batch 32

The reference model is also imported by ``tests/test_models.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainer.cpu_features import native_bf16_source
from trainer.inference import autocast, resolve_precision
from trainer.models import build_model
from trainer.models.grcnn import CELLS, GRCNN, WINDOW, WINDOW_HOP

# --- reference implementation -----------------------------------------------------------------


class _PairMaxout(torch.autograd.Function):
    """Maxout over adjacent channel pairs (dim 1) with a hand-written backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        pairs = x.unflatten(1, (x.shape[1] // 2, 2))
        values, index = pairs.max(dim=2)
        ctx.save_for_backward(index)
        ctx.shape = pairs.shape
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.shape)
        out.scatter_(2, index.unsqueeze(2), grad.unsqueeze(2))
        return out.flatten(1, 2)


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias)


class ReferenceCell(nn.Module):
    """One ConvGRU cell, one window at a time, one convolution per gate and input."""

    def __init__(self, in_channels: int, width: int, k: int):
        super().__init__()
        state = width // 2
        self.x_z, self.x_r, self.x_c = (_conv(in_channels, width, k, True) for _ in range(3))
        self.h_z, self.h_r, self.h_c = (_conv(state, width, k, False) for _ in range(3))

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(_PairMaxout.apply(self.x_z(x) + self.h_z(h)))
        r = torch.sigmoid(_PairMaxout.apply(self.x_r(x) + self.h_r(h)))
        c = torch.tanh(_PairMaxout.apply(self.x_c(x) + self.h_c(r * h)))
        return z * h + (1 - z) * c


class ReferenceGRCNN(nn.Module):
    """Window-by-window GRCNN (eval semantics: no dropout), weights loadable from GRCNN."""

    def __init__(self, streams: tuple[str, ...] = ("mgd", "logmel"), n_bins: int = 256):
        super().__init__()
        self.features = streams
        self.cells = nn.ModuleDict(
            {f: nn.ModuleList(ReferenceCell(*c) for c in CELLS) for f in streams}
        )
        flat = (CELLS[-1][1] // 2) * (n_bins // 8) * WINDOW
        self.embedding = nn.ModuleDict({f: nn.Linear(flat, 960) for f in streams})
        self.classifier = nn.Linear(480 * len(streams), 2)

    def stream(self, feature: str, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < WINDOW:  # wrap short inputs
            x = x[:, torch.arange(WINDOW) % x.shape[1]]
        batch, n_frames, _ = x.shape
        cells = self.cells[feature]
        states = [None] * len(cells)
        out = None
        for start in range(0, n_frames - WINDOW + 1, WINDOW_HOP):
            inp = x[:, start : start + WINDOW].transpose(1, 2).unsqueeze(1)  # (B, 1, F, 32)
            for i, cell in enumerate(cells):
                h = states[i]
                if h is None:
                    width = cell.h_z.out_channels
                    h = inp.new_zeros(batch, width // 2, *inp.shape[2:])
                states[i] = cell.step(inp, h)
                inp = F.max_pool2d(states[i], (2, 1))
            out = inp
        return _PairMaxout.apply(self.embedding[feature](out.flatten(1)))

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        emb = [self.stream(f, features[f]) for f in self.features]
        return self.classifier(torch.cat(emb, dim=1))

    @torch.no_grad()
    def load_from(self, model: GRCNN) -> ReferenceGRCNN:
        """Copy ``model``'s weights (fused gate convolutions split per gate)."""
        for f in self.features:
            stream = model.streams[f]
            for ref, cell in zip(self.cells[f], stream.cells, strict=True):
                w = cell.width
                for i, g in enumerate("zrc"):
                    conv = getattr(ref, f"x_{g}")
                    conv.weight.copy_(cell.input_conv.weight[i * w : (i + 1) * w])
                    conv.bias.copy_(cell.input_conv.bias[i * w : (i + 1) * w])
                ref.h_z.weight.copy_(cell.state_conv.weight[:w])
                ref.h_r.weight.copy_(cell.state_conv.weight[w:])
                ref.h_c.weight.copy_(cell.candidate_conv.weight)
            self.embedding[f].load_state_dict(stream.embedding.state_dict())
        self.classifier.load_state_dict(model.classifier.state_dict())
        return self


# --- benchmark --------------------------------------------------------------------------------


def _batch(batch: int, frames: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {f: torch.randn(batch, frames, 256, generator=g) for f in ("mgd", "logmel")}
    y = torch.randint(0, 2, (batch,), generator=g)
    return x, y


def _check_equal(model: GRCNN, ref: ReferenceGRCNN) -> float:
    """Max |difference| of logits and gradients (eval mode, so no dropout)."""
    model.eval()
    ref.eval()
    x, y = _batch(2, 72, seed=1)
    worst = 0.0
    for m in (model, ref):
        m.zero_grad()
    out_m = model(**x)
    out_r = ref(**x)
    F.cross_entropy(out_m, y).backward()
    F.cross_entropy(out_r, y).backward()
    worst = (out_m - out_r).abs().max().item()
    gm = model.streams["mgd"].cells[0].state_conv.weight.grad
    gr = torch.cat([ref.cells["mgd"][0].h_z.weight.grad, ref.cells["mgd"][0].h_r.weight.grad])
    worst = max(worst, (gm - gr).abs().max().item())
    if worst > 1e-5:
        raise AssertionError(f"GRCNN and the reference differ by {worst:g}")
    return worst


def _step_timer(model: nn.Module, batch: int, frames: int, precision: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = _batch(batch, frames)
    device = torch.device("cpu")

    def step() -> tuple[float, float]:
        """Wall and CPU seconds of one step (CPU time: what load does not inflate, at one
        thread; with several, OpenMP threads spinning on a busy machine count too)."""
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(**x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    return step


def _train_flops(model: nn.Module, frames: int) -> float:
    """FLOPs of forward + backward of one utterance (conv, linear, matmul)."""
    x, y = _batch(1, frames)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(**x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` (median of ``repeats``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def time_steps(args: argparse.Namespace) -> None:
    """Time the variants' training steps, alternating (see the module docstring)."""
    torch.manual_seed(0)
    model = build_model("grcnn")
    ref = ReferenceGRCNN().load_from(model)
    diff = _check_equal(model, ref)
    model.train()
    ref.train()  # the reference has no dropout; ours keeps its (cheap) dropout on
    default = resolve_precision("auto", torch.device("cpu"))
    native, source = native_bf16_source()
    print(f"outputs and gradients identical to the reference: max |diff| = {diff:.2e}")
    print(
        f"trainer default CPU precision: {default} (native bf16: {native}, {source}); "
        f"load average at start {_load()}"
    )
    flops = _train_flops(model, args.frames) * args.batch
    print(
        f"batch {args.batch} x {args.frames} frames, {torch.get_num_threads()} threads, "
        f"{flops / 1e9:.0f} GFLOP per step (conv + linear, forward + backward)"
    )
    variants = {
        "reference fp32": (ref, "fp32"),
        "grcnn fp32": (model, "fp32"),
        "grcnn bf16": (model, "bf16"),
    }
    timers = {
        name: _step_timer(net, args.batch, args.frames, prec)
        for name, (net, prec) in variants.items()
    }
    for _ in range(args.warmup):
        for step in timers.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in timers}
    cpu: dict[str, list[float]] = {name: [] for name in timers}
    peaks: dict[str, list[float]] = {p: [_matmul_gflops(d)] for p, d in DTYPES.items()}
    for _ in range(args.steps):
        for name, step in timers.items():
            wall, seconds = step()
            times[name].append(wall)
            cpu[name].append(seconds)
        for p, d in DTYPES.items():
            peaks[p].append(_matmul_gflops(d))
    peak = {p: statistics.median(v) for p, v in peaks.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    base = med["reference fp32"]
    for name, (_, prec) in variants.items():
        gflops = flops / med[name] / 1e9
        mark = "  <- trainer default" if name == f"grcnn {default}" else ""
        print(
            f"{name:15s} median {med[name]:7.2f} s/step  {args.batch / med[name]:6.3f} utt/s  "
            f"{base / med[name]:5.2f}x  {gflops:6.1f} GFLOP/s = {gflops / peak[prec]:4.0%} of "
            f"{prec} matmul; CPU {med_cpu[name]:6.2f} s/step "
            f"{med_cpu['reference fp32'] / med_cpu[name]:5.2f}x  "
            f"(steps: {', '.join(f'{t:.2f}' for t in times[name])}){mark}"
        )
    for p, v in peak.items():
        print(f"matmul 2048x2048 {p}: {v:.1f} GFLOP/s (median of {len(peaks[p])} runs of 5)")
    speedup = base / med[f"grcnn {default}"]
    speedup_cpu = med_cpu["reference fp32"] / med_cpu[f"grcnn {default}"]
    print(
        f"speed-up at the trainer default ({default}) vs reference: {speedup:.2f}x wall, "
        f"{speedup_cpu:.2f}x CPU time"
    )
    print(f"load average at end {_load()}")


def _rss_child(args: argparse.Namespace) -> None:
    """One training step; prints the process's peak RSS in bytes (run as a child)."""
    torch.manual_seed(0)
    model = build_model("grcnn").train()
    model.checkpoint_windows = args.checkpoint_windows
    step = _step_timer(model, args.batch, args.frames, args.precision)
    seconds, _ = step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"{rss} {seconds:.2f}")


def measure_memory(args: argparse.Namespace) -> None:
    """Peak RSS of one step per setting, each in a fresh child process."""
    default = resolve_precision("auto", torch.device("cpu"))
    settings = [(default, False), (default, True)]
    if default != "fp32":  # fp32 without checkpointing: ~12 GB at batch 32 (README)
        settings.append(("fp32", True))
    print(f"batch {args.batch} x {args.frames} frames, one training step per child process")
    for precision, ck in settings:
        cmd = [sys.executable, __file__, "--rss-child", "--batch", str(args.batch)]
        cmd += ["--frames", str(args.frames), "--precision", precision]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--checkpoint-windows"] if ck else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{precision} checkpoint_windows={ck}: failed ({done.stderr.strip()[-300:]})")
            continue
        rss, seconds = done.stdout.split()[-2:]
        print(
            f"{precision:5s} checkpoint-windows {'on ' if ck else 'off'}: peak RSS "
            f"{int(rss) / 1e9:5.2f} GB  (step {seconds} s, load average {_load()})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--memory", action="store_true", help="peak RSS instead of timing")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-windows", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        _rss_child(args)
    elif args.memory:
        measure_memory(args)
    else:
        time_steps(args)


if __name__ == "__main__":
    main()
