"""Calibrate and fuse CM score files: dev files train, eval files get natural-log LLRs.

The workflow behind ``trainer calibrate`` and ``trainer fuse``: read the dev score files (with
their keys) and the eval score files through :mod:`trainer.scorefiles`, join every system by
utterance id, train :func:`trainer.calibration.fuse` on dev, apply it to eval, measure EER,
minDCF, actDCF and Cllr before and after (eval only when its keys are known), and write the
eval LLRs in the first eval file's layout plus a ``<out>.json`` sidecar with the parameters,
the metrics and the provenance. Both files are written together, atomically, and only after
everything has been read, checked and computed: bad input writes nothing.

Eval files may carry no keys (``UTT SCORE`` or an ASVspoof 5 tsv without ``--eval-protocol``):
they are calibrated all the same and reported without metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore._version import __version__
from featstore.atomic_files import atomic_path
from featstore.errors import ResourceError
from trainer.calibration import L2_PENALTY, Calibration, CalibrationError, effective_prior, fuse
from trainer.errors import ScoreFileError
from trainer.metrics import DcfCostModel, act_dcf, cllr, compute_eer, min_dcf
from trainer.scorefiles import read_cm_scores, write_score_file

__all__ = [
    "CalibrationReport",
    "ScoreMetrics",
    "SetMetrics",
    "calibrate_score_files",
    "fuse_score_files",
]

# reader's format id -> write_score_file's layout name ("2019-4col" is read, not written)
_WRITE_FORMAT = {
    "2019": "asvspoof2019",
    "2019-4col": "asvspoof2019",
    "2021": "asvspoof2021",
    "asvspoof5": "asvspoof5",
}


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreMetrics:
    """EER, minDCF, actDCF and Cllr of one score set (see :mod:`trainer.metrics`)."""

    eer: float
    mindcf: float
    actdcf: float
    cllr: float


@dataclass(frozen=True)
class SetMetrics:
    """Metrics of a dev or eval set: each input system, then the calibrated/fused scores."""

    before: tuple[ScoreMetrics, ...]
    after: ScoreMetrics

    def to_dict(self) -> dict[str, Any]:
        """``{"before": [{eer, mindcf, actdcf, cllr}, ...], "after": {...}}``."""
        return {"before": [asdict(m) for m in self.before], "after": asdict(self.after)}


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`fuse_score_files` learnt, measured and wrote.

    Attributes
    ----------
    calibration : Calibration
        Weights (one per system, in the order of the files) and offset.
    dev_files, eval_files : tuple of str
        The inputs, one per system.
    out, sidecar : Path
        The calibrated eval score file and its JSON sidecar.
    format : str
        Layout of ``out`` (``asvspoof2019``, ``asvspoof2021`` or ``asvspoof5``).
    n_dev, n_eval : int
        Trials of each set.
    dev : SetMetrics
    eval : SetMetrics or None
        None when the eval scores carry no keys.
    cost : DcfCostModel
        The operating point of minDCF/actDCF (and of the calibration).
    warnings : tuple of str
    """

    calibration: Calibration
    dev_files: tuple[str, ...]
    eval_files: tuple[str, ...]
    out: Path
    sidecar: Path
    format: str
    n_dev: int
    n_eval: int
    dev: SetMetrics
    eval: SetMetrics | None
    cost: DcfCostModel
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Scores:
    """One score file: ids and scores in file order, keys when known, what to write it back."""

    path: str
    format: str
    utt_ids: list[str]
    scores: np.ndarray
    lines: np.ndarray
    labels: np.ndarray | None  # int8, 1 bona fide; None: no keys
    attacks: np.ndarray | None


# --- the workflow -----------------------------------------------------------------------------


def calibrate_score_files(
    dev: str | os.PathLike,
    eval: str | os.PathLike,
    out: str | os.PathLike,
    *,
    protocol: str | os.PathLike | None = None,
    eval_protocol: str | os.PathLike | None = None,
    prior: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> CalibrationReport:
    """Calibrate one system: train on ``dev``, write the eval LLRs to ``out``.

    Parameters
    ----------
    dev : path
        Dev CM score file (any layout :func:`trainer.scorefiles.read_cm_scores` reads).
    eval : path
        Eval CM score file of the same system.
    out : path
        Calibrated eval scores, in the layout of ``eval``; ``<out>.json`` gets the sidecar.
    protocol : path, optional
        Key file of ``dev`` (needed for layouts without keys).
    eval_protocol : path, optional
        Key file of ``eval`` (for eval metrics of a layout without keys).
    prior : float, default 0.05
        Spoof prior of the operating point (ASVspoof 5).
    c_miss, c_fa : float, default 1 and 10
        Costs of the operating point (ASVspoof 5).

    Returns
    -------
    CalibrationReport

    Raises
    ------
    ScoreFileError
        A malformed file, ids that do not match, one class only in dev (nothing written).
    CalibrationError
        Scores that cannot be calibrated (all equal, ...), a bad prior or cost.
    ResourceError
        ``out`` cannot be written (disk full, permission).

    Examples
    --------
    >>> r = calibrate_score_files("dev.txt", "eval.txt", "eval_cal.txt")  # doctest: +SKIP
    >>> r.calibration.weights, r.eval.after.actdcf  # doctest: +SKIP
    ((0.61,), 0.2519)
    """
    return fuse_score_files(
        [dev],
        [eval],
        out,
        protocol=protocol,
        eval_protocol=eval_protocol,
        prior=prior,
        c_miss=c_miss,
        c_fa=c_fa,
    )


def fuse_score_files(
    dev: Sequence[str | os.PathLike],
    eval: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    protocol: str | os.PathLike | None = None,
    eval_protocol: str | os.PathLike | None = None,
    prior: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> CalibrationReport:
    """Fuse (or, with one system, calibrate) score files: train on dev, write eval LLRs.

    Parameters
    ----------
    dev : sequence of path
        One dev CM score file per system; all must score the same utterances.
    eval : sequence of path
        The eval score files of the same systems, in the same order; all must score the same
        utterances. ``out`` keeps the first one's order and layout.
    out : path
        Fused eval scores; ``<out>.json`` gets the sidecar.
    protocol, eval_protocol : path, optional
        Key files of the dev and the eval scores (for layouts without keys).
    prior : float, default 0.05
        Spoof prior of the operating point (ASVspoof 5).
    c_miss, c_fa : float, default 1 and 10
        Costs of the operating point (ASVspoof 5).

    Returns
    -------
    CalibrationReport

    Raises
    ------
    ScoreFileError
        A malformed file; a missing, extra or duplicated utterance id in one system; keys
        that disagree between files; one class only in dev (nothing written).
    CalibrationError
        Scores that cannot be calibrated, a bad prior or cost, dev and eval counts differ.
    ResourceError
        ``out`` cannot be written (disk full, permission).
    """
    if len(dev) != len(eval) or not dev:
        raise CalibrationError(
            f"{len(dev)} dev and {len(eval)} eval score files: give one of each per system"
        )
    effective_prior(prior, c_miss, c_fa)  # a bad operating point fails before any reading
    out = Path(out)
    if out.is_dir():
        raise ScoreFileError(out, "the output is a directory, not a file")
    dev_sets = [_read(p, protocol, need_keys=True) for p in dev]
    eval_sets = [_read(p, eval_protocol, need_keys=False) for p in eval]
    dev_x, dev_labels, _ = _join(dev_sets)
    eval_x, eval_labels, eval_first = _join(eval_sets)
    assert dev_labels is not None
    cal = fuse(list(dev_x.T), dev_labels, prior=prior, c_miss=c_miss, c_fa=c_fa)
    cost = DcfCostModel(p_spoof=prior, c_miss=c_miss, c_fa=c_fa)
    dev_after = cal.apply(dev_x)
    eval_after = cal.apply(eval_x)
    dev_m = _set_metrics(dev_x, dev_after, dev_labels, cost)
    eval_m = None if eval_labels is None else _set_metrics(eval_x, eval_after, eval_labels, cost)
    warnings = []
    if dev_m.after.mindcf == 0.0:
        warnings.append(
            "the dev scores separate bona fide and spoof perfectly: the calibration is as "
            f"steep as its L2 penalty ({L2_PENALTY:g}) allows, eval LLRs may be overconfident"
        )
    fmt = _WRITE_FORMAT[eval_first.format]
    report = CalibrationReport(
        calibration=cal,
        dev_files=tuple(s.path for s in dev_sets),
        eval_files=tuple(s.path for s in eval_sets),
        out=out,
        sidecar=out.with_name(out.name + ".json"),
        format=fmt,
        n_dev=int(dev_x.shape[0]),
        n_eval=int(eval_x.shape[0]),
        dev=dev_m,
        eval=eval_m,
        cost=cost,
        warnings=tuple(warnings),
    )
    _write(report, eval_first, eval_after, eval_labels, protocol, eval_protocol)
    return report


# --- reading and joining ----------------------------------------------------------------------


def _read(
    path: str | os.PathLike, protocol: str | os.PathLike | None, *, need_keys: bool
) -> _Scores:
    """A score file with its keys; without keys only where allowed (eval, keyless layout)."""
    p = os.fspath(path)
    if protocol is None and not need_keys and _keyless_layout(p):
        return _read_keyless(p)
    cm = read_cm_scores(p, protocol)
    return _Scores(
        path=cm.path,
        format=cm.format,
        utt_ids=cm.utt_ids,
        scores=cm.scores,
        lines=cm.lines,
        labels=cm.labels,
        attacks=cm.attacks,
    )


def _speakers(s: _Scores) -> list[str]:
    """The speaker column of a 2019 score file (``-`` for the 4-column layout), to write it."""
    if s.format != "2019":
        return ["-"] * len(s.utt_ids)
    text = Path(s.path).read_text(encoding="utf-8").split("\n")
    return [text[int(i) - 1].split(None, 1)[0] for i in s.lines]


def _first_row(path: str) -> list[str] | None:
    """Tokens of the first non-blank line (None if unreadable: the reader reports it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    return line.split()
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _keyless_layout(path: str) -> bool:
    """Whether the file is ``UTT SCORE`` or an ASVspoof 5 tsv (layouts without keys)."""
    row = _first_row(path)
    return row is not None and (len(row) == 2 or ("filename" in row and "cm-score" in row))


def _read_keyless(path: str) -> _Scores:
    """``UTT SCORE`` or an ASVspoof 5 tsv (``filename``, ``cm-score``) without its keys."""
    rows = [
        (i, line.split())
        for i, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1)
        if line.strip()
    ]
    header = rows[0][1]
    if "cm-score" in header:
        fmt, rows = "asvspoof5", rows[1:]
        if "filename" not in header:
            raise ScoreFileError(path, "header has 'cm-score' but no 'filename' column", 1)
        u, s = header.index("filename"), header.index("cm-score")
        width = len(header)
    else:
        fmt, u, s, width = "2021", 0, 1, 2
    if not rows:
        raise ScoreFileError(path, "score file has a header but no scores")
    for line, row in rows:
        if len(row) != width:
            raise ScoreFileError(path, f"expected {width} columns, got {len(row)}", line)
    lines = np.array([line for line, _ in rows], dtype=np.int64)
    ids = [row[u] for _, row in rows]
    scores = np.empty(len(rows))
    for k, (line, row) in enumerate(rows):
        try:
            scores[k] = float(row[s])
        except ValueError:
            raise ScoreFileError(path, f"score {row[s]!r} is not a number", line) from None
        if not np.isfinite(scores[k]):
            raise ScoreFileError(path, f"score {row[s]!r} is not finite", line)
    first: dict[str, int] = {}
    for k, utt in enumerate(ids):
        if utt in first:
            where = int(lines[first[utt]])
            raise ScoreFileError(
                path, f"duplicate utterance {utt!r} (first on line {where})", int(lines[k])
            )
        first[utt] = k
    return _Scores(path, fmt, ids, scores, lines, None, None)


def _join(sets: list[_Scores]) -> tuple[np.ndarray, np.ndarray | None, _Scores]:
    """``(n, k)`` scores in the first file's order, the keys (None if no file has them)."""
    first = sets[0]
    index = {u: i for i, u in enumerate(first.utt_ids)}
    x = np.empty((len(first.utt_ids), len(sets)))
    x[:, 0] = first.scores
    labels, labels_from = first.labels, first
    for j, other in enumerate(sets[1:], 1):
        if other.utt_ids == first.utt_ids:  # the common case, same order: no lookups
            rows = np.arange(len(first.utt_ids))
        else:
            get, n = index.get, len(other.utt_ids)
            rows = np.fromiter((get(u, -1) for u in other.utt_ids), np.int64, n)
        extra = np.flatnonzero(rows < 0)
        if extra.size:
            i = int(extra[0])
            raise ScoreFileError(
                other.path,
                f"utterance {other.utt_ids[i]!r} is not in {first.path} (every system must "
                "score the same utterances)",
                int(other.lines[i]),
            )
        if rows.size != len(first.utt_ids):  # no extra, no duplicate: some are missing
            scored = set(other.utt_ids)
            i = next(i for i, u in enumerate(first.utt_ids) if u not in scored)
            raise ScoreFileError(
                first.path,
                f"utterance {first.utt_ids[i]!r} has no score in {other.path} (every system "
                "must score the same utterances)",
                int(first.lines[i]),
            )
        x[rows, j] = other.scores
        if other.labels is not None:
            if labels is None:
                labels, labels_from = np.empty_like(other.labels), other
                labels[rows] = other.labels
            else:
                bad = np.flatnonzero(labels[rows] != other.labels)
                if bad.size:
                    i = int(bad[0])
                    raise ScoreFileError(
                        other.path,
                        f"key of {other.utt_ids[i]!r} disagrees with {labels_from.path}",
                        int(other.lines[i]),
                    )
    return x, labels, first


# --- metrics and writing ----------------------------------------------------------------------


def _metrics(scores: np.ndarray, labels: np.ndarray, cost: DcfCostModel) -> ScoreMetrics:
    bona, spoof = scores[labels == 1], scores[labels == 0]
    return ScoreMetrics(
        eer=compute_eer(bona, spoof)[0],
        mindcf=min_dcf(bona, spoof, cost),
        actdcf=act_dcf(bona, spoof, cost),
        cllr=cllr(bona, spoof),
    )


def _set_metrics(
    x: np.ndarray, after: np.ndarray, labels: np.ndarray, cost: DcfCostModel
) -> SetMetrics:
    before = tuple(_metrics(x[:, j], labels, cost) for j in range(x.shape[1]))
    return SetMetrics(before=before, after=_metrics(after, labels, cost))


def _sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sidecar(
    r: CalibrationReport,
    out_sha256: str,
    protocol: str | os.PathLike | None,
    eval_protocol: str | os.PathLike | None,
) -> dict[str, Any]:
    cal = r.calibration
    terms = " + ".join(f"{w:.6g} * s{j + 1}" for j, w in enumerate(cal.weights))
    return {
        "kind": "calibration" if len(cal.weights) == 1 else "fusion",
        "score": f"natural-log LLR, bona fide vs spoof: {terms} + ({cal.offset:.6g})",
        "method": (
            "prior-weighted logistic regression (Cllr at the effective bona fide prior), "
            f"L-BFGS on standardised scores, L2 penalty {L2_PENALTY:g} on the weights"
        ),
        "calibration": cal.to_dict(),
        "systems": [
            {
                "dev": os.path.abspath(d),
                "dev_sha256": _sha256(d),
                "eval": os.path.abspath(e),
                "eval_sha256": _sha256(e),
                "weight": w,
            }
            for d, e, w in zip(r.dev_files, r.eval_files, cal.weights, strict=True)
        ],
        "protocol": None if protocol is None else os.path.abspath(protocol),
        "eval_protocol": None if eval_protocol is None else os.path.abspath(eval_protocol),
        "score_file": os.path.abspath(r.out),
        "format": r.format,
        "sha256": out_sha256,
        "n_dev": r.n_dev,
        "n_eval": r.n_eval,
        "cost_model": asdict(r.cost),
        "metrics": {
            "dev": r.dev.to_dict(),
            "eval": None if r.eval is None else r.eval.to_dict(),
        },
        "warnings": list(r.warnings),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
    }


def _write(
    r: CalibrationReport,
    first: _Scores,
    scores: np.ndarray,
    labels: np.ndarray | None,
    protocol: str | os.PathLike | None,
    eval_protocol: str | os.PathLike | None,
) -> None:
    """The score file and its sidecar, both or neither; OS failures are ResourceErrors."""
    extra: dict[str, Any] = {}
    if r.format == "asvspoof2019":
        assert labels is not None and first.attacks is not None
        extra = {
            "speakers": _speakers(first),
            "systems": [str(a) for a in first.attacks],
            "keys": ["bonafide" if k == 1 else "spoof" for k in labels],
        }
    try:
        r.out.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(r.out))
            write_score_file(tmp, first.utt_ids, scores, format=r.format, **extra)
            record = _sidecar(r, _sha256(tmp), protocol, eval_protocol)
            side = stack.enter_context(atomic_path(r.sidecar))
            side.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except ScoreFileError as exc:  # write_score_file's own OSError
        if isinstance(exc.__context__, OSError):
            raise _resource_error(r.out, exc.__context__) from None
        raise
    except OSError as exc:
        raise _resource_error(r.out, exc) from None


def _resource_error(path: Path, exc: OSError) -> ResourceError:
    return ResourceError(f"{path}: cannot write: {exc.strerror or exc}")
