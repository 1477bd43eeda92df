"""The official ASVspoof GMM baselines (LFCC-GMM, CQCC-GMM): training and scoring.

The ASVspoof 2019/2021 baselines (``asvspoof-challenge/2021``, ``LA/Baseline-CQCC-GMM`` and
``Baseline-LFCC-GMM``) train one diagonal-covariance GMM of 512 components on the frames of
every bona fide training utterance and one on those of the spoofed ones (MATLAB ``vl_gmm``,
random data points as initial means, 10 EM iterations), and score an utterance by the mean
over its frames of ``log p(x_t | bona fide) - log p(x_t | spoof)``. So do we:

- :func:`fit_diagonal_gmm`: EM of our own, vectorised and chunked (a fixed number of frames
  at a time: the memory of one chunk's responsibilities, not ``n_frames x n_components``),
  float32 matrix products and float64 accumulators, initial means drawn from the frames by a
  seeded generator (``vl_gmm``'s ``rand`` initialisation), uniform weights, the data variance
  as initial variances, variances floored at ``variance_floor`` times the data variance of
  their dimension, and a component left without frames keeping its parameters (its weight
  goes to 0). ``bench/bench_gmm.py`` measures it against scikit-learn's ``GaussianMixture``,
  which holds several ``n_frames x n_components`` float64 arrays (gigabytes for millions of
  frames) and is slower per iteration.
- Frames are standardised with the per-bin mean and standard deviation of the store's train
  split (both classes) before training and scoring. An affine change of the features adds
  the same log-Jacobian to both models' log-likelihoods, so the log-likelihood ratio is that
  of GMMs trained on the raw features; it keeps float32 products exact enough (CQCC's 0th
  coefficient is about -950).
- :func:`fit_run` / :func:`score_run` give a GMM baseline the run directory of the neural
  models (:mod:`trainer.runs`): ``config.json``, ``best.pt`` = ``last.pt`` (a
  :class:`trainer.checkpoint.Checkpoint` whose weights are the two GMMs' parameters as
  tensors, ``bonafide.weights``, ``bonafide.means``, ``bonafide.variances``, ``spoof.*``,
  and whose normaliser is the standardisation: ``weights_only`` loads, no pickle),
  ``metrics.csv`` (one row: the dev EER) and ``scores_<split>.txt`` with its ``.json``
  provenance in the layouts of :func:`trainer.scorefiles.write_score_file`.

Model parameters (``model_kwargs``): ``n_components`` (512), ``max_iter`` (10),
``variance_floor`` (1e-3), ``chunk_frames`` (32768). ``seed`` seeds the initial means. The
training loop's other settings (epochs, learning rate, batches, devices) do not apply.

This module's mathematics needs NumPy only; :func:`fit_run` and :func:`score_run` import
the torch-based run and checkpoint modules when called.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import TrainingError

__all__ = [
    "GMM_DEFAULTS",
    "DiagonalGMM",
    "GMMBaseline",
    "fit_diagonal_gmm",
    "fit_run",
    "score_run",
]

GMM_DEFAULTS: Mapping[str, Any] = {
    "n_components": 512,
    "max_iter": 10,
    "variance_floor": 1e-3,
    "chunk_frames": 32768,
}
"""The GMM baselines' parameters (``model_kwargs``) and their defaults."""

_LOG_2PI = math.log(2 * math.pi)
_EMPTY = 1e-3  # a component with fewer (soft) frames than this keeps its parameters


@dataclass(frozen=True)
class DiagonalGMM:
    """A Gaussian mixture with diagonal covariances.

    Attributes
    ----------
    weights : np.ndarray
        float64 ``(K,)``, summing to 1.
    means, variances : np.ndarray
        float64 ``(K, D)``; variances positive.
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def _projection(self) -> tuple[np.ndarray, np.ndarray]:
        """``[x^2, x] @ P + b`` = log(w_k) + log N(x; mu_k, var_k) for every component."""
        precision = 1.0 / self.variances
        matrix = np.concatenate([-0.5 * precision, self.means * precision], axis=1).T
        bias = (
            np.log(np.maximum(self.weights, 1e-300))
            - 0.5 * (self.dim * _LOG_2PI + np.log(self.variances).sum(axis=1))
            - 0.5 * (self.means**2 * precision).sum(axis=1)
        )
        return matrix.astype(np.float32), bias

    def log_likelihood(self, frames: np.ndarray, chunk_frames: int = 32768) -> np.ndarray:
        """``log p(x_t)`` of every frame (natural log).

        Parameters
        ----------
        frames : np.ndarray
            ``(N, D)``.
        chunk_frames : int, default 32768
            Frames per matrix product (bounds memory at ``chunk_frames x K`` floats).

        Returns
        -------
        np.ndarray
            float64 ``(N,)``.

        Examples
        --------
        >>> gmm = DiagonalGMM(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1)))
        >>> round(float(gmm.log_likelihood(np.zeros((1, 1)))[0]), 6)  # log N(0; 0, 1)
        -0.918939
        """
        matrix, bias = self._projection()
        out = np.empty(frames.shape[0], dtype=np.float64)
        for a in range(0, frames.shape[0], chunk_frames):
            joint = _joint_log_prob(frames[a : a + chunk_frames], matrix, bias)
            out[a : a + joint.shape[0]] = _logsumexp_rows(joint)
        return out

    def to_tensors(self, prefix: str) -> dict[str, Any]:
        """``{prefix.weights, prefix.means, prefix.variances}`` as float64 torch tensors."""
        import torch

        return {
            f"{prefix}.{name}": torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
            for name in ("weights", "means", "variances")
        }

    @classmethod
    def from_tensors(cls, weights: Mapping[str, Any], prefix: str, source: object) -> DiagonalGMM:
        """The GMM saved by :meth:`to_tensors`; :class:`TrainingError` names what is missing."""
        try:
            values = {
                name: np.asarray(weights[f"{prefix}.{name}"], dtype=np.float64)
                for name in ("weights", "means", "variances")
            }
        except KeyError as exc:
            raise TrainingError(f"{source}: not a GMM baseline checkpoint (no {exc})") from None
        k = values["weights"].shape
        if (
            len(k) != 1
            or values["means"].ndim != 2
            or values["means"].shape != values["variances"].shape
            or values["means"].shape[0] != k[0]
            or not (values["variances"] > 0).all()
        ):
            raise TrainingError(f"{source}: the {prefix} GMM's parameters are inconsistent")
        return cls(**values)


def _joint_log_prob(x: np.ndarray, matrix: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``(n, K)`` float32 log(w_k N(x; k)) of one chunk of frames."""
    x = np.asarray(x, dtype=np.float32)
    joint = np.concatenate([x * x, x], axis=1) @ matrix
    joint += bias.astype(np.float32)
    return joint


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1, keepdims=True)
    return (np.log(np.exp(a - top).sum(axis=1, dtype=np.float64)) + top[:, 0]).astype(np.float64)


def fit_diagonal_gmm(
    frames: np.ndarray,
    n_components: int = 512,
    *,
    max_iter: int = 10,
    seed: int = 0,
    variance_floor: float = 1e-3,
    chunk_frames: int = 32768,
    log: Callable[[str], None] | None = None,
) -> tuple[DiagonalGMM, list[float]]:
    """Fit a diagonal-covariance GMM by EM (see the module docstring for the recipe).

    Parameters
    ----------
    frames : np.ndarray
        ``(N, D)`` training frames, ``N >= n_components``.
    n_components : int, default 512
        Mixture components.
    max_iter : int, default 10
        EM iterations (the baseline's 10; no early stop, so the cost is predictable).
    seed : int, default 0
        Seeds the choice of initial means.
    variance_floor : float, default 1e-3
        Variances never fall below this fraction of the data variance of their dimension.
    chunk_frames : int, default 32768
        Frames per E-step chunk.
    log : callable, optional
        Receives one line per iteration.

    Returns
    -------
    (DiagonalGMM, list of float)
        The model and the mean frame log-likelihood before each M-step.

    Raises
    ------
    TrainingError
        Fewer frames than components, non-finite frames, or a bad setting.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-5, 1, (500, 1)), rng.normal(5, 1, (500, 1))])
    >>> gmm, _ = fit_diagonal_gmm(x, 2, max_iter=100)
    >>> np.sort(gmm.means[:, 0]).round(0).tolist()
    [-5.0, 5.0]
    """
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] < 1:
        raise TrainingError(f"GMM frames must be (n_frames, dim), got {frames.shape}")
    n = frames.shape[0]
    for name, value in (("n_components", n_components), ("max_iter", max_iter)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrainingError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise TrainingError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if not 0 < variance_floor < 1:
        raise TrainingError(f"variance_floor must be in (0, 1), got {variance_floor!r}")
    if n < n_components:
        raise TrainingError(
            f"{n} training frames are fewer than the {n_components} GMM components; "
            "use fewer components (--components)"
        )
    mean, second = _moments(frames, chunk_frames)
    if not (np.isfinite(mean).all() and np.isfinite(second).all()):
        raise TrainingError("GMM training frames hold non-finite values")
    data_var = np.maximum(second - mean**2, 1e-12)
    floor = variance_floor * data_var
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=n_components, replace=False))
    gmm = DiagonalGMM(
        weights=np.full(n_components, 1.0 / n_components),
        means=np.asarray(frames[chosen], dtype=np.float64),
        variances=np.tile(data_var, (n_components, 1)),
    )
    history = []
    for iteration in range(max_iter):
        counts, sums, squares, total = _expectation(gmm, frames, chunk_frames)
        history.append(total / n)
        gmm = _maximisation(gmm, counts, sums, squares, floor, n)
        if log is not None:
            log(f"  EM iteration {iteration + 1}/{max_iter}: mean log-likelihood {total / n:.4f}")
    return gmm, history


def _moments(frames: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros(frames.shape[1])
    square = np.zeros(frames.shape[1])
    for a in range(0, frames.shape[0], chunk):
        x = np.asarray(frames[a : a + chunk], dtype=np.float64)
        total += x.sum(axis=0)
        square += (x * x).sum(axis=0)
    return total / frames.shape[0], square / frames.shape[0]


def _expectation(
    gmm: DiagonalGMM, frames: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Soft counts, first and second moments per component, and the total log-likelihood."""
    matrix, bias = gmm._projection()
    counts = np.zeros(gmm.n_components)
    sums = np.zeros((gmm.n_components, gmm.dim))
    squares = np.zeros((gmm.n_components, gmm.dim))
    total = 0.0
    for a in range(0, frames.shape[0], chunk):
        x = np.asarray(frames[a : a + chunk], dtype=np.float32)
        resp = _joint_log_prob(x, matrix, bias)
        top = resp.max(axis=1, keepdims=True)
        resp -= top
        np.exp(resp, out=resp)  # in place: one (chunk, K) array per chunk
        norm = resp.sum(axis=1, keepdims=True)
        total += float((np.log(norm[:, 0].astype(np.float64)) + top[:, 0]).sum())
        resp /= norm
        counts += resp.sum(axis=0, dtype=np.float64)
        stats = resp.T @ np.concatenate([x, x * x], axis=1)
        sums += stats[:, : gmm.dim]
        squares += stats[:, gmm.dim :]
    return counts, sums, squares, total


def _maximisation(
    gmm: DiagonalGMM,
    counts: np.ndarray,
    sums: np.ndarray,
    squares: np.ndarray,
    floor: np.ndarray,
    n: int,
) -> DiagonalGMM:
    alive = counts > _EMPTY
    safe = np.where(alive, counts, 1.0)[:, None]
    means = np.where(alive[:, None], sums / safe, gmm.means)
    variances = np.where(alive[:, None], squares / safe - means**2, gmm.variances)
    variances = np.maximum(variances, floor)
    weights = counts / n
    return DiagonalGMM(weights=weights / weights.sum(), means=means, variances=variances)


@dataclass(frozen=True)
class GMMBaseline:
    """The two GMMs of a baseline and the standardisation of their input.

    Attributes
    ----------
    bonafide, spoof : DiagonalGMM
        Models of the bona fide and the spoofed frames.
    mean, std : np.ndarray
        float32 ``(D,)``: frames are ``(x - mean) / std`` before either model sees them.
    """

    bonafide: DiagonalGMM
    spoof: DiagonalGMM
    mean: np.ndarray
    std: np.ndarray

    def frame_llr(self, frames: np.ndarray, chunk_frames: int = 32768) -> np.ndarray:
        """``log p(x_t | bona fide) - log p(x_t | spoof)`` per frame (float64 ``(N,)``)."""
        x = (np.asarray(frames, dtype=np.float32) - self.mean) / self.std
        return self.bonafide.log_likelihood(x, chunk_frames) - self.spoof.log_likelihood(
            x, chunk_frames
        )

    def score(
        self, frames: np.ndarray, n_frames: np.ndarray, chunk_frames: int = 32768
    ) -> np.ndarray:
        """Mean frame LLR per utterance; NaN for an utterance without frames.

        Parameters
        ----------
        frames : np.ndarray
            ``(sum(n_frames), D)``: the utterances' frames one after the other.
        n_frames : np.ndarray
            Frames of each utterance.

        Returns
        -------
        np.ndarray
            float64 ``(len(n_frames),)``.
        """
        n_frames = np.asarray(n_frames, dtype=np.int64)
        llr = self.frame_llr(frames, chunk_frames)
        bounds = np.concatenate([[0], np.cumsum(n_frames)])
        sums = np.add.reduceat(np.append(llr, 0.0), bounds[:-1]) if n_frames.size else llr[:0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_frames > 0, sums / np.maximum(n_frames, 1), np.nan)


# --- the run directory ------------------------------------------------------------------------


def _gmm_settings(model_kwargs: Mapping[str, Any], model: str) -> dict[str, Any]:
    unknown = sorted(set(model_kwargs) - set(GMM_DEFAULTS))
    if unknown:
        raise TrainingError(
            f"model {model!r} has no parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(GMM_DEFAULTS)}"
        )
    return {**GMM_DEFAULTS, **model_kwargs}


def _class_frames(store: Any, split: str, feature: str, label: int) -> np.ndarray:
    """Every frame of the utterances of ``split`` with ``label``, in index order."""
    labels = np.asarray(store.index(split)["label"])
    offsets, n_frames = store.frames(split, feature)
    keep = labels == label
    starts, lengths = offsets[keep], n_frames[keep]
    array = store.array(split, feature)
    out = np.empty((int(lengths.sum()), array.n_bins), dtype=np.float32)
    at = 0
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        out[at : at + length] = array[start : start + length]
        at += length
    return out


def _score_split(
    baseline: GMMBaseline, store: Any, split: str, feature: str, chunk_frames: int
) -> np.ndarray:
    """Mean frame LLR of every utterance of ``split`` (index order; NaN without frames).

    Reads about a million frames at a time, whole utterances, so memory stays bounded.
    """
    offsets, n_frames = store.frames(split, feature)
    array = store.array(split, feature)
    scores = np.full(n_frames.size, np.nan)
    first = 0
    while first < n_frames.size:
        last = first + 1
        total = int(n_frames[first])
        while last < n_frames.size and total + int(n_frames[last]) <= 1 << 20:
            total += int(n_frames[last])
            last += 1
        frames = np.empty((total, array.n_bins), dtype=np.float32)
        at = 0
        for start, length in zip(
            offsets[first:last].tolist(), n_frames[first:last].tolist(), strict=True
        ):
            frames[at : at + length] = array[start : start + length]
            at += length
        scores[first:last] = baseline.score(frames, n_frames[first:last], chunk_frames)
        first = last
    return scores


def fit_run(explicit: Mapping[str, Any]) -> Any:
    """``trainer.fit`` for a GMM baseline: train both GMMs and write a run directory.

    Parameters
    ----------
    explicit : Mapping
        :class:`trainer.config.FitConfig` fields as given to ``trainer.fit`` (``store``,
        ``model``, ``out``, ``seed``, ``model_kwargs``, ``train_split``, ``dev_split``,
        ``threads`` (BLAS threads), ``progress``, ``cache_dir``, ...).

    Returns
    -------
    trainer.training.FitResult
        ``best_epoch = epochs_done = 1``; ``best_dev_eer`` NaN without a dev split.

    Raises
    ------
    TrainingError
        Bad settings, a store without the model's feature or with a class missing from the
        train split, fewer frames than components, or a run directory already holding a run.
        Nothing is written then.
    """
    from threadpoolctl import threadpool_limits

    from featstore import open_store
    from trainer.training import FitResult

    cfg, out, feature, settings = _plan_gmm_run(explicit)

    def log(message: str) -> None:
        if cfg.progress:
            print(message, file=sys.stdout, flush=True)

    log(f"run directory: {out}")
    store = open_store(cfg.store, mode="r", cache_dir=cfg.cache_dir)
    _check_store(store, cfg, feature)
    with threadpool_limits(limits=cfg.threads, user_api="blas"):
        baseline, n_frames, seconds = _train_gmms(store, cfg, feature, settings, log)
        dev_eer = _dev_eer(baseline, store, cfg.dev_split, feature, settings["chunk_frames"])
    row = {
        "epoch": 1,
        "step": settings["max_iter"],
        "train_loss": math.nan,
        "dev_eer": dev_eer,
        "best_dev_eer": dev_eer,
        "lr": math.nan,
        "examples_per_s": n_frames * settings["max_iter"] / max(seconds, 1e-9),
        "epoch_seconds": seconds,
    }
    _write_run(out, cfg, store, feature, settings, baseline, row)
    eer = "n/a" if math.isnan(dev_eer) else f"{100 * dev_eer:.2f}%"
    log(f"GMMs trained in {seconds:.1f} s ({n_frames} frames); dev EER {eer}")
    return FitResult(out, dev_eer, best_epoch=1, epochs_done=1, stopped_early=False, history=[row])


def _plan_gmm_run(explicit: Mapping[str, Any]) -> tuple[Any, Path, str, dict[str, Any]]:
    """The validated FitConfig, the run directory (refused if it holds a run), the feature
    the model reads and the GMM settings."""
    from dataclasses import asdict

    from trainer.config import FitConfig
    from trainer.models.registry import MODELS
    from trainer.runs import LAST, default_run_dir

    model = str(explicit["model"])
    out = explicit.get("out")
    if out is None:
        out = default_run_dir(model, time.strftime("%Y%m%d-%H%M%S"))
    out = Path(out)
    if (out / LAST).exists():
        raise TrainingError(
            f"{out}: already holds a run (last.pt); a GMM baseline trains in one go and has "
            "nothing to resume: choose another --out"
        )
    cfg = FitConfig(**{**asdict(FitConfig()), **explicit, "out": os.fspath(out)}).validate()
    (feature,) = MODELS[model].features
    return cfg, out, feature, _gmm_settings(cfg.model_kwargs, model)


def _check_store(store: Any, cfg: Any, feature: str) -> None:
    if feature not in store.features:
        raise TrainingError(
            f"{store.path}: model {cfg.model!r} needs feature {feature!r}; the store has "
            f"{', '.join(sorted(store.features))} (build it with --features {feature})"
        )
    if cfg.train_split not in store.splits:
        raise TrainingError(
            f"{store.path}: no {cfg.train_split!r} split to train on; the store has "
            f"{', '.join(store.splits)}"
        )


def _train_gmms(
    store: Any, cfg: Any, feature: str, settings: Mapping[str, Any], log: Callable[[str], None]
) -> tuple[GMMBaseline, int, float]:
    """Both GMMs on the standardised train frames; the frames used and the seconds taken."""
    mean, std = (np.asarray(v, dtype=np.float32) for v in store.stats(feature))
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    t0 = time.perf_counter()
    gmms, n_frames = {}, 0
    for name, label in (("bonafide", 1), ("spoof", 0)):
        frames = _class_frames(store, cfg.train_split, feature, label)
        if frames.shape[0] == 0:
            raise TrainingError(
                f"{store.path}: the {cfg.train_split!r} split has no {name} frames to train "
                "the GMM on"
            )
        frames -= mean
        frames /= std
        log(f"training the {name} GMM on {frames.shape[0]} frames of {feature}")
        gmms[name], _ = fit_diagonal_gmm(
            frames,
            settings["n_components"],
            max_iter=settings["max_iter"],
            seed=cfg.seed,
            variance_floor=settings["variance_floor"],
            chunk_frames=settings["chunk_frames"],
            log=log,
        )
        n_frames += frames.shape[0]
        del frames
    baseline = GMMBaseline(gmms["bonafide"], gmms["spoof"], mean, std)
    return baseline, n_frames, time.perf_counter() - t0


def _dev_eer(baseline: GMMBaseline, store: Any, split: str, feature: str, chunk: int) -> float:
    """EER of the dev split's scores (NaN without a dev split or without both classes)."""
    from trainer.metrics import compute_eer

    if split not in store.splits:
        return math.nan
    scores = _score_split(baseline, store, split, feature, chunk)
    labels = np.asarray(store.index(split)["label"])
    ok = np.isfinite(scores) & (labels >= 0)
    bona, spoof = scores[ok & (labels == 1)], scores[ok & (labels == 0)]
    if bona.size == 0 or spoof.size == 0:
        return math.nan
    return float(compute_eer(bona, spoof)[0])


def _write_run(
    out: Path,
    cfg: Any,
    store: Any,
    feature: str,
    settings: Mapping[str, Any],
    baseline: GMMBaseline,
    row: Mapping[str, Any],
) -> None:
    """``config.json``, ``metrics.csv``, ``best.pt`` and ``last.pt`` (the same checkpoint)."""
    import torch

    from featstore._version import __version__
    from trainer import checkpoint
    from trainer.runs import (
        BEST,
        LAST,
        METRICS,
        ModelRecord,
        RunRecord,
        RuntimeRecord,
        StoreRecord,
        write_metrics,
        write_run_record,
    )

    dim = baseline.bonafide.dim
    record = RunRecord(
        fit=cfg,
        store=StoreRecord(
            path=store.path if "://" in store.path else os.path.abspath(store.path),
            fingerprint=store.fingerprint,
            format=store.format,
        ),
        model=ModelRecord(
            name=cfg.model,
            kwargs=dict(cfg.model_kwargs),
            features=(feature,),
            n_bins={feature: dim},
            train_frames=0,
            eval_window=None,
            eval_hop=None,
            parameters=2 * settings["n_components"] * (2 * dim + 1),
        ),
        runtime=RuntimeRecord(
            device="cpu",
            precision="fp32",
            world_size=1,
            torch=str(torch.__version__),
            version=__version__,
        ),
    )
    state = checkpoint.Checkpoint(
        weights={**baseline.bonafide.to_tensors("bonafide"), **baseline.spoof.to_tensors("spoof")},
        epoch=1,
        dev_eer=row["dev_eer"],
        run=record,
        normalizer={feature: (baseline.mean, baseline.std)},
    )
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, record)
    write_metrics(out / METRICS, [row])
    checkpoint.save_checkpoint(out / BEST, state)
    checkpoint.save_checkpoint(out / LAST, state)


def load_baseline(trained: Any) -> GMMBaseline:
    """The :class:`GMMBaseline` of a resolved run (``trainer.scoring``'s ``TrainedRun``)."""
    state, source = trained.checkpoint, trained.checkpoint_path
    (feature,) = trained.record.model.features
    if state.normalizer is None or feature not in state.normalizer:
        raise TrainingError(f"{source}: the GMM baseline checkpoint has no {feature} statistics")
    mean, std = state.normalizer[feature]
    return GMMBaseline(
        bonafide=DiagonalGMM.from_tensors(state.weights, "bonafide", source),
        spoof=DiagonalGMM.from_tensors(state.weights, "spoof", source),
        mean=np.asarray(mean, dtype=np.float32),
        std=np.asarray(std, dtype=np.float32),
    )


def score_run(
    trained: Any,
    *,
    split: str,
    store: str | os.PathLike | None,
    out: str | os.PathLike | None,
    format: str | None,
    force: bool,
    cache_dir: str | os.PathLike | None,
    log: Callable[[str], None],
) -> Path:
    """``trainer.score`` for a GMM baseline run: mean frame LLR per utterance, one score file.

    The run, store and split are resolved and checked exactly as for a neural model (the
    phases of :mod:`trainer.scoring`); utterances without frames get 0 and are named in a
    warning and the sidecar, like quarantined ones.
    """
    import warnings

    from featstore.errors import StoreError
    from trainer.scoring import (
        default_score_path,
        open_matching_store,
        refuse_foreign_overwrite,
        select_split,
        write_scores_with_provenance,
    )

    baseline = load_baseline(trained)
    st = open_matching_store(trained, store, force, cache_dir)
    target = select_split(st, split, format, log)
    (feature,) = trained.record.model.features
    if feature not in st.features:
        raise StoreError(st.path, f"no feature {feature!r}, which run {trained.run} scores")
    dim = int(st.features[feature]["n_bins"])
    if dim != baseline.bonafide.dim:
        raise StoreError(
            st.path,
            f"feature {feature!r} has {dim} bins here, the GMMs of run {trained.run} "
            f"{baseline.bonafide.dim}",
        )
    settings = _gmm_settings(trained.record.model.kwargs, trained.record.model.name)
    t0 = time.perf_counter()
    scores = _score_split(baseline, st, split, feature, int(settings["chunk_frames"]))
    seconds = time.perf_counter() - t0
    unscored = [target.utt_ids[i] for i in np.flatnonzero(~np.isfinite(scores))]
    if unscored:
        scores = np.where(np.isfinite(scores), scores, 0.0)
        warnings.warn(
            f"{len(unscored)} utterance(s) of split {split!r} have no frames and get score 0 "
            f"(no evidence): {', '.join(unscored[:5])}" + (", ..." if len(unscored) > 5 else ""),
            stacklevel=3,
        )
    quarantined = [u for s, u, _ in st.quarantine if s == split]
    if quarantined:
        warnings.warn(
            f"{len(quarantined)} utterance(s) of split {split!r} were quarantined when the "
            f"store was built and have no score (e.g. {quarantined[0]}; see featstore info)",
            stacklevel=3,
        )
    out_path = Path(out) if out is not None else default_score_path(trained, st, split)
    if not force:
        refuse_foreign_overwrite(out_path, trained, st, split)
    n = len(target.utt_ids)
    details = {
        "normalisation": "checkpoint",
        "model": {
            "name": trained.record.model.name,
            "kwargs": dict(trained.record.model.kwargs),
            "eval_window": None,
            "eval_hop": None,
        },
        "unscored": unscored,
        "quarantined": quarantined,
        "score": "mean frame log p(x|bona fide GMM) - log p(x|spoof GMM) (natural-log LLR)",
        "device": "cpu",
        "precision": "fp32",
        "batch_size": None,
        "seconds": round(seconds, 3),
        "utterances_per_s": round(n / seconds, 2) if seconds > 0 else None,
    }
    write_scores_with_provenance(out_path, trained, st, target, scores, details)
    log(f"scored {n} utterances of {split!r} in {seconds:.1f} s with the GMM baseline")
    return out_path
