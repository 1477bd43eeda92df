"""The back-end file: one ``.npz`` of parameter arrays plus a JSON header, no pickle.

Members: ``__header__`` (a 0-d string array holding the JSON header) and one array per
parameter of the back-end kind. The header::

    {"format": "spoofstore-backend", "version": 1, "kind": "plda", "dim": 960,
     "settings": {"classes": [...], ...}, "embedding_meta": {...the training file's meta},
     "training": {"path": ..., "n": ..., "n_bonafide": ..., "n_spoof": ...},
     "dev": null or {"path": ..., "eer": ..., "min_dcf": ..., "act_dcf": ..., "cllr": ...},
     "params": [names], "spoofstore": "0.1.0"}

Read with ``allow_pickle=False``; every problem is a :class:`trainer.errors.BackendError`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore._version import __version__
from featstore.atomic_files import open_atomic
from featstore.errors import ResourceError
from trainer.backends.registry import BACKENDS
from trainer.errors import BackendError

__all__ = ["FORMAT", "VERSION", "TrainedBackend", "load_backend", "save_backend"]

FORMAT = "spoofstore-backend"
VERSION = 1
_HEADER = "__header__"


@dataclass(frozen=True)
class TrainedBackend:
    """A fitted back-end with what it was trained on.

    Attributes
    ----------
    model : Backend
        An instance of ``BACKENDS[kind]``.
    dim : int
        The embedding dimension it takes.
    embedding_meta : dict
        The ``meta`` of the training embeddings (model, run, split, fingerprint, dim).
    training : dict
        ``path``, ``n``, ``n_bonafide``, ``n_spoof`` of the training embeddings.
    dev : dict or None
        The dev embeddings' ``path`` and metrics (``eer``, ``min_dcf``, ``act_dcf``, ``cllr``).
    """

    model: Any
    dim: int
    embedding_meta: dict[str, Any]
    training: dict[str, Any]
    dev: dict[str, Any] | None = None
    header: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def kind(self) -> str:
        """``plda``, ``gmm``, ``logreg`` or ``cosine``."""
        return self.model.kind

    def header_dict(self) -> dict[str, Any]:
        """The JSON header of the back-end file."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "settings": self.model.settings(),
            "embedding_meta": self.embedding_meta,
            "training": self.training,
            "dev": self.dev,
            "params": sorted(self.model.params()),
            "spoofstore": __version__,
        }


def save_backend(path: str | os.PathLike, backend: TrainedBackend) -> Path:
    """Write ``backend`` to ``path`` (any suffix) atomically.

    Raises
    ------
    ResourceError
        The file cannot be written.
    """
    path = Path(path)
    params = {k: np.asarray(v) for k, v in backend.model.params().items()}
    header = np.array(json.dumps(backend.header_dict(), sort_keys=True))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_atomic(path) as fh:
            np.savez(fh, **{_HEADER: header}, **params)
    except OSError as exc:
        raise ResourceError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def load_backend(path: str | os.PathLike, *, kind: str | None = None) -> TrainedBackend:
    """Read a back-end file written by :func:`save_backend`.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str, optional
        The kind it must be.

    Raises
    ------
    BackendError
        Missing, unreadable or malformed file, unknown or unexpected kind, parameters that
        do not match the header's dimension.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise BackendError(p, f"back-end file {what}")
    try:
        with np.load(p, allow_pickle=False) as data:
            if _HEADER not in data.files:
                raise BackendError(p, "not a back-end file (no header)")
            header = json.loads(str(data[_HEADER][()]))
            arrays = {k: data[k] for k in data.files if k != _HEADER}
    except PermissionError as exc:
        raise ResourceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise BackendError(p, f"not a back-end file ({exc})") from None
    return _from_header(p, header, arrays, kind)


def _from_header(
    p: Path, header: Any, arrays: dict[str, np.ndarray], kind: str | None
) -> TrainedBackend:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackendError(p, f"not a back-end file (header format is not {FORMAT!r})")
    if header.get("version") != VERSION:
        raise BackendError(
            p, f"back-end file version {header.get('version')!r}; this tool reads {VERSION}"
        )
    have = header.get("kind")
    if have not in BACKENDS:
        raise BackendError(p, f"unknown back-end kind {have!r} (known: {', '.join(BACKENDS)})")
    if kind is not None and have != kind:
        raise BackendError(p, f"a {have!r} back-end, not {kind!r}")
    missing = [n for n in header.get("params", []) if n not in arrays]
    if missing:
        raise BackendError(p, f"parameter(s) {', '.join(missing)} missing")
    dim = header.get("dim")
    try:
        model = BACKENDS[have].from_params(arrays, header.get("settings", {}))
        probe = model.score(np.zeros((1, dim)))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BackendError(p, f"malformed {have} back-end (dim {dim!r}): {exc}") from None
    if probe.shape != (1,):
        raise BackendError(p, f"malformed {have} back-end: scores of shape {probe.shape}")
    return TrainedBackend(
        model=model,
        dim=int(dim),
        embedding_meta=dict(header.get("embedding_meta") or {}),
        training=dict(header.get("training") or {}),
        dev=header.get("dev"),
        header=header,
    )
