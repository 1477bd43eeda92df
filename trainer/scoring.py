"""Score a trained run on a split of a feature store into one consolidated score file.

``trainer.score(split="eval")`` (``trainer score --split eval``) takes, by default:

- the run: the most recent one under ``./runs`` (see :func:`trainer.runs.latest_run`);
- its ``best.pt`` checkpoint (``"last"`` or a path also work);
- the store the run was trained on (path and fingerprint recorded in the checkpoint's
  run record, the same record as the run's ``config.json``);

and writes ``<run>/scores_<split>.txt`` plus a provenance sidecar ``<run>/scores_<split>.txt.json``
(``<run>/scores_<storename>_<split>.txt`` for a store other than the run's training store).

Scoring goes through named phases: :func:`resolve_run` (run directory, checkpoint, run
record), :func:`open_matching_store` (the store, checked against the run's fingerprint),
:func:`select_split` (its utterances and the score layout), :func:`load_model` (weights,
device, normaliser), :func:`plan_scoring`, :func:`_infer` and :func:`_write_with_provenance`.
The phases and their records (:class:`TrainedRun`, :class:`LoadedModel`) are shared with
``trainer predict`` (:mod:`trainer.predict`), ``trainer embed``
(:mod:`trainer.embedding_extraction`) and the GMM baselines' scoring, so all of them resolve
runs, match stores and write files by the same rules.

Inference is the training loop's own dev scoring, :func:`trainer.inference.evaluate`, on the
exact batches of :mod:`trainer.score_batches`: models with ``eval_window = None`` score whole
utterances, models trained on crops score fixed windows of ``model.eval_window`` frames every
``model.eval_hop`` frames and an utterance's score is the mean of its windows' log-odds (the
model decides). A batch holds segments of one input length after the model's own trimming
(the GRCNN ignores the frames after its last whole 32-frame window, so utterances with the
same number of windows batch together), so scores equal one-at-a-time scores up to float
rounding. ``eval_mode="fixed"`` scores the first 4 s of each utterance, tiled when shorter;
utterances longer than ``max_frames`` frames are scored as the mean over ``max_frames``
windows (bounded memory; the sidecar's ``"windowed"`` names them).

Features are normalised exactly as in training: with the statistics saved in the checkpoint,
or, for a checkpoint without them, the per-bin mean/std of the *training* store's train split
(:func:`trainer.data.normalization_stats`, the one builder of both).

A score is ``logits[:, 1] - logits[:, 0]``: a natural-log likelihood ratio, bona fide against
spoof (higher = bona fide; with the class-weighted training loss the two classes have equal
priors), so actDCF and Cllr are meaningful. Utterances are written in the store's index order.
An utterance without a single frame (audio shorter than one analysis window) carries no
evidence and gets the score 0 (LLR 0 = no information); it is named in a warning and in the
sidecar. Utterances the store build quarantined are not in the store: they are counted in a
warning and listed in the sidecar.

Score file layouts (``format``):

- ``asvspoof2019``: ``SPEAKER UTT - SYSTEM KEY SCORE`` (the keys come from the store index);
  ``trainer metrics FILE`` reads it alone. It needs a key for every utterance;
- ``asvspoof2021``: ``UTT SCORE``;
- ``asvspoof5``: tab-separated, header ``filename<TAB>cm-score``.

The last two carry no keys: ``trainer metrics FILE --protocol KEYFILE``. The default
(``format=None``) is ``asvspoof2019``, or ``asvspoof2021`` for a split without keys (e.g. the
ASVspoof 2021 eval lists). Scores are written with ``repr`` (shortest exact float64), the file
and its sidecar atomically (:mod:`featstore.atomic_files`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from featstore import open_store
from featstore._version import __version__
from featstore.atomic_files import write_bytes_atomic
from featstore.errors import ResourceError, SpoofstoreError, StoreError
from trainer import inference
from trainer.checkpoint import Checkpoint, read_checkpoint
from trainer.data import FeatureNormalizer, normalization_stats, verify_or_refuse
from trainer.errors import ScoreFileError, TrainingError
from trainer.gmm_baseline import score_run as score_gmm_run
from trainer.models.registry import is_gmm_model
from trainer.runs import RunRecord, latest_run, read_run_record, resolve_checkpoint
from trainer.score_batches import (
    DEFAULT_MAX_FRAMES,
    MemoryFrames,
    ScoreBatches,
    StoreFrames,
    check_plan_settings,
    fixed_frames,
    score_batches,
)
from trainer.scorefiles import SCORE_FORMATS, write_score_file

__all__ = [
    "SCORE_FORMATS",
    "LoadedModel",
    "TrainedRun",
    "UtteranceProgress",
    "check_settings",
    "default_score_path",
    "load_model",
    "open_matching_store",
    "plan_scoring",
    "refuse_foreign_overwrite",
    "resolve_run",
    "score",
    "select_split",
    "store_location",
    "write_score_file",
    "write_scores_with_provenance",
]


# --- scoring ----------------------------------------------------------------------------------


def score(
    run: str | os.PathLike | None = None,
    split: str = "eval",
    store: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike = "best",
    out: str | os.PathLike | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    *,
    precision: str = "fp32",
    eval_mode: str = "full",
    max_frames: int = DEFAULT_MAX_FRAMES,
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = False,
) -> Path:
    """Score every utterance of a store split with a trained run; write one score file.

    Parameters
    ----------
    run : str or os.PathLike, optional
        Run directory; default :func:`trainer.runs.latest_run` under ``./runs`` (printed).
    split : str, default "eval"
        Store split to score.
    store : str or os.PathLike, optional
        Feature store; default the one the run was trained on. Its fingerprint must equal the
        run's (same features and parameters) unless ``force``.
    checkpoint : {"best", "last"} or path, default "best"
        Which weights (see :func:`trainer.runs.resolve_checkpoint`).
    out : str or os.PathLike, optional
        Score file; default ``<run>/scores_<split>.txt`` for the run's training store and
        ``<run>/scores_<storename>_<split>.txt`` for another store. Provenance goes to
        ``<out>.json``. An existing file of another run, store or split (its sidecar says) is
        not replaced unless ``force``.
    format : {"asvspoof2019", "asvspoof2021", "asvspoof5"}, optional
        Layout (see the module docstring); default ``asvspoof2019``, or ``asvspoof2021``
        when the split has utterances without a key.
    batch_size : int, optional
        Segments per forward pass (at most); default the run's ``eval_batch_size`` (or
        ``batch_size``). Segments of the same input length after the model's own trimming
        share a batch (see :mod:`trainer.score_batches`); the batch size does not change the
        scores (beyond float rounding).
    device : str, default "auto"
        ``auto`` = the run's device type when available here, else the CPU; or ``cpu``,
        ``cuda``, ``cuda:N``.
    precision : {"fp32", "bf16", "fp16"}, default "fp32"
        Autocast precision of the forward passes.
    eval_mode : {"full", "fixed"}, default "full"
        Score whole utterances, or their first 4 s, tiled when shorter (the AASIST / RawNet2
        convention).
    max_frames : int, default 4000
        Longest segment a whole-utterance model scores in one pass: a longer utterance is
        scored as the mean of the scores of ``max_frames``-frame windows (a different
        operating mode; the sidecar's ``"windowed"`` lists the utterances it applied to).
        Bounds memory for any utterance length.
    workers : int, default 0
        DataLoader worker processes.
    force : bool, default False
        Score a store whose fingerprint differs from the run's (with a warning); replace an
        ``out`` file of another run, store or split.
    progress : bool, default True
        Print the chosen run and a tqdm bar (utterances/s) on stderr.
    cache_dir : str or os.PathLike, optional
        Local read cache of a store at a URL (see :func:`featstore.open_store`); default
        ``$SPOOFSTORE_CACHE_DIR`` if set.
    verify : bool, default False
        Check the store end to end first (``featstore verify``) and refuse it on problems.

    Returns
    -------
    Path
        The score file.

    Raises
    ------
    TrainingError
        No run, no checkpoint, an unusable checkpoint, a bad setting.
    ScoreFileError
        ``out`` holds scores of another run, store or split (without ``force``).
    StoreError
        Missing store, unknown split, fingerprint mismatch (without ``force``), bins of a
        feature other than the run's, a store failing verification (``verify``), or
        ``asvspoof2019`` asked for a split without keys.
    ValueError
        Unknown format.

    Examples
    --------
    >>> path = score(split="eval")  # doctest: +SKIP
    >>> path  # doctest: +SKIP
    PosixPath('runs/grcnn-20261122-013000/scores_eval.txt')
    """
    check_settings(format, precision, batch_size, workers)
    check_plan_settings(eval_mode, max_frames)

    def log(message: str) -> None:
        if progress:
            tqdm.write(message, file=sys.stderr)

    trained = resolve_run(run, checkpoint, log)
    if verify:
        where = os.fspath(store) if store is not None else trained.record.store.path
        log(f"verifying {where} ...")
        verify_or_refuse(where)
    if is_gmm_model(trained.record.model.name):  # the official GMM baselines: no network
        return score_gmm_run(
            trained,
            split=split,
            store=store,
            out=out,
            format=format,
            force=force,
            cache_dir=cache_dir,
            log=log,
        )
    st = open_matching_store(trained, store, force, cache_dir)
    target = select_split(st, split, format, log)
    out_path = Path(out) if out is not None else default_score_path(trained, st, split)
    if not force:
        refuse_foreign_overwrite(out_path, trained, st, split)
    model = load_model(trained, st, device, batch_size, cache_dir)
    frames = StoreFrames(st, split, list(model.net.features))
    plan = plan_scoring(model, frames, st.features, eval_mode, max_frames, target.utt_ids)
    result = _infer(model, plan, st, target, precision, workers, progress)
    _write_with_provenance(out_path, trained, st, target, model, plan, result, precision)
    n, seconds = len(target.utt_ids), result.seconds
    log(
        f"scored {n} utterances of {split!r} in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} utt/s) on {model.device}"
    )
    return out_path


def check_settings(
    format: str | None, precision: str, batch_size: int | None, workers: int
) -> None:
    if format is not None and format not in SCORE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SCORE_FORMATS)}, got {format!r}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise TrainingError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise TrainingError(f"batch_size must be a positive integer, got {batch_size!r}")
    if workers < 0:
        raise TrainingError(f"workers must be >= 0, got {workers}")


# --- phase 1: the run, its checkpoint and its record ------------------------------------------


@dataclass(frozen=True)
class TrainedRun:
    run: Path
    checkpoint_path: Path
    checkpoint: Checkpoint
    record: RunRecord


def resolve_run(
    run: str | os.PathLike | None, checkpoint: str | os.PathLike, log: Callable[[str], None]
) -> TrainedRun:
    """The run directory (default: the latest), its checkpoint, and the run record.

    The record is the checkpoint's own; a checkpoint saved without one uses the run
    directory's ``config.json``.
    """
    if run is None:
        run = latest_run("runs")
        log(f"run: {run} (most recent under ./runs)")
    run = Path(run)
    path = resolve_checkpoint(run, checkpoint)
    state = read_checkpoint(path)
    record = state.run
    if record is None:
        try:
            record = read_run_record(run)
        except TrainingError as exc:
            raise TrainingError(
                f"{path}: not a trainer checkpoint (no run record: no 'config' field, and {exc})"
            ) from None
    return TrainedRun(run, path, state, record)


# --- phase 2: the store -----------------------------------------------------------------------


def open_matching_store(
    trained: TrainedRun,
    store: str | os.PathLike | None,
    force: bool,
    cache_dir: str | os.PathLike | None,
) -> Any:
    """The store to score (default: the run's), refused if its fingerprint differs."""
    recorded = trained.record.store
    try:
        st = open_store(
            os.fspath(store) if store is not None else recorded.path, cache_dir=cache_dir
        )
    except StoreError as exc:
        if store is None:
            raise StoreError(
                exc.path, f"{exc.message} (the run's training store; pass --store)"
            ) from None
        raise
    if st.fingerprint != recorded.fingerprint and force:
        warnings.warn(
            f"{st.path}: store fingerprint {st.fingerprint[:16]} differs from the run's "
            f"({recorded.fingerprint[:16]}); scoring it anyway (--force)",
            stacklevel=4,
        )
    elif st.fingerprint != recorded.fingerprint:
        raise StoreError(
            st.path,
            f"store fingerprint {st.fingerprint[:16]} differs from the one run {trained.run} was "
            f"trained on ({recorded.fingerprint[:16]}): its features or their parameters differ; "
            "score a store built with the run's configuration, or pass --force",
        )
    return st


@dataclass(frozen=True)
class _Split:
    name: str
    utt_ids: list[str]
    speakers: list[str]
    systems: list[str]
    labels: np.ndarray
    format: str


def select_split(st: Any, split: str, format: str | None, log: Callable[[str], None]) -> _Split:
    """The split's utterances, and the score layout (checked against its keys)."""
    if split not in st.splits:
        raise StoreError(st.path, f"no split {split!r}; the store has {', '.join(st.splits)}")
    index = st.index(split)
    labels = np.asarray(index["label"])
    if format is None:
        format = "asvspoof2019" if np.all(labels >= 0) else "asvspoof2021"
        if format != "asvspoof2019":
            log(f"split {split!r} has no keys: writing the asvspoof2021 layout (UTT SCORE)")
    elif format == "asvspoof2019" and np.any(labels < 0):
        missing = int(np.count_nonzero(labels < 0))
        raise StoreError(
            st.path,
            f"{missing} utterance(s) of split {split!r} have no key (e.g. "
            f"{index['utt_id'][np.flatnonzero(labels < 0)[0]]}); the asvspoof2019 layout "
            "needs keys: use --format asvspoof2021 or asvspoof5 and give 'trainer metrics' "
            "the key file with --protocol",
        )
    return _Split(
        name=split,
        utt_ids=[str(u) for u in index["utt_id"]],
        speakers=[str(s) for s in index["speaker"]],
        systems=[str(s) for s in index["system"]],
        labels=labels,
        format=format,
    )


def default_score_path(trained: TrainedRun, st: Any, split: str) -> Path:
    """The default score file: ``<run>/scores_[<storename>_]<split>.txt``.

    No store name for the run's training store (``trainer score --split eval`` ->
    ``<run>/scores_eval.txt``); another store's name keeps the files of two stores apart.
    """
    if store_location(st.path) == store_location(trained.record.store.path):
        return trained.run / f"scores_{split}.txt"
    name = st.path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zarr", ".h5", ".hdf5"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "store"
    return trained.run / f"scores_{name}_{split}.txt"


def refuse_foreign_overwrite(out_path: Path, trained: TrainedRun, st: Any, split: str) -> None:
    """Refuse to replace a score file of another run, store or split (its sidecar says)."""
    if not out_path.exists():
        return
    sidecar = out_path.with_name(out_path.name + ".json")
    try:
        info = json.loads(sidecar.read_text())
        was = (str(info["run"]), str(info["store"]["path"]), str(info["split"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise ScoreFileError(
            out_path,
            f"exists and has no readable provenance sidecar ({sidecar.name}) saying what it "
            "scored; pass --force to overwrite it, or choose another --out",
        ) from None
    now = (os.path.abspath(trained.run), store_location(st.path), split)
    if was != now:
        raise ScoreFileError(
            out_path,
            f"holds scores of split {was[2]!r} of store {was[1]} by run {was[0]}; not "
            f"overwriting them with split {now[2]!r} of store {now[1]} by run {now[0]}: pass "
            "--force, or choose another --out",
        )


# --- phase 3: the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    net: nn.Module
    normalizer: FeatureNormalizer
    norm_source: str
    device: torch.device
    batch_size: int


def load_model(
    trained: TrainedRun,
    st: Any,
    device: str,
    batch_size: int | None,
    cache_dir: str | os.PathLike | None,
) -> LoadedModel:
    """The trained model (eval mode) and its normaliser on the scoring device."""
    record = trained.record
    net = inference.build_trained_model(
        record.model, trained.checkpoint.weights, trained.checkpoint_path
    )
    features = {f: int(net.n_bins[f]) for f in net.features}
    _check_store_bins(trained, st, features)
    dev = inference.resolve_device(device, auto_cuda=record.runtime.device.startswith("cuda"))
    normalizer, norm_source = _normalizer(trained, st, features, cache_dir)
    if batch_size is None:
        batch_size = int(record.fit.eval_batch_size or record.fit.batch_size)
    net.to(dev).eval()
    normalizer.to(dev)
    return LoadedModel(net, normalizer, norm_source, dev, batch_size)


@dataclass(frozen=True)
class _Plan:
    dataset: ScoreBatches
    eval_mode: str
    max_frames: int
    fixed_length: int | None
    windowed: list[str]


def plan_scoring(
    model: LoadedModel,
    frames: StoreFrames | MemoryFrames,
    feature_records: dict[str, dict],
    eval_mode: str,
    max_frames: int,
    names: list[str],
) -> _Plan:
    """The exact batches of ``frames`` (see :mod:`trainer.score_batches`), and what they cut.

    ``names`` name the utterances of ``frames`` (for the list of windowed ones); the fixed
    mode's length is 4 s at the frame rate of the features (``hop_length`` samples).
    """
    features = {f: int(model.net.n_bins[f]) for f in model.net.features}
    fixed = None
    if eval_mode == "fixed":
        fixed = fixed_frames(int(feature_records[model.net.features[0]]["hop_length"]))
    dataset, segments = score_batches(
        frames, model.net, features, batch_size=model.batch_size, eval_mode=eval_mode,
        fixed_length=fixed, max_frames=max_frames,
    )  # fmt: skip
    windowed = [names[i] for i in np.flatnonzero(segments.windowed)]
    return _Plan(dataset, eval_mode, max_frames, fixed, windowed)


def _check_store_bins(trained: TrainedRun, st: Any, features: dict[str, int]) -> None:
    """Refuse a store whose bins of a feature differ from the training store's (even forced).

    Runs recorded before the training store's bins were (no ``store.n_bins``) need at least
    the bins the model reads.
    """
    recorded = trained.record.store.n_bins or {}
    for f, n in features.items():
        if f not in st.features:
            raise StoreError(
                st.path, f"has no feature {f!r}, which run {trained.run} reads (model {n} bins)"
            )
        have = int(st.features[f]["n_bins"])
        want = recorded.get(f)
        if (want is not None and have != want) or have < n:
            raise StoreError(
                st.path,
                f"{f} has {have} bins, run {trained.run} was trained on {want or n}; score a "
                "store built with the run's feature parameters",
            )


def _normalizer(
    trained: TrainedRun,
    store: Any,
    features: dict[str, int],
    cache_dir: str | os.PathLike | None,
) -> tuple[FeatureNormalizer, str]:
    """The training normaliser, and where its statistics come from ("checkpoint" or a store).

    The checkpoint's saved statistics when it has them; else the training store's (the
    scored store's, with a warning, when the training store is gone but it has a train split).
    """
    saved = trained.checkpoint.normalizer
    if saved is not None and all(f in saved for f in features):
        stats = {f: (saved[f][0][:n], saved[f][1][:n]) for f, n in features.items()}
        return FeatureNormalizer(stats), "checkpoint"
    recorded = trained.record.store
    source = store
    if os.path.abspath(recorded.path) != os.path.abspath(store.path):
        try:
            train_store = open_store(recorded.path, cache_dir=cache_dir)
        except StoreError:
            train_store = None
        if train_store is not None and train_store.fingerprint == recorded.fingerprint:
            source = train_store
        elif "train" in store.splits:
            warnings.warn(
                f"the run's training store {recorded.path} is not available; normalising with "
                f"the train statistics of {store.path}",
                stacklevel=4,
            )
        else:
            raise StoreError(
                store.path,
                f"cannot normalise as in training: the run's training store {recorded.path} is "
                "not available and this store has no train split",
            )
    return FeatureNormalizer(normalization_stats(source, features)), source.path


# --- phase 4: inference -----------------------------------------------------------------------


class UtteranceProgress:
    """Counts utterances finished by each forward pass of the model into a tqdm bar.

    :func:`trainer.inference.evaluate` runs the model once per batch of ``dataset.batches``,
    in order; an utterance is finished by the batch holding its last segment.
    """

    def __init__(self, dataset: Any, bar: Any):
        sizes = [len(b[0]) for b in dataset.batches]
        if sizes:
            utts = np.concatenate([b[0] for b in dataset.batches])
            batch_of = np.repeat(np.arange(len(sizes)), sizes)
            _, first_rev = np.unique(utts[::-1], return_index=True)
            last = utts.size - 1 - first_rev
            self.done = np.bincount(batch_of[last], minlength=len(sizes))
        else:
            self.done = np.zeros(0, np.int64)
        self.bar = bar
        self.batch = 0

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if self.batch < self.done.size:
            self.bar.update(int(self.done[self.batch]))
        self.batch += 1


@dataclass(frozen=True)
class _Inference:
    scores: np.ndarray
    unscored: list[str]
    quarantined: list[str]
    seconds: float


def _infer(
    model: LoadedModel,
    plan: _Plan,
    st: Any,
    target: _Split,
    precision: str,
    workers: int,
    progress: bool,
) -> _Inference:
    """Per-utterance scores; utterances without frames get 0, with a warning."""
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(target.utt_ids),
        desc=f"scoring {target.name}",
        unit="utt",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    hook = model.net.register_forward_hook(UtteranceProgress(plan.dataset, bar))
    try:
        scores = inference.evaluate(
            model.net, model.normalizer, plan.dataset, model.device, precision, workers
        )
    finally:
        hook.remove()
        bar.close()
    seconds = time.perf_counter() - t0

    unscored = [target.utt_ids[i] for i in np.flatnonzero(~np.isfinite(scores))]
    if unscored:
        scores = np.where(np.isfinite(scores), scores, 0.0)
        warnings.warn(
            f"{len(unscored)} utterance(s) of split {target.name!r} have no frames (shorter "
            f"than one analysis window) and get score 0 (no evidence): {', '.join(unscored[:5])}"
            + (", ..." if len(unscored) > 5 else ""),
            stacklevel=3,
        )
    quarantined = [u for s, u, _ in st.quarantine if s == target.name]
    if quarantined:
        warnings.warn(
            f"{len(quarantined)} utterance(s) of split {target.name!r} were quarantined when "
            f"the store was built and have no score (e.g. {quarantined[0]}; see featstore info)",
            stacklevel=3,
        )
    return _Inference(scores, unscored, quarantined, seconds)


# --- phase 5: the score file and its provenance -----------------------------------------------


def _write_with_provenance(
    out_path: Path,
    trained: TrainedRun,
    st: Any,
    target: _Split,
    model: LoadedModel,
    plan: _Plan,
    result: _Inference,
    precision: str,
) -> None:
    """The score file and its sidecar, with how the network scored the split."""
    n, seconds = len(target.utt_ids), result.seconds
    details = {
        "normalisation": store_location(model.norm_source),
        "model": {
            "name": trained.record.model.name,
            "kwargs": dict(trained.record.model.kwargs),
            "eval_window": model.net.eval_window,
            "eval_hop": model.net.eval_hop,
        },
        "eval_mode": plan.eval_mode,
        "fixed_frames": plan.fixed_length,
        "max_frames": plan.max_frames,
        "windowed": plan.windowed,
        "batching": "exact: segments of one input length after the model's own trimming",
        "n_batches": len(plan.dataset),
        "unscored": result.unscored,
        "quarantined": result.quarantined,
        "score": "logits[:, 1] - logits[:, 0] (natural-log LLR, bona fide vs spoof)",
        "device": str(model.device),
        "precision": precision,
        "batch_size": model.batch_size,
        "seconds": round(seconds, 3),
        "utterances_per_s": round(n / seconds, 2) if seconds > 0 else None,
    }
    write_scores_with_provenance(out_path, trained, st, target, result.scores, details)


def write_scores_with_provenance(
    out_path: Path,
    trained: TrainedRun,
    st: Any,
    target: _Split,
    scores: np.ndarray,
    details: dict[str, Any],
) -> None:
    """The score file, then its ``.json`` sidecar.

    The sidecar holds what every scorer records (file digest, run, checkpoint, store and its
    fingerprint, split, counts, versions) followed by ``details``: how this kind of model
    scored (model settings, device, timings, unscored and quarantined utterances).
    """
    labels = target.labels
    keys = np.where(labels == 1, "bonafide", np.where(labels == 0, "spoof", "-"))
    write_score_file(
        out_path,
        target.utt_ids,
        scores,
        format=target.format,
        speakers=target.speakers,
        systems=target.systems,
        keys=[str(k) for k in keys],
    )
    want = trained.record.store.fingerprint
    provenance = {
        "score_file": os.path.abspath(out_path),
        "format": target.format,
        "sha256": hashlib.sha256(out_path.read_bytes()).hexdigest(),
        "run": os.path.abspath(trained.run),
        "checkpoint": {
            "path": os.path.abspath(trained.checkpoint_path),
            "epoch": trained.checkpoint.epoch,
            "dev_eer": _finite_or_none(trained.checkpoint.dev_eer),
        },
        "store": {
            "path": store_location(st.path),
            "fingerprint": st.fingerprint,
            "run_fingerprint": want,
            "forced": st.fingerprint != want,
        },
        "split": target.name,
        "n_utterances": len(target.utt_ids),
        "n_bonafide": int(np.count_nonzero(labels == 1)),
        "n_spoof": int(np.count_nonzero(labels == 0)),
        **details,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
        "torch": str(torch.__version__),
    }
    sidecar = out_path.with_name(out_path.name + ".json")
    try:
        write_bytes_atomic(sidecar, (json.dumps(provenance, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise write_error(sidecar, exc) from None


_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
)


def write_error(path: str | os.PathLike, exc: OSError) -> SpoofstoreError:
    """The typed error of a failed write: :class:`ResourceError` (exit 1) for a full disk or a
    permission fault, :class:`ScoreFileError` (exit 2, e.g. a missing directory) otherwise."""
    message = f"cannot write: {exc.strerror or exc}"
    if exc.errno in _ENVIRONMENT_ERRNOS:
        return ResourceError(f"{os.fspath(path)}: {message}")
    return ScoreFileError(path, message)


def store_location(path: str) -> str:
    """Absolute local path; URLs and ``"checkpoint"`` as they are."""
    return path if path == "checkpoint" or "://" in path else os.path.abspath(path)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
