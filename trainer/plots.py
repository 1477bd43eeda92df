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

from featstore.errors import ConfigError
from trainer.errors import ScoreFileError
from trainer.metrics import DetCurve

__all__ = [
    "DET_TICKS",
    "check_det_labels",
    "check_plot_path",
    "image_formats",
    "plot_det",
    "plot_training_curves",
]

#: Candidate axis ticks of the DET plot, in percent; those inside the axes are drawn.
DET_TICKS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 99)
_DET_LOWER = 0.0005  # default lower limit of both axes (a fraction)
_DET_FLOOR = 0.0001  # the lower limit drops to this for curves with tiny error rates
_DET_UPPER = (0.6, 0.995)  # upper limits, the smallest that fits every EER point
_EER_MARGIN = 0.5  # normal deviates between an EER point and the upper limit
_NOT_IMAGES = frozenset({"pgf", "raw", "rgba"})  # pgf needs a TeX system; raw: no header


def image_formats() -> tuple[str, ...]:
    """File suffixes (no dot, lower case) of the images the Agg canvas can write.

    Read from the installed matplotlib (``FigureCanvasAgg.get_supported_filetypes()``), less
    ``pgf`` (needs a TeX system) and ``raw``/``rgba`` (headerless pixel dumps).

    Returns
    -------
    tuple of str
        Sorted suffixes, e.g. ``("eps", "jpeg", "jpg", "pdf", "png", "ps", "svg", ...)``.

    Examples
    --------
    >>> {"png", "pdf", "svg"} <= set(image_formats())
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return tuple(sorted(set(FigureCanvasAgg.get_supported_filetypes()) - _NOT_IMAGES))


def _image_format(path: Path) -> str:
    return path.suffix.lstrip(".").lower() or "png"


def check_plot_path(path: str | os.PathLike) -> None:
    """Refuse an image path that a plot could not be written to, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The image to write; its suffix picks the format (no suffix: PNG).

    Raises
    ------
    ScoreFileError
        A suffix that is not one of :func:`image_formats`, a directory, or a parent
        directory that does not exist.

    Examples
    --------
    >>> check_plot_path("det.png")
    >>> check_plot_path("det.bmp")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainer.errors.ScoreFileError: det.bmp: cannot write a .bmp image; use one of .avif, ...
    """
    out = Path(path)
    fmt = _image_format(out)
    formats = image_formats()
    if fmt not in formats:
        raise ScoreFileError(
            out, f"cannot write a .{fmt} image; use one of {', '.join('.' + f for f in formats)}"
        )
    if out.is_dir():
        raise ScoreFileError(out, "is a directory, not an image file")
    parent = out.parent
    if not parent.is_dir():
        raise ScoreFileError(out, f"cannot write: directory {os.fspath(parent)} does not exist")


def check_det_labels(labels: Sequence[str] | None, n_curves: int) -> None:
    """Refuse legend labels that are not one per curve.

    Parameters
    ----------
    labels : sequence of str or None
        Legend labels (``None`` or empty: the curves' own names).
    n_curves : int
        Number of curves (score files).

    Raises
    ------
    ConfigError
        ``labels`` is not empty and its length differs from ``n_curves``.

    Examples
    --------
    >>> check_det_labels(["grcnn", "lfcc-lcnn"], 2)
    >>> check_det_labels(["grcnn"], 2)
    Traceback (most recent call last):
    ...
    featstore.errors.ConfigError: 1 DET label for 2 curves: give one label per score file
    """
    if labels and len(labels) != n_curves:
        raise ConfigError(
            f"{len(labels)} DET label{'s' if len(labels) != 1 else ''} for {n_curves} "
            f"curve{'s' if n_curves != 1 else ''}: give one label per score file"
        )


def _probit(p: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(np.clip(p, lo, hi))


def _lower_limit(dets: list[DetCurve]) -> float:
    """0.05 %, or lower (down to 0.01 %) when a curve has smaller non-zero error rates."""
    smallest = _DET_LOWER
    for det in dets:
        idx = det.corners()
        rates = np.concatenate((det.pfa[idx], det.pmiss[idx]))
        rates = rates[rates > 0]
        if rates.size:
            smallest = min(smallest, float(rates.min()) / 1.5)
    return max(smallest, _DET_FLOOR)


def _upper_limit(dets: list[DetCurve]) -> float:
    """60 %, or 99.5 % when an EER point would be less than 0.5 deviates inside 60 %."""
    from scipy.special import ndtri

    worst = max((det.eer for det in dets), default=0.0)
    for limit in _DET_UPPER:
        if ndtri(limit) - ndtri(max(worst, _DET_FLOOR)) >= _EER_MARGIN:
            return limit
    return _DET_UPPER[-1]


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` atomically (a temporary file renamed over ``path``)."""
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    try:
        fig.savefig(tmp, format=_image_format(out))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _det_figure(items: list[tuple[str, DetCurve]], title: str | None, labels: Sequence[str] | None):
    """The DET plot of ``items`` as a matplotlib Figure (Agg canvas)."""
    check_det_labels(labels, len(items))
    names = list(labels) if labels else [name for name, _ in items]
    dets = [det for _, det in items]
    floor, top = _lower_limit(dets), _upper_limit(dets)
    fig = _new_figure((5.6, 5.4 + 0.2 * len(items)))
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = _probit(np.array([floor, top]), floor, top)
    ax.plot([lo, hi], [lo, hi], color="0.8", linewidth=0.8, zorder=0)
    for name, det in zip(names, dets, strict=True):
        idx = det.corners()
        x = _probit(det.pfa[idx], floor, top)
        y = _probit(det.pmiss[idx], floor, top)
        eer = det.eer
        (line,) = ax.plot(x, y, linewidth=1.5, label=f"{name} (EER {100 * eer:.2f} %)")
        e = _probit(eer, floor, top)
        ax.plot([e], [e], marker="o", markersize=6, color=line.get_color(), markeredgecolor="k")
    shown = [t for t in DET_TICKS if floor < t / 100 < top]
    ticks = _probit(np.array(shown) / 100, floor, top)
    tick_labels = [f"{t:g}" for t in shown]
    ax.set_xticks(ticks, tick_labels)
    ax.set_yticks(ticks, tick_labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_xlabel("False acceptance rate of spoofs (%)")
    ax.set_ylabel("Miss rate of bona fide (%)")
    if title:
        ax.set_title(title)
    if items:  # below the axes: never over a curve
        fig.legend(loc="outside lower center", fontsize=8, framealpha=1.0)
    return fig


def plot_det(
    curves: Mapping[str, DetCurve] | Sequence[tuple[str, DetCurve]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Draw one or more DET curves (miss vs false-alarm rate) on normal-deviate axes.

    Both axes use the probit scale over the same range: from 0.05 % (lower, down to
    0.01 %, when a curve has smaller non-zero rates) to 60 %, or to 99.5 % when a curve's
    EER point would otherwise sit less than half a normal deviate from the border (EERs
    above about 40 %, e.g. a system scoring worse than chance); rates beyond are drawn on
    the border. Ticks are
    the :data:`DET_TICKS` inside the range. Each curve's EER point is marked on the
    diagonal; the legend, below the axes, gives each curve's label and EER.

    Parameters
    ----------
    curves : mapping or sequence of (name, DetCurve)
        The curves to overlay (e.g. ``{"grcnn": compute_metrics(...).det}``).
    path : str or os.PathLike
        Output image; the format follows the suffix (see :func:`image_formats`; no
        suffix: PNG). Written atomically.
    title : str, optional
        Axes title.
    labels : sequence of str, optional
        Legend label of each curve, in order (default: the curves' names).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ScoreFileError
        ``path`` cannot take an image (see :func:`check_plot_path`).
    ConfigError
        ``labels`` is not one label per curve.

    Examples
    --------
    >>> from trainer.metrics import det_curve
    >>> plot_det({"toy": det_curve([0.9, 0.4, 0.8], [0.1, 0.5, 0.2])}, "det.png")  # doctest: +SKIP
    PosixPath('det.png')
    """
    check_plot_path(path)
    items = list(curves.items()) if isinstance(curves, Mapping) else list(curves)
    return _save(_det_figure(items, title, labels), path)


def plot_training_curves(
    metrics_csv: str | os.PathLike, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Plot training loss and dev EER per epoch from a run's ``metrics.csv``.

    The training loss is drawn on the left axis; the dev EER (in percent) on the right one,
    with its best epoch marked. Reads the CSV that :func:`trainer.fit` writes (columns
    ``epoch, step, train_loss, dev_eer, best_dev_eer, lr, ...``); only ``epoch`` and
    ``train_loss`` are required.

    Parameters
    ----------
    metrics_csv : str or os.PathLike
        CSV with a header holding at least ``epoch`` and ``train_loss``; ``dev_eer`` (a
        fraction) is optional and may be empty or ``nan`` on epochs without a dev
        evaluation (no dev EER at all: no right axis). Other columns are ignored.
    path : str or os.PathLike
        Output image (format from the suffix, see :func:`image_formats`); written
        atomically, so a run directory never holds half an image.
    title : str, optional
        Axes title (e.g. the run's name).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ScoreFileError
        Missing file or columns, no rows, a non-numeric value (with its line), or an image
        path that cannot be written (see :func:`check_plot_path`).

    Examples
    --------
    >>> plot_training_curves("runs/grcnn/metrics.csv", "runs/grcnn/training_curves.png")
    ... # doctest: +SKIP
    PosixPath('runs/grcnn/training_curves.png')
    """
    check_plot_path(path)
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
    from matplotlib.ticker import MaxNLocator

    epoch = np.array(data["epoch"])
    fig = _new_figure((6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epoch, data["train_loss"], marker=".", color="tab:blue", label="train loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.grid(True, color="0.9", linewidth=0.6)
    if title:
        ax.set_title(title)
    eer = 100 * np.array(data.get("dev_eer", []), dtype=float)
    if np.isfinite(eer).any():
        ok = np.isfinite(eer)
        ax2 = ax.twinx()
        ax2.plot(epoch[ok], eer[ok], marker="o", color="tab:red", label="dev EER (%)")
        best = int(np.nanargmin(eer))
        ax2.plot(
            [epoch[best]],
            [eer[best]],
            marker="*",
            markersize=12,
            linestyle="none",
            color="gold",
            markeredgecolor="k",
            label=f"best dev EER {eer[best]:.2f} % (epoch {epoch[best]:g})",
        )
        ax2.set_ylabel("dev EER (%)", color="tab:red")
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, framealpha=1.0)
    return _save(fig, path)
