"""The training loop: ``trainer.fit(store, model=..., out=...)`` -> a run directory.

A run directory holds everything about a run::

    config.json   resolved FitConfig, store path + fingerprint, model description, runtime
    last.pt       full state after the latest finished epoch (model, optimizer, scheduler,
                  GradScaler, epoch, step, best dev EER, every RNG state, config)
    best.pt       the same, for the epoch with the lowest dev EER so far
    metrics.csv   one row per epoch: epoch, step, train_loss, dev_eer, best_dev_eer, lr, ...
    tb/           TensorBoard events (only when the ``tensorboard`` package is installed)

The loop: AdamW (no weight decay on biases and norm weights), linear warm-up then cosine decay
per step, gradient clipping, class-weighted cross entropy (or class-balanced crops with
``balance=True``), autocast on CUDA (bf16, or fp16 with a GradScaler; bf16 autocast also on
CPU), channels-last on CUDA, optional ``torch.compile``. After every epoch the model scores the
dev split (score = logit[1] - logit[0]); the dev EER picks ``best.pt`` and drives early
stopping (``patience``). Checkpoints are atomic (:mod:`trainer.checkpoint`), so a run killed at
any point resumes (``resume=True``) from its last finished epoch and ends with the same weights
as an uninterrupted run (on the same hardware and thread count).

Under ``torchrun`` (``WORLD_SIZE > 1``) the loop runs DistributedDataParallel: the process
group comes from the environment (nccl on CUDA, gloo on CPU), every rank trains on a disjoint
shard of the same epoch plan, rank 0 alone scores dev and writes files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
import time
import tomllib
import types
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featstore._version import __version__
from trainer import checkpoint
from trainer.data import (
    CropBatches,
    CropBatchSampler,
    EvalBatches,
    FeatureNormalizer,
    make_loader,
)
from trainer.errors import TrainingError

__all__ = ["FitConfig", "FitResult", "evaluate", "fit", "load_config_file"]

METRICS_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "dev_eer",
    "best_dev_eer",
    "lr",
    "examples_per_s",
    "epoch_seconds",
)

# Fields a resumed run may change; any other field must match the checkpoint's config.
_RESUMABLE_CHANGES = frozenset(
    {
        "store",
        "out",
        "epochs",
        "workers",
        "device",
        "precision",
        "resume",
        "patience",
        "compile",
        "channels_last",
        "deterministic",
        "threads",
        "eval_batch_size",
        "progress",
    }
)


@dataclass
class FitConfig:
    """Everything that defines a training run (``--config train.toml`` sets the same fields).

    Attributes
    ----------
    store : str
        Feature store path (Zarr directory or ``.h5``) or URL.
    model : str, default "grcnn"
        Model name (see ``trainer.MODELS``).
    out : str or None
        Run directory; default ``runs/<model>-<YYYYmmdd-HHMMSS>``.
    epochs : int, default 20
        Epochs to train.
    batch_size : int, default 32
        Crops per optimizer step (per rank under DDP).
    crop_frames : int or None
        Frames per training crop; default ``model.train_frames``.
    lr, weight_decay : float
        AdamW peak learning rate and decoupled weight decay.
    warmup : float, default 0.05
        Fraction of all steps spent in linear warm-up (then cosine decay to 0).
    grad_clip : float or None, default 5.0
        Max global gradient norm (None: no clipping).
    seed : int, default 0
        Seeds model initialisation, dropout and every epoch's crop plan.
    device : {"auto", "cpu", "cuda"} or str
        "auto" picks CUDA when available (also "cuda:1" etc.).
    precision : {"auto", "fp32", "bf16", "fp16"}
        "auto": bf16 (or fp16) autocast on CUDA, fp32 on CPU. fp16 on CPU falls back to fp32.
    workers : int, default 2
        DataLoader worker processes (0: load in the training process).
    balance : bool, default False
        Class-balanced crops; otherwise the loss is class-weighted.
    resume : bool, default False
        Continue the run in ``out`` (default: the latest ``runs/<model>-*``) from ``last.pt``.
    patience : int or None
        Stop after this many epochs without a better dev EER (None: never).
    compile : bool, default False
        ``torch.compile`` the training model.
    channels_last : bool, default True
        Channels-last memory format for the model on CUDA with bf16/fp16 autocast (tensor
        cores); ignored on CPU and in fp32.
    deterministic : bool, default False
        ``torch.use_deterministic_algorithms(True)`` (and no cuDNN autotuning).
    threads : int or None
        ``torch.set_num_threads``; None leaves torch's default.
    eval_batch_size : int or None
        Segments per dev batch; default ``batch_size``.
    train_split, dev_split : str
        Store splits to train on and to validate on.
    model_kwargs : dict
        Extra keyword arguments of ``build_model`` (e.g. smaller widths for tests).
    progress : bool, default True
        Print the run directory, per-epoch summaries and a tqdm bar.
    """

    store: str = ""
    model: str = "grcnn"
    out: str | None = None
    epochs: int = 20
    batch_size: int = 32
    crop_frames: int | None = None
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup: float = 0.05
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2
    balance: bool = False
    resume: bool = False
    patience: int | None = None
    compile: bool = False
    channels_last: bool = True
    deterministic: bool = False
    threads: int | None = None
    eval_batch_size: int | None = None
    train_split: str = "train"
    dev_split: str = "dev"
    model_kwargs: dict = field(default_factory=dict)
    progress: bool = True

    def validate(self) -> FitConfig:
        """Check value ranges; raises :class:`TrainingError` naming the bad field."""
        if not self.store:
            raise TrainingError("no store given")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        if self.crop_frames is not None:
            positive["crop_frames"] = self.crop_frames
        if self.eval_batch_size is not None:
            positive["eval_batch_size"] = self.eval_batch_size
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise TrainingError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise TrainingError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if self.workers < 0:
            raise TrainingError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise TrainingError(
                f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"
            )
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise TrainingError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be >= 1, got {self.patience}")
        return self


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
        return self.out / "best.pt"

    @property
    def last(self) -> Path:
        """``out / "last.pt"``."""
        return self.out / "last.pt"


# --- configuration ----------------------------------------------------------------------------


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Fields of a ``train.toml`` (top level or a ``[fit]`` table; ``-`` or ``_`` in names).

    Parameters
    ----------
    path : str or os.PathLike
        TOML file.

    Returns
    -------
    dict
        FitConfig field -> value.

    Raises
    ------
    TrainingError
        Unreadable file, bad TOML, or an unknown key.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "train.toml"
    >>> _ = p.write_text('epochs = 3\\nbatch-size = 8\\n')
    >>> load_config_file(p)
    {'epochs': 3, 'batch_size': 8}
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TrainingError(f"{path}: cannot read config ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainingError(f"{path}: invalid TOML ({exc})") from None
    if isinstance(data.get("fit"), dict):
        data = data["fit"]
    valid = {f.name for f in fields(FitConfig)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in valid:
            raise TrainingError(
                f"{path}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}"
            )
        out[name] = value
    return out


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
            explicit[name] = os.fspath(value) if name in ("store", "out") else value
    return explicit


# --- runtime: distributed, device, precision --------------------------------------------------


@dataclass
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
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = device_pref != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owns)


def _resolve_device(pref: str, dist: _Dist) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' asked for, but CUDA is not available")
        if pref == "cuda":
            return torch.device("cuda", dist.local_rank if dist.enabled else 0)
    return torch.device(pref)


def _resolve_precision(pref: str, device: torch.device) -> str:
    if device.type == "cuda":
        if pref == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return pref
    if pref == "fp16":
        warnings.warn("fp16 autocast needs CUDA; training in fp32 on CPU", stacklevel=3)
        return "fp32"
    return "fp32" if pref == "auto" else pref


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- run directory ----------------------------------------------------------------------------


def _latest_run(model: str) -> Path | None:
    runs = sorted(p for p in Path("runs").glob(f"{model}-*") if (p / "last.pt").is_file())
    return runs[-1] if runs else None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in row:
            row[key] = int(row[key]) if key in ("epoch", "step") else float(row[key])
    return rows


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row[k]) for k in METRICS_COLUMNS})
    os.replace(tmp, path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}%"


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    normalizer: FeatureNormalizer,
    dataset: EvalBatches,
    device: torch.device,
    precision: str = "fp32",
    workers: int = 0,
) -> np.ndarray:
    """Score every utterance of an :class:`EvalBatches` split (logit[1] - logit[0]).

    Parameters
    ----------
    model : nn.Module
        A model of :mod:`trainer.models` (put in eval mode here).
    normalizer : FeatureNormalizer
        The run's per-bin normaliser, on ``device``.
    dataset : EvalBatches
        Segments of the split to score.
    device : torch.device
        Where the model is.
    precision : str, default "fp32"
        Autocast precision ("fp32", "bf16", "fp16").
    workers : int, default 0
        DataLoader workers.

    Returns
    -------
    np.ndarray
        float64 score per utterance of the split, in index order (NaN for utterances without
        frames).
    """
    was_training = model.training
    model.eval()
    features = list(dataset.features)
    index, scores = [], []
    loader = make_loader(
        dataset,
        range(len(dataset)),
        workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    try:
        for batch in loader:
            x = normalizer({f: batch[f].to(device, non_blocking=True) for f in features})
            with _autocast(device, precision):
                logits = model(**{f: x[f] for f in features})
            logits = logits.float()
            scores.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
            index.append(batch["index"].numpy())
    finally:
        model.train(was_training)
    if not index:
        return np.full(dataset.n_frames.size, np.nan)
    return dataset.reduce(np.concatenate(index), np.concatenate(scores))


def _dev_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    from trainer.metrics import compute_eer

    ok = np.isfinite(scores) & (labels >= 0)
    bona, spoof = scores[ok & (labels == 1)], scores[ok & (labels == 0)]
    if bona.size == 0 or spoof.size == 0:
        return math.nan
    return float(compute_eer(bona, spoof)[0])


# --- the loop ---------------------------------------------------------------------------------


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


def _model_info(net: nn.Module, name: str, kwargs: Mapping) -> dict[str, Any]:
    return {
        "name": name,
        "kwargs": dict(kwargs),
        "features": list(net.features),
        "n_bins": {f: int(net.n_bins[f]) for f in net.features},
        "train_frames": int(net.train_frames),
        "eval_window": None if net.eval_window is None else int(net.eval_window),
        "eval_hop": None if getattr(net, "eval_hop", None) is None else int(net.eval_hop),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }


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
        Any other :class:`FitConfig` field (``epochs=3``, ``batch_size=16``, ...).

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
    ['best.pt', 'config.json', 'last.pt', 'metrics.csv']
    """
    explicit = _explicit_settings(store, model, out, config, settings)
    dist = _init_distributed(str(explicit.get("device", "auto")))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _Run(explicit, dist).train()
    finally:  # leave the process as it was (threads and determinism are process-wide)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        dist.close()


class _Run:
    """One training run (per process under DDP)."""

    def __init__(self, explicit: dict[str, Any], dist: _Dist):
        self.dist = dist
        model_name = explicit.get("model", FitConfig.model)
        # the run directory (rank 0 decides; a timestamped default must agree across ranks)
        out = explicit.get("out")
        resume = bool(explicit.get("resume", False))
        if out is None:
            latest = _latest_run(model_name) if resume else None
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = os.fspath(latest) if latest else os.path.join("runs", f"{model_name}-{stamp}")
            out = dist.broadcast(out)
        self.out = Path(out)
        self.last_path = self.out / "last.pt"
        self.resume_state = None
        if resume and self.last_path.is_file():
            self.resume_state = checkpoint.load_checkpoint(self.last_path)
            saved = dict(self.resume_state["config"]["fit"])
            changed = sorted(
                k
                for k, v in explicit.items()
                if k not in _RESUMABLE_CHANGES and k in saved and saved[k] != v
            )
            if changed:
                raise TrainingError(
                    f"{self.last_path}: cannot resume with different "
                    + ", ".join(f"{k} ({saved[k]!r} -> {explicit[k]!r})" for k in changed)
                    + "; start a new run (another --out) instead"
                )
            merged = {**saved, **explicit}
        else:
            if not resume and self.last_path.exists():
                raise TrainingError(
                    f"{self.out}: already holds a run (last.pt); pass --resume to continue "
                    "it or choose another --out"
                )
            merged = {**asdict(FitConfig()), **explicit}
        merged["out"] = os.fspath(self.out)
        self.cfg = FitConfig(**merged).validate()

    def log(self, message: str) -> None:
        if self.dist.main and self.cfg.progress:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    # the whole run -----------------------------------------------------------------------
    def train(self) -> FitResult:
        cfg, dist = self.cfg, self.dist
        from featstore import open_store
        from trainer import models as model_registry

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = _resolve_device(cfg.device, dist)
        precision = _resolve_precision(cfg.precision, device)
        if cfg.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.log(f"run directory: {self.out}")

        store = open_store(cfg.store, mode="r")
        if self.resume_state is not None:
            saved_fp = self.resume_state["config"]["store"]["fingerprint"]
            if saved_fp != store.fingerprint:
                raise TrainingError(
                    f"{store.path}: store fingerprint {store.fingerprint} differs from the "
                    f"one the run was trained on ({saved_fp}); resume on the same store"
                )

        if cfg.model not in model_registry.MODELS:
            raise TrainingError(
                f"unknown model {cfg.model!r}; available: {', '.join(model_registry.MODELS)}"
            )
        _seed_everything(cfg.seed)
        net = model_registry.build_model(cfg.model, **cfg.model_kwargs)
        info = _model_info(net, cfg.model, cfg.model_kwargs)
        features = dict(info["n_bins"])
        crop = int(cfg.crop_frames or info["train_frames"])
        cfg.crop_frames = crop
        eval_bs = int(cfg.eval_batch_size or cfg.batch_size)

        train_set = CropBatches(
            store,
            features,
            crop,
            cfg.batch_size,
            seed=cfg.seed,
            split=cfg.train_split,
            balance=cfg.balance,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        dev_set = None
        if cfg.dev_split in store.splits:
            if dist.main:
                dev_set = EvalBatches(
                    store, features, cfg.dev_split, eval_bs, info["eval_window"], info["eval_hop"]
                )
        elif dist.main:
            warnings.warn(
                f"{store.path}: no {cfg.dev_split!r} split; no dev EER, best.pt = last epoch",
                stacklevel=2,
            )
        normalizer = FeatureNormalizer.from_store(store, features).to(device)
        # saved in every checkpoint so scoring never depends on the training store's presence
        norm_stats = {
            f: {
                "mean": torch.from_numpy(np.array(store.stats(f)[0][:n], np.float32)),
                "std": torch.from_numpy(np.array(store.stats(f)[1][:n], np.float32)),
            }
            for f, n in features.items()
        }

        counts = train_set.class_counts()
        weight = None
        if not cfg.balance and np.all(counts > 0):
            weight = torch.tensor(counts.sum() / (2.0 * counts), dtype=torch.float32)
        criterion = nn.CrossEntropyLoss(weight=weight).to(device)

        net.to(device)
        if device.type == "cuda" and cfg.channels_last and precision != "fp32":
            net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr)
        steps_per_epoch = train_set.num_batches(0)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total_steps, round(cfg.warmup * total_steps))
        )
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        # each rank has its own dropout stream; rank 0 of a DDP run == a single-process run
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank]).generate_state(1)[0]))

        start_epoch, step = 0, 0
        best_eer, best_epoch, bad_epochs = math.inf, 0, 0
        history: list[dict[str, Any]] = []
        if self.resume_state is not None:
            st = self.resume_state
            net.load_state_dict(st["model"])
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            if st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            start_epoch, step = int(st["epoch"]), int(st["step"])
            best_eer = float(st["best_dev_eer"])
            best_epoch, bad_epochs = int(st["best_epoch"]), int(st["bad_epochs"])
            rng = st["rng"]
            if len(rng) == dist.world_size:
                checkpoint.restore_rng_state(rng[dist.rank])
            else:
                warnings.warn(
                    f"{self.last_path}: saved by {len(rng)} rank(s), resumed by "
                    f"{dist.world_size}; random streams are not continued exactly",
                    stacklevel=2,
                )
            history = [
                r for r in _read_metrics(self.out / "metrics.csv") if r["epoch"] <= start_epoch
            ]
            self.log(f"resuming from {self.last_path} after epoch {start_epoch}")

        run_info = {
            "fit": asdict(cfg),
            "store": {
                "path": store.path if "://" in store.path else os.path.abspath(store.path),
                "fingerprint": store.fingerprint,
                "format": store.format,
            },
            "model": info,
            "runtime": {
                "device": str(device),
                "precision": precision,
                "world_size": dist.world_size,
                "torch": str(torch.__version__),
                "version": __version__,
            },
        }
        run_info = json.loads(json.dumps(run_info))  # plain types only (weights_only loads)
        writer = None
        if dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json(self.out / "config.json", run_info)
            _write_metrics(self.out / "metrics.csv", history)
            writer = _tensorboard(self.out / "tb")
        dist.barrier()

        train_net: nn.Module = net
        if dist.enabled:
            # static graph: crops have one length, so the parameters a step uses never change
            # (and parameters unused at that length, e.g. GRCNN's state convolutions for a
            # one-window crop, are handled without a per-step search)
            train_net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
            )
        if cfg.compile:
            train_net = torch.compile(train_net)
        params = [p for p in net.parameters() if p.requires_grad]

        stopped_early = False
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            stopped_early = True
            start_epoch = cfg.epochs
        # one loader for the whole run: persistent workers keep their store maps warm
        sampler = CropBatchSampler(train_set, start_epoch)
        loader = make_loader(
            train_set,
            sampler,
            workers=cfg.workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent=True,
        )
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            net.train()
            sampler.set_epoch(epoch)
            bar = _progress(
                loader, len(sampler), f"epoch {epoch + 1}/{cfg.epochs}", self.log_enabled
            )
            loss_sum, n_seen = 0.0, 0
            for batch in bar:
                x = normalizer({f: batch[f].to(device, non_blocking=True) for f in features})
                y = batch["label"].to(device, non_blocking=True)
                with _autocast(device, precision):
                    logits = train_net(**{f: x[f] for f in features})
                loss = criterion(logits.float(), y)
                loss_value = loss.detach()
                if dist.enabled:
                    loss_value = loss_value.clone()
                    torch.distributed.all_reduce(loss_value)
                    loss_value /= dist.world_size
                loss_value = float(loss_value)
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"non-finite training loss ({loss_value}) at epoch {epoch + 1}, step "
                        f"{step + 1}; "
                        + (
                            f"the last good checkpoint is kept: {self.last_path} (epoch {epoch})"
                            if epoch > 0
                            else "no checkpoint was written yet"
                        )
                        + "; try a lower --lr or --precision fp32"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if not scaler.is_enabled() and not torch.isfinite(norm):
                        raise TrainingError(
                            f"non-finite gradient norm at epoch {epoch + 1}, step {step + 1}; "
                            f"the last good checkpoint is kept: {self.last_path}"
                        )
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                loss_sum += loss_value * y.numel()
                n_seen += y.numel()
                if hasattr(bar, "set_postfix") and step % 5 == 0:
                    rate = n_seen * dist.world_size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{rate:.0f}")
            if hasattr(bar, "close"):
                bar.close()
            train_seconds = time.perf_counter() - t0

            dev_eer = math.nan
            if dist.main and dev_set is not None:
                scores = evaluate(net, normalizer, dev_set, device, precision, cfg.workers)
                dev_eer = _dev_eer(scores, dev_set.labels)
            dev_eer = float(dist.broadcast(dev_eer))
            if math.isfinite(dev_eer):
                improved = dev_eer < best_eer
                bad_epochs = 0 if improved else bad_epochs + 1
            else:  # no dev EER (no dev split, or one class only): best.pt follows last.pt
                improved = not math.isfinite(best_eer)
            if improved:
                best_eer, best_epoch = (dev_eer if math.isfinite(dev_eer) else math.inf), epoch + 1
            row = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": loss_sum / max(n_seen, 1),
                "dev_eer": dev_eer,
                "best_dev_eer": best_eer if math.isfinite(best_eer) else math.nan,
                "lr": float(optimizer.param_groups[0]["lr"]),
                "examples_per_s": n_seen * dist.world_size / max(train_seconds, 1e-9),
                "epoch_seconds": time.perf_counter() - t0,
            }
            history.append(row)
            rng_states = dist.all_gather(checkpoint.capture_rng_state())
            if dist.main:
                state = {
                    "format": 1,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                    "epoch": epoch + 1,
                    "step": step,
                    "best_dev_eer": best_eer,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "dev_eer": dev_eer,
                    "rng": rng_states,
                    "config": run_info,
                    "normalizer": norm_stats,
                }
                _write_metrics(self.out / "metrics.csv", history)
                if improved:
                    checkpoint.save_checkpoint(self.out / "best.pt", state)
                checkpoint.save_checkpoint(self.last_path, state)
                if writer is not None:
                    for key in ("train_loss", "dev_eer", "lr", "examples_per_s"):
                        writer.add_scalar(key, row[key], epoch + 1)
                    writer.flush()
                self.log(
                    f"epoch {epoch + 1}/{cfg.epochs}: train_loss {row['train_loss']:.4f}  "
                    f"dev_eer {_pct(dev_eer)}  best {_pct(row['best_dev_eer'])} "
                    f"(epoch {best_epoch})  {row['examples_per_s']:.0f} ex/s"
                )
            dist.barrier()
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                stopped_early = True
                self.log(f"early stop: no better dev EER for {bad_epochs} epochs")
                break
        if writer is not None:
            writer.close()
        return FitResult(
            out=self.out,
            best_dev_eer=best_eer if math.isfinite(best_eer) else math.nan,
            best_epoch=best_epoch,
            epochs_done=history[-1]["epoch"] if history else 0,
            stopped_early=stopped_early,
            history=history,
        )

    @property
    def log_enabled(self) -> bool:
        return self.dist.main and self.cfg.progress


def _progress(loader: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(os.fspath(path))


class _CallableModule(types.ModuleType):
    """Makes ``trainer.fit`` callable even once it names this module.

    Importing the submodule ``trainer.fit`` (``from trainer.fit import FitConfig``, the CLI)
    makes Python bind the package attribute ``trainer.fit`` to the module, shadowing the
    lazily exported function; calling the module calls :func:`fit`, so ``trainer.fit(...)``
    works whatever was imported first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> FitResult:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
