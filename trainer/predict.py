"""Score audio files directly with a trained run: no protocol, no store build.

``trainer.predict.predict(["a.wav", "some/dir/"], run="runs/grcnn-...")`` (``trainer predict
--run RUN a.wav b.flac some/dir/``) gives every file a score and a label:

1. the run, its checkpoint and its record, as ``trainer score`` resolves them;
2. the run's training store (or ``store``, which must have the same fingerprint): its
   metadata holds the feature parameters the run's store fingerprint was computed from, and,
   for checkpoints without saved statistics, the normalisation statistics;
3. each file is decoded exactly as ``featstore build`` decodes it
   (:func:`featstore.audio.load_audio`: mono, 16 kHz, validated); files the build would
   quarantine (unreadable, silent, shorter than one frame, non-finite features) are reported
   and left out;
4. the features are computed by the registry's kernels (:func:`featstore.compute_feature`)
   with the store's recorded parameters (refused when the registry's feature today
   describes those parameters differently), as float32 rows like the store's;
5. they are scored through the same plan and reads as ``trainer score``
   (:mod:`trainer.score_batches`), so a file's score equals the score ``trainer score`` gives
   the same audio through a store, up to float rounding.

The label is ``bonafide`` when the score (a natural-log LLR, bona fide against spoof) is at
or above the threshold, else ``spoof``. The default threshold is the Bayes threshold of the
ASVspoof 5 cost model (:class:`trainer.metrics.DcfCostModel`: ``p_spoof = 0.05``,
``C_miss = 1``, ``C_fa = 10``): ``-ln(C_miss (1 - p_spoof) / (C_fa p_spoof)) = -ln 1.9``, the
threshold ``actDCF`` is measured at. It is only meaningful for calibrated scores
(``trainer calibrate``); pass ``threshold`` otherwise.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore import compute_feature
from featstore.atomic_files import write_bytes_atomic
from featstore.audio import load_audio
from featstore.errors import AudioError, StoreError
from featstore.features.registry import get_feature
from featstore.manifests import AUDIO_EXTENSIONS
from trainer.errors import TrainingError
from trainer.metrics import DcfCostModel

__all__ = [
    "PREDICT_FORMATS",
    "PredictResult",
    "Prediction",
    "bayes_threshold",
    "extract_features",
    "feature_parameters",
    "find_audio_files",
    "format_predictions",
    "predict",
    "write_predictions",
]

PREDICT_FORMATS = ("tsv", "jsonl")
"""``tsv``: ``file<TAB>score<TAB>label`` lines; ``jsonl``: one JSON object per file."""

FILES_PER_PASS = 64
"""Files decoded and featurised before they are scored together (bounds memory)."""

_RECORD_KEYS = ("name", "n_bins", "sample_rate")
"""Keys of a store's feature record that are not kernel parameters."""


@dataclass(frozen=True)
class Prediction:
    """The score and label of one audio file.

    Attributes
    ----------
    file : str
        The path as found (given, or under a given directory).
    score : float
        ``logit[bona fide] - logit[spoof]``, a natural-log LLR.
    label : str
        ``"bonafide"`` (score >= threshold) or ``"spoof"``.
    windowed : bool
        Scored as the mean over ``max_frames`` windows (longer than ``max_frames`` frames).
    """

    file: str
    score: float
    label: str
    windowed: bool = False


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` found: scored files (in input order) and the files it could not score.

    Attributes
    ----------
    predictions : list of Prediction
        One per scored file.
    failures : list of str
        One message per file that could not be scored (``PATH: why``).
    threshold : float
        The threshold the labels use.
    """

    predictions: list[Prediction]
    failures: list[str] = field(default_factory=list)
    threshold: float = 0.0


def bayes_threshold(cost: DcfCostModel | None = None) -> float:
    """The Bayes decision threshold on natural-log LLRs: ``-ln(C_miss (1 - pi) / (C_fa pi))``.

    Parameters
    ----------
    cost : DcfCostModel, optional
        Priors and costs; default the ASVspoof 5 model (``pi = p_spoof = 0.05``, ``C_miss =
        1``, ``C_fa = 10``).

    Returns
    -------
    float
        The threshold: scores at or above it decide bona fide (as ``actDCF`` counts them).

    Examples
    --------
    >>> round(bayes_threshold(), 4)  # -ln 1.9
    -0.6419
    """
    cost = cost or DcfCostModel()
    return -math.log(cost.c_miss * (1 - cost.p_spoof) / (cost.c_fa * cost.p_spoof))


def find_audio_files(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """The audio files named by ``paths``: files as given, directories searched recursively.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Files (any name; decoding decides) and directories (their ``.flac``/``.wav`` files,
        any case, sorted).

    Returns
    -------
    files : list of str
        In the order given, each directory's files sorted; duplicates kept once.
    problems : list of str
        ``PATH: why`` for paths that do not exist or directories without audio files.
    """
    files: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = sorted(
                os.path.join(d, name)
                for d, _, names in os.walk(p)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            if not found:
                problems.append(
                    f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this directory"
                )
        elif os.path.exists(p):
            found = [p]
        else:
            problems.append(f"{p}: no such file or directory")
            found = []
        for f in found:
            if f not in seen:
                seen.add(f)
                files.append(f)
    return files, problems


def predict(
    paths: Sequence[str | os.PathLike],
    run: str | os.PathLike | None = None,
    *,
    checkpoint: str | os.PathLike = "best",
    store: str | os.PathLike | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    eval_mode: str = "full",
    max_frames: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> PredictResult:
    """Score audio files with a trained run (see the module docstring).

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Audio files and directories (searched recursively for ``.flac``/``.wav``).
    run : str or os.PathLike, optional
        Run directory; default the most recent under ``./runs``.
    checkpoint : {"best", "last"} or path, default "best"
        Which weights.
    store : str or os.PathLike, optional
        Where to read the feature parameters (and, if the checkpoint has none, the
        normalisation statistics); default the run's training store. Its fingerprint must be
        the run's.
    threshold : float, optional
        Decision threshold on the scores; default :func:`bayes_threshold`.
    batch_size, device, precision, eval_mode, max_frames
        As for :func:`trainer.score` (``max_frames`` default
        :data:`trainer.score_batches.DEFAULT_MAX_FRAMES`).
    cache_dir : str or os.PathLike, optional
        Read cache of a store at a URL.
    progress : bool, default True
        Print the chosen run on stderr.
    on_failure : callable, optional
        Called with each failure message as it happens (the CLI prints it at once).

    Returns
    -------
    PredictResult
        Scored files and failures; failures do not stop the other files.

    Raises
    ------
    TrainingError
        No run or checkpoint, a bad setting.
    StoreError
        The store is missing, has another fingerprint, or records feature parameters the
        registry's kernels no longer describe the same way.

    Examples
    --------
    >>> result = predict(["suspicious.wav"], run="runs/grcnn-20261122-013000")  # doctest: +SKIP
    >>> result.predictions[0].label  # doctest: +SKIP
    'spoof'
    """
    from trainer import inference, scoring
    from trainer.score_batches import DEFAULT_MAX_FRAMES, MemoryFrames, check_plan_settings

    max_frames = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
    scoring.check_settings(None, precision, batch_size, 0)
    check_plan_settings(eval_mode, max_frames)
    if threshold is None:
        threshold = bayes_threshold()
    elif not math.isfinite(threshold):
        raise TrainingError(f"threshold must be a finite number, got {threshold!r}")

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr)

    failures: list[str] = []

    def fail(message: str) -> None:
        failures.append(message)
        if on_failure is not None:
            on_failure(message)

    files, problems = find_audio_files(paths)
    for message in problems:
        fail(message)
    trained = scoring.resolve_run(run, checkpoint, log)
    st = scoring.open_matching_store(trained, store, False, cache_dir)
    model = scoring.load_model(trained, st, device, batch_size, cache_dir)
    features = list(model.net.features)
    specs = feature_parameters(st, features)

    predictions: list[Prediction] = []
    for lo in range(0, len(files), FILES_PER_PASS):
        chunk = files[lo : lo + FILES_PER_PASS]
        names, feats = [], []
        for path in chunk:
            got = extract_features(path, specs)
            if isinstance(got, str):
                fail(got)
            else:
                names.append(path)
                feats.append(got)
        if not feats:
            continue
        frames = MemoryFrames(feats, features)
        plan = scoring.plan_scoring(model, frames, st.features, eval_mode, max_frames, names)
        scores = inference.evaluate(
            model.net, model.normalizer, plan.dataset, model.device, precision
        )
        windowed = set(plan.windowed)
        for name, s in zip(names, scores, strict=True):
            s = float(s)
            label = "bonafide" if s >= threshold else "spoof"
            predictions.append(Prediction(name, s, label, name in windowed))
    return PredictResult(predictions, failures, float(threshold))


def feature_parameters(st: Any, features: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The kernel parameters of ``features`` as the store recorded them (its fingerprint's).

    Raises
    ------
    StoreError
        A feature the store lacks, or one whose registry description of the recorded
        parameters differs from the store's record (the kernel changed since the build).
    """
    specs = {}
    recorded = st.features
    for name in features:
        if name not in recorded:
            raise StoreError(st.path, f"has no feature {name!r}, which the run reads")
        record = dict(recorded[name])
        params = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
        try:
            now = get_feature(name).describe(**params)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                st.path, f"feature {name!r}: its recorded parameters are not valid today ({exc})"
            ) from None
        if json.dumps(now, sort_keys=True) != json.dumps(record, sort_keys=True):
            raise StoreError(
                st.path,
                f"feature {name!r} was built with {record}, but the registry's kernel now "
                f"describes these parameters as {now}: the features would differ; score with a "
                "spoofstore version matching the store",
            )
        specs[name] = params
    return specs


def extract_features(path: str, specs: dict[str, dict[str, Any]]) -> dict[str, np.ndarray] | str:
    """The features of one audio file, or why it cannot be scored (``PATH: why``).

    The same decoding and the same checks as ``featstore build``: undecodable, silent or
    too-short audio and non-finite features are refused, as the build quarantines them.
    """
    try:
        x = load_audio(path).signal
    except AudioError as exc:
        return str(exc)
    if not np.any(x):
        return f"{path}: silent: all {x.size} samples are zero"
    out = {}
    for name, params in specs.items():
        try:
            y = compute_feature(name, x, **params)
        except ValueError as exc:
            return f"{path}: {name}: {exc}"
        if y.shape[0] == 0:
            return (
                f"{path}: too short: {x.size} samples ({x.size / 16000.0:.4f} s) is less than "
                f"one {name} frame ({params['win_length']} samples)"
            )
        if not np.isfinite(y).all():
            return f"{path}: {name}: {int(np.count_nonzero(~np.isfinite(y)))} non-finite values"
        out[name] = np.ascontiguousarray(y)
    n = {f: y.shape[0] for f, y in out.items()}
    if len(set(n.values())) > 1:
        return f"{path}: the features frame it differently ({n}); the run's features need one hop"
    return out


def format_predictions(result: PredictResult, format: str = "tsv") -> str:
    """The predictions as text: ``tsv`` lines ``file<TAB>score<TAB>label`` or ``jsonl``.

    Scores are written with ``repr`` (shortest exact float64).

    Raises
    ------
    ValueError
        Unknown format.
    """
    if format == "tsv":
        return "".join(f"{p.file}\t{p.score!r}\t{p.label}\n" for p in result.predictions)
    if format == "jsonl":
        return "".join(
            json.dumps(
                {
                    "file": p.file,
                    "score": p.score,
                    "label": p.label,
                    "threshold": result.threshold,
                    "windowed": p.windowed,
                }
            )
            + "\n"
            for p in result.predictions
        )
    raise ValueError(f"format must be one of {', '.join(PREDICT_FORMATS)}, got {format!r}")


def write_predictions(result: PredictResult, out: str | os.PathLike, format: str = "tsv") -> Path:
    """Write :func:`format_predictions` to ``out`` atomically.

    Raises
    ------
    ResourceError
        A full disk or no permission to write ``out``.
    ScoreFileError
        ``out`` cannot be written otherwise (e.g. its directory does not exist).
    """
    text = format_predictions(result, format)
    try:
        write_bytes_atomic(out, text.encode("utf-8"))
    except OSError as exc:
        from trainer.scoring import write_error

        raise write_error(out, exc) from None
    return Path(out)
