"""Training checkpoints: atomic writes, ``weights_only`` loads, and every RNG state.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)`` (no pickled code). It is written to a temporary file
in the same directory, flushed to disk, and moved over the old one with :func:`os.replace`,
so a crash (even ``SIGKILL``) at any moment leaves either the old or the new checkpoint,
never a torn one.

The random number generators (Python ``random``, NumPy's legacy global generator, torch CPU
and every CUDA device) are captured as tensors and plain values by :func:`capture_rng_state`
and put back by :func:`restore_rng_state`, which is what makes a resumed run bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.errors import TrainingError

__all__ = ["capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint"]


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


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, :func:`os.replace`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``runs/x/last.pt``); its directory must exist.
    state : dict
        Tensors, numbers, strings, None, lists, tuples and dicts only, so that
        :func:`load_checkpoint` can use ``weights_only=True``.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint(f"{d}/last.pt", {"epoch": 1, "w": torch.ones(2)})
    >>> load_checkpoint(p)["epoch"]
    1
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return path
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    map_location : str or torch.device, default "cpu"
        Where tensors are loaded.

    Returns
    -------
    dict
        The saved state.

    Raises
    ------
    TrainingError
        The file is missing, truncated, or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise TrainingError(
            f"{path}: cannot load checkpoint ({exc.__class__.__name__}: {exc})"
        ) from None
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: not a trainer checkpoint (holds {type(state).__name__})")
    return state
