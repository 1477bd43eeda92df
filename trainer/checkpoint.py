"""Training checkpoints: a typed record, atomic writes, ``weights_only`` loads, RNG states.

On disk a checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(path, weights_only=True)`` (no pickled code). In code it is a
:class:`Checkpoint`: :meth:`Checkpoint.to_dict` and :meth:`Checkpoint.from_dict` convert at the
I/O edge, and :func:`read_checkpoint` validates what it loads (a missing field is an error
naming the file and the field). Files are replaced atomically
(:func:`featstore.atomic_files.atomic_path`), so a crash (even ``SIGKILL``) at any moment
leaves either the old or the new checkpoint, never a torn one.

The random number generators (Python ``random``, NumPy's legacy global generator, torch CPU
and every CUDA device) are captured as tensors and plain values by :func:`capture_rng_state`
and put back by :func:`restore_rng_state`, which is what makes a resumed run bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import errno
import math
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featstore.atomic_files import atomic_path
from featstore.errors import ResourceError
from trainer.errors import TrainingError
from trainer.runs import RunRecord

__all__ = [
    "FORMAT",
    "Checkpoint",
    "TrainingState",
    "capture_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = 1
"""Version of the checkpoint layout (``state["format"]``)."""

NormalizationStats = Mapping[str, tuple[np.ndarray, np.ndarray]]


def capture_rng_state() -> dict[str, Any]:
    """The state of every global random number generator, as ``weights_only``-safe values.

    Returns
    -------
    dict
        ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor, ...]}``;
        integer state vectors are int64 tensors, the rest plain ints/floats/strings/None.

    Examples
    --------
    >>> import torch
    >>> state = capture_rng_state()
    >>> a = torch.rand(3)
    >>> restore_rng_state(state)
    >>> torch.equal(a, torch.rand(3))
    True
    """
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    cuda: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators captured by :func:`capture_rng_state`.

    Parameters
    ----------
    state : dict
        A value returned by :func:`capture_rng_state` (possibly after a save/load round trip).
        CUDA states are restored when CUDA is available and the device count matches.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - the legacy global generator is what we save
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])


def save_checkpoint(path: str | os.PathLike, state: Checkpoint | Mapping[str, Any]) -> Path:
    """Write a checkpoint to ``path`` atomically (temporary sibling, fsync, rename).

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``runs/x/last.pt``); its directory must exist.
    state : Checkpoint or Mapping
        A :class:`Checkpoint`, or a dict of tensors, numbers, strings, None, lists, tuples and
        dicts only, so that :func:`load_checkpoint` can use ``weights_only=True``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ResourceError
        The file cannot be written (disk full, no permission); ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint(f"{d}/last.pt", {"epoch": 1, "w": torch.ones(2)})
    >>> load_checkpoint(p)["epoch"]
    1
    """
    data = state.to_dict() if isinstance(state, Checkpoint) else dict(state)
    try:
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
    except (OSError, RuntimeError) as exc:
        reason = _write_failure(exc)
        if reason is None:  # not an I/O failure: a bug, keep the traceback
            raise
        raise ResourceError(
            f"cannot write checkpoint {path}: {reason}; the previous checkpoint (if any) is "
            "kept intact"
        ) from None
    return Path(path)


def _write_failure(exc: BaseException) -> str | None:
    """Why writing a file failed, for an I/O error of ``torch.save``; None for anything else.

    ``torch.save`` reports a full disk as an ``OSError`` (ENOSPC) or, from its zip writer, as
    a ``RuntimeError`` ("PytorchStreamWriter failed writing file ...", "unexpected pos ...").
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on the device (disk full or quota exceeded)"
        return exc.strerror or str(exc)
    text = str(exc)
    if "PytorchStreamWriter" in text or "unexpected pos" in text or "write failed" in text:
        return "the write failed (is the disk full?)"
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load the raw dict of a checkpoint with ``weights_only=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    map_location : str or torch.device, default "cpu"
        Where tensors are loaded.

    Returns
    -------
    dict
        The saved state (:func:`read_checkpoint` gives it typed and validated).

    Raises
    ------
    TrainingError
        The file is missing, truncated, or not a checkpoint ("checkpoint X is corrupt or not
        a spoofstore checkpoint: <reason>").
    ResourceError
        The file cannot be read (no permission, I/O error).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise ResourceError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise TrainingError(
            f"checkpoint {path} is corrupt or not a spoofstore checkpoint: {_load_failure(exc)}"
        ) from None
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: not a trainer checkpoint (holds {type(state).__name__})")
    return state


def _load_failure(exc: BaseException) -> str:
    """A one-line reason for a failed ``torch.load``, without torch's advice to unpickle code.

    Examples
    --------
    >>> _load_failure(EOFError())
    'the file is empty or ends early'
    """
    text = str(exc)
    if isinstance(exc, EOFError):
        return "the file is empty or ends early"
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported:
        return f"it holds Python objects a checkpoint never holds ({unsupported.group(1)})"
    if "Weights only load failed" in text:
        return "it holds Python objects a checkpoint never holds"
    reader = re.search(r"PytorchStreamReader failed ([^.]*)", text)
    if reader:
        return f"truncated or damaged ({reader.group(1)})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"not a torch.save file ({exc.__class__.__name__}{': ' if first else ''}{first[:120]})"


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load and validate a checkpoint (see :meth:`Checkpoint.from_dict`)."""
    return Checkpoint.from_dict(load_checkpoint(path, map_location), path)


# --- the typed record -------------------------------------------------------------------------


def _require(data: Mapping[str, Any], name: str, source: object) -> Any:
    if name not in data:
        raise TrainingError(f"{source}: not a trainer checkpoint (no {name!r} field)")
    return data[name]


@dataclass(frozen=True)
class TrainingState:
    """What resuming needs beyond the weights: optimizer and schedule, progress, RNG states.

    Attributes
    ----------
    optimizer, scheduler, scaler : dict
        ``state_dict()`` of the AdamW optimizer, the LR schedule and the GradScaler (``{}``
        when fp16 scaling is off).
    step : int
        Optimizer steps taken.
    best_dev_eer : float
        Lowest dev EER so far (``inf`` before any).
    best_epoch, bad_epochs : int
        Epoch of ``best.pt``; epochs since the dev EER last improved (early stopping).
    rng : list of dict
        :func:`capture_rng_state` of every DDP rank, in rank order.
    """

    optimizer: dict
    scheduler: dict
    scaler: dict
    step: int
    best_dev_eer: float
    best_epoch: int
    bad_epochs: int
    rng: list

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object) -> TrainingState:
        return cls(
            optimizer=dict(_require(data, "optimizer", source)),
            scheduler=dict(_require(data, "scheduler", source)),
            scaler=dict(_require(data, "scaler", source) or {}),
            step=int(_require(data, "step", source)),
            best_dev_eer=float(_require(data, "best_dev_eer", source)),
            best_epoch=int(_require(data, "best_epoch", source)),
            bad_epochs=int(_require(data, "bad_epochs", source)),
            rng=list(_require(data, "rng", source)),
        )


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: the weights, the run they belong to, and (for resuming) training state.

    Attributes
    ----------
    weights : dict of str to torch.Tensor
        The model's ``state_dict()`` (``state["model"]`` on disk).
    epoch : int
        Epochs finished when it was written.
    dev_eer : float
        Dev EER of that epoch (NaN if none).
    run : RunRecord or None
        The run record (``state["config"]``, the same as the run's ``config.json``); None in
        a checkpoint saved without it (readers then use the run directory's record).
    normalizer : Mapping of str to (mean, std), or None
        The per-bin training statistics, cut to the model's bins (see
        :func:`trainer.data.normalization_stats`); None when not saved.
    training : TrainingState or None
        What resuming needs; None in a weights-only checkpoint (it can score, not resume).
    """

    weights: dict
    epoch: int
    dev_eer: float = math.nan
    run: RunRecord | None = None
    normalizer: NormalizationStats | None = None
    training: TrainingState | None = None

    def to_dict(self) -> dict[str, Any]:
        """The on-disk layout (``weights_only``-safe values only)."""
        data: dict[str, Any] = {"format": FORMAT, "model": self.weights, "epoch": self.epoch}
        data["dev_eer"] = self.dev_eer
        if self.training is not None:
            data.update(self.training.to_dict())
        if self.run is not None:
            data["config"] = self.run.to_dict()
        if self.normalizer is not None:
            data["normalizer"] = {
                f: {
                    "mean": torch.from_numpy(np.array(mean, np.float32)),
                    "std": torch.from_numpy(np.array(std, np.float32)),
                }
                for f, (mean, std) in self.normalizer.items()
            }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object) -> Checkpoint:
        """Validate a loaded checkpoint dict.

        ``model`` (the weights) and ``epoch`` are required; ``config``, ``normalizer`` and the
        training state are optional sections, each validated whole when present.

        Raises
        ------
        TrainingError
            A required field is missing or malformed, naming ``source`` and the field.
        """
        weights = _require(data, "model", source)
        if not isinstance(weights, Mapping):
            raise TrainingError(f"{source}: not a trainer checkpoint ('model' is not a state dict)")
        run = None
        if data.get("config") is not None:
            run = RunRecord.from_dict(data["config"], f"{source} (config)")
        dev_eer = data.get("dev_eer")
        return cls(
            weights=dict(weights),
            epoch=int(_require(data, "epoch", source)),
            dev_eer=math.nan if dev_eer is None else float(dev_eer),
            run=run,
            normalizer=_normalizer_from_dict(data.get("normalizer"), source),
            training=TrainingState.from_dict(data, source) if "optimizer" in data else None,
        )


def _normalizer_from_dict(data: Any, source: object) -> NormalizationStats | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise TrainingError(f"{source}: 'normalizer' must map features to mean/std")
    stats = {}
    for feature, entry in data.items():
        if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
            raise TrainingError(f"{source}: normalizer.{feature} has no mean and std")
        stats[str(feature)] = (np.asarray(entry["mean"]), np.asarray(entry["std"]))
    return stats
