"""trainer.data: crop plans, crop reading (wrap), worker reproducibility, eval batches.

Also hosts the tiny ASVspoof-2019-LA-layout corpus generator used by the fit tests
(``make_la_corpus`` / ``build_store``): bona fide = tones, spoof = white noise.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featstore.store.frame_array import FrameArray, Segment
from trainer.data import (
    CropBatches,
    CropBatchSampler,
    EvalBatches,
    FeatureNormalizer,
    _read_crops,
    crop_plan,
    eval_segments,
    make_loader,
    shard_batches,
)
from trainer.errors import TrainingError

GRCNN_BINS = {"mgd": 256, "logmel": 256}


def make_la_corpus(
    root: Path,
    n_train: int = 12,
    n_dev: int = 8,
    seed: int = 0,
    seconds: tuple[float, float] = (0.25, 0.8),
) -> Path:
    """Tiny ASVspoof 2019 LA tree: every third utterance bona fide (a tone), the rest noise."""
    rng = np.random.default_rng(seed)
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    for split, n, letter, name in (
        ("train", n_train, "T", "train.trn"),
        ("dev", n_dev, "D", "dev.trl"),
    ):
        flac = root / f"ASVspoof2019_LA_{split}" / "flac"
        flac.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            bona = i % 3 == 0
            utt = f"LA_{letter}_{1000000 + i}"
            t = np.arange(int(16000 * rng.uniform(*seconds))) / 16000
            if bona:
                f0 = rng.uniform(200, 800)
                x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)
            else:
                x = 0.3 * rng.standard_normal(t.size)
            sf.write(flac / f"{utt}.flac", x.astype(np.float32), 16000)
            system = "-" if bona else f"A0{1 + i % 6}"
            key = "bonafide" if bona else "spoof"
            lines.append(f"LA_{i % 4:04d} {utt} - {system} {key}")
        (protocols / f"ASVspoof2019.LA.cm.{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def build_store(
    root: Path, name: str = "store.zarr", features: tuple[str, ...] = ("mgd", "logmel"), **corpus
) -> str:
    """Generate the corpus under ``root`` and build a store of it with featstore.build."""
    import featstore

    corpus_root = make_la_corpus(root / "corpus", **corpus)
    out = root / name
    featstore.build(
        corpus_root / "ASVspoof2019_LA_cm_protocols",
        corpus_root,
        out,
        features=list(features),
        jobs=1,
        quiet=True,
        fsync=False,
    )
    return str(out)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def store(store_path: str):
    import featstore

    return featstore.open_store(store_path)


def _array(a: np.ndarray) -> FrameArray:
    return FrameArray(a.shape, segments=[Segment(0, a.shape[0], a)])


# --- pure planning --------------------------------------------------------------------------


def test_crop_plan_is_a_function_of_seed_and_epoch():
    n = np.arange(5, 105)
    labels = np.arange(100) % 2
    a = crop_plan(n, labels, crop_frames=20, seed=3, epoch=1)
    b = crop_plan(n, labels, crop_frames=20, seed=3, epoch=1)
    c = crop_plan(n, labels, crop_frames=20, seed=3, epoch=2)
    d = crop_plan(n, labels, crop_frames=20, seed=4, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_crop_plan_uses_each_usable_utterance_once():
    n = np.array([10, 0, 50, 3, 7, 40])
    labels = np.array([1, 0, 0, -1, 1, 0])  # row 1 has no frames, row 3 no label
    utts, starts = crop_plan(n, labels, crop_frames=8, seed=0, epoch=0)
    assert sorted(utts.tolist()) == [0, 2, 4, 5]
    assert np.all(starts >= 0)
    assert np.all(starts <= np.maximum(n[utts] - 8, 0))
    assert starts[utts == 4][0] == 0  # shorter than the crop: from frame 0, wrapped later


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(-1, 1), min_size=1, max_size=80),
    crop=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
def test_balanced_plan_splits_classes_equally(labels, crop, seed):
    labels = np.array(labels)
    n = np.random.default_rng(seed).integers(0, 60, labels.size)
    usable = (n > 0) & (labels >= 0)
    utts, starts = crop_plan(n, labels, crop_frames=crop, seed=seed, epoch=0, balance=True)
    assert utts.size == usable.sum()
    assert np.all(usable[utts])
    assert np.all((starts >= 0) & (starts <= np.maximum(n[utts] - crop, 0)))
    present = np.unique(labels[usable])
    if present.size == 2:
        counts = np.bincount(labels[utts], minlength=2)
        assert abs(int(counts[0]) - int(counts[1])) <= 1


def test_balanced_plan_repeats_minority_class():
    labels = np.r_[np.ones(10, int), np.zeros(90, int)]
    utts, _ = crop_plan(np.full(100, 30), labels, crop_frames=8, seed=0, epoch=0, balance=True)
    bona = utts[labels[utts] == 1]
    assert bona.size == 50
    assert set(bona.tolist()) == set(range(10))  # every bona fide utterance, ~5 times each
    assert np.bincount(bona).max() - np.bincount(bona).min() <= 1


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 200), batch=st.integers(1, 32), world=st.integers(1, 5))
def test_shards_are_disjoint_full_and_equally_long(n, batch, world):
    shards = [shard_batches(n, batch, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    flat = [b for s in shards for b in s]
    if n == 0:
        assert flat == []
        return
    assert all(hi - lo == min(batch, n) for lo, hi in flat)
    if n // batch >= world:
        assert len(set(flat)) == len(flat)  # disjoint
        assert len(flat) > (n // batch) - world  # at most world-1 batches dropped


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 30),
    start_frac=st.floats(0, 0.999),
    length=st.integers(1, 90),
)
def test_read_crops_wraps_like_modular_indexing(n, start_frac, length):
    data = np.arange(200 * 3, dtype=np.float32).reshape(200, 3)
    offsets = np.array([7])
    n_frames = np.array([n])
    start = int(start_frac * n)
    out = np.full((1, length, 3), -1.0, np.float32)
    _read_crops(_array(data), offsets, n_frames, np.array([0]), np.array([start]), length, out)
    expected = data[7 + (start + np.arange(length)) % n]
    np.testing.assert_array_equal(out[0], expected)


def test_eval_segments_windows_and_whole():
    n = np.array([5, 0, 9, 2])
    utts, starts, lengths = eval_segments(n, None, None)
    assert utts.tolist() == [0, 2, 3] and starts.tolist() == [0, 0, 0]
    assert lengths.tolist() == [5, 9, 2]
    utts, starts, lengths = eval_segments(n, 4, 2)
    assert utts.tolist() == [0, 2, 2, 2, 3]
    assert starts.tolist() == [0, 0, 2, 4, 0]
    assert set(lengths.tolist()) == {4}


def test_normalizer_standardises_per_bin():
    mean, std = np.array([1.0, -2.0]), np.array([2.0, 0.0])
    norm = FeatureNormalizer({"f": (mean, std)})
    x = torch.tensor([[[3.0, -1.0], [1.0, -2.0]]])
    out = norm({"f": x, "label": torch.tensor([1])})
    torch.testing.assert_close(out["f"], torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    assert torch.equal(out["label"], torch.tensor([1]))


# --- over a real store ----------------------------------------------------------------------


def test_crops_are_the_same_frames_of_every_feature(store):
    ds = CropBatches(store, GRCNN_BINS, 24, 4, seed=1)
    utts, starts, _, _ = ds.plan(0)
    batch = ds[(0, 0)]
    assert set(batch) == {"mgd", "logmel", "label", "index", "view"}
    assert not batch["view"].any()  # a store without augmented views: the clean view
    assert batch["mgd"].shape == (4, 24, 256)  # the 257th MGD bin is cut
    assert batch["logmel"].shape == (4, 24, 256)
    index = store.index("train")
    for i in range(4):
        u, s = int(utts[i]), int(starts[i])
        assert batch["index"][i] == u
        assert batch["label"][i] == index["label"][u]
        for feature in ("mgd", "logmel"):
            full = store.read("train", feature, index["utt_id"][u])
            want = full[(s + np.arange(24)) % full.shape[0], :256]
            np.testing.assert_array_equal(batch[feature][i].numpy(), want)


def test_short_utterances_are_wrapped(store):
    _, n = store.frames("train", "mgd")
    crop = int(n.max()) + 5  # longer than every utterance
    ds = CropBatches(store, {"logmel": 256}, crop, 2, seed=0)
    batch = ds[(0, 0)]
    utt = int(batch["index"][0])
    full = store.read("train", "logmel", store.index("train")["utt_id"][utt])
    x = batch["logmel"][0].numpy()
    np.testing.assert_array_equal(x[: full.shape[0]], full)
    np.testing.assert_array_equal(x[full.shape[0] : 2 * full.shape[0]], full[: crop - len(full)])


def _epochs(ds: CropBatches, epochs: list[int], workers: int) -> list[list[dict]]:
    """Batches (copied) of several epochs from one loader with persistent workers."""
    sampler = CropBatchSampler(ds, epochs[0])
    loader = make_loader(ds, sampler, workers=workers, persistent=True)
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append([{k: v.clone() for k, v in b.items()} for b in loader])
    return out


def test_same_crops_with_0_and_2_workers(store_path):
    ds = CropBatches(store_path, GRCNN_BINS, 16, 3, seed=5)
    serial = _epochs(ds, [0, 1, 2], workers=0)
    parallel = _epochs(ds, [0, 1, 2], workers=2)  # batches travel through shared slots
    for a, b in zip(serial, parallel, strict=True):
        assert len(a) == len(b) == 4
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys()
            assert all(torch.equal(x[k], y[k]) for k in x)
            assert x["mgd"].shape == (3, 16, 256)
    direct = [ds[(1, b)] for b in range(4)]
    assert all(
        torch.equal(x["logmel"], y["logmel"]) for x, y in zip(direct, serial[1], strict=True)
    )
    assert not all(
        torch.equal(x["index"], y["index"]) for x, y in zip(serial[0], serial[1], strict=True)
    )


def test_dataset_pickles_without_store_handles(store):
    ds = CropBatches(store, GRCNN_BINS, 16, 4, seed=0)
    ds[(0, 0)]  # opens arrays in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.view._store is None and clone.view._arrays == {}
    assert clone.view.path == store.path
    for k, v in ds[(0, 1)].items():
        assert torch.equal(v, clone[(0, 1)][k])
    ds.view._pid = -1  # as after a fork: the next access reopens the store
    ds[(0, 0)]
    assert ds.view._store is not store


def test_rank_shards_are_disjoint(store_path):
    full = CropBatches(store_path, GRCNN_BINS, 16, 2, seed=0)
    ranks = [
        CropBatches(store_path, GRCNN_BINS, 16, 2, seed=0, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [ranks[r][(0, b)]["index"] for r in (0, 1) for b in range(ranks[r].num_batches(0))]
    assert ranks[0].num_batches(0) == ranks[1].num_batches(0) == full.num_batches(0) // 2
    both = torch.cat(seen).tolist()
    assert len(both) == len(set(both))


def test_eval_batches_cover_each_utterance_once_in_equal_length_batches(store):
    ds = EvalBatches(store, GRCNN_BINS, "dev", batch_size=3)
    _, n = store.frames("dev", "mgd")
    index = store.index("dev")
    seen = []
    for b in range(len(ds)):
        batch = ds[b]
        lengths = {int(n[u]) for u in batch["index"]}
        assert len(lengths) == 1 and batch["mgd"].shape[1] == lengths.pop()
        for i, u in enumerate(batch["index"].tolist()):
            full = store.read("dev", "mgd", index["utt_id"][u])
            np.testing.assert_array_equal(batch["mgd"][i].numpy(), full[:, :256])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(index)))
    again = EvalBatches(store, GRCNN_BINS, "dev", batch_size=3)
    assert [b[0].tolist() for b in again.batches] == [b[0].tolist() for b in ds.batches]


def test_eval_windows_average_per_utterance(store):
    ds = EvalBatches(store, GRCNN_BINS, "dev", batch_size=4, window=8, hop=4)
    idx = np.concatenate([ds[b]["index"].numpy() for b in range(len(ds))])
    assert all(ds[b]["mgd"].shape[1] == 8 for b in range(len(ds)))
    scores = idx.astype(float)  # score of a window = its utterance row
    np.testing.assert_array_equal(ds.reduce(idx, scores), np.arange(len(store.index("dev"))))


def test_normalizer_from_store_uses_train_stats(store):
    norm = FeatureNormalizer.from_store(store, GRCNN_BINS)
    mean, std = store.stats("mgd")
    x = store.read("train", "mgd", store.index("train")["utt_id"][0])[:, :256]
    out = norm({"mgd": torch.from_numpy(x[None])})["mgd"][0].numpy()
    np.testing.assert_allclose(out, (x - mean[:256]) / std[:256], rtol=1e-5, atol=1e-6)


def test_missing_feature_is_a_training_error(store):
    with pytest.raises(TrainingError, match="fbank"):
        CropBatches(store, {"fbank": 64}, 16, 2, seed=0)
    with pytest.raises(TrainingError, match="bins"):
        CropBatches(store, {"mgd": 300}, 16, 2, seed=0)


def test_hdf5_store_gives_the_same_crops(tmp_path, store):
    h5 = build_store(tmp_path, "store.h5")
    a = CropBatches(store, GRCNN_BINS, 16, 4, seed=2)[(0, 1)]
    b = CropBatches(h5, GRCNN_BINS, 16, 4, seed=2)[(0, 1)]
    assert all(torch.equal(a[k], b[k]) for k in a)
