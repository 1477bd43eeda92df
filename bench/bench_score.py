"""Benchmark: utterances per second of ``trainer.score`` on CPU, per model.

For each model (grcnn, vgg10, lcnn; default sizes, untrained weights seeded with 0, saved
as a checkpoint in a run-like directory with the ``config`` record ``trainer fit`` writes),
times the whole ``trainer.score(run, split=...)`` call (open the store, load the checkpoint,
read and normalise every segment from the store, forward passes, write the score file and its
sidecar) and, interleaved with it in the same run, the *floor*: only the model's forward
passes over the very same batches (the exact batches of :mod:`trainer.score_batches`), read
and normalised beforehand (not timed). ``ratio`` = score time / floor time, i.e. what scoring
costs beyond the model's own arithmetic. ``batches`` is the number of forward passes; ``old``
the number the previous plan (:class:`trainer.data.EvalBatches`: only utterances of exactly
equal length share a batch) needs for the same split. The load average is printed before
and after: the development machine is shared, so compare ratios, not absolute figures, across
runs.

The store is built once with ``featstore.build`` from generated audio (tones = bona fide,
noise = spoof; ASVspoof 2019 LA layout) into ``--workdir``: a small train split (for the
normalisation statistics), an ``eval`` split of ``--utts`` utterances and a ``dev`` split of
``--small-utts`` utterances, all of ``--seconds`` (default 3-4 s). GRCNN scores whole
utterances through a recurrence over 32-frame windows and costs a fraction of a second per
utterance on a CPU, so it is timed on ``dev`` by default (``--grcnn-split eval`` to change).
Every figure is the median of ``--repeats`` runs after one untimed warm-up run.
``--compare-old`` also times the forward passes over the previous plan's batches (column
``old x``: old floor time / new floor time, the speed-up of exact batching in the same run).

Usage::

    .venv/bin/python bench/bench_score.py [--utts 200] [--small-utts 32] [--repeats 3]
        [--models grcnn,vgg10,lcnn] [--threads N] [--precision bf16] [--seconds 3,4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import featstore
import trainer
from trainer import checkpoint
from trainer.config import FitConfig
from trainer.data import EvalBatches, FeatureNormalizer
from trainer.inference import autocast
from trainer.runs import ModelRecord
from trainer.score_batches import StoreFrames, score_batches

FEATURES = ("mgd", "logmel", "fbank", "lfcc")


def make_corpus(
    root: Path, counts: dict[str, int], seconds: tuple[float, float] = (3.0, 4.0), seed: int = 0
) -> Path:
    """ASVspoof 2019 LA layout: every 10th utterance a tone (bona fide), the rest noise."""
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    names = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        flac = root / f"ASVspoof2019_LA_{split}" / "flac"
        flac.mkdir(parents=True, exist_ok=True)
        protocols.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            utt = f"LA_{split[0].upper()}_{1000000 + i}"
            t = np.arange(int(16000 * rng.uniform(*seconds))) / 16000
            bona = i % 10 == 0
            if bona:
                x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
                x += 0.02 * rng.standard_normal(t.size)
            else:
                x = 0.2 * rng.standard_normal(t.size)
            sf.write(flac / f"{utt}.flac", x.astype(np.float32), 16000)
            system = "-" if bona else "A01"
            lines.append(f"LA_0001 {utt} - {system} {'bonafide' if bona else 'spoof'}")
        (protocols / f"ASVspoof2019.LA.cm.{names[split]}.txt").write_text("\n".join(lines) + "\n")
    return root


def build_store(workdir: Path, n_eval: int, n_dev: int, seconds: tuple[float, float]) -> str:
    """The store (cached: rebuilt only when the utterance counts or durations change)."""
    tag = f"eval{n_eval}-dev{n_dev}-s{seconds[0]:g}-{seconds[1]:g}"
    path = workdir / f"store-{tag}.zarr"
    if (workdir / f".{tag}.done").is_file():
        return str(path)
    counts = {"train": 20, "dev": n_dev, "eval": n_eval}
    corpus = make_corpus(workdir / f"corpus-{tag}", counts, seconds)
    t0 = time.perf_counter()
    featstore.build(
        corpus / "ASVspoof2019_LA_cm_protocols", corpus, path, features=list(FEATURES), quiet=True
    )
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    (workdir / f".{tag}.done").write_text("ok\n")
    return str(path)


def make_run(workdir: Path, store_path: str, name: str) -> Path:
    """A run directory holding ``best.pt`` with untrained weights (seed 0)."""
    torch.manual_seed(0)
    net = trainer.build_model(name)
    st = featstore.open_store(store_path)
    run = workdir / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    info = {
        "fit": asdict(FitConfig(store=store_path, model=name, out=str(run), device="cpu")),
        "store": {"path": store_path, "fingerprint": st.fingerprint, "format": st.format},
        "model": ModelRecord.of(name, {}, net).to_dict(),
        "runtime": {"device": "cpu"},
    }
    state = {"format": 1, "model": net.state_dict(), "epoch": 0, "config": info}
    checkpoint.save_checkpoint(run / "best.pt", state)
    return run


def floor_batches(store_path: str, name: str, split: str, batch_size: int) -> tuple:
    """The model, the normalised batches ``trainer.score`` feeds it (read up front), and the
    number of batches of the previous plan (equal lengths only)."""
    torch.manual_seed(0)
    net = trainer.build_model(name).eval()
    net.to(memory_format=net.inference_memory_format)  # as trainer.score loads it
    features = {f: int(net.n_bins[f]) for f in net.features}
    st = featstore.open_store(store_path)
    frames = StoreFrames(st, split, list(features))
    ds, _ = score_batches(frames, net, features, batch_size=batch_size)
    old = EvalBatches(st, features, split, batch_size, net.eval_window, net.eval_hop)
    norm = FeatureNormalizer.from_store(st, features)

    def read(dataset):
        batches = []
        for b in range(len(dataset)):
            batch = dataset[b]
            x = norm({f: batch[f] for f in features})
            batches.append({f: x[f].contiguous() for f in features})
        return batches

    return net, read(ds), read(old)


def time_floor(net: torch.nn.Module, batches: list, precision: str) -> float:
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        for x in batches:
            logits = net(**x).float()
            (logits[:, 1] - logits[:, 0]).numpy()
    return time.perf_counter() - t0


def time_score(run: Path, split: str, batch_size: int, precision: str) -> float:
    t0 = time.perf_counter()
    trainer.score(
        run=run,
        split=split,
        out=run / f"scores_{split}.txt",
        batch_size=batch_size,
        device="cpu",
        precision=precision,
        progress=False,
    )
    return time.perf_counter() - t0


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=200, help="eval utterances (2-4 s)")
    parser.add_argument("--small-utts", type=int, default=32, help="dev utterances")
    parser.add_argument("--seconds", default="3,4", help="utterance durations: MIN,MAX")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--compare-old", action="store_true", help="time the old plan's floor")
    parser.add_argument("--models", default="grcnn,vgg10,lcnn")
    parser.add_argument("--grcnn-split", default="dev")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--workdir", default="/tmp/spoofstore-bench-score")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lo, hi = (float(v) for v in args.seconds.split(","))
    store_path = build_store(workdir, args.utts, args.small_utts, (lo, hi))
    st = featstore.open_store(store_path)
    print(
        f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}, "
        f"{args.precision}, utterances {lo:g}-{hi:g} s, load average {load_average()}"
    )

    rows = []
    for name in args.models.split(","):
        split = args.grcnn_split if name == "grcnn" else "eval"
        run = make_run(workdir, store_path, name)
        net, batches, old_batches = floor_batches(store_path, name, split, args.batch_size)
        n = st.n_utterances(split)
        seconds = float(st.index(split)["duration"].sum())
        time_score(run, split, args.batch_size, args.precision)  # warm-up (untimed)
        ours, floor, old = [], [], []
        for _ in range(args.repeats):
            ours.append(time_score(run, split, args.batch_size, args.precision))
            floor.append(time_floor(net, batches, args.precision))
            if args.compare_old:
                old.append(time_floor(net, old_batches, args.precision))
        t_ours, t_floor = statistics.median(ours), statistics.median(floor)
        speedup = statistics.median(old) / t_floor if old else float("nan")
        nb = (len(batches), len(old_batches))
        rows.append((name, split, n, seconds, nb, speedup, t_ours, t_floor))
        print(f"{name}: {n / t_ours:.2f} utt/s (floor {n / t_floor:.2f})", flush=True)

    print(
        f"\n{'model':7s} {'split':5s} {'utts':>5s} {'audio s':>8s} {'batches':>8s} "
        f"{'old':>5s} {'utt/s':>8s} {'xRT':>7s} {'floor utt/s':>12s} {'ratio':>6s} {'old x':>6s}"
    )
    for name, split, n, seconds, nb, speedup, t_ours, t_floor in rows:
        print(
            f"{name:7s} {split:5s} {n:5d} {seconds:8.1f} {nb[0]:8d} {nb[1]:5d} {n / t_ours:8.2f} "
            f"{seconds / t_ours:6.1f}x {n / t_floor:12.2f} {t_ours / t_floor:6.2f} {speedup:6.2f}"
        )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
