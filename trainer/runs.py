"""The run directory: its layout, its record, and how runs and checkpoints are found.

A run directory (``trainer fit`` writes it, ``trainer score`` reads it) holds::

    config.json   the run record (:class:`RunRecord`): resolved FitConfig, store path and
                  fingerprint, model description, runtime
    last.pt       full state after the latest finished epoch
                  (:class:`trainer.checkpoint.Checkpoint`)
    best.pt       the same, for the epoch with the lowest dev EER so far
    metrics.csv   one row per epoch (:data:`METRICS_COLUMNS`)
    tb/           TensorBoard events (only when the ``tensorboard`` package is installed)
    scores_<split>.txt (+ ``.json`` provenance)   written by ``trainer score``
    .lock         held (``lockf``) by the one ``trainer fit`` writing the run (:func:`lock_run`)

The *latest* run (:func:`latest_run`, what ``trainer score`` and ``trainer fit --resume``
without a directory take) is the one whose newest checkpoint was written last. This module
imports neither torch nor the training loop.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featstore.atomic_files import write_bytes_atomic, write_json_atomic
from featstore.errors import ResourceError
from trainer.config import FitConfig
from trainer.errors import TrainingError

__all__ = [
    "BEST",
    "CHECKPOINT_NAMES",
    "CONFIG",
    "LAST",
    "METRICS",
    "METRICS_COLUMNS",
    "ModelRecord",
    "RunRecord",
    "RuntimeRecord",
    "StoreRecord",
    "default_run_dir",
    "latest_run",
    "lock_run",
    "read_metrics",
    "read_run_record",
    "resolve_checkpoint",
    "write_metrics",
    "write_run_record",
]

LAST = "last.pt"
BEST = "best.pt"
CHECKPOINT_NAMES = (LAST, BEST)
CONFIG = "config.json"
LOCK = ".lock"
METRICS = "metrics.csv"
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
"""Columns of ``metrics.csv``, one row per finished epoch."""


# --- the run record ---------------------------------------------------------------------------


def _field(data: Mapping[str, Any], name: str, source: object, section: str) -> Any:
    if name not in data:
        raise TrainingError(f"{source}: the run record has no {section}.{name}")
    return data[name]


def _section(data: Mapping[str, Any], name: str, source: object) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        raise TrainingError(f"{source}: the run record has no {name!r} section")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class StoreRecord:
    """The store a run was trained on: where it was and what it held (its fingerprint).

    ``n_bins`` maps each feature the model read to the store's bins of it (None in records
    written before it was recorded); scoring refuses a store whose bins differ.
    """

    path: str
    fingerprint: str
    format: str
    n_bins: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"path": self.path, "fingerprint": self.fingerprint, "format": self.format}
        if self.n_bins is not None:
            data["n_bins"] = dict(self.n_bins)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object) -> StoreRecord:
        """Read ``config.json``'s ``"store"``; raises :class:`TrainingError` naming ``source``."""
        n_bins = data.get("n_bins")
        return cls(
            *(str(_field(data, n, source, "store")) for n in ("path", "fingerprint", "format")),
            n_bins=None if n_bins is None else {str(f): int(n) for f, n in dict(n_bins).items()},
        )


@dataclass(frozen=True)
class ModelRecord:
    """The model a run trained: registry name, constructor arguments and its data contract.

    ``n_bins`` maps each consumed feature to its bins; ``eval_window``/``eval_hop`` say how
    the model scores (see :class:`trainer.data.EvalBatches`); ``parameters`` counts weights.
    """

    name: str
    kwargs: dict[str, Any]
    features: tuple[str, ...]
    n_bins: dict[str, int]
    train_frames: int
    eval_window: int | None
    eval_hop: int | None
    parameters: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kwargs": dict(self.kwargs),
            "features": list(self.features),
            "n_bins": dict(self.n_bins),
            "train_frames": self.train_frames,
            "eval_window": self.eval_window,
            "eval_hop": self.eval_hop,
            "parameters": self.parameters,
        }

    @classmethod
    def of(cls, name: str, kwargs: Mapping[str, Any], net: Any) -> ModelRecord:
        """The record of ``net``, built as ``build_model(name, **kwargs)``."""
        hop = getattr(net, "eval_hop", None)
        return cls(
            name=name,
            kwargs=dict(kwargs),
            features=tuple(net.features),
            n_bins={f: int(net.n_bins[f]) for f in net.features},
            train_frames=int(net.train_frames),
            eval_window=None if net.eval_window is None else int(net.eval_window),
            eval_hop=None if hop is None else int(hop),
            parameters=int(sum(p.numel() for p in net.parameters())),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object) -> ModelRecord:
        """Read ``config.json``'s ``"model"``; raises :class:`TrainingError` naming ``source``."""

        def need(name: str) -> Any:
            return _field(data, name, source, "model")

        return cls(
            name=str(need("name")),
            kwargs=dict(need("kwargs") or {}),
            features=tuple(str(f) for f in need("features")),
            n_bins={str(f): int(n) for f, n in dict(need("n_bins")).items()},
            train_frames=int(need("train_frames")),
            eval_window=_optional_int(need("eval_window")),
            eval_hop=_optional_int(need("eval_hop")),
            parameters=_optional_int(data.get("parameters")),
        )


@dataclass(frozen=True)
class RuntimeRecord:
    """Where and how a run trained (device, autocast precision, DDP world size, versions)."""

    device: str
    precision: str | None = None
    world_size: int | None = None
    torch: str | None = None
    version: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object) -> RuntimeRecord:
        """Read ``config.json``'s ``"runtime"`` (only ``device`` is required)."""
        return cls(
            device=str(_field(data, "device", source, "runtime")),
            precision=data.get("precision"),
            world_size=_optional_int(data.get("world_size")),
            torch=data.get("torch"),
            version=data.get("version"),
        )


@dataclass(frozen=True)
class RunRecord:
    """Everything about a run that scoring and resuming need: ``config.json``.

    The same record is saved in every checkpoint (``state["config"]``), so a checkpoint
    copied out of its run directory still says what it is.
    """

    fit: FitConfig
    store: StoreRecord
    model: ModelRecord
    runtime: RuntimeRecord

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (so a checkpoint holding it loads with ``weights_only``)."""
        data = {
            "fit": self.fit.to_dict(),
            "store": self.store.to_dict(),
            "model": self.model.to_dict(),
            "runtime": {
                "device": self.runtime.device,
                "precision": self.runtime.precision,
                "world_size": self.runtime.world_size,
                "torch": self.runtime.torch,
                "version": self.runtime.version,
            },
        }
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: Any, source: object) -> RunRecord:
        """Validate a record read from ``source``.

        Raises
        ------
        TrainingError
            A section or a required field is missing, naming ``source`` and the field.
        """
        if not isinstance(data, Mapping):
            raise TrainingError(f"{source}: the run record is not a mapping")
        try:
            return cls(
                fit=FitConfig.from_dict(_section(data, "fit", source), source),
                store=StoreRecord.from_dict(_section(data, "store", source), source),
                model=ModelRecord.from_dict(_section(data, "model", source), source),
                runtime=RuntimeRecord.from_dict(_section(data, "runtime", source), source),
            )
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"{source}: invalid run record ({exc})") from None


def read_run_record(run: str | os.PathLike) -> RunRecord:
    """The record of run directory ``run`` (its ``config.json``).

    Raises
    ------
    TrainingError
        No readable ``config.json``, or an invalid record.
    """
    path = Path(run) / CONFIG
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TrainingError(f"{path}: cannot read the run record ({exc.strerror})") from None
    except ValueError as exc:
        raise TrainingError(f"{path}: invalid JSON ({exc})") from None
    return RunRecord.from_dict(data, path)


def write_run_record(run: str | os.PathLike, record: RunRecord) -> Path:
    """Write ``run/config.json`` atomically; returns its path (:class:`ResourceError` if not)."""
    path = Path(run) / CONFIG
    try:
        return write_json_atomic(path, record.to_dict(), indent=2)
    except OSError as exc:
        raise ResourceError(f"cannot write {path}: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device (disk full or quota exceeded)"
    return exc.strerror or str(exc)


# --- one writer per run ----------------------------------------------------------------------


@contextmanager
def lock_run(run: str | os.PathLike) -> Iterator[Path]:
    """Hold the run directory's lock while writing it; a second writer gets an error.

    The lock is a POSIX ``lockf`` lock on ``run/.lock`` (as ``featstore build`` locks a
    store): it belongs to this process, is released when the block exits (on errors too) and
    by the kernel when the process dies, so a killed run leaves no stale lock behind.

    Parameters
    ----------
    run : str or os.PathLike
        The run directory (created if missing).

    Yields
    ------
    Path
        ``run``.

    Raises
    ------
    ResourceError
        Another process holds the lock (a ``trainer fit`` writing this run right now), or the
        directory cannot be created or the lock file opened.

    Examples
    --------
    >>> import tempfile
    >>> with lock_run(tempfile.mkdtemp()) as run:
    ...     (run / LOCK).is_file()
    True
    """
    run = Path(run)
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        fh = open(run / LOCK, "a+")  # closed after the block
    except OSError as exc:
        raise ResourceError(f"{run}: cannot create the run directory ({exc.strerror})") from None
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ResourceError(
            f"{run}: another 'trainer fit' is writing this run directory right now; wait for "
            "it to end or choose another --out"
        ) from None
    try:
        yield run
    finally:
        if created:  # a run that failed before writing anything leaves no directory behind
            _remove_if_only_lock(run)
        fh.close()


def _remove_if_only_lock(run: Path) -> None:
    try:
        if {p.name for p in run.iterdir()} == {LOCK}:
            (run / LOCK).unlink()
            run.rmdir()
    except OSError:  # best effort: someone else is using the directory
        pass


# --- metrics.csv ------------------------------------------------------------------------------


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` (``epoch``/``step`` as int, the rest float); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in row:
            row[key] = int(row[key]) if key in ("epoch", "step") else float(row[key])
    return rows


def write_metrics(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Replace ``metrics.csv`` with ``rows`` atomically (floats with 6 significant digits).

    Raises :class:`featstore.errors.ResourceError` when it cannot be written (disk full).
    """
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format_value(row[k]) for k in METRICS_COLUMNS})
    try:
        return write_bytes_atomic(path, text.getvalue().encode("utf-8"))
    except OSError as exc:
        raise ResourceError(f"cannot write {path}: {_os_reason(exc)}") from None


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


# --- finding runs and checkpoints -------------------------------------------------------------


def default_run_dir(model: str, stamp: str, root: str | os.PathLike = "runs") -> Path:
    """``root/<model>-<stamp>``, the directory of a run not given ``out``."""
    return Path(root) / f"{model}-{stamp}"


def latest_run(root: str | os.PathLike = "runs", *, model: str | None = None) -> Path:
    """The most recent run directory under ``root``.

    "Most recent" = the directory (direct child of ``root``) whose newest checkpoint
    (``last.pt`` or ``best.pt``) has the latest modification time, i.e. the run that last
    finished an epoch; ties go to the greater name (default run names end in a timestamp).
    Directories without a checkpoint (a run that has not finished its first epoch) are skipped.

    Parameters
    ----------
    root : str or os.PathLike, default "runs"
        Directory holding run directories.
    model : str, optional
        Only directories named like the default run directories of this model
        (``<model>-*``).

    Returns
    -------
    Path
        The run directory.

    Raises
    ------
    TrainingError
        ``root`` holds no run directory, or none with a checkpoint.

    Examples
    --------
    >>> latest_run("runs")  # doctest: +SKIP
    PosixPath('runs/grcnn-20261122-013000')
    """
    root = Path(root)
    dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if model is not None:
        dirs = [d for d in dirs if d.name.startswith(f"{model}-")]
    best: tuple[float, str, Path] | None = None
    for d in dirs:
        times = [(d / n).stat().st_mtime for n in CHECKPOINT_NAMES if (d / n).is_file()]
        if times and (best is None or (max(times), d.name) > best[:2]):
            best = (max(times), d.name, d)
    if best is not None:
        return best[2]
    if not dirs:
        raise TrainingError(
            f"no runs under {os.path.abspath(root)}; train one with 'trainer fit STORE' or "
            "pass --run"
        )
    raise TrainingError(
        f"no run under {os.path.abspath(root)} has a checkpoint yet (last.pt/best.pt; "
        f"{len(dirs)} director{'y' if len(dirs) == 1 else 'ies'} without one, e.g. "
        f"{dirs[-1]}); wait for a run to finish an epoch or pass --run and --checkpoint"
    )


def resolve_checkpoint(run: str | os.PathLike, checkpoint: str | os.PathLike = "best") -> Path:
    """The checkpoint file named by ``checkpoint`` for run directory ``run``.

    Parameters
    ----------
    run : str or os.PathLike
        Run directory.
    checkpoint : {"best", "last"} or path, default "best"
        ``best`` -> ``run/best.pt``, ``last`` -> ``run/last.pt``, anything else is a path.

    Returns
    -------
    Path

    Raises
    ------
    TrainingError
        The run directory or the checkpoint does not exist.

    Examples
    --------
    >>> resolve_checkpoint("runs/grcnn", "last")  # doctest: +SKIP
    PosixPath('runs/grcnn/last.pt')
    """
    run = Path(run)
    name = os.fspath(checkpoint)
    if name in ("best", "last"):
        if not run.is_dir():
            raise TrainingError(f"{run}: no such run directory")
        path = run / f"{name}.pt"
        if not path.is_file():
            have = [n for n in CHECKPOINT_NAMES if (run / n).is_file()]
            hint = (
                f"it has {', '.join(have)}: pass --checkpoint {have[0][:-3]}"
                if have
                else "it has no checkpoint (has training finished an epoch?)"
            )
            raise TrainingError(f"{path}: no {name} checkpoint in run {run}; {hint}")
        return path
    path = Path(name)
    if not path.is_file():
        raise TrainingError(f"{path}: no such checkpoint")
    return path
