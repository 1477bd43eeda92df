"""Running a model over a store split: devices, autocast, and per-utterance scores.

Shared by the training loop (dev EER after every epoch) and scoring (``trainer score``); it
imports nothing of the training loop. A score is ``logits[:, 1] - logits[:, 0]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from trainer import cpu_features, models
from trainer.data import EvalBatches, FeatureNormalizer, make_loader
from trainer.errors import TrainingError
from trainer.runs import ModelRecord

__all__ = ["autocast", "build_trained_model", "evaluate", "resolve_device", "resolve_precision"]


def resolve_device(pref: str = "auto", *, auto_cuda: bool = True, index: int = 0) -> torch.device:
    """The torch device named by ``pref``.

    Parameters
    ----------
    pref : {"auto", "cpu", "cuda"} or "cuda:N", default "auto"
        ``auto``: CUDA when available (and ``auto_cuda``), else the CPU.
    auto_cuda : bool, default True
        Whether ``auto`` may pick CUDA (scoring passes whether the run trained on CUDA).
    index : int, default 0
        The device a bare ``cuda`` means (the local rank under DDP).

    Returns
    -------
    torch.device

    Raises
    ------
    TrainingError
        An unknown name, or CUDA asked for where it is not available.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if pref == "auto":
        pref = "cuda" if auto_cuda and torch.cuda.is_available() else "cpu"
    if not (pref == "cpu" or pref.startswith("cuda")):
        raise TrainingError(f"device must be auto, cpu or cuda[:N], got {pref!r}")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for, but CUDA is not available")
    if pref == "cuda":
        return torch.device("cuda", index)
    return torch.device(pref)


def resolve_precision(pref: str, device: torch.device) -> str:
    """The autocast precision ``pref`` means on ``device`` (the one rule; recorded in runs).

    Parameters
    ----------
    pref : {"auto", "fp32", "bf16", "fp16"}
        ``auto``: on CUDA bf16 where supported, else fp16; on a CPU that computes bf16
        natively (AVX-512 BF16 or AMX, :mod:`trainer.cpu_features`) bf16, else fp32.
    device : torch.device
        Where the model runs.

    Returns
    -------
    str
        "fp32", "bf16" or "fp16"; fp16 asked for on a CPU falls back to fp32 with a warning.

    Examples
    --------
    >>> resolve_precision("fp32", torch.device("cpu"))
    'fp32'
    """
    if device.type == "cuda":
        if pref == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return pref
    if pref == "fp16":
        warnings.warn("fp16 autocast needs CUDA; training in fp32 on CPU", stacklevel=5)
        return "fp32"
    if pref == "auto":
        return "bf16" if cpu_features.has_native_bf16() else "fp32"
    return pref


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast to ``precision`` ("bf16" or "fp16") on ``device``; nothing for "fp32"."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_trained_model(
    record: ModelRecord, weights: Mapping[str, torch.Tensor], source: object
) -> nn.Module:
    """The model a run trained, with its weights (on the CPU, in training mode), its weights
    in the model's ``inference_memory_format``.

    Raises
    ------
    TrainingError
        The weights do not fit the recorded model, naming ``source``.
    """
    net = models.build_model(record.name, **record.kwargs)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise TrainingError(f"{source}: weights do not fit model {record.name!r} ({exc})") from None
    return net.to(memory_format=getattr(net, "inference_memory_format", torch.contiguous_format))


@torch.inference_mode()
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
            with autocast(device, precision):
                logits = model(**{f: x[f] for f in features})
            logits = logits.float()
            scores.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
            index.append(batch["index"].numpy())
    finally:
        model.train(was_training)
    if not index:
        return np.full(dataset.n_frames.size, np.nan)
    return dataset.reduce(np.concatenate(index), np.concatenate(scores))
