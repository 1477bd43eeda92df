"""What scoring feeds a model: segments of utterances, batched exactly, from a store or memory.

Used by ``trainer score`` (frames from a store split, :class:`StoreFrames`) and ``trainer
predict`` (frames computed from audio files, :class:`MemoryFrames`): both go through the same
plan (:func:`plan_segments`, :func:`plan_batches`) and the same reads (:class:`ScoreBatches`),
so the same audio gets the same score either way.

Exact batching
    Nothing is padded or masked: a batch holds segments of one input length only, and every
    segment is read at the *shortest length that gives the model the same input it would
    use anyway* (:func:`used_frames`):

    * any model wraps inputs shorter than its ``min_frames`` (repeats them from their first
      frame), so a shorter segment is read wrapped to ``min_frames`` frames: the same tensor
      the model would have built;
    * the GRCNN cuts its input into whole windows of ``window`` frames every ``hop`` frames and
      ignores the frames after the last whole window, so a segment of ``T`` frames is read as
      its first ``window + (n_windows(T) - 1) * hop`` frames: all utterances with the same
      number of windows share batches (utterances of 3-4 s at a 10 ms hop: 11 window counts);
    * other whole-utterance models (LCNN: its 'same' convolutions see every frame) batch only
      segments of exactly equal length.

    A score therefore never depends on its batch-mates beyond float rounding.
Operating modes (``eval_mode``)
    ``"full"`` (default): the whole utterance. ``"fixed"``: its first ``fixed_frames`` frames
    (4 s at the store's frame rate), tiled (repeated from the first frame) when shorter: the
    AASIST / RawNet2 evaluation convention.
Bounded memory (``max_frames``)
    Models that score whole utterances (``eval_window = None``) see at most ``max_frames``
    frames per segment: a longer utterance is scored as the mean of the scores of windows of
    ``max_frames`` frames starting every ``max_frames`` frames, the last one ending at the
    utterance's end. This is a different operating mode from whole-utterance scoring, used
    only for the utterances that need it (:attr:`Segments.windowed` names them). A batch
    also holds at most ``max_batch_frames`` frames (at least one segment), so memory stays
    bounded for any utterance length and any ``batch_size``. Models with an ``eval_window``
    (VGG10) already score short fixed windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.data import StoreView, shared_frames, utterance_means
from trainer.errors import TrainingError

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "EVAL_MODES",
    "FIXED_SECONDS",
    "MemoryFrames",
    "ScoreBatches",
    "Segments",
    "StoreFrames",
    "check_plan_settings",
    "fixed_frames",
    "plan_batches",
    "plan_segments",
    "score_batches",
    "used_frames",
]

EVAL_MODES = ("full", "fixed")
"""``full``: whole utterances; ``fixed``: the first :data:`FIXED_SECONDS`, tiled."""

FIXED_SECONDS = 4.0
"""Seconds an utterance is cut or tiled to in the ``fixed`` mode (AASIST: 64600 samples)."""

DEFAULT_MAX_FRAMES = 4000
"""Longest segment scored in one pass (40 s at a 10 ms hop; a 10-minute LCNN pass needs GBs)."""

BATCH_FRAMES_PER_MAX_FRAMES = 4
"""A batch holds at most this many times ``max_frames`` frames (and at least one segment)."""


# --- the model's own trimming -----------------------------------------------------------------


def used_frames(model: nn.Module, n_frames: np.ndarray) -> np.ndarray:
    """The input length that gives ``model`` the same input as ``n_frames`` frames.

    Parameters
    ----------
    model : nn.Module
        A countermeasure model (``min_frames``; GRCNN streams have ``window`` and ``hop``).
    n_frames : np.ndarray
        Segment lengths (>= 1).

    Returns
    -------
    np.ndarray
        int64 lengths: ``max(n, min_frames)`` (shorter inputs are wrapped by the model), and
        for the GRCNN the end of its last whole window (later frames are never read).

    Examples
    --------
    >>> from trainer.models import build_model
    >>> used_frames(build_model("grcnn-logmel"), np.array([5, 32, 41, 42, 300])).tolist()
    [32, 32, 32, 42, 292]
    """
    n = np.maximum(np.asarray(n_frames, dtype=np.int64), int(getattr(model, "min_frames", 1)))
    grid = _window_grid(model)
    if grid is None:
        return n
    window, hop = grid
    n = np.maximum(n, window)
    return window + (n - window) // hop * hop


def _window_grid(model: nn.Module) -> tuple[int, int] | None:
    """``(window, hop)`` when every stream of ``model`` reads only whole windows on that grid."""
    streams = getattr(model, "streams", None)
    if not isinstance(streams, nn.ModuleDict) or not len(streams):
        return None
    grids = {(getattr(s, "window", None), getattr(s, "hop", None)) for s in streams.values()}
    from trainer.models.grcnn import GRCNNStream

    if len(grids) != 1 or not all(isinstance(s, GRCNNStream) for s in streams.values()):
        return None
    (grid,) = grids
    return int(grid[0]), int(grid[1])


def fixed_frames(hop_length: int, sample_rate: int = 16000) -> int:
    """Frames of :data:`FIXED_SECONDS` at a hop of ``hop_length`` samples.

    Examples
    --------
    >>> fixed_frames(160), fixed_frames(80)
    (400, 800)
    """
    return max(1, round(FIXED_SECONDS * sample_rate / hop_length))


# --- the plan (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Segments:
    """The pieces scoring reads, one row per segment, in utterance order.

    Attributes
    ----------
    utts : np.ndarray
        Utterance row of each segment.
    starts : np.ndarray
        First frame of each segment in its utterance (reads past the end wrap around).
    lengths : np.ndarray
        Frames read for each segment (after :func:`used_frames`).
    windowed : np.ndarray
        bool per utterance: scored as the mean over ``max_frames`` windows.
    """

    utts: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    windowed: np.ndarray


def check_plan_settings(eval_mode: str, max_frames: int) -> None:
    """Refuse an ``eval_mode`` outside :data:`EVAL_MODES` or a ``max_frames`` that is not a
    positive integer, with a :class:`TrainingError` naming the value."""
    if eval_mode not in EVAL_MODES:
        raise TrainingError(f"eval_mode must be one of {', '.join(EVAL_MODES)}, got {eval_mode!r}")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise TrainingError(f"max_frames must be a positive integer, got {max_frames!r}")


def plan_segments(
    n_frames: np.ndarray,
    model: nn.Module,
    *,
    eval_mode: str = "full",
    fixed_length: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Segments:
    """The segments of each utterance that ``model`` scores (see the module docstring).

    Parameters
    ----------
    n_frames : np.ndarray
        Frames per utterance; utterances without frames get no segment.
    model : nn.Module
        A countermeasure model (``eval_window``, ``eval_hop``, ``min_frames``).
    eval_mode : {"full", "fixed"}, default "full"
        Whole utterances, or their first ``fixed_length`` frames, tiled when shorter.
    fixed_length : int, optional
        Frames of the ``fixed`` mode (see :func:`fixed_frames`); required for it.
    max_frames : int, default DEFAULT_MAX_FRAMES
        Longest segment of a whole-utterance model.

    Returns
    -------
    Segments

    Examples
    --------
    >>> from trainer.models import build_model
    >>> seg = plan_segments(np.array([300, 0, 1000]), build_model("lcnn"), max_frames=400)
    >>> seg.utts.tolist(), seg.starts.tolist(), seg.lengths.tolist(), seg.windowed.tolist()
    ([0, 2, 2, 2], [0, 0, 400, 600], [300, 400, 400, 400], [False, False, True])
    """
    check_plan_settings(eval_mode, max_frames)
    n_frames = np.asarray(n_frames, dtype=np.int64)
    if eval_mode == "fixed":
        if fixed_length is None or fixed_length < 1:
            raise TrainingError("the fixed eval mode needs a positive fixed_length")
        virtual = np.where(n_frames > 0, fixed_length, 0)
    else:
        virtual = n_frames
    window = getattr(model, "eval_window", None)
    if window is None:
        windowed = virtual > max_frames
        length = np.where(windowed, max_frames, virtual)
        counts = np.where(virtual > 0, -(-virtual // np.maximum(length, 1)), 0)
        hop = length
    else:
        windowed = np.zeros(n_frames.size, bool)
        length = np.full(n_frames.size, int(window), np.int64)
        hop = np.full(n_frames.size, int(getattr(model, "eval_hop", None) or window), np.int64)
        counts = np.where(virtual > 0, np.maximum(virtual - window, 0) // hop + 1, 0)
    utts = np.repeat(np.arange(n_frames.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(utts.size) - first
    starts = k * hop[utts]
    if window is None:  # the last max_frames window ends at the utterance's end
        starts = np.minimum(starts, np.maximum(virtual[utts] - length[utts], 0))
    lengths = used_frames(model, length[utts]) if utts.size else np.zeros(0, np.int64)
    starts = starts % np.maximum(n_frames[utts], 1)  # a tiled read from frame s = from s mod n
    return Segments(utts.astype(np.int64), starts.astype(np.int64), lengths, windowed)


def plan_batches(
    segments: Segments, batch_size: int, max_batch_frames: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Batches of segments of one length each: ``(utts, starts, length)``.

    Segments are ordered by (length, utterance); a batch holds at most ``batch_size``
    segments and at most ``max_batch_frames`` frames, but at least one segment.

    Examples
    --------
    >>> seg = Segments(np.array([0, 1, 2, 3]), np.zeros(4, int), np.array([9, 5, 9, 9]), None)
    >>> [(b[0].tolist(), b[2]) for b in plan_batches(seg, 2, 100)]
    [([1], 5), ([0, 2], 9), ([3], 9)]
    """
    order = np.lexsort((segments.utts, segments.lengths))
    utts, starts = segments.utts[order], segments.starts[order]
    lengths = segments.lengths[order]
    cuts = np.flatnonzero(np.diff(lengths)) + 1
    batches = []
    for lo_run, hi_run in zip(
        np.concatenate([[0], cuts]), np.concatenate([cuts, [utts.size]]), strict=True
    ):
        if hi_run <= lo_run:
            continue
        length = int(lengths[lo_run])
        rows = max(1, min(batch_size, max_batch_frames // length))
        for lo in range(int(lo_run), int(hi_run), rows):
            hi = min(lo + rows, int(hi_run))
            batches.append((utts[lo:hi], starts[lo:hi], length))
    return batches


# --- where frames come from -------------------------------------------------------------------


class StoreFrames:
    """The frames of a store split (opened lazily in each process; pickles as its path).

    Parameters
    ----------
    store : str or Store
        The feature store.
    split : str
        Split to read.
    features : sequence of str
        Features read (they must frame every utterance alike).
    """

    def __init__(self, store: Any, split: str, features: Sequence[str]):
        self.view = StoreView(store)
        st = self.view.store
        self.split = split
        self.n_frames, self.offsets = shared_frames(st, split, list(features))
        self.store_bins = {f: int(st.features[f]["n_bins"]) for f in features}

    def array(self, feature: str) -> Any:
        """The split's concatenated frames of ``feature`` (``read_into(a, b, out)``)."""
        return self.view.array(self.split, feature)


class _Rows:
    """A ``(rows, bins)`` array with the ``read_into`` of a store's ``FrameArray``."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def read_into(self, a: int, b: int, out: np.ndarray) -> np.ndarray:
        out[: b - a] = self.rows[a:b]
        return out


class MemoryFrames:
    """Frames held in memory: one ``{feature: (n_frames, n_bins) float32}`` per utterance.

    Parameters
    ----------
    utterances : sequence of Mapping[str, np.ndarray]
        Each utterance's features (every feature with the same number of frames).
    features : sequence of str
        Features read.
    """

    def __init__(self, utterances: Sequence[Mapping[str, np.ndarray]], features: Sequence[str]):
        features = list(features)
        n = [int(u[features[0]].shape[0]) for u in utterances]
        for i, u in enumerate(utterances):
            if any(int(u[f].shape[0]) != n[i] for f in features):
                raise TrainingError(f"utterance {i}: features {features} have different frames")
        self.n_frames = np.asarray(n, dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(self.n_frames)[:-1]]).astype(np.int64)
        self.offsets = {f: first for f in features}
        self.store_bins = {}
        self._rows = {}
        for f in features:
            parts = [np.asarray(u[f], dtype=np.float32) for u in utterances]
            self.store_bins[f] = int(parts[0].shape[1]) if parts else 0
            self._rows[f] = _Rows(np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))

    def array(self, feature: str) -> Any:
        """The concatenated frames of ``feature`` (``read_into(a, b, out)``)."""
        return self._rows[feature]


# --- the dataset ------------------------------------------------------------------------------


class ScoreBatches(torch.utils.data.Dataset):
    """Batches of a scoring plan, read from a frame source (whole batches per item).

    Parameters
    ----------
    frames : StoreFrames or MemoryFrames
        Where the frames come from.
    features : Mapping[str, int]
        Feature -> bins the model consumes (reads are cut to them).
    batches : list of (utts, starts, length)
        From :func:`plan_batches`.

    Notes
    -----
    ``dataset[b]`` holds one float32 tensor ``(B, length, n_bins)`` per feature (raw, not
    normalised) and ``"index"`` (the utterance of each row); :meth:`reduce` turns per-row
    scores into per-utterance means. The interface :func:`trainer.inference.evaluate` uses.
    """

    def __init__(
        self,
        frames: StoreFrames | MemoryFrames,
        features: Mapping[str, int],
        batches: list[tuple[np.ndarray, np.ndarray, int]],
    ):
        self.frames = frames
        self.features = dict(features)
        self.n_frames = frames.n_frames
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        utts, starts, length = self.batches[b]
        batch: dict[str, torch.Tensor] = {}
        for feature, n_bins in self.features.items():
            out = np.empty((utts.size, length, self.frames.store_bins[feature]), np.float32)
            _read_wrapped(
                self.frames.array(feature), self.frames.offsets[feature], self.n_frames,
                utts, starts, out,
            )  # fmt: skip
            t = torch.from_numpy(out)
            batch[feature] = t if n_bins == t.shape[2] else t[..., :n_bins]
        batch["index"] = torch.from_numpy(np.asarray(utts, dtype=np.int64).copy())
        return batch

    def reduce(self, index: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per-utterance mean of its rows' scores, in utterance order; NaN for unscored ones."""
        return utterance_means(index, scores, self.n_frames.size)


def _read_wrapped(
    array: Any,
    offsets: np.ndarray,
    n_frames: np.ndarray,
    utts: np.ndarray,
    starts: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[i]``: frames ``starts[i], starts[i] + 1, ...`` of ``utts[i]``, modulo its length."""
    length = out.shape[1]
    for i in range(utts.size):
        n, row, start = int(n_frames[utts[i]]), int(offsets[utts[i]]), int(starts[i])
        if start + length <= n:
            array.read_into(row + start, row + start + length, out[i])
            continue
        whole = array.read_into(row, row + n, np.empty((n, out.shape[2]), np.float32))
        out[i] = whole[(start + np.arange(length)) % n]


def score_batches(
    frames: StoreFrames | MemoryFrames,
    model: nn.Module,
    features: Mapping[str, int],
    *,
    batch_size: int,
    eval_mode: str = "full",
    fixed_length: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> tuple[ScoreBatches, Segments]:
    """The scoring dataset of ``frames`` for ``model``: plan, batch, wrap.

    Returns
    -------
    ScoreBatches, Segments
        The dataset, and its plan (``windowed`` says which utterances ``max_frames`` cut).
    """
    segments = plan_segments(
        frames.n_frames, model, eval_mode=eval_mode, fixed_length=fixed_length,
        max_frames=max_frames,
    )  # fmt: skip
    budget = BATCH_FRAMES_PER_MAX_FRAMES * max_frames
    return ScoreBatches(frames, features, plan_batches(segments, batch_size, budget)), segments
