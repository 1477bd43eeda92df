"""Benchmark: random 256-frame dual-stream (mgd + logmel) training crops per second.

Compares, in the same run and on the same data:

- baseline: one ``.npy`` file per utterance per feature, ``np.load`` of the whole utterance
  then crop (what the GRCNN reference code does), gathered batch-wise like ours;
- ``trainer.data.CropBatches`` over a warm Zarr v3 store and over an HDF5 store,

each with 0 and 2 DataLoader workers. The store is built with ``featstore.build`` from
generated audio (2,000 utterances of 2-4 s by default; cached in ``--workdir``). Every number
is the median of ``--repeats`` timed epochs after one untimed warm-up epoch, served by one
loader with persistent workers (as ``trainer fit`` does).

Usage::

    .venv/bin/python bench/bench_sampler.py [--utts 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import featstore
from trainer.data import CropBatches, CropBatchSampler, crop_plan, make_loader, shard_batches

FEATURES = {"mgd": 256, "logmel": 256}


def make_corpus(root: Path, n_utts: int, seed: int = 0) -> Path:
    """ASVspoof 2019 LA layout, train split only: tones (bona fide) and noise, 2-4 s."""
    flac = root / "ASVspoof2019_LA_train" / "flac"
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    if (protocols / "ASVspoof2019.LA.cm.train.trn.txt").is_file():
        return root
    flac.mkdir(parents=True, exist_ok=True)
    protocols.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_utts):
        utt = f"LA_T_{1000000 + i}"
        t = np.arange(int(16000 * rng.uniform(2.0, 4.0))) / 16000
        bona = i % 10 == 0
        if bona:
            x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
            x += 0.02 * rng.standard_normal(t.size)
        else:
            x = 0.2 * rng.standard_normal(t.size)
        sf.write(flac / f"{utt}.flac", x.astype(np.float32), 16000)
        lines.append(f"LA_0001 {utt} - {'-' if bona else 'A01'} {'bonafide' if bona else 'spoof'}")
    (protocols / "ASVspoof2019.LA.cm.train.trn.txt").write_text("\n".join(lines) + "\n")
    return root


def build_stores(workdir: Path, n_utts: int) -> tuple[str, str]:
    corpus = make_corpus(workdir / "corpus", n_utts)
    out = []
    for name in ("store.zarr", "store.h5"):
        path = workdir / name
        t0 = time.perf_counter()
        featstore.build(
            corpus / "ASVspoof2019_LA_cm_protocols",
            corpus,
            path,
            features=list(FEATURES),
            jobs=2,
            quiet=True,
        )
        print(f"store {path}: ready ({time.perf_counter() - t0:.1f} s)")
        out.append(str(path))
    return out[0], out[1]


def write_npy(workdir: Path, store_path: str) -> Path:
    """The baseline layout: ``npy/<feature>/<utt>.npy`` (whole utterances, all bins)."""
    root = workdir / "npy"
    done = root / ".done"
    if done.is_file():
        return root
    st = featstore.open_store(store_path)
    ids = st.index("train")["utt_id"]
    for feature in FEATURES:
        (root / feature).mkdir(parents=True, exist_ok=True)
        for utt in ids:
            np.save(root / feature / f"{utt}.npy", st.read("train", feature, utt))
    done.write_text("ok\n")
    return root


class NpyCropBatches(torch.utils.data.Dataset):
    """Baseline: the same plan and batches, but np.load of whole per-utterance files."""

    def __init__(self, root: Path, ids: np.ndarray, n_frames: np.ndarray, labels, crop, batch):
        self.root, self.ids, self.n_frames, self.labels = root, ids, n_frames, labels
        self.crop, self.batch = crop, batch

    def plan(self, epoch: int):
        utts, starts = crop_plan(
            self.n_frames, self.labels, crop_frames=self.crop, seed=0, epoch=epoch
        )
        return utts, starts, shard_batches(utts.size, self.batch)

    def num_batches(self, epoch: int = 0) -> int:
        return len(self.plan(epoch)[2])

    def __getitem__(self, key):
        epoch, b = key
        utts, starts, bounds = self.plan(epoch)
        lo, hi = bounds[b]
        out = {}
        for feature, n_bins in FEATURES.items():
            buf = np.empty((hi - lo, self.crop, n_bins), np.float32)
            for i, (u, s) in enumerate(zip(utts[lo:hi], starts[lo:hi], strict=True)):
                x = np.load(self.root / feature / f"{self.ids[u]}.npy")
                idx = (s + np.arange(self.crop)) % x.shape[0]
                buf[i] = x[idx, :n_bins]
            out[feature] = torch.from_numpy(buf)
        return out


class RamCropBatches(NpyCropBatches):
    """Floor: the same crops copied with NumPy slicing from whole arrays held in RAM."""

    def __init__(self, store_path: str, crop: int, batch: int):
        st = featstore.open_store(store_path)
        index = st.index("train")
        self.offsets, n_frames = st.frames("train", "mgd")
        super().__init__(None, index["utt_id"], n_frames, index["label"], crop, batch)
        self.arrays = {f: st.array("train", f)[:] for f in FEATURES}

    def __getitem__(self, key):
        epoch, b = key
        utts, starts, bounds = self.plan(epoch)
        lo, hi = bounds[b]
        out = {}
        for feature, n_bins in FEATURES.items():
            a = self.arrays[feature]
            buf = np.empty((hi - lo, self.crop, a.shape[1]), np.float32)
            for i, (u, s) in enumerate(zip(utts[lo:hi], starts[lo:hi], strict=True)):
                row = min(self.offsets[u] + s, a.shape[0] - self.crop)  # no wrap: same bytes
                buf[i] = a[row : row + self.crop]
            out[feature] = torch.from_numpy(buf)[..., :n_bins]
        return out


def rates(dataset, workers: int, repeats: int) -> list[float]:
    """Crops per second of ``repeats`` whole epochs after one untimed warm-up epoch.

    One loader with persistent workers serves every epoch (as in ``trainer fit``); each
    epoch is timed from ``iter(loader)`` to its last batch.
    """
    sampler = CropBatchSampler(dataset, 0)
    loader = make_loader(dataset, sampler, workers=workers, persistent=True)
    out = []
    for epoch in range(repeats + 1):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        crops = sum(batch["mgd"].shape[0] for batch in loader)
        if epoch:
            out.append(crops / (time.perf_counter() - t0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=2000)
    parser.add_argument("--workdir", default="/tmp/spoofstore-bench-sampler")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    zarr_path, h5_path = build_stores(workdir, args.utts)
    npy_root = write_npy(workdir, zarr_path)
    st = featstore.open_store(zarr_path)
    index = st.index("train")
    _, n_frames = st.frames("train", "mgd")
    print(
        f"{len(index)} utterances, {int(n_frames.sum())} frames "
        f"({n_frames.mean():.0f} per utterance); crops of {args.crop} frames x "
        f"(mgd 256 + logmel 256) bins, batches of {args.batch_size}"
    )
    mb_per_crop = args.crop * sum(FEATURES.values()) * 4 / 1e6
    sources = {
        "npy (np.load + crop)": NpyCropBatches(
            npy_root, index["utt_id"], n_frames, index["label"], args.crop, args.batch_size
        ),
        "zarr (CropBatches)": CropBatches(zarr_path, FEATURES, args.crop, args.batch_size, seed=0),
        "hdf5 (CropBatches)": CropBatches(h5_path, FEATURES, args.crop, args.batch_size, seed=0),
    }
    results = {}
    for name, ds in sources.items():
        for workers in (0, 2):
            results[(name, workers)] = statistics.median(rates(ds, workers, args.repeats))
    ram = RamCropBatches(zarr_path, args.crop, args.batch_size)
    results[("floor: RAM memcpy", 0)] = statistics.median(rates(ram, 0, args.repeats))
    base = results[("npy (np.load + crop)", 0)]
    print(f"\n{'source':24s} {'workers':>7s} {'crops/s':>10s} {'MB/s':>8s} {'x baseline':>11s}")
    for (name, workers), rate in results.items():
        print(f"{name:24s} {workers:7d} {rate:10.0f} {rate * mb_per_crop:8.0f} {rate / base:11.1f}")


if __name__ == "__main__":
    main()
