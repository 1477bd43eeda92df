"""Score a trained run on a split of a feature store into one consolidated score file.

``trainer.score(split="eval")`` (``trainer score --split eval``) takes, by default:

- the run: the most recent one under ``./runs`` (see :func:`latest_run`);
- its ``best.pt`` checkpoint (``"last"`` or a path also work);
- the store the run was trained on (path and fingerprint recorded in the checkpoint's
  ``config``, the same record as the run's ``config.json``);

and writes ``<run>/scores_<split>.txt`` plus a provenance sidecar ``<run>/scores_<split>.txt.json``.

Scoring is the training loop's own dev scoring, :func:`trainer.fit.evaluate`, on the
deterministic :class:`trainer.data.EvalBatches` of the split: models with ``eval_window =
None`` score whole utterances, models trained on crops score fixed windows of
``model.eval_window`` frames every ``model.eval_hop`` frames and an utterance's score is the
mean of its windows' log-odds (the model decides). Features are normalised exactly as in
training: the per-bin mean/std of the *training* store's train split
(:meth:`trainer.data.FeatureNormalizer.from_store`), or the statistics saved in the checkpoint
when it holds them (``state["normalizer"]``).

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
and its sidecar atomically (temporary file + :func:`os.replace`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from featstore._version import __version__
from featstore.errors import StoreError
from trainer.errors import ScoreFileError, TrainingError
from trainer.scorefiles import SCORE_FORMATS, write_score_file

__all__ = ["SCORE_FORMATS", "latest_run", "resolve_checkpoint", "score", "write_score_file"]

_CHECKPOINT_NAMES = ("last.pt", "best.pt")


# --- finding the run and its checkpoint -------------------------------------------------------


def latest_run(root: str | os.PathLike = "runs") -> Path:
    """The most recent run directory under ``root``.

    "Most recent" = the directory (direct child of ``root``) whose newest checkpoint
    (``last.pt`` or ``best.pt``) has the latest modification time, i.e. the run that last
    finished an epoch; ties go to the greater name (default run names end in a timestamp).
    Directories without a checkpoint (a run that has not finished its first epoch) are skipped.

    Parameters
    ----------
    root : str or os.PathLike, default "runs"
        Directory holding run directories.

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
    best: tuple[float, str, Path] | None = None
    for d in dirs:
        times = [(d / n).stat().st_mtime for n in _CHECKPOINT_NAMES if (d / n).is_file()]
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
            have = [n for n in _CHECKPOINT_NAMES if (run / n).is_file()]
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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ScoreFileError(path, f"cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


# --- scoring ----------------------------------------------------------------------------------


def _resolve_device(pref: str, recorded: str | None) -> Any:
    """``auto``: the run's device type when available here, else the CPU."""
    import torch

    if pref == "auto":
        pref = "cpu"
        if recorded and recorded.startswith("cuda") and torch.cuda.is_available():
            pref = "cuda"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for, but CUDA is not available")
    if not (pref == "cpu" or pref.startswith("cuda")):
        raise TrainingError(f"device must be auto, cpu or cuda[:N], got {pref!r}")
    return torch.device(pref)


def _normalizer(state: dict, run_info: dict, store: Any, features: dict[str, int]) -> tuple:
    """The training normaliser, and where its statistics come from."""
    from featstore import open_store
    from trainer.data import FeatureNormalizer

    saved = state.get("normalizer")
    if isinstance(saved, dict) and all(f in saved for f in features):
        stats = {
            f: (np.asarray(saved[f]["mean"])[:n], np.asarray(saved[f]["std"])[:n])
            for f, n in features.items()
        }
        return FeatureNormalizer(stats), "checkpoint"
    recorded = run_info.get("store", {})
    train_path = recorded.get("path")
    source = store
    if train_path and os.path.abspath(train_path) != os.path.abspath(store.path):
        try:
            train_store = open_store(train_path)
        except StoreError:
            train_store = None
        if train_store is not None and train_store.fingerprint == recorded.get("fingerprint"):
            source = train_store
        elif "train" in store.splits:
            warnings.warn(
                f"the run's training store {train_path} is not available; normalising with "
                f"the train statistics of {store.path}",
                stacklevel=3,
            )
        else:
            raise StoreError(
                store.path,
                f"cannot normalise as in training: the run's training store {train_path} is "
                "not available and this store has no train split",
            )
    return FeatureNormalizer.from_store(source, features), source.path


class _UtteranceProgress:
    """Counts utterances finished by each forward pass of the model into a tqdm bar.

    :func:`trainer.fit.evaluate` runs the model once per batch of ``dataset.batches``, in
    order; an utterance is finished by the batch holding its last segment.
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
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Score every utterance of a store split with a trained run; write one score file.

    Parameters
    ----------
    run : str or os.PathLike, optional
        Run directory; default :func:`latest_run` under ``./runs`` (printed).
    split : str, default "eval"
        Store split to score.
    store : str or os.PathLike, optional
        Feature store; default the one the run was trained on. Its fingerprint must equal the
        run's (same features and parameters) unless ``force``.
    checkpoint : {"best", "last"} or path, default "best"
        Which weights (see :func:`resolve_checkpoint`).
    out : str or os.PathLike, optional
        Score file; default ``<run>/scores_<split>.txt``. Provenance goes to ``<out>.json``.
    format : {"asvspoof2019", "asvspoof2021", "asvspoof5"}, optional
        Layout (see the module docstring); default ``asvspoof2019``, or ``asvspoof2021``
        when the split has utterances without a key.
    batch_size : int, optional
        Segments per forward pass; default the run's ``eval_batch_size`` (or ``batch_size``).
        Does not change the scores (beyond float rounding).
    device : str, default "auto"
        ``auto`` = the run's device type when available here, else the CPU; or ``cpu``,
        ``cuda``, ``cuda:N``.
    precision : {"fp32", "bf16", "fp16"}, default "fp32"
        Autocast precision of the forward passes.
    workers : int, default 0
        DataLoader worker processes.
    force : bool, default False
        Score a store whose fingerprint differs from the run's.
    progress : bool, default True
        Print the chosen run and a tqdm bar (utterances/s) on stderr.

    Returns
    -------
    Path
        The score file.

    Raises
    ------
    TrainingError
        No run, no checkpoint, an unusable checkpoint, a bad setting.
    StoreError
        Missing store, unknown split, fingerprint mismatch (without ``force``), or
        ``asvspoof2019`` asked for a split without keys.
    ValueError
        Unknown format.

    Examples
    --------
    >>> path = score(split="eval")  # doctest: +SKIP
    >>> path  # doctest: +SKIP
    PosixPath('runs/grcnn-20261122-013000/scores_eval.txt')
    """
    import torch
    from tqdm import tqdm

    from featstore import open_store
    from trainer import models
    from trainer.checkpoint import load_checkpoint
    from trainer.data import EvalBatches
    from trainer.fit import evaluate

    if format is not None and format not in SCORE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SCORE_FORMATS)}, got {format!r}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise TrainingError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise TrainingError(f"batch_size must be a positive integer, got {batch_size!r}")
    if workers < 0:
        raise TrainingError(f"workers must be >= 0, got {workers}")

    def log(message: str) -> None:
        if progress:
            tqdm.write(message, file=sys.stderr)

    if run is None:
        run = latest_run("runs")
        log(f"run: {run} (most recent under ./runs)")
    run = Path(run)
    ckpt_path = resolve_checkpoint(run, checkpoint)
    state = load_checkpoint(ckpt_path)
    run_info = state.get("config")
    if not isinstance(run_info, dict):  # the run's config.json holds the same record
        run_info = _read_run_config(run / "config.json")
    if "model" not in state or run_info is None:
        raise TrainingError(f"{ckpt_path}: not a trainer checkpoint (no weights or config)")
    model_info = run_info.get("model", {})
    fit_info = run_info.get("fit", {})
    recorded = run_info.get("store", {})

    # the store, and that it is the kind the run was trained on
    store_path = os.fspath(store) if store is not None else recorded.get("path")
    if not store_path:
        raise TrainingError(f"{ckpt_path}: the run records no store; pass --store")
    try:
        st = open_store(store_path)
    except StoreError as exc:
        if store is None:
            raise StoreError(
                exc.path, f"{exc.message} (the run's training store; pass --store)"
            ) from None
        raise
    want = recorded.get("fingerprint")
    if want and st.fingerprint != want and not force:
        raise StoreError(
            st.path,
            f"store fingerprint {st.fingerprint[:16]} differs from the one run {run} was "
            f"trained on ({str(want)[:16]}): its features or their parameters differ; "
            "score a store built with the run's configuration, or pass --force",
        )
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

    # the model, exactly as trained
    name = model_info.get("name") or fit_info.get("model")
    if not name:
        raise TrainingError(f"{ckpt_path}: the run records no model name")
    net = models.build_model(name, **dict(model_info.get("kwargs") or {}))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise TrainingError(f"{ckpt_path}: weights do not fit model {name!r} ({exc})") from None
    features = {f: int(net.n_bins[f]) for f in net.features}
    dev = _resolve_device(device, run_info.get("runtime", {}).get("device"))
    normalizer, norm_source = _normalizer(state, run_info, st, features)
    if batch_size is None:
        batch_size = int(fit_info.get("eval_batch_size") or fit_info.get("batch_size") or 32)
    dataset = EvalBatches(st, features, split, batch_size, net.eval_window, net.eval_hop)
    net.to(dev)
    normalizer.to(dev)

    n = len(index)
    t0 = time.perf_counter()
    bar = tqdm(
        total=n,
        desc=f"scoring {split}",
        unit="utt",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    hook = net.register_forward_hook(_UtteranceProgress(dataset, bar))
    try:
        scores = evaluate(net, normalizer, dataset, dev, precision, workers)
    finally:
        hook.remove()
        bar.close()
    seconds = time.perf_counter() - t0

    unscored = np.flatnonzero(~np.isfinite(scores))
    utt_ids = [str(u) for u in index["utt_id"]]
    if unscored.size:
        scores = np.where(np.isfinite(scores), scores, 0.0)
        names = ", ".join(utt_ids[i] for i in unscored[:5])
        warnings.warn(
            f"{unscored.size} utterance(s) of split {split!r} have no frames (shorter than one "
            f"analysis window) and get score 0 (no evidence): {names}"
            + (", ..." if unscored.size > 5 else ""),
            stacklevel=2,
        )
    quarantined = [u for s, u, _ in st.quarantine if s == split]
    if quarantined:
        warnings.warn(
            f"{len(quarantined)} utterance(s) of split {split!r} were quarantined when the "
            f"store was built and have no score (e.g. {quarantined[0]}; see featstore info)",
            stacklevel=2,
        )

    out_path = Path(out) if out is not None else run / f"scores_{split}.txt"
    keys = np.where(labels == 1, "bonafide", np.where(labels == 0, "spoof", "-"))
    write_score_file(
        out_path,
        utt_ids,
        scores,
        format=format,
        speakers=[str(s) for s in index["speaker"]],
        systems=[str(s) for s in index["system"]],
        keys=[str(k) for k in keys],
    )
    provenance = {
        "score_file": os.path.abspath(out_path),
        "format": format,
        "sha256": hashlib.sha256(out_path.read_bytes()).hexdigest(),
        "run": os.path.abspath(run),
        "checkpoint": {
            "path": os.path.abspath(ckpt_path),
            "epoch": int(state.get("epoch", 0)),
            "dev_eer": _finite_or_none(state.get("dev_eer")),
        },
        "store": {
            "path": _location(st.path),
            "fingerprint": st.fingerprint,
            "run_fingerprint": want,
            "forced": bool(want and st.fingerprint != want),
        },
        "normalisation": _location(norm_source),
        "split": split,
        "model": {
            "name": name,
            "kwargs": dict(model_info.get("kwargs") or {}),
            "eval_window": net.eval_window,
            "eval_hop": net.eval_hop,
        },
        "n_utterances": n,
        "n_bonafide": int(np.count_nonzero(labels == 1)),
        "n_spoof": int(np.count_nonzero(labels == 0)),
        "unscored": [utt_ids[i] for i in unscored],
        "quarantined": quarantined,
        "score": "logits[:, 1] - logits[:, 0] (natural-log LLR, bona fide vs spoof)",
        "device": str(dev),
        "precision": precision,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "utterances_per_s": round(n / seconds, 2) if seconds > 0 else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
        "torch": str(torch.__version__),
    }
    sidecar = out_path.with_name(out_path.name + ".json")
    _write_atomic(sidecar, json.dumps(provenance, indent=2) + "\n")
    log(
        f"scored {n} utterances of {split!r} in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} utt/s) on {dev}"
    )
    return out_path


def _read_run_config(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _location(path: str) -> str:
    """Absolute local path; URLs and ``"checkpoint"`` as they are."""
    return path if path == "checkpoint" or "://" in path else os.path.abspath(path)


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class _CallableModule(types.ModuleType):
    """Makes ``trainer.score`` callable even once it names this module.

    Importing the submodule (``from trainer.score import score``, as the CLI does) binds the
    package attribute ``trainer.score`` to the module, shadowing the lazily exported
    function; calling the module calls :func:`score` (the same arrangement as ``trainer.fit``).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return score(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
