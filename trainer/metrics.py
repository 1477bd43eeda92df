"""ASVspoof metrics: DET points, EER, t-DCF (revised and legacy), minDCF, actDCF, Cllr.

Pure NumPy, no I/O. Every definition follows the official evaluation tools bit for bit:

- DET points, EER and its threshold: ``compute_det_curve`` / ``compute_eer`` of the ASVspoof
  2019 ``tDCF_python`` package (also used by the 2021 and ASVspoof 5 packages).
- t-DCF: ``compute_tDCF`` of ``tDCF_python_v2`` (the revised formulation used since 2021) and
  ``compute_tDCF_legacy`` (the ASVspoof 2019 challenge formulation).
- minDCF, actDCF, Cllr: the ASVspoof 5 evaluation package (``calculate_minDCF_EER_CLLR_actDCF``).

Scores are "higher = more bona fide"; label 1 is bona fide, 0 is spoof. All rates are fractions.

Examples
--------
>>> import numpy as np
>>> from trainer.metrics import compute_eer
>>> compute_eer(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85]))[0]
0.3333333333333333
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from trainer.errors import MetricsError

__all__ = [
    "AsvErrorRates",
    "AsvScores",
    "DcfCostModel",
    "DetCurve",
    "GroupMetrics",
    "MetricSet",
    "TdcfCostModel",
    "UndefinedTdcfError",
    "act_dcf",
    "asv_error_rates",
    "cllr",
    "compute_eer",
    "compute_metrics",
    "det_curve",
    "format_metrics",
    "format_summary",
    "min_dcf",
    "min_tdcf",
    "tdcf_curve",
]

#: Label of a bona fide trial (a spoofed one is 0).
BONAFIDE = 1
SPOOF = 0


# --- cost models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DcfCostModel:
    """The ASVspoof 5 DCF cost model (minDCF, actDCF).

    Parameters
    ----------
    p_spoof : float
        Prior of a spoofing attack (0.05).
    c_miss : float
        Cost of rejecting a bona fide trial (1).
    c_fa : float
        Cost of accepting a spoofed trial (10).
    """

    p_spoof: float = 0.05
    c_miss: float = 1.0
    c_fa: float = 10.0


@dataclass(frozen=True)
class TdcfCostModel:
    """The t-DCF cost model of ASVspoof 2019/2021 (both formulations use the same numbers).

    Parameters
    ----------
    p_spoof : float
        Prior of a spoofing attack (0.05).
    p_tar, p_non : float
        Priors of target and non-target trials: ``(1 - p_spoof) * 0.99`` and ``* 0.01``.
    c_miss : float
        Revised: cost of the tandem rejecting a target. Legacy: ``Cmiss_asv`` and ``Cmiss_cm``.
    c_fa : float
        Revised: cost of the tandem accepting a non-target. Legacy: ``Cfa_asv``.
    c_fa_spoof : float
        Revised: cost of the tandem accepting a spoof. Legacy: ``Cfa_cm``.
    """

    p_spoof: float = 0.05
    p_tar: float = (1 - 0.05) * 0.99
    p_non: float = (1 - 0.05) * 0.01
    c_miss: float = 1.0
    c_fa: float = 10.0
    c_fa_spoof: float = 10.0


# --- DET curve and EER ------------------------------------------------------------------------


def _as_scores(x: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size and not np.isfinite(a).all():
        raise MetricsError(f"{what} scores contain NaN or inf")
    return a


@dataclass(frozen=True)
class DetCurve:
    """All DET points of a bona fide vs spoof score set (``N + 1`` points for ``N`` trials).

    Point ``i`` rejects the ``i`` lowest scores (bona fide first inside ties: stable sort of
    bona fide then spoof scores), exactly as the official ``compute_det_curve``.

    Attributes
    ----------
    pmiss : np.ndarray
        Rejected bona fide / number of bona fide, non-decreasing, from 0 to 1.
    pfa : np.ndarray
        Accepted spoof / number of spoof, non-increasing, from 1 to 0.
    thresholds : np.ndarray
        The official thresholds: the lowest score minus 0.001, then the sorted scores
        (``thresholds[i]`` is the highest rejected score at point ``i``).
    labels : np.ndarray
        Labels (1 bona fide, 0 spoof) of the trials in sorted order (int8, ``N``).
    """

    pmiss: np.ndarray
    pfa: np.ndarray
    thresholds: np.ndarray
    labels: np.ndarray

    @property
    def eer_index(self) -> int:
        """Index of the first DET point minimising ``|pmiss - pfa|``."""
        return int(np.argmin(np.abs(self.pmiss - self.pfa)))

    @property
    def eer(self) -> float:
        """Equal error rate: ``(pmiss + pfa) / 2`` at :attr:`eer_index` (no interpolation)."""
        i = self.eer_index
        return float(np.mean((self.pmiss[i], self.pfa[i])))

    def corners(self) -> np.ndarray:
        """Indices of the points where the curve turns (enough to draw it exactly).

        Returns
        -------
        np.ndarray
            Sorted point indices, always including the first and last point.
        """
        lab = self.labels
        turn = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        return np.unique(np.concatenate(([0], turn, [lab.size])))


def det_curve(bonafide: ArrayLike, spoof: ArrayLike) -> DetCurve:
    """All DET points of bona fide vs spoof scores, as the official ``compute_det_curve``.

    Parameters
    ----------
    bonafide, spoof : array_like
        Scores of the bona fide and spoofed trials (higher = more bona fide). Both non-empty.

    Returns
    -------
    DetCurve
        Miss and false-alarm rates at every point, and the official thresholds.

    Examples
    --------
    >>> d = det_curve([0.5, 0.9], [0.1, 0.5])
    >>> d.pmiss.tolist(), d.pfa.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0, 0.0])
    """
    bona = _as_scores(bonafide, "bona fide")
    spf = _as_scores(spoof, "spoof")
    if bona.size == 0:
        raise MetricsError("no bona fide trials")
    if spf.size == 0:
        raise MetricsError("no spoof trials")
    n_b, n_s = bona.size, spf.size
    scores = np.concatenate((bona, spf))
    order = np.argsort(scores, kind="mergesort")
    labels = (order < n_b).astype(np.int8)
    bona_rejected = np.cumsum(labels, dtype=np.int64)
    spoof_rejected = np.arange(1, n_b + n_s + 1, dtype=np.int64) - bona_rejected
    pmiss = np.empty(n_b + n_s + 1)
    pfa = np.empty(n_b + n_s + 1)
    pmiss[0], pfa[0] = 0.0, 1.0
    np.divide(bona_rejected, n_b, out=pmiss[1:])
    np.divide(n_s - spoof_rejected, n_s, out=pfa[1:])
    sorted_scores = scores[order]
    thresholds = np.concatenate(([sorted_scores[0] - 0.001], sorted_scores))
    return DetCurve(pmiss=pmiss, pfa=pfa, thresholds=thresholds, labels=labels)


def compute_eer(bonafide: ArrayLike, spoof: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold, as the official ``compute_eer``.

    Parameters
    ----------
    bonafide, spoof : array_like
        Scores of the bona fide (or target) and spoofed (or non-target) trials.

    Returns
    -------
    eer : float
        ``(Pmiss + Pfa) / 2`` at the first DET point minimising ``|Pmiss - Pfa|`` (fraction).
    threshold : float
        The official threshold of that point (see :class:`DetCurve`).

    Examples
    --------
    >>> compute_eer([0.5, 0.9], [0.1, 0.5])
    (0.5, 0.5)
    """
    d = det_curve(bonafide, spoof)
    i = d.eer_index
    return d.eer, float(d.thresholds[i])


# --- ASV operating point and t-DCF ------------------------------------------------------------


class UndefinedTdcfError(MetricsError):
    """The normalised t-DCF is 0/0 for these ASV error rates (reported as None/null)."""


@dataclass(frozen=True)
class AsvScores:
    """Scores of an ASV system on target, non-target and spoofed trials (input of the t-DCF).

    Parameters
    ----------
    target, nontarget, spoof : np.ndarray
        ASV scores (higher = more likely the claimed speaker).
    spoof_attacks : np.ndarray or None
        Attack id of every spoofed trial (same length as ``spoof``), when known. Then the
        per-attack t-DCF of :func:`compute_metrics` uses each attack's own spoof scores, and
        every attack of the CM scores must have some; without them it uses all spoof scores.
    utt_ids : np.ndarray or None
        Utterance id of every ASV trial (any key), when the score file names them; used to
        check that ASV and CM scores are of the same trials.
    """

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray
    spoof_attacks: np.ndarray | None = None
    utt_ids: np.ndarray | None = None


@dataclass(frozen=True)
class AsvErrorRates:
    """ASV error rates at its EER threshold (official ``obtain_asv_error_rates``).

    Attributes
    ----------
    threshold : float
        EER threshold of target vs non-target scores; a trial is accepted if ``score >= t``.
    eer : float
        EER of the ASV system (target vs non-target).
    pfa : float
        Non-targets accepted / non-targets.
    pmiss : float
        Targets rejected / targets.
    pfa_spoof : float or None
        Spoofs accepted / spoofs (None without spoofed ASV trials).
    pmiss_spoof : float or None
        Spoofs rejected / spoofs (None without spoofed ASV trials).
    """

    threshold: float
    eer: float
    pfa: float
    pmiss: float
    pfa_spoof: float | None
    pmiss_spoof: float | None


def asv_error_rates(
    target: ArrayLike, nontarget: ArrayLike, spoof: ArrayLike | None = None
) -> AsvErrorRates:
    """Fix the ASV at its EER threshold and measure its error rates.

    Parameters
    ----------
    target, nontarget : array_like
        ASV scores of target and non-target (zero-effort impostor) trials; both non-empty.
    spoof : array_like, optional
        ASV scores of spoofed trials.

    Returns
    -------
    AsvErrorRates

    Examples
    --------
    >>> r = asv_error_rates([3.0, 4.0], [1.0, 2.0], [2.5, 3.5])
    >>> r.threshold, r.pfa, r.pmiss, r.pfa_spoof
    (2.0, 0.5, 0.0, 1.0)
    """
    tar = _as_scores(target, "ASV target")
    non = _as_scores(nontarget, "ASV non-target")
    if tar.size == 0:
        raise MetricsError("no ASV target trials")
    if non.size == 0:
        raise MetricsError("no ASV non-target trials")
    eer, t = compute_eer(tar, non)
    pfa = float(np.count_nonzero(non >= t) / non.size)
    pmiss = float(np.count_nonzero(tar < t) / tar.size)
    pfa_spoof = pmiss_spoof = None
    if spoof is not None:
        spf = _as_scores(spoof, "ASV spoof")
        if spf.size:
            pmiss_spoof = float(np.count_nonzero(spf < t) / spf.size)
            pfa_spoof = float(np.count_nonzero(spf >= t) / spf.size)
    return AsvErrorRates(
        threshold=t, eer=eer, pfa=pfa, pmiss=pmiss, pfa_spoof=pfa_spoof, pmiss_spoof=pmiss_spoof
    )


def tdcf_curve(
    det: DetCurve,
    asv: AsvErrorRates,
    *,
    legacy: bool = False,
    cost: TdcfCostModel = TdcfCostModel(),
) -> np.ndarray:
    """Normalised t-DCF at every DET point of the CM.

    Revised (``legacy=False``, ASVspoof 2021 / ``tDCF_python_v2``)::

        C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv
        C1 = Ptar Cmiss - C0,   C2 = Pspoof Cfa_spoof Pfa_spoof_asv
        tDCF = (C0 + C1 Pmiss_cm + C2 Pfa_cm) / (C0 + min(C1, C2))

    Legacy (ASVspoof 2019 challenge)::

        C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
        C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)
        tDCF = (C1 Pmiss_cm + C2 Pfa_cm) / min(C1, C2)

    Parameters
    ----------
    det : DetCurve
        DET points of the CM (:func:`det_curve`).
    asv : AsvErrorRates
        The ASV operating point (:func:`asv_error_rates`); needs spoofed ASV trials.
    legacy : bool
        Use the 2019 challenge formulation.
    cost : TdcfCostModel
        Priors and costs.

    Returns
    -------
    np.ndarray
        Normalised t-DCF, one value per DET point.

    Raises
    ------
    MetricsError
        Without spoofed ASV trials, or when the ASV rates make a weight negative.
    UndefinedTdcfError
        When the normaliser is 0 (e.g. legacy formulation and an ASV rejecting every spoof).
    """
    if asv.pfa_spoof is None or asv.pmiss_spoof is None:
        raise MetricsError("the t-DCF needs ASV scores of spoofed trials")
    c = cost
    if legacy:
        c1 = c.p_tar * (c.c_miss - c.c_miss * asv.pmiss) - c.p_non * c.c_fa * asv.pfa
        c2 = c.c_fa_spoof * c.p_spoof * (1 - asv.pmiss_spoof)
        if c1 < 0 or c2 < 0:
            raise MetricsError(f"negative t-DCF weights (C1={c1}, C2={c2}); check the ASV scores")
        if min(c1, c2) == 0:
            raise UndefinedTdcfError(
                f"the legacy t-DCF is undefined: its normaliser min(C1={c1}, C2={c2}) is 0"
            )
        return (c1 * det.pmiss + c2 * det.pfa) / np.minimum(c1, c2)
    c0 = c.p_tar * c.c_miss * asv.pmiss + c.p_non * c.c_fa * asv.pfa
    c1 = c.p_tar * c.c_miss - (c.p_tar * c.c_miss * asv.pmiss + c.p_non * c.c_fa * asv.pfa)
    c2 = c.p_spoof * c.c_fa_spoof * asv.pfa_spoof
    if c0 < 0 or c1 < 0 or c2 < 0:
        raise MetricsError(
            f"negative t-DCF weights (C0={c0}, C1={c1}, C2={c2}); check the ASV scores"
        )
    default = c0 + np.minimum(c1, c2)
    if default == 0:
        raise UndefinedTdcfError(
            "the t-DCF is undefined: the ASV never errs and never accepts spoofs"
        )
    return (c0 + c1 * det.pmiss + c2 * det.pfa) / default


def min_tdcf(
    bonafide: ArrayLike,
    spoof: ArrayLike,
    asv: AsvErrorRates,
    *,
    legacy: bool = False,
    cost: TdcfCostModel = TdcfCostModel(),
) -> float:
    """Minimum normalised t-DCF over all CM thresholds.

    Parameters
    ----------
    bonafide, spoof : array_like
        CM scores of bona fide and spoofed trials.
    asv : AsvErrorRates
        The ASV operating point (:func:`asv_error_rates`).
    legacy : bool
        Use the ASVspoof 2019 challenge formulation instead of the revised one.
    cost : TdcfCostModel
        Priors and costs.

    Returns
    -------
    float

    Examples
    --------
    >>> asv = asv_error_rates([3.0, 4.0], [1.0, 2.0], [2.5, 3.5])
    >>> round(min_tdcf([1.0, 2.0], [0.0, 0.5], asv), 6)
    0.086758
    """
    return float(np.min(tdcf_curve(det_curve(bonafide, spoof), asv, legacy=legacy, cost=cost)))


# --- ASVspoof 5: minDCF, actDCF, Cllr ---------------------------------------------------------


def _min_dcf_from_det(det: DetCurve, cost: DcfCostModel) -> float:
    p_target = 1 - cost.p_spoof
    c_det = cost.c_miss * det.pmiss * p_target + cost.c_fa * det.pfa * (1 - p_target)
    c_def = min(cost.c_miss * p_target, cost.c_fa * (1 - p_target))
    return float(np.min(c_det) / c_def)


def min_dcf(
    bonafide: ArrayLike,
    spoof: ArrayLike,
    cost: DcfCostModel = DcfCostModel(),
) -> float:
    """ASVspoof 5 normalised minimum DCF over all DET points.

    ``min_i (Cmiss (1 - pi) Pmiss(i) + Cfa pi Pfa(i)) / min(Cmiss (1 - pi), Cfa pi)``.

    Parameters
    ----------
    bonafide, spoof : array_like
        CM scores.
    cost : DcfCostModel
        ``pi = 0.05``, ``Cmiss = 1``, ``Cfa = 10`` by default.

    Returns
    -------
    float

    Examples
    --------
    >>> min_dcf([2.0, 3.0], [0.0, 1.0])
    0.0
    """
    return _min_dcf_from_det(det_curve(bonafide, spoof), cost)


def act_dcf(
    bonafide: ArrayLike,
    spoof: ArrayLike,
    cost: DcfCostModel = DcfCostModel(),
) -> float:
    """ASVspoof 5 normalised actual DCF: the DCF at the Bayes threshold on LLR scores.

    The threshold is ``-ln(Cmiss (1 - pi) / (Cfa pi))``; bona fide below it are missed,
    spoofs at or above it are accepted. Only meaningful for calibrated natural-log LLRs.

    Parameters
    ----------
    bonafide, spoof : array_like
        CM scores (natural-log likelihood ratios).
    cost : DcfCostModel
        Priors and costs.

    Returns
    -------
    float

    Examples
    --------
    >>> act_dcf([0.5, 0.9], [0.1, 0.2])  # threshold -ln(1.9) = -0.64: all accepted
    1.0
    """
    bona = _as_scores(bonafide, "bona fide")
    spf = _as_scores(spoof, "spoof")
    if bona.size == 0 or spf.size == 0:
        raise MetricsError("actDCF needs bona fide and spoof trials")
    beta = cost.c_miss * (1 - cost.p_spoof) / (cost.c_fa * cost.p_spoof)
    threshold = -np.log(beta)
    rate_miss = np.count_nonzero(bona < threshold) / bona.size
    rate_fa = np.count_nonzero(spf >= threshold) / spf.size
    dcf = cost.c_miss * (1 - cost.p_spoof) * rate_miss + cost.c_fa * cost.p_spoof * rate_fa
    return float(dcf / min(cost.c_fa * cost.p_spoof, cost.c_miss * (1 - cost.p_spoof)))


def cllr(bonafide: ArrayLike, spoof: ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (scores read as natural-log LLRs), overflow-free.

    ``(mean_bona log2(1 + e^-s) + mean_spoof log2(1 + e^s)) / 2``.

    Parameters
    ----------
    bonafide, spoof : array_like
        CM scores.

    Returns
    -------
    float
        1.0 for uninformative scores (all 0), 0 for perfect confident ones.

    Examples
    --------
    >>> cllr([0.0], [0.0])
    1.0
    """
    bona = _as_scores(bonafide, "bona fide")
    spf = _as_scores(spoof, "spoof")
    if bona.size == 0 or spf.size == 0:
        raise MetricsError("Cllr needs bona fide and spoof trials")
    c = 0.5 * (np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spf)))
    return float(c / np.log(2))


# --- the whole metric set ---------------------------------------------------------------------


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics of one attack or condition; None where a class is absent or ASV is not given."""

    n_bonafide: int
    n_spoof: int
    eer: float | None = None
    eer_threshold: float | None = None
    mindcf: float | None = None
    actdcf: float | None = None
    cllr: float | None = None
    min_tdcf: float | None = None
    min_tdcf_legacy: float | None = None


@dataclass(frozen=True)
class MetricSet:
    """Everything ``trainer metrics`` reports for one score set (see :func:`compute_metrics`).

    ``to_dict()`` gives the documented JSON schema (fractions, not percent).
    """

    n_bonafide: int
    n_spoof: int
    eer: float
    eer_threshold: float
    mindcf: float
    actdcf: float
    cllr: float
    min_tdcf: float | None = None
    min_tdcf_legacy: float | None = None
    asv: AsvErrorRates | None = None
    per_attack: dict[str, GroupMetrics] = field(default_factory=dict)
    per_condition: dict[str, dict[str, GroupMetrics]] = field(default_factory=dict)
    det: DetCurve | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (without the DET points).

        Returns
        -------
        dict
            ``n_bonafide, n_spoof, eer, eer_threshold, min_tdcf, min_tdcf_legacy, mindcf,
            actdcf, cllr, asv (or None), per_attack {attack: {...}}, per_condition
            {column: {value: {...}}}``.
        """
        out: dict[str, Any] = {
            "n_bonafide": self.n_bonafide,
            "n_spoof": self.n_spoof,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_tdcf": self.min_tdcf,
            "min_tdcf_legacy": self.min_tdcf_legacy,
            "mindcf": self.mindcf,
            "actdcf": self.actdcf,
            "cllr": self.cllr,
            "asv": None if self.asv is None else asdict(self.asv),
            "per_attack": {k: asdict(v) for k, v in self.per_attack.items()},
        }
        if self.per_condition:
            out["per_condition"] = {
                col: {k: asdict(v) for k, v in groups.items()}
                for col, groups in self.per_condition.items()
            }
        return out


def _group_metrics(
    bona: np.ndarray,
    spf: np.ndarray,
    asv: AsvErrorRates | None,
    dcf_cost: DcfCostModel,
    tdcf_cost: TdcfCostModel,
    det: DetCurve | None = None,
) -> GroupMetrics:
    if bona.size == 0 or spf.size == 0:
        return GroupMetrics(n_bonafide=int(bona.size), n_spoof=int(spf.size))
    if det is None:
        det = det_curve(bona, spf)
    i = det.eer_index
    tdcf = tdcf_legacy = None
    if asv is not None:
        tdcf = _min_or_none(det, asv, False, tdcf_cost)
        tdcf_legacy = _min_or_none(det, asv, True, tdcf_cost)
    return GroupMetrics(
        n_bonafide=int(bona.size),
        n_spoof=int(spf.size),
        eer=det.eer,
        eer_threshold=float(det.thresholds[i]),
        mindcf=_min_dcf_from_det(det, dcf_cost),
        actdcf=act_dcf(bona, spf, dcf_cost),
        cllr=cllr(bona, spf),
        min_tdcf=tdcf,
        min_tdcf_legacy=tdcf_legacy,
    )


def _min_or_none(det: DetCurve, asv: AsvErrorRates, legacy: bool, cost: TdcfCostModel):
    try:
        return float(np.min(tdcf_curve(det, asv, legacy=legacy, cost=cost)))
    except UndefinedTdcfError:
        return None


def _sort_key(name: str) -> tuple[int, str]:
    return (len(name), name)


def _split_by(values: np.ndarray, data: np.ndarray) -> dict[str, np.ndarray]:
    """``{value: data[values == value]}`` with one sort instead of one comparison per value."""
    keys, inverse = np.unique(values, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(keys.size + 1))
    return {str(k): data[order[bounds[j] : bounds[j + 1]]] for j, k in enumerate(keys.tolist())}


def _asv_for_attack(
    asv_spoof: dict[str, np.ndarray] | None, pooled: AsvErrorRates, attack: str
) -> AsvErrorRates:
    """ASV rates with the spoof rates of one attack.

    The pooled rates when the ASV spoof trials carry no attack ids (``asv_spoof`` None) or
    the attack is unknown (``-``); :func:`_check_asv_attacks` made sure the others exist.
    """
    if asv_spoof is None or attack == "-":
        return pooled
    sel = asv_spoof[attack]
    t = pooled.threshold
    return AsvErrorRates(
        threshold=t,
        eer=pooled.eer,
        pfa=pooled.pfa,
        pmiss=pooled.pmiss,
        pfa_spoof=float(np.count_nonzero(sel >= t) / sel.size),
        pmiss_spoof=float(np.count_nonzero(sel < t) / sel.size),
    )


def _check_asv_attacks(cm_attacks: set[str], asv_attacks: set[str]) -> None:
    """Every attack of the CM scores (but ``-``, unknown) needs ASV spoof scores of its own."""
    lacking = cm_attacks - asv_attacks - {"-"}
    if not lacking:
        return
    have = ", ".join(sorted(asv_attacks, key=_sort_key))
    raise MetricsError(
        f"the ASV scores have no spoof trials of attack(s) "
        f"{', '.join(sorted(lacking, key=_sort_key))} of the CM scores (they hold {have}); "
        "the per-attack t-DCF needs the ASV scores of the same trials"
    )


def compute_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    attacks: ArrayLike | None = None,
    conditions: Mapping[str, ArrayLike] | None = None,
    asv: AsvScores | None = None,
    dcf_cost: DcfCostModel = DcfCostModel(),
    tdcf_cost: TdcfCostModel = TdcfCostModel(),
) -> MetricSet:
    """All ASVspoof metrics of one CM score set, pooled and per attack / condition.

    Parameters
    ----------
    scores : array_like of float
        CM scores, one per trial (higher = more bona fide).
    labels : array_like of int
        1 for bona fide, 0 for spoof, one per trial.
    attacks : array_like of str, optional
        Attack id per trial (the value on bona fide trials is ignored). Per-attack metrics
        compare all bona fide trials with the spoofs of each attack.
    conditions : mapping of str to array_like of str, optional
        Extra breakdowns, column name -> value per trial (e.g. ``{"codec": ...}``). If the
        bona fide trials all share one value (e.g. ``-``) the column is an attack-side factor:
        all bona fide vs each value's spoofs. Otherwise both classes are split: each value's
        bona fide vs that value's spoofs (metrics are None if a class is empty).
    asv : AsvScores, optional
        ASV scores; when given, ``min_tdcf`` (revised) and ``min_tdcf_legacy`` are computed
        (per attack with the ASV spoof scores of that attack when ``asv.spoof_attacks`` is
        given; then every attack of ``attacks`` must be among them).
    dcf_cost, tdcf_cost : cost models
        Defaults are the official ones.

    Returns
    -------
    MetricSet

    Raises
    ------
    MetricsError
        Mismatched lengths, labels other than 0/1, no bona fide or no spoof trials,
        non-finite scores, an attack without ASV spoof scores.

    Examples
    --------
    >>> m = compute_metrics([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], attacks=["-", "-", "A01", "A02"])
    >>> m.eer, sorted(m.per_attack)
    (0.0, ['A01', 'A02'])
    """
    s = _as_scores(scores, "CM")
    lab = np.asarray(labels).ravel()
    if lab.shape != s.shape:
        raise MetricsError(f"{s.size} scores but {lab.size} labels")
    if lab.size and not np.isin(lab, (BONAFIDE, SPOOF)).all():
        raise MetricsError("labels must be 1 (bona fide) or 0 (spoof)")
    is_bona = lab == BONAFIDE
    bona, spf = s[is_bona], s[~is_bona]
    if bona.size == 0:
        raise MetricsError("no bona fide trials")
    if spf.size == 0:
        raise MetricsError("no spoof trials")

    asv_rates = None
    if asv is not None:
        asv_rates = asv_error_rates(asv.target, asv.nontarget, asv.spoof)
        if asv_rates.pfa_spoof is None:
            raise MetricsError("the ASV scores have no spoof trials; the t-DCF needs them")
    det = det_curve(bona, spf)
    pooled = _group_metrics(bona, spf, asv_rates, dcf_cost, tdcf_cost, det)

    per_attack: dict[str, GroupMetrics] = {}
    if attacks is not None:
        att = np.asarray(attacks).astype(str).ravel()
        if att.shape != s.shape:
            raise MetricsError(f"{s.size} scores but {att.size} attack labels")
        by_attack = _split_by(att[~is_bona], spf)
        asv_spoof = None
        if asv is not None and asv.spoof_attacks is not None:
            asv_spoof = _split_by(np.asarray(asv.spoof_attacks).astype(str), asv.spoof)
            _check_asv_attacks(set(by_attack), set(asv_spoof))
        for a in sorted(by_attack, key=_sort_key):
            rates = None if asv is None else _asv_for_attack(asv_spoof, asv_rates, a)
            per_attack[a] = _group_metrics(bona, by_attack[a], rates, dcf_cost, tdcf_cost)

    per_condition: dict[str, dict[str, GroupMetrics]] = {}
    for name, values in (conditions or {}).items():
        v = np.asarray(values).astype(str).ravel()
        if v.shape != s.shape:
            raise MetricsError(f"{s.size} scores but {v.size} values of {name!r}")
        bona_by = _split_by(v[is_bona], bona)
        spoof_by = _split_by(v[~is_bona], spf)
        split_bona = len(bona_by) > 1
        keys = set(spoof_by) | (set(bona_by) if split_bona else set())
        empty = np.empty(0)
        groups: dict[str, GroupMetrics] = {}
        for k in sorted(keys, key=_sort_key):
            b = bona_by.get(k, empty) if split_bona else bona
            groups[k] = _group_metrics(b, spoof_by.get(k, empty), asv_rates, dcf_cost, tdcf_cost)
        per_condition[name] = groups

    return MetricSet(
        n_bonafide=int(bona.size),
        n_spoof=int(spf.size),
        eer=_f(pooled.eer),
        eer_threshold=_f(pooled.eer_threshold),
        mindcf=_f(pooled.mindcf),
        actdcf=_f(pooled.actdcf),
        cllr=_f(pooled.cllr),
        min_tdcf=pooled.min_tdcf,
        min_tdcf_legacy=pooled.min_tdcf_legacy,
        asv=asv_rates,
        per_attack=per_attack,
        per_condition=per_condition,
        det=det,
    )


def _f(x: float | None) -> float:
    return math.nan if x is None else float(x)


# --- text tables ------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_metrics(
    m: MetricSet, *, title: str = "", legacy_tdcf: bool = False, by: str = "attack"
) -> str:
    """A text table of a :class:`MetricSet` (pooled metrics and one breakdown).

    Parameters
    ----------
    m : MetricSet
    title : str
        First line (e.g. the score file).
    legacy_tdcf : bool
        Show the ASVspoof 2019 challenge t-DCF as "min t-DCF" (the revised one in brackets).
    by : str
        ``attack`` for the per-attack table, else a key of ``m.per_condition``.

    Returns
    -------
    str
        Lines without a trailing newline.

    Examples
    --------
    >>> m = compute_metrics([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], attacks=["-", "-", "A01", "A02"])
    >>> print(format_metrics(m).splitlines()[0])
      EER          0.0000 %    (threshold 0.3)
    """
    tdcf_main, tdcf_other = (
        (m.min_tdcf_legacy, m.min_tdcf) if legacy_tdcf else (m.min_tdcf, m.min_tdcf_legacy)
    )
    out = [title] if title else []
    out.append(f"  EER       {100 * m.eer:9.4f} %    (threshold {m.eer_threshold:.6g})")
    if tdcf_main is not None:
        main_name, other_name = ("legacy 2019", "revised") if legacy_tdcf else ("revised", "legacy")
        other = _fmt(tdcf_other, ".5f")
        out.append(f"  min t-DCF {tdcf_main:10.5f}     ({main_name}; {other_name} {other})")
    elif m.asv is not None:
        out.append("  min t-DCF          -     (undefined for these ASV error rates)")
    else:
        out.append("  min t-DCF          -     (needs --asv-scores)")
    out.append(f"  minDCF    {m.mindcf:10.5f}")
    out.append(f"  actDCF    {m.actdcf:10.5f}")
    out.append(f"  Cllr      {m.cllr:10.5f} bits")
    out.append(f"  trials    {m.n_bonafide} bona fide, {m.n_spoof} spoof")
    groups = m.per_attack if by == "attack" else m.per_condition.get(by, {})
    if groups:
        width = max(len(by), *(len(k) for k in groups))
        head = f"  {by:<{width}}  {'n_bona':>7} {'n_spoof':>7} {'EER %':>8} {'minDCF':>8} "
        head += f"{'actDCF':>8} {'Cllr':>8}"
        has_tdcf = m.asv is not None
        if has_tdcf:
            head += f" {'min t-DCF':>9}"
        out += ["", head]
        for k, g in groups.items():
            eer = None if g.eer is None else 100 * g.eer
            row = f"  {k:<{width}}  {g.n_bonafide:>7} {g.n_spoof:>7} {_fmt(eer, '8.4f'):>8} "
            row += f"{_fmt(g.mindcf, '8.5f'):>8} {_fmt(g.actdcf, '8.5f'):>8} "
            row += f"{_fmt(g.cllr, '8.5f'):>8}"
            if has_tdcf:
                t = g.min_tdcf_legacy if legacy_tdcf else g.min_tdcf
                row += f" {_fmt(t, '9.5f'):>9}"
            out.append(row)
    return "\n".join(out)


def format_summary(named: Sequence[tuple[str, MetricSet]], *, legacy_tdcf: bool = False) -> str:
    """One line per score set: EER, min t-DCF, minDCF, actDCF, Cllr.

    Parameters
    ----------
    named : sequence of (name, MetricSet)
    legacy_tdcf : bool
        Show the legacy t-DCF.

    Returns
    -------
    str
    """
    width = max(4, *(len(n) for n, _ in named))
    lines = [
        f"{'file':<{width}}  {'EER %':>8} {'min t-DCF':>9} {'minDCF':>8} {'actDCF':>8} {'Cllr':>8}"
    ]
    for name, m in named:
        t = m.min_tdcf_legacy if legacy_tdcf else m.min_tdcf
        lines.append(
            f"{name:<{width}}  {100 * m.eer:8.4f} {_fmt(t, '9.5f'):>9} {m.mindcf:8.5f} "
            f"{m.actdcf:8.5f} {m.cllr:8.5f}"
        )
    return "\n".join(lines)
