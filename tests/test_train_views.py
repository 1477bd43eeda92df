"""trainer.data over augmented views: view plans, crops per utterance, reading each view.

Stores with augmented views come from featstore (``Store.n_views``, ``Store.view_mask``,
``Store.array(split, feature, view=k)``). These tests give a real store fake views by
monkeypatching :class:`featstore.store.reader.Store`: view ``k`` of every frame is the clean
frame plus ``1000 * k``, so a batch shows which view each crop came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data import _epochs, build_store

from featstore.errors import StoreError
from featstore.store.frame_array import FrameArray, Segment
from featstore.store.reader import Store
from trainer.data import CropBatches, crop_plan, store_view_mask, view_plan
from trainer.errors import TrainingError

BINS = {"logmel": 256}
OFFSET = 1000.0
"""View ``k`` of a frame = clean frame + ``k * OFFSET`` in the fake stores."""


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_store(tmp_path_factory.mktemp("views"), features=("logmel",))


def fake_mask(n_utts: int) -> np.ndarray:
    """3 views; utterance 0 lost view 2, utterance 1 lost both augmented views."""
    mask = np.ones((n_utts, 3), dtype=bool)
    mask[0, 2] = False
    mask[1, 1:] = False
    return mask


@pytest.fixture
def with_views(monkeypatch: pytest.MonkeyPatch):
    """Give every store 3 views (clean + 2) of its train split, with :func:`fake_mask`."""
    real_array = Store.array

    def n_views(self, split):
        return 3 if split == "train" else 1

    def view_mask(self, split):
        return fake_mask(self.n_utterances(split))

    def array(self, split, feature, view=0):
        clean = real_array(self, split, feature)
        if view == 0:
            return clean
        data = clean[0 : clean.shape[0]] + np.float32(view * OFFSET)
        return FrameArray(data.shape, segments=[Segment(0, data.shape[0], data)])

    monkeypatch.setattr(Store, "n_views", n_views, raising=False)
    monkeypatch.setattr(Store, "view_mask", view_mask, raising=False)
    monkeypatch.setattr(Store, "array", array)


# --- view plans (pure) ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    mode=st.sampled_from(["all", "clean", "aug"]),
    clean_prob=st.one_of(st.none(), st.floats(0, 1)),
)
def test_view_plan_never_picks_a_quarantined_view(seed, mode, clean_prob):
    rng = np.random.default_rng(seed)
    mask = rng.random((30, 4)) < 0.5
    mask[:, 0] = True
    utts = rng.integers(0, 30, 200)
    views = view_plan(utts, mask, views=mode, clean_prob=clean_prob, seed=seed, epoch=1)
    assert views.dtype == np.int64 and views.shape == utts.shape
    assert np.all(mask[utts, views])
    if mode == "clean":
        assert not views.any()
    if mode == "aug":  # the clean view only where no augmented view is left
        has_aug = mask[utts, 1:].any(axis=1)
        assert np.all((views > 0) == has_aug)


def test_view_plan_is_a_function_of_seed_and_epoch():
    mask = np.ones((50, 4), dtype=bool)
    utts = np.arange(50)
    a = view_plan(utts, mask, seed=1, epoch=2)
    assert np.array_equal(a, view_plan(utts, mask, seed=1, epoch=2))
    assert not np.array_equal(a, view_plan(utts, mask, seed=1, epoch=3))
    assert not np.array_equal(a, view_plan(utts, mask, seed=2, epoch=2))
    assert set(a.tolist()) == {0, 1, 2, 3}  # uniform over all views by default


def test_clean_prob_sets_the_share_of_clean_crops():
    mask = np.ones((10, 3), dtype=bool)
    utts = np.tile(np.arange(10), 1000)
    for p in (0.0, 0.3, 1.0):
        views = view_plan(utts, mask, views="all", clean_prob=p, seed=0, epoch=0)
        assert abs(np.mean(views == 0) - p) < 0.02
    views = view_plan(utts, mask, views="all", clean_prob=0.3, seed=0, epoch=0)
    assert abs(np.mean(views == 1) - 0.35) < 0.02  # the rest uniform over augmented views


def test_a_single_view_mask_gives_the_clean_view():
    utts = np.arange(20)
    for mode in ("all", "clean", "aug"):
        assert not view_plan(utts, np.ones((20, 1), bool), views=mode, seed=0, epoch=0).any()


# --- crops per utterance (pure) ---------------------------------------------------------------


def test_crops_per_utt_repeats_every_utterance_with_stratified_starts():
    n = np.array([1000, 20, 500, 0])
    labels = np.array([1, 0, 0, 1])
    utts, starts = crop_plan(n, labels, crop_frames=17, seed=0, epoch=0, crops_per_utt=8)
    assert np.bincount(utts, minlength=4).tolist() == [8, 8, 8, 0]
    for u in (0, 2):
        room = n[u] - 17
        s = np.sort(starts[utts == u])
        strata = np.floor(s * 8 / (room + 1)).astype(int)
        assert strata.tolist() == list(range(8))  # one crop in each eighth of the utterance
    assert np.all(starts[utts == 1] <= 3)


def test_one_crop_per_utt_is_the_one_crop_plan():
    n, labels = np.arange(5, 105), np.arange(100) % 2
    a = crop_plan(n, labels, crop_frames=20, seed=3, epoch=1)
    b = crop_plan(n, labels, crop_frames=20, seed=3, epoch=1, crops_per_utt=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # what the one-crop plan has always been (resumed runs of earlier versions rely on it)
    rng = np.random.default_rng([3, 1])
    utts = rng.permutation(np.flatnonzero((n > 0) & (labels >= 0)))
    assert np.array_equal(a[0], utts)
    assert np.array_equal(a[1], rng.integers(0, np.maximum(n[utts] - 20, 0) + 1))


def test_balanced_plan_with_several_crops_per_utt():
    labels = np.r_[np.ones(10, int), np.zeros(30, int)]
    utts, _ = crop_plan(
        np.full(40, 100), labels, crop_frames=8, seed=0, epoch=0, balance=True, crops_per_utt=4
    )
    assert utts.size == 160 and np.bincount(labels[utts]).tolist() == [80, 80]


# --- reading views of a store -----------------------------------------------------------------


def test_crops_come_from_their_view(store_path, with_views):
    ds = CropBatches(store_path, BINS, 12, 4, seed=0, views="all")
    clean = CropBatches(store_path, BINS, 12, 4, seed=0, views="clean")
    seen = set()
    for b in range(ds.num_batches(0)):
        x, y = ds[(0, b)], clean[(0, b)]
        assert torch.equal(x["index"], y["index"])  # the same crops, other views
        assert not y["view"].any()
        offset = (x["view"].float() * OFFSET).view(-1, 1, 1)
        torch.testing.assert_close(x["logmel"], y["logmel"] + offset)
        mask = fake_mask(ds.n_frames.size)
        assert np.all(mask[x["index"].numpy(), x["view"].numpy()])
        seen |= set(x["view"].tolist())
    assert seen == {0, 1, 2}


def test_views_are_the_same_with_0_and_2_workers_and_across_ranks(store_path, with_views):
    ds = CropBatches(store_path, BINS, 12, 3, seed=5, views="aug")
    serial = _epochs(ds, [0, 1], workers=0)
    parallel = _epochs(ds, [0, 1], workers=2)  # through the shared slots
    for a, b in zip(serial, parallel, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert all(b["view"][b["index"] != 1].min() >= 1 for b in serial[0])
    ranks = [
        CropBatches(store_path, BINS, 12, 3, seed=5, views="aug", rank=r, world_size=2)
        for r in (0, 1)
    ]
    for r in (0, 1):
        for i in range(ranks[r].num_batches(0)):
            assert torch.equal(ranks[r][(0, i)]["view"], serial[0][r + 2 * i]["view"])


def test_aug_views_on_a_store_without_them_are_refused(store_path):
    with pytest.raises(TrainingError, match=r"no augmented views.*--views clean"):
        CropBatches(store_path, BINS, 12, 4, seed=0, views="aug")
    for mode in ("all", "clean"):  # a one-view store trains on its clean view
        ds = CropBatches(store_path, BINS, 12, 4, seed=0, views=mode, clean_prob=0.2)
        assert not ds[(0, 0)]["view"].any()


def test_a_view_mask_of_the_wrong_shape_is_a_store_error(store_path, with_views, monkeypatch):
    monkeypatch.setattr(Store, "view_mask", lambda self, split: np.ones((2, 3), bool))
    import featstore

    with pytest.raises(StoreError, match=r"view mask has shape \(2, 3\), expected"):
        store_view_mask(featstore.open_store(store_path), "train", 12)
