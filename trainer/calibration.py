"""Calibration and fusion of CM scores: prior-weighted logistic regression to natural-log LLRs.

The standard affine calibration of BOSARIS (``train_binary_classifier``) and the ASVspoof 5
organisers: scores ``x`` (one column per system) map to ``s = w . x + b``, with ``w`` and
``b`` minimising the prior-weighted cross-entropy (Cllr at the target prior ``P``)::

    P mean_bona log(1 + e^-(s + logit P)) + (1 - P) mean_spoof log(1 + e^(s + logit P))

plus a tiny L2 penalty on ``w`` (finite weights on perfectly separated dev scores). ``s`` is
then a log-likelihood ratio, bona fide against spoof, ready for the Bayes threshold of the
actDCF. Calibration is fusion of one system.

The prior is the **spoof** prior of the ASVspoof 5 cost model (``p_spoof = 0.05``,
``Cmiss = 1``, ``Cfa = 10``, :class:`trainer.metrics.DcfCostModel`); the objective uses the
*effective* bona fide prior of that operating point,
``P = Cmiss (1 - p_spoof) / (Cmiss (1 - p_spoof) + Cfa p_spoof)`` (0.655 by default), whose
Bayes threshold ``-logit P`` is exactly the actDCF threshold. Pure NumPy (and
``scipy.optimize``, loaded on first use); no torch, no I/O: score files are calibrated and
fused by :mod:`trainer.calibration_files`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(3, 1, 5000), rng.normal(1, 1, 5000)])
>>> labels = np.repeat([1, 0], 5000)
>>> cal = calibrate(x, labels)  # true LLR: 2 x - 4
>>> [round(cal.weights[0], 1), round(cal.offset)]
[2.0, -4]
>>> float(abs(cal.apply(np.array([2.0]))[0])) < 0.05  # LLR 0 where the densities cross
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from trainer.errors import MetricsError

__all__ = [
    "Calibration",
    "CalibrationError",
    "calibrate",
    "effective_prior",
    "fuse",
]

#: L2 penalty on the weights of the standardised scores (keeps separable dev data finite).
L2_PENALTY = 1e-6


class CalibrationError(MetricsError):
    """Scores cannot be calibrated or fused (one class only, non-finite, constant, ...)."""


def effective_prior(prior: float = 0.05, c_miss: float = 1.0, c_fa: float = 10.0) -> float:
    """The effective bona fide prior of a (spoof prior, Cmiss, Cfa) operating point.

    Parameters
    ----------
    prior : float
        Prior of a spoofing attack, in (0, 1).
    c_miss, c_fa : float
        Cost of rejecting a bona fide trial and of accepting a spoofed one (> 0).

    Returns
    -------
    float
        ``Cmiss (1 - prior) / (Cmiss (1 - prior) + Cfa prior)``.

    Raises
    ------
    CalibrationError
        A prior outside (0, 1) or a cost that is not positive.

    Examples
    --------
    >>> round(effective_prior(0.05, 1.0, 10.0), 4)  # the ASVspoof 5 operating point
    0.6552
    """
    if not (isinstance(prior, int | float) and 0.0 < prior < 1.0):
        raise CalibrationError(f"prior must be a spoof prior in (0, 1), got {prior!r}")
    for name, c in (("c_miss", c_miss), ("c_fa", c_fa)):
        if not (isinstance(c, int | float) and math.isfinite(c) and c > 0):
            raise CalibrationError(f"{name} must be a positive cost, got {c!r}")
    bona = c_miss * (1.0 - prior)
    return bona / (bona + c_fa * prior)


@dataclass(frozen=True)
class Calibration:
    """An affine map from raw scores (one column per system) to natural-log LLRs.

    Attributes
    ----------
    weights : tuple of float
        One weight per system (one for a plain calibration).
    offset : float
        Added after the weighted sum.
    prior : float
        Spoof prior it was trained for (ASVspoof 5: 0.05).
    c_miss, c_fa : float
        Costs of the operating point it was trained for (ASVspoof 5: 1 and 10).

    Examples
    --------
    >>> Calibration(weights=(2.0,), offset=-1.0).apply([0.0, 1.0])
    array([-1.,  1.])
    >>> Calibration(weights=(1.0, 0.5), offset=0.0).apply([[1.0, 3.0], [2.0, 4.0]])
    array([2., 5.])
    """

    weights: tuple[float, ...]
    offset: float
    prior: float = 0.05
    c_miss: float = 1.0
    c_fa: float = 10.0

    @property
    def effective_prior(self) -> float:
        """Bona fide prior of the objective (:func:`effective_prior`)."""
        return effective_prior(self.prior, self.c_miss, self.c_fa)

    def apply(self, scores: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
        """Calibrated (fused) scores: ``scores @ weights + offset``.

        Parameters
        ----------
        scores : array_like
            ``(n,)`` scores of a one-system calibration; for ``k`` systems a list (or tuple)
            of ``k`` arrays of ``n`` scores, or an ``(n, k)`` ndarray (row = trial).

        Returns
        -------
        np.ndarray
            ``(n,)`` float64 natural-log LLRs.

        Raises
        ------
        CalibrationError
            Wrong number of systems, ragged columns, or non-finite scores.
        """
        x = _score_matrix(scores, "scores")
        if x.shape[1] != len(self.weights):
            raise CalibrationError(
                f"this calibration takes {len(self.weights)} system(s), got {x.shape[1]}"
            )
        out = x @ np.asarray(self.weights, dtype=np.float64) + self.offset
        if not np.isfinite(out).all():
            raise CalibrationError("calibrated scores overflow: the raw scores are too large")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record: weights, offset, prior, c_miss, c_fa, effective_prior."""
        return {
            "weights": list(self.weights),
            "offset": self.offset,
            "prior": self.prior,
            "c_miss": self.c_miss,
            "c_fa": self.c_fa,
            "effective_prior": self.effective_prior,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Calibration:
        """The calibration of a :meth:`to_dict` record (e.g. a sidecar's ``calibration``).

        Raises
        ------
        CalibrationError
            A missing or non-numeric field.
        """
        try:
            weights = tuple(float(w) for w in record["weights"])
            cal = cls(
                weights=weights,
                offset=float(record["offset"]),
                prior=float(record.get("prior", 0.05)),
                c_miss=float(record.get("c_miss", 1.0)),
                c_fa=float(record.get("c_fa", 10.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"not a calibration record: {exc!r}") from None
        if not weights or not all(map(math.isfinite, (*weights, cal.offset))):
            raise CalibrationError("a calibration record needs finite weights and offset")
        cal.effective_prior  # noqa: B018 (validates prior and costs)
        return cal


# --- training ---------------------------------------------------------------------------------


def calibrate(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    prior: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> Calibration:
    """Train the affine calibration of one system's scores to natural-log LLRs.

    Parameters
    ----------
    scores : array_like
        ``(n,)`` dev scores (higher = more bona fide), finite.
    labels : array_like
        ``(n,)`` labels: 1 bona fide, 0 spoof; both classes present.
    prior : float, default 0.05
        Spoof prior of the operating point (ASVspoof 5: 0.05).
    c_miss, c_fa : float, default 1 and 10
        Costs of rejecting bona fide and accepting spoofs (ASVspoof 5).

    Returns
    -------
    Calibration
        One weight (the slope) and the offset.

    Raises
    ------
    CalibrationError
        Non-finite scores, labels other than 0/1, one class only, every score equal, a bad
        prior or cost.

    Examples
    --------
    >>> cal = calibrate([2.0, 3.0, 0.5, 1.0, 2.5, 0.0], [1, 1, 0, 0, 1, 0])
    >>> len(cal.weights), cal.prior
    (1, 0.05)
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise CalibrationError(f"calibrate takes one system's (n,) scores, got shape {x.shape}")
    return _train(_score_matrix(x, "scores"), labels, prior, c_miss, c_fa)


def fuse(
    systems: ArrayLike | Sequence[ArrayLike],
    labels: ArrayLike,
    *,
    prior: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> Calibration:
    """Train a linear fusion of several systems' scores into one calibrated LLR.

    Parameters
    ----------
    systems : sequence of array_like, or array_like
        ``k`` arrays of ``n`` dev scores, trial ``i`` the same utterance in every array; or
        an ``(n, k)`` matrix.
    labels : array_like
        ``(n,)`` labels: 1 bona fide, 0 spoof; both classes present.
    prior : float, default 0.05
        Spoof prior of the operating point (ASVspoof 5: 0.05).
    c_miss, c_fa : float, default 1 and 10
        Costs of rejecting bona fide and accepting spoofs (ASVspoof 5).

    Returns
    -------
    Calibration
        One weight per system, and the offset.

    Raises
    ------
    CalibrationError
        Ragged or non-finite scores, one class only, a system whose scores are all equal, a
        bad prior or cost.

    Examples
    --------
    >>> a, b = [2.0, 3.0, 0.5, 1.0, 2.5, 0.0], [1.0, 0.2, 0.1, -1.0, 2.0, 0.5]
    >>> len(fuse([a, b], [1, 1, 0, 0, 1, 0]).weights)
    2
    """
    return _train(_score_matrix(systems, "systems"), labels, prior, c_miss, c_fa)


def _score_matrix(scores: ArrayLike | Sequence[ArrayLike], what: str) -> np.ndarray:
    """``(n, k)`` float64 of finite scores from ``(n,)``, ``(n, k)`` or ``k`` arrays."""
    if isinstance(scores, list | tuple) and scores and np.ndim(scores[0]) == 1:
        lengths = {len(s) for s in scores}  # type: ignore[arg-type]
        if len(lengths) > 1:
            raise CalibrationError(f"{what}: systems have different numbers of scores")
        x = np.column_stack([np.asarray(s, dtype=np.float64) for s in scores])
    else:
        x = np.asarray(scores, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise CalibrationError(f"{what}: expected (n,) or (n, systems) scores, got {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise CalibrationError(f"{what}: score {x[i, j]!r} of trial {i} is not finite")
    return x


def _train(
    x: np.ndarray, labels: ArrayLike, prior: float, c_miss: float, c_fa: float
) -> Calibration:
    """Minimise the prior-weighted logistic loss over ``(w, b)`` on standardised scores."""
    p_eff = effective_prior(prior, c_miss, c_fa)
    y = _labels(labels, x.shape[0])
    mean, std = x.mean(axis=0), x.std(axis=0)
    flat = np.flatnonzero(std <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    if flat.size:
        which = f"system {int(flat[0]) + 1}" if x.shape[1] > 1 else "the system"
        raise CalibrationError(
            f"{which} gives the same score to every dev trial: nothing to calibrate"
        )
    z = (x - mean) / std
    w, b = _fit_standardised(z, y, p_eff)
    weights = w / std
    offset = float(b - weights @ mean)
    return Calibration(
        weights=tuple(float(v) for v in weights),
        offset=offset,
        prior=float(prior),
        c_miss=float(c_miss),
        c_fa=float(c_fa),
    )


def _labels(labels: ArrayLike, n: int) -> np.ndarray:
    """Boolean bona fide mask of ``n`` 0/1 labels with both classes present."""
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise CalibrationError(f"{n} trials but labels of shape {lab.shape}")
    if not np.isin(lab, (0, 1)).all():
        raise CalibrationError("labels must be 1 (bona fide) or 0 (spoof)")
    bona = lab == 1
    n_bona = int(np.count_nonzero(bona))
    if n_bona == 0:
        raise CalibrationError("no bona fide dev trials: calibration needs both classes")
    if n_bona == n:
        raise CalibrationError("no spoof dev trials: calibration needs both classes")
    return bona


def _fit_standardised(z: np.ndarray, bona: np.ndarray, p_eff: float) -> tuple[np.ndarray, float]:
    """L-BFGS on the convex objective with its analytic gradient; ``(w, b)``."""
    from scipy.optimize import minimize

    n, k = z.shape
    sign = np.where(bona, 1.0, -1.0)
    n_bona = np.count_nonzero(bona)
    weight = np.where(bona, p_eff / n_bona, (1.0 - p_eff) / (n - n_bona))
    tau = math.log(p_eff / (1.0 - p_eff))

    # einsum, not BLAS: on a busy machine multi-threaded gemv on (n, 1) is 5x slower
    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k]
        margin = sign * (np.einsum("ij,j->i", z, w) + (b + tau))  # log odds of the truth
        loss = float(np.sum(weight * np.logaddexp(0.0, -margin)))
        # d softplus(-m) / dm = -sigmoid(-m), written without overflow
        g = -weight * sign * 0.5 * (1.0 - np.tanh(0.5 * margin))
        grad = np.empty(k + 1)
        grad[:k] = np.einsum("ij,i->j", z, g) + 2.0 * L2_PENALTY * w
        grad[k] = np.sum(g)
        return loss + L2_PENALTY * float(np.sum(w * w)), grad

    res = minimize(
        objective,
        np.zeros(k + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )
    theta = res.x
    if not np.all(np.abs(objective(theta)[1]) <= 1e-6):  # False for NaN too
        raise CalibrationError(f"the calibration did not converge: {res.message}")
    return theta[:k], float(theta[k])
