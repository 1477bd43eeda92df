"""DET plots that fit their curves, legends off the curves, and training curves of a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtri

from featstore.errors import ConfigError
from trainer.errors import ScoreFileError
from trainer.metrics import det_curve
from trainer.plots import (
    _det_figure,
    check_det_labels,
    check_plot_path,
    image_formats,
    plot_det,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve(shift: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return det_curve(rng.normal(shift, 1.0, 2000), rng.normal(0.0, 1.0, 5000))


def _tick_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def test_a_56_percent_eer_curve_is_inside_the_axes():
    bad = _curve(-0.3)
    assert 0.54 < bad.eer < 0.58
    fig = _det_figure([("good", _curve(3.0)), ("bad", bad)], None, None)
    ax = fig.axes[0]
    e = ndtri(bad.eer)
    for lo, hi in (ax.get_xlim(), ax.get_ylim()):
        assert lo < e and hi - e >= 0.5  # the EER point, with room around it
        assert hi >= ndtri(0.99)
    # the curve's points near its EER are drawn where they are, not clipped to the border
    line = next(line for line in ax.get_lines() if "bad (EER" in line.get_label())
    x, y = line.get_data()
    near = np.abs(np.asarray(x) - e) < 0.3
    assert near.any() and np.all(np.asarray(y)[near] < ax.get_ylim()[1])
    assert {"60", "80", "90", "95", "99"} <= set(_tick_labels(ax.xaxis))
    assert _tick_labels(ax.xaxis) == _tick_labels(ax.yaxis)


def test_good_systems_keep_the_usual_range():
    ax = _det_figure([("good", _curve(3.0))], None, None).axes[0]
    assert ax.get_xlim()[1] == pytest.approx(ndtri(0.6))
    assert _tick_labels(ax.xaxis)[-1] == "40"


def test_legend_is_outside_the_axes_and_inside_the_figure():
    names = [f"runs/model-{i}-20240101-120000/scores_eval.txt" for i in range(4)]
    fig = _det_figure([(n, _curve(i + 0.5, seed=i)) for i, n in enumerate(names)], "t", None)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    axes_box = fig.axes[0].get_window_extent(renderer)
    assert not box.overlaps(axes_box)
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split(" (EER")[0] for t in texts] == names


def test_labels_replace_the_names_one_per_curve(tmp_path):
    items = [("a.txt", _curve(2.0)), ("b.txt", _curve(1.0, seed=1))]
    fig = _det_figure(items, None, ["GRCNN", "LFCC-LCNN"])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[0].startswith("GRCNN (EER ") and texts[1].startswith("LFCC-LCNN (EER ")
    with pytest.raises(ConfigError, match="1 DET label for 2 curves"):
        plot_det(items, tmp_path / "d.png", labels=["GRCNN"])
    assert not (tmp_path / "d.png").exists()
    check_det_labels(None, 3)
    check_det_labels([], 3)
    with pytest.raises(ConfigError, match="3 DET labels for 1 curve:"):
        check_det_labels(["a", "b", "c"], 1)


@pytest.mark.parametrize(
    "name", ["d.png", "d.PNG", "d.pdf", "d.svg", "d.eps", "d.ps", "d.jpg", "d"]
)
def test_check_plot_path_accepts_what_agg_writes(tmp_path, name):
    check_plot_path(tmp_path / name)


@pytest.mark.parametrize("name", ["d.bmp", "d.txt", "d.pgf", "d.raw"])
def test_check_plot_path_refuses_other_suffixes(tmp_path, name):
    suffix = name.split(".")[1]
    with pytest.raises(
        ScoreFileError, match=rf"cannot write a \.{suffix} image; use one of .*\.png"
    ):
        check_plot_path(tmp_path / name)
    with pytest.raises(ScoreFileError, match="cannot write a"):
        plot_det({"a": _curve(2.0)}, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_check_plot_path_refuses_missing_directories(tmp_path):
    with pytest.raises(ScoreFileError, match=r"directory .*nope does not exist"):
        check_plot_path(tmp_path / "nope" / "d.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ScoreFileError, match="is a directory"):
        check_plot_path(tmp_path / "d.png")


def test_every_accepted_format_is_written(tmp_path):
    formats = image_formats()
    assert {"png", "pdf", "svg", "eps", "ps", "jpg"} <= set(formats)
    assert not {"pgf", "raw", "rgba"} & set(formats)
    curve = {"a": _curve(2.0)}
    for fmt in formats:
        out = plot_det(curve, tmp_path / f"d.{fmt}")
        assert out.stat().st_size > 0, fmt
    assert plot_det(curve, tmp_path / "d").read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*"))  # no temporary file left


# --- training curves from a run's metrics.csv -------------------------------------------------


def _run_metrics(path, dev_eers):
    from trainer.runs import METRICS_COLUMNS, write_metrics

    rows = []
    for i, eer in enumerate(dev_eers):
        best = min((e for e in dev_eers[: i + 1] if not math.isnan(e)), default=math.nan)
        rows.append(
            {
                "epoch": i + 1,
                "step": 10 * (i + 1),
                "train_loss": 0.7 / (i + 1),
                "dev_eer": eer,
                "best_dev_eer": best,
                "lr": 1e-3,
                "examples_per_s": 100.0,
                "epoch_seconds": 1.5,
            }
        )
    assert all(set(row) == set(METRICS_COLUMNS) for row in rows)
    write_metrics(path, rows)
    return path


def test_training_curves_from_the_metrics_csv_fit_writes(tmp_path):
    csv = _run_metrics(tmp_path / "metrics.csv", [0.3, 0.12, 0.15, math.nan, 0.1])
    out = plot_training_curves(csv, tmp_path / "training_curves.png", title="grcnn")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "training_curves.png"]


def test_training_curves_without_dev_or_with_one_epoch(tmp_path):
    csv = _run_metrics(tmp_path / "metrics.csv", [math.nan, math.nan])
    assert plot_training_curves(csv, tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    csv = _run_metrics(tmp_path / "metrics.csv", [0.2])
    assert plot_training_curves(csv, tmp_path / "c.svg").read_text().lstrip().startswith("<")


def test_training_curves_refuse_a_csv_without_epochs_and_bad_paths(tmp_path):
    csv = _run_metrics(tmp_path / "metrics.csv", [])  # fit writes the header before epoch 1
    with pytest.raises(ScoreFileError, match=r"metrics\.csv: metrics CSV has no rows"):
        plot_training_curves(csv, tmp_path / "c.png")
    csv = _run_metrics(tmp_path / "metrics.csv", [0.2])
    with pytest.raises(ScoreFileError, match=r"c\.bmp: cannot write a \.bmp image"):
        plot_training_curves(csv, tmp_path / "c.bmp")
