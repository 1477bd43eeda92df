"""Will a training batch fit in this machine's memory? Rough per-model estimates.

Training on the CPU keeps every activation of the forward pass for the backward pass; for the
GRCNN that is about 0.35 GB per 256-frame crop (all 23 windows of both streams), measured as
4.4 GB RSS at batch 8 and about 12 GB at batch 32. The estimate is linear in the batch size
and the crop length, plus a fixed overhead for the process (torch, the model, the optimizer
state, the store maps). It is meant to warn before a run gets killed, not to plan exactly.

This module imports neither torch nor the models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MEMORY_PER_CROP",
    "CropMemory",
    "available_memory",
    "estimate_training_memory",
    "fitting_batch_size",
]

GB = 1e9
_OVERHEAD = 1.0 * GB
"""Process, model, optimizer state and store maps, independent of the batch."""


@dataclass(frozen=True)
class CropMemory:
    """Training memory of one crop of a model: ``bytes`` for a crop of ``frames`` frames."""

    bytes: float
    frames: int


MEMORY_PER_CROP: dict[str, CropMemory] = {
    # measured: RSS at batch 8 and 32 on CPU (README); 0.35 GB per crop of 256 frames
    "grcnn": CropMemory(0.35 * GB, 256),
    # one stream of the two
    "grcnn-mgd": CropMemory(0.175 * GB, 256),
    "grcnn-logmel": CropMemory(0.175 * GB, 256),
    # from the tensors autograd keeps (saved_tensors_hooks), scaled like the GRCNN's figure
    "vgg10": CropMemory(0.0025 * GB, 17),
    "lcnn": CropMemory(0.018 * GB, 400),
}
"""Activation memory per training crop of the built-in models with default parameters."""


def estimate_training_memory(model: str, batch_size: int, crop_frames: int) -> float | None:
    """Bytes a CPU training process of ``model`` needs at this batch size and crop length.

    Parameters
    ----------
    model : str
        Registered model name.
    batch_size : int
        Crops per step.
    crop_frames : int
        Frames per crop.

    Returns
    -------
    float or None
        The estimate in bytes; None for a model without a figure (one registered by a user).

    Examples
    --------
    >>> round(estimate_training_memory("grcnn", 32, 256) / 1e9, 1)
    12.2
    >>> estimate_training_memory("my-model", 32, 256) is None
    True
    """
    per_crop = MEMORY_PER_CROP.get(model)
    if per_crop is None:
        return None
    return _OVERHEAD + batch_size * per_crop.bytes * crop_frames / per_crop.frames


def fitting_batch_size(model: str, crop_frames: int, budget: float) -> int | None:
    """The largest batch size whose estimate stays within ``budget`` bytes (0: none does).

    Examples
    --------
    >>> fitting_batch_size("grcnn", 256, 8e9)
    20
    >>> fitting_batch_size("grcnn", 256, 1e9)
    0
    """
    per_crop = MEMORY_PER_CROP.get(model)
    if per_crop is None:
        return None
    one = per_crop.bytes * crop_frames / per_crop.frames
    return max(int((budget - _OVERHEAD) // one), 0)


def available_memory() -> int | None:
    """Bytes of memory this process can still take; None when it cannot be told.

    The smaller of the system's available memory (``psutil`` when installed, else
    ``os.sysconf``) and what the cgroup (a container's limit) leaves.
    """
    figures = []
    try:
        import psutil

        figures.append(int(psutil.virtual_memory().available))
    except ImportError:
        try:
            figures.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        figures.append(cgroup)
    return min(figures) if figures else None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """``memory.max - memory.current`` of a cgroup v2 with a limit, else None."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None
