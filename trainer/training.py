"""The training loop: ``trainer.fit(store, model=..., out=...)`` -> a run directory.

The run directory (``config.json``, ``last.pt``, ``best.pt``, ``metrics.csv``, ``tb/``) is
described in :mod:`trainer.runs`; checkpoints in :mod:`trainer.checkpoint`; ``train.log`` (what
every session printed and warned) and ``training_curves.png`` in :mod:`trainer.runlog`.

The loop: AdamW (no weight decay on biases and norm weights), linear warm-up then cosine decay
per step, gradient clipping, class-weighted cross entropy (or class-balanced crops with
``balance=True``), autocast on CUDA (bf16, or fp16 with a GradScaler; bf16 autocast also on
CPU), channels-last on CUDA, optional ``torch.compile``. After every epoch the model scores the
dev split (:func:`trainer.inference.evaluate`); the dev EER picks ``best.pt`` and drives early
stopping (``patience``). Checkpoints are atomic, so a run killed at any point resumes
(``resume=True``) from its last finished epoch and ends with the same weights as an
uninterrupted run (on the same hardware and thread count).

A run goes through named phases: :func:`_plan_run` (run directory, resumed checkpoint, merged
config), :func:`_setup` (device, store, model, data, optimizer), :func:`_restore` (the resumed
state), then per epoch :func:`_train_epoch` and :func:`_evaluate_and_checkpoint`.

Under ``torchrun`` (``WORLD_SIZE > 1``) the loop runs DistributedDataParallel: the process
group comes from the environment (nccl on CUDA, gloo on CPU), every rank trains on a disjoint
shard of the same epoch plan, rank 0 alone scores dev and writes files.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed
from torch import nn
from tqdm import tqdm

from featstore import open_store
from featstore._version import __version__
from featstore.errors import ResourceError, StoreError
from trainer import checkpoint, memory, models
from trainer.checkpoint import Checkpoint, TrainingState
from trainer.config import RESUMABLE_CHANGES, FitConfig, load_config_file
from trainer.data import (
    CropBatches,
    CropBatchSampler,
    EvalBatches,
    FeatureNormalizer,
    SpecMasker,
    make_loader,
    normalization_stats,
    verify_or_refuse,
)
from trainer.errors import TrainingError
from trainer.gmm_baseline import fit_run as fit_gmm_run
from trainer.inference import autocast, evaluate, resolve_device, resolve_precision
from trainer.metrics import compute_eer
from trainer.models.registry import is_gmm_model
from trainer.runlog import RunLog, redraw_curves, session_summary
from trainer.runs import (
    BEST,
    LAST,
    METRICS,
    ModelRecord,
    RunRecord,
    RuntimeRecord,
    StoreRecord,
    default_run_dir,
    latest_run,
    lock_run,
    read_metrics,
    write_metrics,
    write_run_record,
)

__all__ = ["FitResult", "fit"]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    out : Path
        The run directory.
    best_dev_eer : float
        Lowest dev EER (fraction; NaN without a dev split).
    best_epoch : int
        1-based epoch of ``best.pt`` (0 if none).
    epochs_done : int
        Epochs completed (including those of an interrupted run that was resumed).
    stopped_early : bool
        True when ``patience`` ended the run.
    history : list of dict
        The rows of ``metrics.csv``.
    """

    out: Path
    best_dev_eer: float
    best_epoch: int
    epochs_done: int
    stopped_early: bool
    history: list = field(default_factory=list)

    @property
    def best(self) -> Path:
        """``out / "best.pt"``."""
        return self.out / BEST

    @property
    def last(self) -> Path:
        """``out / "last.pt"``."""
        return self.out / LAST


def fit(
    store: str | os.PathLike | None = None,
    model: str | None = None,
    out: str | os.PathLike | None = None,
    *,
    config: FitConfig | str | os.PathLike | Mapping | None = None,
    **settings: Any,
) -> FitResult:
    """Train a model on a feature store into a run directory.

    Parameters
    ----------
    store : str or os.PathLike
        Feature store (``featstore build`` output).
    model : str, default "grcnn"
        Model name.
    out : str or os.PathLike, optional
        Run directory; default ``runs/<model>-<YYYYmmdd-HHMMSS>`` (printed at the start).
    config : FitConfig or path to a TOML file or mapping, optional
        Base settings; explicit arguments override them.
    **settings
        Any other :class:`FitConfig` field (``epochs=3``, ``batch_size=16``,
        ``cache_dir="/scratch/cache"``, ...).

    Returns
    -------
    FitResult
        Where the run is and how it went.

    Raises
    ------
    TrainingError
        Bad settings, an unusable store or checkpoint, or a non-finite loss (the last good
        checkpoint is kept).

    Examples
    --------
    >>> run = fit("store.zarr", model="grcnn", out="runs/grcnn", epochs=1)  # doctest: +SKIP
    >>> sorted(p.name for p in run.out.iterdir())  # doctest: +SKIP
    ['best.pt', 'config.json', 'last.pt', 'metrics.csv', 'train.log', 'training_curves.png']
    """
    explicit = _explicit_settings(store, model, out, config, settings)
    if is_gmm_model(explicit.get("model")):  # the official GMM baselines train without a network
        return fit_gmm_run(explicit)
    dist = _init_distributed(str(explicit.get("device", "auto")))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        explicit["out"] = os.fspath(_run_dir(explicit, dist))
        with lock_run(explicit["out"]) if dist.main else nullcontext():
            return _train(_plan_run(explicit, dist), dist)
    finally:  # leave the process as it was (threads and determinism are process-wide)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        dist.close()


# --- configuration ----------------------------------------------------------------------------


def _explicit_settings(
    store: str | os.PathLike | None,
    model: str | None,
    out: str | os.PathLike | None,
    config: FitConfig | str | os.PathLike | Mapping | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    valid = {f.name for f in fields(FitConfig)}
    explicit: dict[str, Any] = {}
    if isinstance(config, FitConfig):
        explicit.update(asdict(config))
    elif isinstance(config, Mapping):
        explicit.update(config)
    elif config is not None:
        explicit.update(load_config_file(config))
    for name, value in (("store", store), ("model", model), ("out", out), *overrides.items()):
        if name not in valid:
            raise TypeError(f"fit() got an unknown setting {name!r}")
        if value is not None:
            explicit[name] = os.fspath(value) if name in ("store", "out", "cache_dir") else value
    return explicit


# --- distributed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value: Any) -> list:
        if not self.enabled:
            return [value]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _init_distributed(device_pref: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    dist = torch.distributed
    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = device_pref != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owns)


# --- phase 1: the run directory, the resumed checkpoint, the config ---------------------------


@dataclass(frozen=True)
class _RunPlan:
    cfg: FitConfig
    out: Path
    resume: Checkpoint | None

    @property
    def last(self) -> Path:
        return self.out / LAST


def _run_dir(explicit: Mapping[str, Any], dist: _Dist) -> Path:
    """The run directory: ``out``, else the latest run to resume or a new one (rank 0 decides).

    With ``resume``, the directory must hold a ``last.pt``.
    """
    out = explicit.get("out")
    if out is None:
        model_name = explicit.get("model", FitConfig.model)
        latest = _latest_run_of(model_name) if explicit.get("resume", False) else None
        if explicit.get("resume", False) and latest is None:
            raise TrainingError(
                f"nothing to resume: no {model_name} run with a last.pt under "
                f"{os.path.abspath('runs')}; pass --out RUN_DIR, or start a run without --resume"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = os.fspath(latest or default_run_dir(model_name, stamp))
        out = dist.broadcast(out)
    out = Path(out)
    if explicit.get("resume", False) and not (out / LAST).is_file():
        raise TrainingError(
            f"nothing to resume in {out}: no {LAST}"
            + (" (the run never finished an epoch)" if out.is_dir() else " (no such directory)")
            + "; run without --resume to start it afresh"
        )
    return out


def _plan_run(explicit: Mapping[str, Any], dist: _Dist) -> _RunPlan:
    """Load ``last.pt`` of the run directory (:func:`_run_dir`) to resume, merge the config."""
    out = _run_dir(explicit, dist)
    resume = bool(explicit.get("resume", False))
    last = out / LAST
    if not resume:
        if last.exists():
            raise TrainingError(
                f"{out}: already holds a run (last.pt); pass --resume to continue "
                "it or choose another --out"
            )
        merged = {**asdict(FitConfig()), **explicit, "out": os.fspath(out)}
        return _RunPlan(FitConfig(**merged).validate(), out, None)
    state = checkpoint.read_checkpoint(last)
    if state.run is None or state.training is None:
        raise TrainingError(f"{last}: cannot resume, it holds no run record or training state")
    saved = state.run.fit.to_dict()
    changed = sorted(
        k
        for k, v in explicit.items()
        if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v
    )
    if changed:
        raise TrainingError(
            f"{last}: cannot resume with different "
            + ", ".join(f"{k} ({saved[k]!r} -> {explicit[k]!r})" for k in changed)
            + "; start a new run (another --out) instead"
        )
    merged = {**saved, **explicit, "out": os.fspath(out)}
    return _RunPlan(FitConfig(**merged).validate(), out, state)


def _latest_run_of(model: str) -> Path | None:
    try:
        return latest_run("runs", model=model)
    except TrainingError:
        return None


# --- phase 2: setup ---------------------------------------------------------------------------


@dataclass
class _Setup:
    """Everything a run trains with, built once."""

    cfg: FitConfig
    device: torch.device
    precision: str
    record: RunRecord
    net: nn.Module
    norm_stats: dict[str, tuple[np.ndarray, np.ndarray]]
    normalizer: FeatureNormalizer
    train_set: CropBatches
    dev_set: EvalBatches | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    masker: SpecMasker | None = None

    @property
    def features(self) -> dict[str, int]:
        return dict(self.record.model.n_bins)


def _setup(plan: _RunPlan, dist: _Dist, log: Callable[[str], None]) -> _Setup:
    """Device and precision, the store, the model, the data, the loss and the optimizer."""
    cfg = plan.cfg
    device, precision = _configure_runtime(cfg, dist)
    log(f"run directory: {plan.out}")
    if cfg.verify:
        _verify_store(cfg, dist, log)
    store = open_store(cfg.store, mode="r", cache_dir=cfg.cache_dir)
    if plan.resume is not None and plan.resume.run.store.fingerprint != store.fingerprint:
        raise TrainingError(
            f"{store.path}: store fingerprint {store.fingerprint} differs from the "
            f"one the run was trained on ({plan.resume.run.store.fingerprint}); resume on the "
            "same store"
        )
    net, model = _build_model(cfg, store)
    cfg = replace(
        cfg,
        crop_frames=int(cfg.crop_frames or model.train_frames),
        crops_per_utt=int(cfg.crops_per_utt or getattr(net, "train_crops_per_utt", 1)),
    )
    if cfg.crop_frames < net.min_frames:
        raise TrainingError(
            f"crop_frames {cfg.crop_frames} is shorter than model {cfg.model!r}'s minimum of "
            f"{net.min_frames} frames; use --crop-frames {net.min_frames} or more"
        )
    features = dict(model.n_bins)
    train_set = CropBatches(
        store,
        features,
        cfg.crop_frames,
        cfg.batch_size,
        seed=cfg.seed,
        split=cfg.train_split,
        balance=cfg.balance,
        rank=dist.rank,
        world_size=dist.world_size,
        crops_per_utt=cfg.crops_per_utt,
        views=cfg.views,
        clean_prob=cfg.clean_prob,
    )
    _check_train_split(cfg, store, train_set, dist)
    dev_set = _dev_set(cfg, store, model, dist)
    norm_stats = normalization_stats(store, features)
    normalizer = FeatureNormalizer(norm_stats).to(device)
    counts = train_set.class_counts()
    weight = None
    if not cfg.balance and np.all(counts > 0):
        weight = torch.tensor(counts.sum() / (2.0 * counts), dtype=torch.float32)
    if cfg.checkpoint_windows:
        _checkpoint_windows(net, cfg.model)
    net.to(device)
    if device.type == "cuda" and cfg.channels_last and precision != "fp32":
        net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr)
    total_steps = train_set.num_batches(0) * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, round(cfg.warmup * total_steps))
    )
    record = RunRecord(
        fit=cfg,
        store=StoreRecord(
            path=store.path if "://" in store.path else os.path.abspath(store.path),
            fingerprint=store.fingerprint,
            format=store.format,
            n_bins={f: int(store.features[f]["n_bins"]) for f in model.features},
        ),
        model=model,
        runtime=RuntimeRecord(
            device=str(device),
            precision=precision,
            world_size=dist.world_size,
            torch=str(torch.__version__),
            version=__version__,
        ),
    )
    return _Setup(
        cfg=cfg,
        device=device,
        precision=precision,
        record=record,
        net=net,
        norm_stats=norm_stats,
        normalizer=normalizer,
        train_set=train_set,
        dev_set=dev_set,
        criterion=nn.CrossEntropyLoss(weight=weight).to(device),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        masker=_masker(cfg, dist),
    )


def _masker(cfg: FitConfig, dist: _Dist) -> SpecMasker | None:
    """The training batches' feature masking (``spec_mask``), or None."""
    if not cfg.spec_mask:
        return None
    return SpecMasker(
        cfg.seed,
        time_masks=cfg.time_masks,
        freq_masks=cfg.freq_masks,
        time_mask_width=cfg.time_mask_width,
        freq_mask_width=cfg.freq_mask_width,
        rank=dist.rank,
    )


def _checkpoint_windows(net: nn.Module, model: str) -> None:
    """Turn on activation checkpointing per window (``checkpoint_windows``), or refuse."""
    if not hasattr(net, "checkpoint_windows"):
        raise TrainingError(
            f"model {model!r} has no per-window activation checkpointing; "
            "--checkpoint-windows is for the GRCNN models"
        )
    net.checkpoint_windows = True


def _verify_store(cfg: FitConfig, dist: _Dist, log: Callable[[str], None]) -> None:
    """``featstore verify`` the store (rank 0 reads it; every rank refuses on problems)."""
    problem = None
    if dist.main:
        log(f"verifying {cfg.store} ...")
        try:
            verify_or_refuse(cfg.store)
        except StoreError as exc:
            problem = (exc.path, exc.message)
    problem = dist.broadcast(problem)
    if problem is not None:
        raise StoreError(*problem)


def _configure_runtime(cfg: FitConfig, dist: _Dist) -> tuple[torch.device, str]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, index=dist.local_rank if dist.enabled else 0)
    precision = resolve_precision(cfg.precision, device)
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device, precision


def _build_model(cfg: FitConfig, store: Any) -> tuple[nn.Module, ModelRecord]:
    """The seeded, freshly initialised model for the store's bins, and its record.

    A model is built for the bins the store holds of each feature it reads (its ``n_bins``
    parameter, unless ``model_kwargs`` sets it), so that no bin is silently left out; a model
    that cannot take them is refused, naming both numbers. The record's ``kwargs`` hold the
    derived ``n_bins``, so scoring rebuilds the same model.
    """
    if cfg.model not in models.MODELS:
        raise TrainingError(f"unknown model {cfg.model!r}; available: {', '.join(models.MODELS)}")
    kwargs = dict(cfg.model_kwargs)
    features = _model_features(cfg, kwargs)
    missing = [f for f in features if f not in store.features]
    if missing:
        raise TrainingError(
            f"{store.path}: model {cfg.model!r} reads feature(s) {', '.join(missing)}, the store "
            f"has {', '.join(store.features)}; build a store with them (featstore build "
            "--features ...)"
        )
    store_bins = {f: int(store.features[f]["n_bins"]) for f in features}
    _seed_everything(cfg.seed)
    net = _build_with_features(cfg.model, kwargs)
    wanted = {f: store_bins[f] - int(net.unused_bins.get(f, 0)) for f in net.features}
    if "n_bins" not in kwargs and any(net.n_bins[f] != wanted[f] for f in net.features):
        kwargs["n_bins"] = _single_bin_count(cfg.model, net, store_bins, wanted)
        _seed_everything(cfg.seed)
        try:
            net = models.build_model(cfg.model, **kwargs)
        except models.ModelError as exc:
            raise TrainingError(
                f"{store.path}: model {cfg.model!r} cannot take the store's "
                + _bins_text(store_bins)
                + f" (it is built for {_bins_text(net.n_bins)}): {exc}"
            ) from None
    _check_model_bins(cfg.model, net, store_bins, wanted, store.path)
    return net, ModelRecord.of(cfg.model, kwargs, net)


def _model_features(cfg: FitConfig, kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The features the model reads: ``cfg.features`` (put into ``kwargs``, so the run
    record rebuilds the same model) or the model's own."""
    default = tuple(models.MODELS[cfg.model].features)
    chosen = cfg.feature_list
    if chosen is None:
        given = kwargs.get("features")
        return default if given is None else tuple(given)
    if "features" in kwargs and tuple(kwargs["features"]) != chosen:
        raise TrainingError(
            f"features {','.join(chosen)} and model_kwargs features "
            f"{','.join(kwargs['features'])} disagree; give the features once"
        )
    if chosen != default:
        kwargs["features"] = list(chosen)
    return chosen


def _build_with_features(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``build_model``; a model without a ``features`` parameter asked for other features is
    a :class:`TrainingError` saying which models take them."""
    try:
        return models.build_model(name, **kwargs)
    except models.ModelConfigError as exc:
        if "features" in kwargs and "no parameter(s) features" in str(exc):
            default = ",".join(models.MODELS[name].features)
            raise TrainingError(
                f"model {name!r} reads fixed features ({default}), it cannot take --features "
                f"{','.join(kwargs['features'])}; models with a features parameter (lcnn, "
                "vgg10) take them, and grcnn has the variants grcnn-mgd and grcnn-logmel"
            ) from None
        raise


def _bins_text(bins: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {f} bins" for f, n in bins.items())


def _single_bin_count(
    model: str, net: nn.Module, store_bins: Mapping[str, int], wanted: Mapping[str, int]
) -> int:
    """The one ``n_bins`` the model's features need (models take one count for all)."""
    counts = set(wanted.values())
    if len(counts) > 1:
        used = ", ".join(
            f"{f} {store_bins[f]}" + (f" ({wanted[f]} used)" if wanted[f] != store_bins[f] else "")
            for f in net.features
        )
        raise TrainingError(
            f"model {model!r} takes the same number of bins of each feature, the store has "
            f"{used}; build the store with matching feature parameters"
        )
    return counts.pop()


def _check_model_bins(
    model: str,
    net: nn.Module,
    store_bins: Mapping[str, int],
    wanted: Mapping[str, int],
    where: str,
) -> None:
    """Refuse a model needing more bins than the store has; warn when it leaves bins out."""
    for f in net.features:
        n = int(net.n_bins[f])
        if n > wanted[f]:
            raise TrainingError(
                f"{where}: model {model!r} takes {n} bins of {f!r}, the store has "
                f"{store_bins[f]}; drop n_bins from model_kwargs or build the store with "
                "matching feature parameters"
            )
        if n < wanted[f]:
            warnings.warn(
                f"model {model!r} uses only the first {n} of the store's {store_bins[f]} {f} "
                f"bins (model_kwargs n_bins = {n}); the other {wanted[f] - n} are ignored",
                stacklevel=5,
            )


def _check_train_split(cfg: FitConfig, store: Any, train_set: CropBatches, dist: _Dist) -> None:
    """Refuse a one-class train split; say so when every crop is longer than its utterance."""
    n_spoof, n_bonafide = (int(n) for n in train_set.class_counts())
    if not (n_spoof and n_bonafide):
        only, n = ("spoof", n_spoof) if n_spoof else ("bona fide", n_bonafide)
        raise TrainingError(
            f"{store.path}: split {cfg.train_split!r} has only {only} utterances ({n}); cannot "
            "train a bona fide/spoof classifier on one class"
        )
    usable = train_set.n_frames[(train_set.n_frames > 0) & (train_set.labels >= 0)]
    longest = int(usable.max())
    if dist.main and cfg.crop_frames > longest:
        warnings.warn(
            f"crop_frames {cfg.crop_frames} is longer than every utterance of split "
            f"{cfg.train_split!r} (the longest has {longest} frames): every crop repeats its "
            "utterance from its first frame (wrapped) to fill the crop",
            stacklevel=4,
        )


def _dev_set(cfg: FitConfig, store: Any, model: ModelRecord, dist: _Dist) -> EvalBatches | None:
    """Rank 0's dev batches (None on other ranks and without a dev split)."""
    if cfg.dev_split not in store.splits:
        if dist.main:
            warnings.warn(
                f"{store.path}: no {cfg.dev_split!r} split; no dev EER, best.pt = last epoch",
                stacklevel=4,
            )
        return None
    if not dist.main:
        return None
    dev = EvalBatches(
        store,
        dict(model.n_bins),
        cfg.dev_split,
        int(cfg.eval_batch_size or cfg.batch_size),
        model.eval_window,
        model.eval_hop,
    )
    labels = np.asarray(dev.labels)
    n_spoof, n_bonafide = int(np.sum(labels == 0)), int(np.sum(labels == 1))
    if not (n_spoof and n_bonafide):
        warnings.warn(
            f"{store.path}: split {cfg.dev_split!r} has {n_bonafide} bona fide and {n_spoof} "
            "spoof utterances: the dev EER is undefined (needs both); best.pt follows the last "
            "epoch and patience never stops the run",
            stacklevel=4,
        )
    return dev


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seed the legacy global generator too
    torch.manual_seed(seed)


# --- phase 3: restore -------------------------------------------------------------------------


@dataclass
class _Progress:
    """Where training stands (after ``epoch`` finished epochs)."""

    epoch: int = 0
    step: int = 0
    best_eer: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_eer_or_nan(self) -> float:
        return self.best_eer if math.isfinite(self.best_eer) else math.nan


def _restore(setup: _Setup, plan: _RunPlan, dist: _Dist, log: Callable[[str], None]) -> _Progress:
    """Seed this rank's dropout stream; put back the resumed state (if any)."""
    # each rank has its own dropout stream; rank 0 of a DDP run == a single-process run
    cfg = setup.cfg
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank]).generate_state(1)[0]))
    if plan.resume is None:
        return _Progress()
    state, saved = plan.resume.training, plan.resume
    setup.net.load_state_dict(saved.weights)
    setup.optimizer.load_state_dict(state.optimizer)
    setup.scheduler.load_state_dict(state.scheduler)
    if state.scaler:
        setup.scaler.load_state_dict(state.scaler)
    if len(state.rng) == dist.world_size:
        checkpoint.restore_rng_state(state.rng[dist.rank])
    else:
        warnings.warn(
            f"{plan.last}: saved by {len(state.rng)} rank(s), resumed by "
            f"{dist.world_size}; random streams are not continued exactly",
            stacklevel=3,
        )
    history = [r for r in read_metrics(plan.out / METRICS) if r["epoch"] <= saved.epoch]
    log(f"resuming from {plan.last} after epoch {saved.epoch}")
    return _Progress(
        epoch=saved.epoch,
        step=state.step,
        best_eer=state.best_dev_eer,
        best_epoch=state.best_epoch,
        bad_epochs=state.bad_epochs,
        history=history,
    )


# --- the run ----------------------------------------------------------------------------------


def _train(plan: _RunPlan, dist: _Dist) -> FitResult:
    """Run one session with its ``train.log`` (lines, warnings, how it ended) on rank 0."""
    if plan.cfg.tensorboard:  # every rank: none may go on without the others
        _require_tensorboard()
    log = RunLog(echo=plan.cfg.progress, enabled=dist.main)
    with log.capturing_warnings():
        try:
            result = _run_session(plan, dist, log)
        except BaseException as exc:
            # a resume that cannot go on reports into its run's log; a new run that fails
            # before training leaves no directory behind (trainer.runs.lock_run)
            if log.path is None and plan.resume is not None and plan.out.is_dir():
                with contextlib.suppress(ResourceError):  # the error to report is exc
                    log.open(plan.out, _session_line(plan, plan.cfg))
            log.ended(exc)
            raise
        else:
            log.ended(None)
        finally:
            log.close()
    return result


def _session_line(plan: _RunPlan, cfg: FitConfig, device: Any = None, precision: str = "") -> str:
    return session_summary(
        None if plan.resume is None else plan.resume.epoch,
        {
            "model": cfg.model,
            "store": cfg.store,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "crop_frames": cfg.crop_frames,
            "crops_per_utt": cfg.crops_per_utt or "model's",
            "views": cfg.views
            if cfg.clean_prob is None
            else f"{cfg.views}(clean {cfg.clean_prob})",
            "spec_mask": cfg.spec_mask,
            "device": device or cfg.device,
            "precision": precision or cfg.precision,
            "spoofstore": __version__,
        },
    )


def _run_session(plan: _RunPlan, dist: _Dist, log: RunLog) -> FitResult:
    """Set up, restore, then train and checkpoint epoch after epoch."""
    show = dist.main and plan.cfg.progress
    setup = _setup(plan, dist, log)
    progress = _restore(setup, plan, dist, log)
    if dist.main and setup.device.type == "cpu":
        _warn_if_batch_too_big(setup.cfg)
    writer = None
    if dist.main:
        plan.out.mkdir(parents=True, exist_ok=True)
        log.open(plan.out, _session_line(plan, setup.cfg, setup.device, setup.precision))
        write_run_record(plan.out, setup.record)
        write_metrics(plan.out / METRICS, progress.history)
        writer = _tensorboard(plan.out / "tb", setup.cfg.tensorboard)
    dist.barrier()

    train_net: nn.Module = setup.net
    if dist.enabled:
        # static graph: crops have one length, so the parameters a step uses never change
        # (and parameters unused at that length, e.g. GRCNN's state convolutions for a
        # one-window crop, are handled without a per-step search)
        device = setup.device
        train_net = nn.parallel.DistributedDataParallel(
            setup.net,
            device_ids=[device.index] if device.type == "cuda" else None,
            static_graph=True,
        )
    if setup.cfg.compile:
        train_net = torch.compile(train_net)

    cfg = setup.cfg
    stopped_early = cfg.patience is not None and progress.bad_epochs >= cfg.patience
    start = cfg.epochs if stopped_early else progress.epoch
    # one loader for the whole run: persistent workers keep their store maps warm
    sampler = CropBatchSampler(setup.train_set, start)
    loader = make_loader(
        setup.train_set,
        sampler,
        workers=cfg.workers,
        pin_memory=setup.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
        persistent=True,
    )
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        bar = _progress_bar(loader, len(sampler), f"epoch {epoch + 1}/{cfg.epochs}", show)
        if epoch == start and dist.main and setup.device.type == "cpu":
            bar = _TimedBatches(bar, len(sampler), epoch, log)
        stats = _train_epoch(setup, train_net, bar, epoch, progress, dist, plan.last)
        _evaluate_and_checkpoint(setup, plan, progress, stats, dist, writer, log)
        if cfg.patience is not None and progress.bad_epochs >= cfg.patience:
            stopped_early = True
            log(f"early stop: no better dev EER for {progress.bad_epochs} epochs")
            break
    if writer is not None:
        writer.close()
    return FitResult(
        out=plan.out,
        best_dev_eer=progress.best_eer_or_nan,
        best_epoch=progress.best_epoch,
        epochs_done=progress.history[-1]["epoch"] if progress.history else 0,
        stopped_early=stopped_early,
        history=progress.history,
    )


# --- phase 4: one epoch -----------------------------------------------------------------------


@dataclass(frozen=True)
class _EpochStats:
    epoch: int
    loss_sum: float
    n_seen: int
    started: float
    train_seconds: float


def _train_epoch(
    setup: _Setup,
    train_net: nn.Module,
    batches: Any,
    epoch: int,
    progress: _Progress,
    dist: _Dist,
    last: Path,
) -> _EpochStats:
    """One pass over the epoch's crops; advances ``progress.step``."""
    t0 = time.perf_counter()
    setup.net.train()
    features = setup.features
    params = [p for p in setup.net.parameters() if p.requires_grad]
    loss_sum, n_seen = 0.0, 0
    for batch in batches:
        x = setup.normalizer({f: batch[f].to(setup.device, non_blocking=True) for f in features})
        if setup.masker is not None:  # training batches only, after normalisation
            x = setup.masker(x, epoch=epoch, step=progress.step)
        y = batch["label"].to(setup.device, non_blocking=True)
        with autocast(setup.device, setup.precision):
            logits = train_net(**{f: x[f] for f in features})
        loss = setup.criterion(logits.float(), y)
        loss_value = _mean_over_ranks(loss.detach(), dist)
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"non-finite training loss ({loss_value}) at epoch {epoch + 1}, step "
                f"{progress.step + 1}; "
                + (
                    f"the last good checkpoint is kept: {last} (epoch {epoch})"
                    if epoch > 0
                    else "no checkpoint was written yet"
                )
                + "; try a lower --lr or --precision fp32"
            )
        _optimizer_step(setup, loss, params, epoch, progress.step, last)
        progress.step += 1
        loss_sum += loss_value * y.numel()
        n_seen += y.numel()
        if hasattr(batches, "set_postfix") and progress.step % 5 == 0:
            rate = n_seen * dist.world_size / max(time.perf_counter() - t0, 1e-9)
            batches.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{rate:.0f}")
    if hasattr(batches, "close"):
        batches.close()
    return _EpochStats(epoch, loss_sum, n_seen, t0, time.perf_counter() - t0)


def _mean_over_ranks(value: torch.Tensor, dist: _Dist) -> float:
    if dist.enabled:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= dist.world_size
    return float(value)


def _optimizer_step(
    setup: _Setup, loss: torch.Tensor, params: list, epoch: int, step: int, last: Path
) -> None:
    """Backward, clip, step the optimizer, the GradScaler and the LR schedule."""
    cfg, scaler, optimizer = setup.cfg, setup.scaler, setup.optimizer
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if not scaler.is_enabled() and not torch.isfinite(norm):
            raise TrainingError(
                f"non-finite gradient norm at epoch {epoch + 1}, step {step + 1}; "
                f"the last good checkpoint is kept: {last}"
            )
    scaler.step(optimizer)
    scaler.update()
    setup.scheduler.step()


# --- phase 5: evaluate and checkpoint ---------------------------------------------------------


def _evaluate_and_checkpoint(
    setup: _Setup,
    plan: _RunPlan,
    progress: _Progress,
    stats: _EpochStats,
    dist: _Dist,
    writer: Any,
    log: RunLog,
) -> None:
    """Dev EER, best/patience bookkeeping, ``metrics.csv``, ``best.pt``, ``last.pt``, logs."""
    epoch = stats.epoch
    dev_eer = math.nan
    if dist.main and setup.dev_set is not None:
        scores = evaluate(
            setup.net,
            setup.normalizer,
            setup.dev_set,
            setup.device,
            setup.precision,
            setup.cfg.workers,
        )
        dev_eer = _dev_eer(scores, setup.dev_set.labels)
    dev_eer = float(dist.broadcast(dev_eer))
    if math.isfinite(dev_eer):
        improved = dev_eer < progress.best_eer
        progress.bad_epochs = 0 if improved else progress.bad_epochs + 1
    else:  # no dev EER (no dev split, or one class only): best.pt follows last.pt
        improved = not math.isfinite(progress.best_eer)
    if improved:
        progress.best_eer = dev_eer if math.isfinite(dev_eer) else math.inf
        progress.best_epoch = epoch + 1
    progress.epoch = epoch + 1
    row = {
        "epoch": epoch + 1,
        "step": progress.step,
        "train_loss": stats.loss_sum / max(stats.n_seen, 1),
        "dev_eer": dev_eer,
        "best_dev_eer": progress.best_eer_or_nan,
        "lr": float(setup.optimizer.param_groups[0]["lr"]),
        "examples_per_s": stats.n_seen * dist.world_size / max(stats.train_seconds, 1e-9),
        "epoch_seconds": time.perf_counter() - stats.started,
    }
    progress.history.append(row)
    rng_states = dist.all_gather(checkpoint.capture_rng_state())
    if dist.main:
        state = _checkpoint(setup, progress, dev_eer, rng_states)
        write_metrics(plan.out / METRICS, progress.history)
        if improved:
            checkpoint.save_checkpoint(plan.out / BEST, state)
        checkpoint.save_checkpoint(plan.last, state)
        if writer is not None:
            for key in ("train_loss", "dev_eer", "lr", "examples_per_s"):
                writer.add_scalar(key, row[key], epoch + 1)
            writer.flush()
        log(
            f"epoch {epoch + 1}/{setup.cfg.epochs}: train_loss {row['train_loss']:.4f}  "
            f"dev_eer {_pct(dev_eer)}  best {_pct(row['best_dev_eer'])} "
            f"(epoch {progress.best_epoch})  {row['examples_per_s']:.0f} ex/s"
        )
        redraw_curves(plan.out, plan.out / METRICS, log)
    dist.barrier()


def _checkpoint(setup: _Setup, progress: _Progress, dev_eer: float, rng: list) -> Checkpoint:
    scaler = setup.scaler
    return Checkpoint(
        weights=setup.net.state_dict(),
        epoch=progress.epoch,
        dev_eer=dev_eer,
        run=setup.record,
        normalizer=setup.norm_stats,
        training=TrainingState(
            optimizer=setup.optimizer.state_dict(),
            scheduler=setup.scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler.is_enabled() else {},
            step=progress.step,
            best_dev_eer=progress.best_eer,
            best_epoch=progress.best_epoch,
            bad_epochs=progress.bad_epochs,
            rng=rng,
        ),
    )


def _dev_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    ok = np.isfinite(scores) & (labels >= 0)
    bona, spoof = scores[ok & (labels == 1)], scores[ok & (labels == 0)]
    if bona.size == 0 or spoof.size == 0:
        return math.nan
    return float(compute_eer(bona, spoof)[0])


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


_ESTIMATE_BATCHES = 5
"""Batches timed (after the first, which starts the workers) for the epoch-time estimate."""


class _TimedBatches:
    """``batches`` (a loader or its tqdm bar), logging how long the epoch will take once
    :data:`_ESTIMATE_BATCHES` batches after the first are done. Other attributes
    (``set_postfix``, ``close``) are those of ``batches``.
    """

    def __init__(self, batches: Any, total: int, epoch: int, log: Callable[[str], None]):
        self._batches, self._total, self._epoch, self._log = batches, total, epoch, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_batches"], name)

    def __iter__(self):
        start = 0.0
        for i, batch in enumerate(self._batches):
            if i == 1:
                start = time.perf_counter()
            elif i == 1 + _ESTIMATE_BATCHES:
                per_batch = (time.perf_counter() - start) / _ESTIMATE_BATCHES
                self._log(
                    f"estimate: epoch {self._epoch + 1} takes about "
                    f"{_duration(per_batch * self._total)} on the CPU ({per_batch:.2f} s per "
                    f"batch x {self._total} batches; the dev pass comes on top)"
                )
            yield batch


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"12 min 30 s"``, ``"3 h 05 min"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _warn_if_batch_too_big(cfg: FitConfig) -> None:
    """Warn when the batch will likely not fit in the memory left on this machine (CPU).

    The estimates are of models that keep all activations: none with ``checkpoint_windows``.
    """
    if cfg.checkpoint_windows:
        return
    need = memory.estimate_training_memory(cfg.model, cfg.batch_size, int(cfg.crop_frames))
    available = memory.available_memory()
    if need is None or available is None or need <= available:
        return
    fits = memory.fitting_batch_size(cfg.model, int(cfg.crop_frames), 0.9 * available)
    advice = (
        f"try --batch-size {fits}"
        if fits
        else "even --batch-size 1 may not fit: try shorter --crop-frames or a GPU"
    )
    if cfg.model.startswith("grcnn"):
        advice += ", or --checkpoint-windows"
    warnings.warn(
        f"{cfg.model} at --batch-size {cfg.batch_size} with {cfg.crop_frames}-frame crops "
        f"needs about {need / 1e9:.1f} GB of memory on the CPU"
        + (" (estimate for the default model parameters)" if cfg.model_kwargs else "")
        + f", and {available / 1e9:.1f} GB is available; {advice}",
        UserWarning,
        stacklevel=2,
    )


def _progress_bar(loader: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return loader
    return tqdm(loader, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _tensorboard(path: Path, wanted: bool | None) -> Any:
    """A SummaryWriter on ``path``; None when not ``wanted`` or (``wanted`` None) not installed."""
    if wanted is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        if wanted:
            _require_tensorboard()
        return None
    return SummaryWriter(os.fspath(path))


def _require_tensorboard() -> None:
    """Raise :class:`ResourceError` unless ``torch.utils.tensorboard`` can be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as exc:
        raise ResourceError(
            f"--tensorboard needs the tensorboard package ({exc}); install the extra: "
            "pip install 'spoofstore[tensorboard]', or leave --tensorboard out"
        ) from None
