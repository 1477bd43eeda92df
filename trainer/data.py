"""Crop samplers and datasets over a feature store (memory-mapped, batch-at-a-time).

Training reads random crops of ``crop_frames`` frames straight out of the store's
concatenated ``(total_frames, n_bins)`` arrays (:meth:`Store.array` -> ``FrameArray``, memory
maps for local stores): never a whole split, never a whole utterance. An utterance shorter
than the crop is wrapped (repeated from its first frame) to the crop length, as the GRCNN
reference does. Multi-stream models get the *same* frame range of every feature (the store's
features share framing; :func:`shared_frames` checks it), each cut to the model's ``n_bins``.

Everything about an epoch is decided up front from ``(seed, epoch)`` by :func:`crop_plan`
(which utterances, ``crops_per_utt`` crops of each, from which frame) and :func:`view_plan`
(which view of a store with augmented views: the clean view 0 or an augmented copy, never a
quarantined one; augmented views share the clean view's frame index, so a crop is cut at the
same frames whichever view it reads); batches are then addressed by ``(epoch, batch)`` keys,
so the crops do not depend on the number of DataLoader workers, on the order workers finish,
or on the number of DDP ranks' shards (:class:`CropBatchSampler` gives each rank a disjoint
shard of the same plan).

Datasets return whole batches (one preallocated array per feature filled crop by crop), and
the DataLoader is built with ``batch_size=None`` (:func:`make_loader`), which avoids per-item
collation. Per-bin normalisation is not done here: :class:`FeatureNormalizer` applies the
store's train statistics on the device, batched.

Evaluation (:class:`EvalBatches`) is deterministic and in a stable order. Models without an
``eval_window`` score whole utterances: utterances are sorted by length and only utterances of
*exactly* the same length share a batch, so nothing is padded or masked and a score never
depends on its batch-mates (on real corpora lengths in frames repeat often, so batches stay
full). Models with an ``eval_window`` score fixed windows (hop ``eval_hop``; utterances shorter
than a window are wrapped to one window) and an utterance's score is the mean of its windows'
log-odds.

Worker safety: datasets hold the store *path* and open their own store handle lazily in each
process (pid check), and drop it when pickled, so no file handle (HDF5 or otherwise) is ever
shared across a fork.

Workers: a crop is a ``memcpy`` out of a memory map, so the usual worker hand-off (a fresh
shared-memory block per batch, page faults on both sides) would cost more than the gather
itself. With workers, :func:`make_loader` gives :class:`CropBatches` a small ring of
preallocated shared-memory batch slots; workers fill a slot and send its number, and the main
process hands out views of the slot (see :meth:`CropBatches.share_slots`). Together with
persistent workers (warm memory maps), 2 workers are then faster than 0, not slower
(``bench/bench_sampler.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from featstore import open_store
from featstore.errors import StoreError
from trainer.config import VIEW_MODES
from trainer.errors import TrainingError
from trainer.torch_shared_memory import empty_shared

__all__ = [
    "CropBatchSampler",
    "CropBatches",
    "EvalBatches",
    "FeatureNormalizer",
    "SpecMasker",
    "StoreView",
    "crop_plan",
    "make_loader",
    "normalization_stats",
    "shard_batches",
    "shared_frames",
    "store_view_mask",
    "utterance_means",
    "verify_or_refuse",
    "view_plan",
]


# --- planning (pure) --------------------------------------------------------------------------


def crop_plan(
    n_frames: np.ndarray,
    labels: np.ndarray,
    *,
    crop_frames: int,
    seed: int,
    epoch: int,
    balance: bool = False,
    crops_per_utt: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The training examples of one epoch: which utterance, from which frame.

    Parameters
    ----------
    n_frames : np.ndarray
        Frames per utterance (int, one per utterance of the split).
    labels : np.ndarray
        1 bona fide, 0 spoof, -1 unknown (one per utterance).
    crop_frames : int
        Crop length. Longer utterances get a uniform random start in
        ``[0, n_frames - crop_frames]``; shorter ones start at 0 (and are wrapped later).
    seed, epoch : int
        The plan is a pure function of these (``np.random.default_rng([seed, epoch])``).
    balance : bool, default False
        False: every usable utterance once, shuffled. True: the same number of examples
        (one per usable utterance), split equally between the classes present; each class
        cycles through reshuffled permutations of its utterances (the minority class is
        repeated, the majority class subsampled), then everything is shuffled.
    crops_per_utt : int, default 1
        Examples per usable utterance (with ``balance``: the epoch has ``crops_per_utt``
        times as many examples). With more than one, the starts of an utterance's crops are
        stratified: its ``c`` crops in the epoch start one in each ``1/c`` of its possible
        starts (a uniform draw inside each stratum), so they cover the utterance rather than
        pile up. With 1 the plan is exactly the one-crop plan of earlier versions.

    Returns
    -------
    utts, starts : np.ndarray
        int64 arrays of equal length: utterance row and first frame of each example.
        Utterances with no frames or an unknown label are never used.

    Examples
    --------
    >>> u, s = crop_plan(np.array([10, 3, 50]), np.array([1, 0, 0]), crop_frames=8,
    ...                  seed=0, epoch=0)
    >>> sorted(u.tolist()), bool(s[u == 1][0] == 0)
    ([0, 1, 2], True)
    """
    if crop_frames < 1:
        raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
    if crops_per_utt < 1:
        raise ValueError(f"crops_per_utt must be >= 1, got {crops_per_utt}")
    n_frames = np.asarray(n_frames, dtype=np.int64)
    labels = np.asarray(labels)
    usable = np.flatnonzero((n_frames > 0) & (labels >= 0))
    rng = np.random.default_rng([int(seed), int(epoch)])
    if not balance:
        utts = rng.permutation(np.repeat(usable, crops_per_utt))
    else:
        classes = [usable[labels[usable] == c] for c in np.unique(labels[usable])]
        n = usable.size * crops_per_utt
        per_class = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
        parts = []
        for members, count in zip(classes, per_class, strict=True):
            reps = -(-count // members.size)
            parts.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:count])
        utts = rng.permutation(np.concatenate(parts)) if parts else usable
    room = np.maximum(n_frames[utts] - crop_frames, 0)
    if crops_per_utt == 1:
        starts = rng.integers(0, room + 1) if utts.size else np.zeros(0, np.int64)
    else:
        starts = _stratified_starts(utts, room, rng)
    return utts.astype(np.int64), np.asarray(starts, dtype=np.int64)


def _stratified_starts(utts: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One start per example; the ``k``-th of an utterance's ``c`` examples (in plan order)
    starts uniformly inside the ``k``-th of ``c`` equal strata of ``[0, room]``."""
    order = np.argsort(utts, kind="stable")
    sorted_utts = utts[order]
    first = np.flatnonzero(np.r_[True, sorted_utts[1:] != sorted_utts[:-1]])
    counts = np.diff(np.r_[first, utts.size])
    rank = np.empty(utts.size, np.int64)
    rank[order] = np.arange(utts.size) - np.repeat(first, counts)
    count = np.empty(utts.size, np.int64)
    count[order] = np.repeat(counts, counts)
    u = rng.random(utts.size)
    starts = np.floor((rank + u) * (room + 1) / count).astype(np.int64)
    return np.minimum(starts, room)


def view_plan(
    utts: np.ndarray,
    view_mask: np.ndarray,
    *,
    views: str = "all",
    clean_prob: float | None = None,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """The view each example of an epoch plan reads (0 = clean, 1..K = augmented copies).

    Parameters
    ----------
    utts : np.ndarray
        Utterance row of each example (:func:`crop_plan`).
    view_mask : np.ndarray
        bool ``(n_utterances, n_views)``: False where a view of an utterance is quarantined
        (never picked). Column 0 (clean) is always usable.
    views : {"all", "clean", "aug"}, default "all"
        ``clean``: view 0 only. ``aug``: a uniform pick among the utterance's usable
        augmented views (view 0 only for an utterance none of whose augmented views is
        usable). ``all``: see ``clean_prob``.
    clean_prob : float, optional
        With ``views="all"``: the probability of the clean view; otherwise a uniform usable
        augmented view (view 0 where there is none). None: a uniform pick among all usable
        views, clean included.
    seed, epoch : int
        The plan is a pure function of these and ``utts`` (its own generator,
        ``np.random.default_rng([seed, epoch, 1])``, so the crops of :func:`crop_plan` do
        not depend on the views).

    Returns
    -------
    np.ndarray
        int64 view of each example.

    Examples
    --------
    >>> mask = np.array([[True, True, False], [True, False, False]])
    >>> v = view_plan(np.array([0, 1] * 50), mask, views="aug", seed=0, epoch=0)
    >>> sorted(set(v[::2].tolist())), sorted(set(v[1::2].tolist()))
    ([1], [0])
    """
    if views not in VIEW_MODES:
        raise ValueError(f"views must be one of {', '.join(VIEW_MODES)}, got {views!r}")
    utts = np.asarray(utts, dtype=np.int64)
    mask = np.asarray(view_mask, dtype=bool)[utts]
    rng = np.random.default_rng([int(seed), int(epoch), 1])
    pick_clean = rng.random(utts.size)
    pick_view = rng.random(utts.size)
    if views == "clean" or mask.shape[1] == 1:
        return np.zeros(utts.size, np.int64)
    candidates = mask.copy()
    candidates[:, 0] = views == "all" and clean_prob is None
    chosen = _nth_true(candidates, pick_view)
    if views == "all" and clean_prob is not None:
        chosen[pick_clean < clean_prob] = 0
    return chosen


def _nth_true(candidates: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column of a uniform pick (``u`` in [0, 1)) among each row's True entries (0: none)."""
    count = candidates.sum(axis=1)
    k = np.floor(u * count).astype(np.int64)
    cum = np.cumsum(candidates, axis=1)
    chosen = np.argmax(cum > k[:, None], axis=1).astype(np.int64)
    chosen[count == 0] = 0
    return chosen


def shard_batches(n_examples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list:
    """Batch boundaries of one rank's shard of an epoch.

    Full batches only (a trailing partial batch is dropped, so shapes are constant and no
    batch of one reaches batch norm), except that an epoch smaller than one batch is one
    batch. With ``world_size > 1`` the batch list is cut to a multiple of ``world_size`` (or
    padded by repeating from the start when there are fewer batches than ranks) and rank ``r``
    takes batches ``r, r + world_size, ...``: every rank runs the same number of steps and the
    shards are disjoint.

    Parameters
    ----------
    n_examples, batch_size : int
        Examples in the epoch plan, examples per batch.
    rank, world_size : int, default 0, 1
        This process's rank and the number of ranks.

    Returns
    -------
    list of tuple[int, int]
        ``(lo, hi)`` slices into the epoch plan, in order.

    Examples
    --------
    >>> shard_batches(10, 4)
    [(0, 4), (4, 8)]
    >>> shard_batches(16, 4, rank=1, world_size=2)
    [(4, 8), (12, 16)]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_examples <= 0:
        return []
    n_batches = max(n_examples // batch_size, 1)
    bounds = [(b * batch_size, min((b + 1) * batch_size, n_examples)) for b in range(n_batches)]
    if world_size > 1:
        if n_batches >= world_size:
            bounds = bounds[: n_batches - n_batches % world_size]
        else:
            bounds = [bounds[i % n_batches] for i in range(world_size)]
        bounds = bounds[rank::world_size]
    return bounds


def eval_segments(
    n_frames: np.ndarray, window: int | None, hop: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pieces evaluation reads: whole utterances, or fixed windows of each utterance.

    Parameters
    ----------
    n_frames : np.ndarray
        Frames per utterance.
    window, hop : int or None
        ``window=None``: one segment per utterance with at least one frame, its whole length.
        Otherwise windows starting at ``0, hop, 2 * hop, ...`` that fit in the utterance;
        an utterance shorter than ``window`` gets one window (wrapped when read).

    Returns
    -------
    utts, starts, lengths : np.ndarray
        int64 arrays, one entry per segment, in utterance order.

    Examples
    --------
    >>> eval_segments(np.array([5, 0, 9]), 4, 2)[1].tolist()
    [0, 0, 2, 4]
    """
    n_frames = np.asarray(n_frames, dtype=np.int64)
    has = np.flatnonzero(n_frames > 0)
    if window is None:
        return has, np.zeros(has.size, np.int64), n_frames[has]
    hop = int(hop or window)
    counts = np.maximum(n_frames[has] - window, 0) // hop + 1
    utts = np.repeat(has, counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    starts = (np.arange(utts.size) - first) * hop
    return utts, starts.astype(np.int64), np.full(utts.size, int(window), np.int64)


# --- store access -----------------------------------------------------------------------------


def shared_frames(store: Any, split: str, features: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Frames per utterance shared by ``features``, and each feature's row offsets.

    Parameters
    ----------
    store : featstore Store
        An open store.
    split : str
        Split name.
    features : sequence of str
        Features a model consumes.

    Returns
    -------
    n_frames : np.ndarray
        int64 frames per utterance (identical for every feature).
    offsets : dict[str, np.ndarray]
        Feature -> int64 first row of each utterance in the concatenated array.

    Raises
    ------
    TrainingError
        A feature or the split is missing, or two features frame an utterance differently.
    """
    if split not in store.splits:
        raise TrainingError(
            f"{store.path}: no split {split!r} in the store (has: {', '.join(store.splits)})"
        )
    missing = [f for f in features if f not in store.features]
    if missing:
        raise TrainingError(
            f"{store.path}: the model needs feature(s) {', '.join(missing)}, the store has "
            f"{', '.join(sorted(store.features)) or 'none'}; rebuild it with them"
        )
    n_frames = None
    offsets = {}
    for feature in features:
        off, n = store.frames(split, feature)
        n = np.asarray(n, dtype=np.int64)
        if n_frames is None:
            n_frames = n
        elif n.shape != n_frames.shape or not np.array_equal(n, n_frames):
            bad = int(np.flatnonzero(n != n_frames)[0]) if n.shape == n_frames.shape else 0
            raise TrainingError(
                f"{store.path}: features {features[0]!r} and {feature!r} frame split "
                f"{split!r} differently (utterance row {bad}); a multi-stream model needs "
                "features with the same hop and window"
            )
        offsets[feature] = np.asarray(off, dtype=np.int64)
    return n_frames, offsets


def verify_or_refuse(location: str | os.PathLike) -> None:
    """Run ``featstore verify`` on a store; refuse it when it has any problem.

    Parameters
    ----------
    location : str or os.PathLike
        The store.

    Raises
    ------
    StoreError
        The store has problems (checksum mismatch, NaN/inf frames, broken index ...): the
        first one and how many more, in one line.
    """
    from featstore.store.inspect import verify_store

    problems = verify_store(location)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(
            location,
            f"fails verification: {problems[0]}{more}; see 'featstore verify {location}', "
            "rebuild the store or its damaged part",
        )


class StoreView:
    """A store opened lazily in whichever process uses it (pickles as its path and cache).

    Parameters
    ----------
    store : str or os.PathLike or Store
        A store path/URL, or an open store (used as is in the process that made the view,
        reopened by ``store.path`` in any other process).
    cache_dir : str or os.PathLike, optional
        Read cache of a store at a URL (see :func:`featstore.open_store`); default the open
        store's own ``cache_dir``, or None for a path.
    """

    def __init__(self, store: Any, cache_dir: str | os.PathLike | None = None):
        if isinstance(store, str | os.PathLike):
            self.path = os.fspath(store)
            self._store = None
        else:
            self.path = store.path
            self._store = store
            if cache_dir is None:
                cache_dir = getattr(store, "cache_dir", None)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self._pid = os.getpid()
        self._arrays: dict = {}

    def __getstate__(self) -> dict:
        return {"path": self.path, "cache_dir": self.cache_dir}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.cache_dir = state["cache_dir"]
        self._store = None
        self._pid = -1
        self._arrays = {}

    @property
    def store(self) -> Any:
        """The store, opened in this process on first use."""
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.path, mode="r", cache_dir=self.cache_dir)
            self._pid = os.getpid()
            self._arrays = {}
        return self._store

    def array(self, split: str, feature: str, view: int = 0) -> Any:
        """The concatenated ``FrameArray`` of ``(split, feature, view)``, cached per process.

        View 0 (clean) is read as ``store.array(split, feature)``, so stores without
        augmented views serve it too.
        """
        store = self.store
        key = (split, feature, int(view))
        if key not in self._arrays:
            if view == 0:
                self._arrays[key] = store.array(split, feature)
            else:
                self._arrays[key] = store.array(split, feature, view=int(view))
        return self._arrays[key]


def store_view_mask(store: Any, split: str, n_utterances: int) -> np.ndarray:
    """Which views of each utterance of ``split`` training may read.

    Parameters
    ----------
    store : Store
        An open store. A store without ``n_views`` (an older reader) has one view.
    split : str
        Split name.
    n_utterances : int
        Utterances of the split (the expected number of rows).

    Returns
    -------
    np.ndarray
        bool ``(n_utterances, n_views)`` (``store.view_mask(split)``; all True with one
        view); column 0 (clean) is always True.

    Raises
    ------
    StoreError
        The store's view mask does not have one row per utterance and one column per view.
    """
    n_views_of = getattr(store, "n_views", None)
    n_views = 1 if n_views_of is None else int(n_views_of(split))
    if n_views <= 1:
        return np.ones((n_utterances, 1), dtype=bool)
    mask = np.array(store.view_mask(split), dtype=bool)
    if mask.shape != (n_utterances, n_views):
        raise StoreError(
            store.path,
            f"split {split!r}: view mask has shape {mask.shape}, expected "
            f"({n_utterances}, {n_views}); run 'featstore verify {store.path}'",
        )
    mask[:, 0] = True
    return mask


def _read_crops(
    array: Any,
    offsets: np.ndarray,
    n_frames: np.ndarray,
    utts: np.ndarray,
    starts: np.ndarray,
    length: int,
    out: np.ndarray,
    targets: np.ndarray | None = None,
) -> None:
    """Fill ``out[i]`` with frames ``starts[i]:starts[i]+length`` of utterance ``utts[i]``.

    A crop running past the end of its utterance wraps around to the utterance's first frame.
    With ``targets``, crop ``i`` goes to ``out[targets[i]]`` instead.
    """
    for i in range(utts.size):
        u = utts[i]
        n = int(n_frames[u])
        row = int(offsets[u])
        start = int(starts[i])
        dst = out[i if targets is None else int(targets[i])]
        if start + length <= n:
            array.read_into(row + start, row + start + length, dst)
            continue
        # wrap: the frames from ``start`` to the end, then the utterance again from frame 0
        head = n - start
        array.read_into(row + start, row + n, dst)
        if start:
            take = min(n, length - head)
            array.read_into(row, row + take, dst[head:])
            period, filled = head, head + take
        else:
            period, filled = 0, n
        while filled < length:  # dst[period:filled] is whole periods from frame 0: double it
            step = min(filled - period, length - filled)
            dst[filled : filled + step] = dst[period : period + step]
            filled += step


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker, directly in shared memory."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    return empty_shared(shape, torch.float32)


def _gather(
    ds: CropBatches | EvalBatches,
    utts: np.ndarray,
    starts: np.ndarray,
    length: int,
    views: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """One batch of ``ds``: every feature's frames ``starts[i]:starts[i]+length`` of ``utts``
    (of view ``views[i]``; default the clean view)."""
    batch: dict[str, torch.Tensor] = {}
    for feature, n_bins in ds.features.items():
        t = _batch_buffer((utts.size, length, ds.store_bins[feature]))
        _read_view_crops(ds, feature, utts, starts, views, length, t.numpy())
        batch[feature] = t if n_bins == t.shape[2] else t[..., :n_bins]
    batch["label"] = torch.from_numpy(ds.labels[utts])
    batch["index"] = torch.from_numpy(utts.copy())
    if views is not None:
        batch["view"] = torch.from_numpy(np.asarray(views, np.int64).copy())
    return batch


def _read_view_crops(
    ds: CropBatches | EvalBatches,
    feature: str,
    utts: np.ndarray,
    starts: np.ndarray,
    views: np.ndarray | None,
    length: int,
    out: np.ndarray,
) -> None:
    """:func:`_read_crops` of one feature, each crop out of its view's array (views share
    the clean view's offsets and frame counts)."""
    offsets, n_frames = ds.offsets[feature], ds.n_frames
    if views is None or not np.any(views):
        arr = ds.view.array(ds.split, feature)
        _read_crops(arr, offsets, n_frames, utts, starts, length, out)
        return
    for v in np.unique(views):
        rows = np.flatnonzero(views == v)
        arr = ds.view.array(ds.split, feature, int(v))
        _read_crops(arr, offsets, n_frames, utts[rows], starts[rows], length, out, rows)


class CropBatches(torch.utils.data.Dataset):
    """Training batches of random crops, addressed by ``(epoch, batch)`` keys.

    Parameters
    ----------
    store : str or Store
        The feature store (path, or an open store).
    features : Mapping[str, int]
        Feature -> bins the model consumes (each crop is cut to ``x[..., :n_bins]``).
    crop_frames : int
        Frames per crop.
    batch_size : int
        Examples per batch.
    seed : int
        Seed of every epoch's :func:`crop_plan`.
    split : str, default "train"
        Store split.
    balance : bool, default False
        Class-balanced plans (see :func:`crop_plan`).
    rank, world_size : int, default 0, 1
        This process's shard of each epoch (see :func:`shard_batches`).
    crops_per_utt : int, default 1
        Crops of each utterance per epoch (see :func:`crop_plan`).
    views : {"all", "clean", "aug"}, default "all"
        Which views of a store with augmented views the crops come from (see
        :func:`view_plan`; quarantined views are never read). ``"aug"`` needs a store with
        augmented views of ``split``.
    clean_prob : float, optional
        Probability of the clean view with ``views="all"`` (see :func:`view_plan`).

    Notes
    -----
    ``dataset[(epoch, b)]`` is a dict: one float32 tensor ``(B, crop_frames, n_bins)`` per
    feature (raw, not normalised), ``"label"`` int64 ``(B,)``, ``"index"`` int64 ``(B,)``
    (utterance rows of the split) and ``"view"`` int64 ``(B,)`` (0: clean). ``b`` counts
    this rank's batches.

    Examples
    --------
    >>> ds = CropBatches("store.zarr", {"mgd": 256, "logmel": 256}, 256, 32, seed=0)
    ... # doctest: +SKIP
    >>> loader = make_loader(ds, CropBatchSampler(ds, epoch=0), workers=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Any,
        features: Mapping[str, int],
        crop_frames: int,
        batch_size: int,
        *,
        seed: int,
        split: str = "train",
        balance: bool = False,
        rank: int = 0,
        world_size: int = 1,
        crops_per_utt: int = 1,
        views: str = "all",
        clean_prob: float | None = None,
    ):
        self.view = StoreView(store)
        st = self.view.store
        self.split = split
        self.features = dict(features)
        self.n_frames, self.offsets = shared_frames(st, split, list(self.features))
        self.labels = np.asarray(st.index(split)["label"], dtype=np.int64)
        self.store_bins = {f: int(st.features[f]["n_bins"]) for f in self.features}
        for f, nb in self.features.items():
            if nb > self.store_bins[f]:
                raise TrainingError(
                    f"{self.view.path}: the model takes {nb} bins of {f!r}, the store has "
                    f"{self.store_bins[f]}"
                )
        self.view_mask = store_view_mask(st, split, self.n_frames.size)
        if views not in VIEW_MODES:
            raise TrainingError(f"views must be one of {', '.join(VIEW_MODES)}, got {views!r}")
        if views == "aug" and self.view_mask.shape[1] == 1:
            raise TrainingError(
                f"{self.view.path}: --views aug, but split {split!r} has no augmented views; "
                "build the store with them (featstore build --augment ... --views K) or "
                "train with --views clean"
            )
        self.views = views
        self.clean_prob = None if clean_prob is None else float(clean_prob)
        self.crop_frames = int(crop_frames)
        self.batch_size = int(batch_size)
        self.crops_per_utt = int(crops_per_utt)
        self.seed = int(seed)
        self.balance = bool(balance)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._plans: dict[int, tuple] = {}
        self._slots: dict[str, torch.Tensor] | None = None
        if not np.any((self.n_frames > 0) & (self.labels >= 0)):
            raise TrainingError(f"{self.view.path}: split {split!r} has no labelled frames")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_plans"] = {}
        return state

    def class_counts(self) -> np.ndarray:
        """Usable utterances per class, ``[n_spoof, n_bonafide]``."""
        usable = (self.n_frames > 0) & (self.labels >= 0)
        return np.bincount(self.labels[usable], minlength=2)[:2]

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """``(utts, starts, views, batch bounds)`` of ``epoch`` for this rank (cached)."""
        if epoch not in self._plans:
            utts, starts = crop_plan(
                self.n_frames,
                self.labels,
                crop_frames=self.crop_frames,
                seed=self.seed,
                epoch=epoch,
                balance=self.balance,
                crops_per_utt=self.crops_per_utt,
            )
            views = view_plan(
                utts,
                self.view_mask,
                views=self.views,
                clean_prob=self.clean_prob,
                seed=self.seed,
                epoch=epoch,
            )
            bounds = shard_batches(utts.size, self.batch_size, self.rank, self.world_size)
            self._plans = {epoch: (utts, starts, views, bounds)}  # keep one epoch only
        return self._plans[epoch]

    def num_batches(self, epoch: int = 0) -> int:
        """Batches per epoch on this rank."""
        return len(self.plan(epoch)[3])

    def __len__(self) -> int:
        return self.num_batches(0)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, b = int(key[0]), int(key[1])
        utts, starts, views, bounds = self.plan(epoch)
        lo, hi = bounds[b]
        if self._slots is not None and torch.utils.data.get_worker_info() is not None:
            return self._fill_slot(epoch, b, utts[lo:hi], starts[lo:hi], views[lo:hi])
        return _gather(self, utts[lo:hi], starts[lo:hi], self.crop_frames, views[lo:hi])

    # shared batch slots (workers) ------------------------------------------------------------
    def share_slots(self, n_slots: int) -> None:
        """Preallocate ``n_slots`` batches in shared memory for DataLoader workers.

        Called by :func:`make_loader` in the main process before workers start. A worker
        then writes batch ``k`` of the run (counting across epochs) into slot
        ``k % n_slots`` and sends only the slot number; :func:`make_loader`'s iterator turns
        it back into tensors viewing the slot. Memory is written once and reused: no
        per-batch shared-memory allocation, no page faults, no copy on the way to the main
        process (what makes 2 workers no slower than 0 for a memcpy-bound sampler). With
        ``n_slots`` > prefetched batches + 1, a slot is never rewritten while the batch in it
        is the one the consumer holds; a consumer that keeps batches longer must copy them.
        """
        n_bins = self.store_bins
        b, t = self.batch_size, self.crop_frames
        self._slots = {
            f: torch.empty((n_slots, b, t, n_bins[f]), dtype=torch.float32).share_memory_()
            for f in self.features
        }
        self._slots["label"] = torch.zeros((n_slots, b), dtype=torch.int64).share_memory_()
        self._slots["index"] = torch.zeros((n_slots, b), dtype=torch.int64).share_memory_()
        self._slots["view"] = torch.zeros((n_slots, b), dtype=torch.int64).share_memory_()

    def _slot_of(self, epoch: int, b: int) -> int:
        n_slots = next(iter(self._slots.values())).shape[0]
        return (epoch * self.num_batches(epoch) + b) % n_slots

    def _fill_slot(
        self, epoch: int, b: int, utts: np.ndarray, starts: np.ndarray, views: np.ndarray
    ) -> tuple:
        slot = self._slot_of(epoch, b)
        n = utts.size
        for feature in self.features:
            out = self._slots[feature][slot, :n].numpy()
            _read_view_crops(self, feature, utts, starts, views, self.crop_frames, out)
        self._slots["label"][slot, :n] = torch.from_numpy(self.labels[utts])
        self._slots["index"][slot, :n] = torch.from_numpy(utts)
        self._slots["view"][slot, :n] = torch.from_numpy(np.asarray(views, np.int64))
        return ("slot", slot, n)

    def from_slot(self, item: tuple) -> dict[str, torch.Tensor]:
        """The batch a worker left in a shared slot (views of the slot, no copy)."""
        _, slot, n = item
        batch = {}
        for feature, n_bins in self.features.items():
            t = self._slots[feature][slot, :n]
            batch[feature] = t if n_bins == t.shape[2] else t[..., :n_bins]
        batch["label"] = self._slots["label"][slot, :n]
        batch["index"] = self._slots["index"][slot, :n]
        batch["view"] = self._slots["view"][slot, :n]
        return batch


class CropBatchSampler(torch.utils.data.Sampler):
    """Yields the ``(epoch, batch)`` keys of one epoch of a :class:`CropBatches`, in order.

    Parameters
    ----------
    dataset : CropBatches
        The dataset (its rank/world size decide the shard).
    epoch : int, default 0
        Epoch whose plan is read; change it with :meth:`set_epoch` (one loader, and so one
        set of persistent workers, can then serve every epoch).
    start : int, default 0
        First batch (to skip batches already done).
    """

    def __init__(self, dataset: CropBatches, epoch: int = 0, start: int = 0):
        self.dataset = dataset
        self.start = int(start)
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Serve the batches of ``epoch`` from now on."""
        self.epoch = int(epoch)
        self.n = self.dataset.num_batches(self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, b) for b in range(self.start, self.n))

    def __len__(self) -> int:
        return max(self.n - self.start, 0)


class EvalBatches(torch.utils.data.Dataset):
    """Deterministic evaluation batches of a split (whole utterances or fixed windows).

    Parameters
    ----------
    store : str or Store
        The feature store.
    features : Mapping[str, int]
        Feature -> bins the model consumes.
    split : str
        Split to score.
    batch_size : int
        Segments per batch (at most).
    window, hop : int or None
        ``model.eval_window`` / ``model.eval_hop`` (see the module docstring).

    Notes
    -----
    ``dataset[b]`` has the same keys as :class:`CropBatches` batches; ``"index"`` says which
    utterance each row belongs to. Use :meth:`reduce` to turn per-row scores into
    per-utterance scores (mean over windows), in the split's index order.
    """

    def __init__(
        self,
        store: Any,
        features: Mapping[str, int],
        split: str,
        batch_size: int,
        window: int | None = None,
        hop: int | None = None,
    ):
        self.view = StoreView(store)
        st = self.view.store
        self.split = split
        self.features = dict(features)
        self.n_frames, self.offsets = shared_frames(st, split, list(self.features))
        self.labels = np.asarray(st.index(split)["label"], dtype=np.int64)
        self.store_bins = {f: int(st.features[f]["n_bins"]) for f in self.features}
        utts, starts, lengths = eval_segments(self.n_frames, window, hop)
        self.batches: list[tuple[np.ndarray, np.ndarray, int]] = []
        if window is None:  # equal lengths together, stable within a length
            order = np.lexsort((utts, lengths))
            utts, starts, lengths = utts[order], starts[order], lengths[order]
        cuts = np.flatnonzero(np.diff(lengths)) + 1
        for lo_run, hi_run in zip(
            np.concatenate([[0], cuts]), np.concatenate([cuts, [utts.size]]), strict=True
        ):
            for lo in range(int(lo_run), int(hi_run), batch_size):
                hi = min(lo + batch_size, int(hi_run))
                self.batches.append((utts[lo:hi], starts[lo:hi], int(lengths[lo])))

    def __getstate__(self) -> dict:
        return self.__dict__.copy()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        utts, starts, length = self.batches[b]
        return _gather(self, utts, starts, length)

    def reduce(self, index: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per-utterance scores (mean of its rows) in index order; NaN for unscored ones.

        Parameters
        ----------
        index : np.ndarray
            Utterance row of each scored segment (the batches' ``"index"``, concatenated).
        scores : np.ndarray
            Score of each segment.

        Returns
        -------
        np.ndarray
            float64, one score per utterance of the split.
        """
        return utterance_means(index, scores, self.n_frames.size)


def utterance_means(index: np.ndarray, scores: np.ndarray, n_utterances: int) -> np.ndarray:
    """Per-utterance mean of the scores of its segments; NaN for utterances without any.

    Parameters
    ----------
    index : np.ndarray
        Utterance row of each scored segment.
    scores : np.ndarray
        Score of each segment.
    n_utterances : int
        Utterances of the split.

    Returns
    -------
    np.ndarray
        float64 ``(n_utterances,)``.

    Examples
    --------
    >>> utterance_means(np.array([0, 0, 2]), np.array([1.0, 3.0, 5.0]), 3).tolist()
    [2.0, nan, 5.0]
    """
    total = np.bincount(index, weights=np.asarray(scores, np.float64), minlength=n_utterances)
    count = np.bincount(index, minlength=n_utterances)
    out = np.full(n_utterances, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def make_loader(
    dataset: torch.utils.data.Dataset,
    sampler: Any,
    *,
    workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
    persistent: bool = False,
) -> Any:
    """A loader of whole batches (``DataLoader(batch_size=None)``).

    Parameters
    ----------
    dataset : CropBatches or EvalBatches
        Map-style dataset whose items are batches.
    sampler : iterable
        Keys of the batches to load, in order (e.g. :class:`CropBatchSampler`; re-iterated
        for every pass over the loader).
    workers : int, default 0
        Worker processes (0: load in the calling process).
    pin_memory : bool, default False
        Pin batches for faster host-to-GPU copies.
    generator : torch.Generator, optional
        Generator for the loader's worker base seed; pass one so that creating the loader
        never draws from the global torch RNG.
    persistent : bool, default False
        Keep the workers (and their warm memory maps) between passes; use with
        :meth:`CropBatchSampler.set_epoch`.

    Returns
    -------
    iterable
        Yields batch dicts. With workers, :class:`CropBatches` batches are views of shared
        slots (see :meth:`CropBatches.share_slots`): valid until a few more batches are
        drawn, so copy a batch to keep it.
    """
    prefetch = 2
    pooled = workers > 0 and isinstance(dataset, CropBatches)
    if pooled:
        dataset.share_slots(prefetch * workers + 3)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=int(workers),
        pin_memory=pin_memory and not pooled,
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=persistent and workers > 0,
        generator=generator,
    )
    return _SlotLoader(loader, dataset, pin_memory) if pooled else loader


class _SlotLoader:
    """Iterates a DataLoader whose workers answer with shared slot numbers."""

    def __init__(self, loader: torch.utils.data.DataLoader, dataset: CropBatches, pin: bool):
        self.loader, self.dataset, self.pin = loader, dataset, pin

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for item in self.loader:
            batch = self.dataset.from_slot(item)
            yield {k: v.pin_memory() for k, v in batch.items()} if self.pin else batch


# --- normalisation ----------------------------------------------------------------------------


class FeatureNormalizer(nn.Module):
    """Per-bin ``(x - mean) / std`` of each feature, applied to whole batches on the device.

    Parameters
    ----------
    stats : Mapping[str, tuple[array, array]]
        Feature -> ``(mean, std)`` per bin (the store's train statistics, cut to the model's
        bins). Bins with ``std < 1e-8`` are only centred.

    Examples
    --------
    >>> import numpy as np, torch
    >>> norm = FeatureNormalizer({"f": (np.zeros(2), np.full(2, 2.0))})
    >>> norm({"f": torch.ones(1, 3, 2)})["f"][0, 0].tolist()
    [0.5, 0.5]
    """

    def __init__(self, stats: Mapping[str, tuple[Any, Any]]):
        super().__init__()
        self.names = list(stats)
        for i, (mean, std) in enumerate(stats.values()):
            mean = torch.as_tensor(np.asarray(mean, np.float32))
            std = torch.as_tensor(np.asarray(std, np.float32))
            scale = torch.where(std < 1e-8, torch.ones_like(std), std).reciprocal()
            self.register_buffer(f"mean_{i}", mean)
            self.register_buffer(f"scale_{i}", scale)

    @classmethod
    def from_store(cls, store: Any, features: Mapping[str, int]) -> FeatureNormalizer:
        """Normaliser of the store's train statistics (:func:`normalization_stats`)."""
        return cls(normalization_stats(store, features))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised copies of the features in ``batch`` (other keys pass through)."""
        out = dict(batch)
        for i, name in enumerate(self.names):
            if name in batch:
                out[name] = (batch[name] - getattr(self, f"mean_{i}")) * getattr(self, f"scale_{i}")
        return out


def normalization_stats(
    store: Any, features: Mapping[str, int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The per-bin training statistics of ``store``, cut to the bins a model consumes.

    The one source of normalisation: :class:`FeatureNormalizer` applies them, every
    checkpoint saves them (so scoring needs no training store), scoring reads them back.

    Parameters
    ----------
    store : Store
        An open feature store (``store.stats(feature)``: mean and std of its train split).
    features : Mapping[str, int]
        Feature -> bins the model consumes.

    Returns
    -------
    dict
        Feature -> ``(mean, std)``, float32 arrays of ``n_bins`` values.
    """
    stats = {}
    for feature, n_bins in features.items():
        mean, std = store.stats(feature)
        stats[feature] = (
            np.array(np.asarray(mean)[:n_bins], np.float32),
            np.array(np.asarray(std)[:n_bins], np.float32),
        )
    return stats


# --- feature masking --------------------------------------------------------------------------


class SpecMasker:
    """SpecAugment-style time and frequency masks for training batches, on their device.

    Parameters
    ----------
    seed : int
        Run seed; the masks of a batch are a pure function of ``(seed, epoch, step, rank)``
        (a resumed run masks exactly as an uninterrupted one).
    time_masks, freq_masks : int
        Masks per crop along time and along the bins.
    time_mask_width, freq_mask_width : int
        Largest width in frames / bins. A mask's width is uniform in
        ``[0, min(width, axis // 2)]`` and its start uniform where it fits.
    rank : int, default 0
        DDP rank (each rank masks its own shard differently).

    Notes
    -----
    Masked values are set to 0, the per-bin mean of normalised features: apply it after
    :class:`FeatureNormalizer`. Every feature of a batch gets the same time masks (the
    features of a crop are the same frames) and its own frequency masks. The random draws
    are made on the CPU (a few numbers per crop), the masks are built on the batch's device.

    Examples
    --------
    >>> masker = SpecMasker(0, time_masks=1, freq_masks=0, time_mask_width=4, freq_mask_width=0)
    >>> x = masker({"f": torch.ones(2, 10, 3)}, epoch=0, step=0)["f"]
    >>> bool((x == 0).any()), bool((x[:, :, 0] == x[:, :, 1]).all())
    (True, True)
    """

    def __init__(
        self,
        seed: int,
        *,
        time_masks: int,
        freq_masks: int,
        time_mask_width: int,
        freq_mask_width: int,
        rank: int = 0,
    ):
        self.seed, self.rank = int(seed), int(rank)
        self.time = (int(time_masks), int(time_mask_width))
        self.freq = (int(freq_masks), int(freq_mask_width))

    def generator(self, epoch: int, step: int) -> torch.Generator:
        """The CPU generator of the masks of ``(epoch, step)``."""
        words = [self.seed, int(epoch), int(step), self.rank, 2]
        state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(
        self, batch: Mapping[str, torch.Tensor], *, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        """Masked copies of the ``(B, frames, bins)`` features in ``batch``."""
        gen = self.generator(epoch, step)
        out = dict(batch)
        time_mask = None
        for name, x in batch.items():
            if x.ndim != 3:
                continue
            b, n_frames, n_bins = x.shape
            if time_mask is None:
                time_mask = _axis_mask(b, n_frames, *self.time, gen, x.device)
            masked = (
                time_mask[:, :, None] | _axis_mask(b, n_bins, *self.freq, gen, x.device)[:, None, :]
            )
            out[name] = x.masked_fill(masked, 0.0)
        return out


def _axis_mask(
    batch: int, size: int, count: int, width: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """bool ``(batch, size)``: ``count`` random spans of up to ``min(width, size // 2)``."""
    width = min(width, size // 2)
    if count == 0 or width == 0:
        return torch.zeros((batch, size), dtype=torch.bool, device=device)
    widths = torch.randint(0, width + 1, (batch, count), generator=gen)
    starts = (torch.rand((batch, count), generator=gen) * (size - widths + 1)).long()
    starts, widths = starts.to(device), widths.to(device)
    pos = torch.arange(size, device=device)[None, None, :]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return inside.any(dim=1)
