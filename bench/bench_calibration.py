"""Calibration and fusion speed (target: 71k scores in under 1 s) against baselines.

Three measurements, each the median of ``--repeat`` runs after one untimed warm-up, with its
baseline measured in the same run, interleaved:

1. API, ASVspoof 2019 LA sizes from two Gaussians: train on 24,844 dev scores (2,548 bona
   fide) and apply to 71,237 eval scores: :func:`trainer.calibration.calibrate` (1 system)
   and :func:`trainer.calibration.fuse` (3 systems). Baseline: scikit-learn's
   ``LogisticRegression`` (lbfgs, ``C=1e6``, the same prior weights as ``sample_weight``),
   i.e. what one would write without this module; both must find the same LLR (checked).
2. The same with 71,237 training scores (the eval size) for the worst case.
3. Files end to end, ``calibrate_score_files`` / ``fuse_score_files`` (read dev and eval,
   join by id, train, metrics before and after on dev and eval, write the LLRs and the
   sidecar) on the real ASVspoof 2019 LA score files of ``../shared/data`` when present
   (otherwise generated 2019-layout files of the same sizes). Floor: reading the same files
   with :func:`trainer.scorefiles.read_cm_scores` and writing one score file.

Usage::

    .venv/bin/python bench/bench_calibration.py [--repeat 7]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from trainer.calibration import calibrate, effective_prior, fuse  # noqa: E402
from trainer.calibration_files import calibrate_score_files, fuse_score_files  # noqa: E402
from trainer.scorefiles import read_cm_scores, write_score_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCORES = REPO.parent / "shared" / "data" / "asvspoof2019_la_scores"
DEV = (2548, 22296)  # bona fide, spoof: ASVspoof 2019 LA dev
EVAL = (7355, 63882)  # and eval


def systems(n_bona: int, n_spoof: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k)`` scores: k noisy, differently scaled views of one Gaussian signal."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], [n_bona, n_spoof])
    z = np.where(labels == 1, 2.0, 0.0) + rng.normal(0, 1, labels.size)
    cols = [(j + 1) * (z + rng.normal(0, 0.5 + j, z.size)) - j for j in range(k)]
    return np.column_stack(cols), labels


def sklearn_baseline(x: np.ndarray, labels: np.ndarray, ev: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    p = effective_prior()
    n_bona = np.count_nonzero(labels)
    weight = np.where(labels == 1, p / n_bona, (1 - p) / (labels.size - n_bona)) * labels.size
    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000, tol=1e-10)
    lr.fit(x, labels, sample_weight=weight)
    return lr.decision_function(ev) - math.log(p / (1 - p))  # posterior log odds -> LLR


def ours(x: np.ndarray, labels: np.ndarray, ev: np.ndarray) -> np.ndarray:
    cal = calibrate(x[:, 0], labels) if x.shape[1] == 1 else fuse(x, labels)
    return cal.apply(ev[:, 0] if x.shape[1] == 1 else ev)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def compare(name: str, fn_a, fn_b, args, repeat: int) -> tuple[str, float, float, float]:
    fn_a(*args), fn_b(*args)  # warm-up (imports)
    ta, tb, worst = [], [], 0.0
    for _ in range(repeat):
        a, ra = timed(fn_a, *args)
        b, rb = timed(fn_b, *args)
        ta.append(a)
        tb.append(b)
        worst = max(worst, float(np.max(np.abs(ra - rb))) if ra is not None else 0.0)
    return name, statistics.median(ta), statistics.median(tb), worst


def score_files(workdir: Path) -> tuple[list[Path], list[Path]]:
    """Real dev/eval files of two systems, or generated ones of the same sizes."""
    real = [
        (SCORES / "dev" / "cm_lfcc_hr_gmm.txt", SCORES / "eval" / "cm_lfcc_hr_gmm.txt"),
        (SCORES / "dev" / "cm_gmm_baseline.txt", SCORES / "eval" / "cm_B02_lfcc_gmm.txt"),
    ]
    if all(p.is_file() for pair in real for p in pair):
        return [d for d, _ in real], [e for _, e in real]
    out: tuple[list[Path], list[Path]] = ([], [])
    for which, (nb, ns), seed in (("dev", DEV, 1), ("eval", EVAL, 2)):
        x, labels = systems(nb, ns, 2, seed)
        ids = [f"LA_{which[0].upper()}_{i:07d}" for i in range(labels.size)]
        keys = ["bonafide" if k else "spoof" for k in labels]
        attacks = ["-" if k else "A07" for k in labels]
        for j in range(2):
            p = workdir / f"{which}_{j}.txt"
            write_score_file(p, ids, x[:, j], speakers=["LA_0001"] * len(ids), systems=attacks,
                             keys=keys)  # fmt: skip
            (out[0] if which == "dev" else out[1]).append(p)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for label, train_size in (("dev 24,844 -> eval 71,237", DEV), ("71,237 -> 71,237", EVAL)):
        for k in (1, 3):
            x, labels = systems(*train_size, k, seed=3)
            ev, _ = systems(*EVAL, k, seed=4)
            what = "calibrate" if k == 1 else "fuse 3"
            rows.append(
                compare(f"{what}, {label}", ours, sklearn_baseline, (x, labels, ev), args.repeat)
            )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dev, ev = score_files(work)
        real = dev[0].parent.parent == SCORES

        def floor(d, e):
            cms = [read_cm_scores(p) for p in (*d, *e)]
            write_score_file(work / "floor.txt", cms[-1].utt_ids, cms[-1].scores,
                             format="asvspoof2021")  # fmt: skip

        def cal_files(d, e):
            calibrate_score_files(d[0], e[0], work / "cal.txt")

        def fuse_files(d, e):
            fuse_score_files(d, e, work / "fused.txt")

        def floor1(d, e):
            floor(d[:1], e[:1])

        src = "real ASVspoof 2019 LA files" if real else "generated files"
        r1 = compare(f"calibrate files ({src})", cal_files, floor1, (dev, ev), args.repeat)
        r2 = compare(f"fuse 2 files ({src})", fuse_files, floor, (dev, ev), args.repeat)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat} runs"
    )
    print(f"{'':44s}{'ours s':>8}{'base s':>8}{'ratio':>7}  {'max |LLR diff|':>14}")
    for name, a, b, worst in rows:
        print(f"{name:44s}{a:8.3f}{b:8.3f}{b / a:7.2f}  {worst:14.1e}   (base: scikit-learn)")
    for name, a, b, _ in (r1, r2):
        print(f"{name:44s}{a:8.3f}{b:8.3f}{a / b:7.2f}   (base: read + write floor; ours/floor)")
    worst_api = max(r[3] for r in rows)
    assert worst_api < 1e-3, f"ours and scikit-learn disagree by {worst_api}"
    slowest = max(r[1] for r in rows)
    verdict = "ok" if slowest < 1 else "MISSED"
    print(f"calibration/fusion of 71k scores: slowest {slowest:.3f} s (target < 1 s): {verdict}")
    print(f"files end to end (reading included): {r1[1]:.3f} s and {r2[1]:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
