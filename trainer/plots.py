"""Plots: DET curves on normal-deviate axes, and training curves.

Matplotlib is imported inside the functions and used through its object API with the Agg
canvas (no ``pyplot``, no global backend switch), so importing this module is cheap and
safe in any process.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from trainer.errors import ScoreFileError
from trainer.metrics import DetCurve

__all__ = ["DET_TICKS", "plot_det", "plot_training_curves"]

#: Axis ticks of the DET plot, in percent.
DET_TICKS = (0.1, 0.5, 1, 2, 5, 10, 20, 40)
_DET_LIMITS = (0.0005, 0.6)  # default range of both axes (fractions)
_DET_FLOOR = 0.0001  # the lower limit drops to this for curves with tiny error rates


def _probit(p: np.ndarray | float, lo: float = _DET_LIMITS[0]) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(np.clip(p, lo, _DET_LIMITS[1]))


def _lower_limit(dets: list[DetCurve]) -> float:
    """0.05 %, or lower (down to 0.01 %) when a curve has smaller non-zero error rates."""
    smallest = _DET_LIMITS[0]
    for det in dets:
        idx = det.corners()
        rates = np.concatenate((det.pfa[idx], det.pmiss[idx]))
        rates = rates[rates > 0]
        if rates.size:
            smallest = min(smallest, float(rates.min()) / 1.5)
    return max(smallest, _DET_FLOOR)


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def plot_det(
    curves: Mapping[str, DetCurve] | Sequence[tuple[str, DetCurve]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw one or more DET curves (miss vs false-alarm rate) on normal-deviate axes.

    Both axes use the probit scale ticked at 0.1, 0.5, 1, 2, 5, 10, 20 and 40 %; rates
    outside 0.05-60 % are drawn on the border (the lower limit goes down to 0.01 % when a
    curve has smaller non-zero rates). Each curve's EER point is marked on the
    diagonal and its EER is given in the legend.

    Parameters
    ----------
    curves : mapping or sequence of (label, DetCurve)
        The curves to overlay (e.g. ``{"grcnn": compute_metrics(...).det}``).
    path : str or os.PathLike
        Output image; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    title : str, optional
        Axes title.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> from trainer.metrics import det_curve
    >>> plot_det({"toy": det_curve([0.9, 0.4, 0.8], [0.1, 0.5, 0.2])}, "det.png")  # doctest: +SKIP
    PosixPath('det.png')
    """
    items = list(curves.items()) if isinstance(curves, Mapping) else list(curves)
    fig = _new_figure((5.6, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    floor = _lower_limit([det for _, det in items])
    lo, hi = _probit(np.array([floor, _DET_LIMITS[1]]), floor)
    ax.plot([lo, hi], [lo, hi], color="0.8", linewidth=0.8, zorder=0)
    for label, det in items:
        idx = det.corners()
        x = _probit(det.pfa[idx], floor)
        y = _probit(det.pmiss[idx], floor)
        eer = det.eer
        (line,) = ax.plot(x, y, linewidth=1.5, label=f"{label} (EER {100 * eer:.2f} %)")
        e = _probit(eer, floor)
        ax.plot([e], [e], marker="o", markersize=6, color=line.get_color(), markeredgecolor="k")
    ticks = _probit(np.array(DET_TICKS) / 100, floor)
    labels = [f"{t:g}" for t in DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_xlabel("False acceptance rate of spoofs (%)")
    ax.set_ylabel("Miss rate of bona fide (%)")
    if title:
        ax.set_title(title)
    if items:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format=out.suffix.lstrip(".") or "png")
    return out


def plot_training_curves(metrics_csv: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Plot training loss and dev EER per epoch from a training-metrics CSV.

    Parameters
    ----------
    metrics_csv : str or os.PathLike
        CSV with a header holding at least ``epoch`` and ``train_loss``; ``dev_eer`` (a
        fraction, drawn in percent on a second axis) is optional and may be empty or ``nan``
        on epochs without a dev evaluation. Other columns are ignored.
    path : str or os.PathLike
        Output image (format from the suffix).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ScoreFileError
        Missing file or columns, no rows, or a non-numeric value (with its line).

    Examples
    --------
    >>> plot_training_curves("runs/grcnn/metrics.csv", "curves.png")  # doctest: +SKIP
    PosixPath('curves.png')
    """
    src = os.fspath(metrics_csv)
    try:
        with open(src, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ScoreFileError(src, f"cannot read metrics CSV: {exc.strerror or exc}") from None
    if not rows:
        raise ScoreFileError(src, "metrics CSV is empty")
    header = [h.strip() for h in rows[0]]
    for need in ("epoch", "train_loss"):
        if need not in header:
            raise ScoreFileError(src, f"metrics CSV has no {need!r} column", 1)
    cols = {
        name: header.index(name) for name in ("epoch", "train_loss", "dev_eer") if name in header
    }
    data: dict[str, list[float]] = {name: [] for name in cols}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        for name, j in cols.items():
            cell = row[j].strip() if j < len(row) else ""
            if cell == "" and name != "epoch":
                data[name].append(math.nan)
                continue
            try:
                data[name].append(float(cell))
            except ValueError:
                raise ScoreFileError(src, f"{name} {cell!r} is not a number", lineno) from None
    if not data["epoch"]:
        raise ScoreFileError(src, "metrics CSV has no rows")
    epoch = np.array(data["epoch"])
    fig = _new_figure((6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epoch, data["train_loss"], marker=".", color="tab:blue", label="train loss")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.grid(True, color="0.9", linewidth=0.6)
    handles = ax.get_lines()
    if "dev_eer" in data:
        eer = 100 * np.array(data["dev_eer"])
        ok = np.isfinite(eer)
        ax2 = ax.twinx()
        ax2.plot(epoch[ok], eer[ok], marker="o", color="tab:red", label="dev EER (%)")
        ax2.set_ylabel("dev EER (%)", color="tab:red")
        handles = [*handles, *ax2.get_lines()]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format=out.suffix.lstrip(".") or "png")
    return out
