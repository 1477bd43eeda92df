"""``trainer metrics`` speed against the official procedure measured in the same run.

Times reading + all metrics for one CM score file with its ASV scores (default: the official
ASVspoof 2019 LA eval B01 CQCC-GMM scores, 71,237 trials, and the organisers' 3-column eval ASV
scores, 102,579 trials), interleaved with a *baseline*: a straightforward reimplementation,
written here, of the procedure of the official ASVspoof 2019 ``tDCF_python`` scripts and the
ASVspoof 5 package for the same numbers: ``np.genfromtxt(dtype=str)`` to read both files,
``compute_det_curve`` + ``compute_eer`` per score set (pooled, ASV, each attack),
``obtain_asv_error_rates`` with Python's ``sum``, ``compute_tDCF`` (revised and legacy) and
ASVspoof 5's per-threshold Python loop for minDCF, plus actDCF and Cllr.

"ours" is :func:`trainer.scorefiles.read_cm_scores` + :func:`read_asv_scores` +
:func:`trainer.metrics.compute_metrics` (pooled and per-attack EER, minDCF, actDCF, Cllr,
revised and legacy min t-DCF: more than the baseline computes). Both must agree to 1e-12.
Prints medians of ``--repeat`` runs and the ratio baseline / ours.

Usage::

    python bench/bench_metrics.py [--repeat N] [--cm FILE] [--asv FILE]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from trainer.metrics import compute_metrics  # noqa: E402
from trainer.scorefiles import read_asv_scores, read_cm_scores  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCORES = REPO.parent / "shared" / "data" / "asvspoof2019_la_scores"


# --- baseline: the official procedure ---------------------------------------------------------


def base_det(target: np.ndarray, nontarget: np.ndarray):
    n = target.size + nontarget.size
    both = np.concatenate((target, nontarget))
    lab = np.concatenate((np.ones(target.size), np.zeros(nontarget.size)))
    order = np.argsort(both, kind="mergesort")
    lab = lab[order]
    tar_sums = np.cumsum(lab)
    non_sums = nontarget.size - (np.arange(1, n + 1) - tar_sums)
    frr = np.concatenate((np.atleast_1d(0), tar_sums / target.size))
    far = np.concatenate((np.atleast_1d(1), non_sums / nontarget.size))
    thr = np.concatenate((np.atleast_1d(both[order[0]] - 0.001), both[order]))
    return frr, far, thr


def base_eer(target, nontarget):
    frr, far, thr = base_det(target, nontarget)
    i = np.argmin(np.abs(frr - far))
    return np.mean((frr[i], far[i])), thr[i]


def base_mindcf(frr, far, p_spoof=0.05, c_miss=1.0, c_fa=10.0):
    best = float("inf")
    p_target = 1 - p_spoof
    for i in range(len(frr)):  # the ASVspoof 5 package's per-threshold loop
        c = c_miss * frr[i] * p_target + c_fa * far[i] * (1 - p_target)
        if c < best:
            best = c
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


def baseline(cm_file: Path, asv_file: Path) -> dict[str, float]:
    cm = np.genfromtxt(cm_file, dtype=str)
    asv = np.genfromtxt(asv_file, dtype=str)
    if asv.shape[1] == 6:
        asv = asv[:, 3:]
    asv_keys, asv_scores = asv[:, 1], asv[:, 2].astype(np.float64)
    cm_keys, cm_att, cm_scores = cm[:, 4], cm[:, 3], cm[:, 5].astype(np.float64)
    tar = asv_scores[asv_keys == "target"]
    non = asv_scores[asv_keys == "nontarget"]
    spf_asv = asv_scores[asv_keys == "spoof"]
    bona = cm_scores[cm_keys == "bonafide"]
    spoof = cm_scores[cm_keys == "spoof"]
    _, t = base_eer(tar, non)
    pfa_asv = sum(non >= t) / non.size
    pmiss_asv = sum(tar < t) / tar.size
    pmiss_spoof_asv = np.sum(spf_asv < t) / spf_asv.size
    pfa_spoof_asv = np.sum(spf_asv >= t) / spf_asv.size
    eer = base_eer(bona, spoof)[0]
    frr, far, _ = base_det(bona, spoof)
    ptar, pnon = 0.95 * 0.99, 0.95 * 0.01
    c0 = ptar * pmiss_asv + pnon * 10 * pfa_asv
    c1 = ptar - (ptar * pmiss_asv + pnon * 10 * pfa_asv)
    c2 = 0.05 * 10 * pfa_spoof_asv
    tdcf = np.min((c0 + c1 * frr + c2 * far) / (c0 + np.minimum(c1, c2)))
    l1 = ptar * (1 - pmiss_asv) - pnon * 10 * pfa_asv
    l2 = 10 * 0.05 * (1 - pmiss_spoof_asv)
    tdcf_legacy = np.min((l1 * frr + l2 * far) / np.minimum(l1, l2))
    mindcf = base_mindcf(frr, far)
    thr = -np.log(0.95 / 0.5)
    act = (0.95 * np.sum(bona < thr) / bona.size + 0.5 * np.sum(spoof >= thr) / spoof.size) / 0.5
    cllr = 0.5 * (np.mean(np.log1p(np.exp(-bona))) + np.mean(np.log1p(np.exp(spoof)))) / np.log(2)
    per_attack = {}
    for a in sorted(set(cm_att[cm_keys == "spoof"])):
        per_attack[a] = base_eer(bona, cm_scores[(cm_keys == "spoof") & (cm_att == a)])[0]
    return {
        "eer": float(eer),
        "min_tdcf": float(tdcf),
        "min_tdcf_legacy": float(tdcf_legacy),
        "mindcf": float(mindcf),
        "actdcf": float(act),
        "cllr": float(cllr),
        **{f"eer_{a}": float(v) for a, v in per_attack.items()},
    }


# --- ours -------------------------------------------------------------------------------------


def ours(cm_file: Path, asv_file: Path) -> dict[str, float]:
    cm = read_cm_scores(cm_file)
    asv = read_asv_scores(asv_file)
    m = compute_metrics(cm.scores, cm.labels, attacks=cm.attacks, asv=asv)
    out = {k: getattr(m, k) for k in ("eer", "min_tdcf", "min_tdcf_legacy", "mindcf", "actdcf")}
    out["cllr"] = m.cllr
    out.update({f"eer_{a}": g.eer for a, g in m.per_attack.items()})
    return out


def timed(fn, *args) -> tuple[float, float, dict[str, float]]:
    """(wall seconds, CPU seconds of this process, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cm", type=Path, default=SCORES / "eval" / "cm_B01_cqcc_gmm.txt")
    ap.add_argument("--asv", type=Path, default=SCORES / "eval" / "asv_official.txt")
    args = ap.parse_args()
    if not args.cm.is_file() or not args.asv.is_file():
        print(f"score files not found ({args.cm}, {args.asv}); nothing to measure")
        return 0
    ours(args.cm, args.asv)  # warm-up (imports, page cache)
    runs: dict[str, list[tuple[float, float]]] = {"base": [], "ours": [], "read": []}
    for _ in range(args.repeat):
        wb, cb, rb = timed(baseline, args.cm, args.asv)
        wo, co, ro = timed(ours, args.cm, args.asv)
        wr, cr, _ = timed(lambda: (read_cm_scores(args.cm), read_asv_scores(args.asv)))
        runs["base"].append((wb, cb))
        runs["ours"].append((wo, co))
        runs["read"].append((wr, cr))
    worst = max(abs(rb[k] - ro[k]) for k in rb)
    assert rb.keys() == ro.keys() and worst <= 1e-12, (worst, rb, ro)
    med = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in runs.items()}
    n = read_cm_scores(args.cm).scores.size
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"CM {args.cm.name} ({n} trials), ASV {args.asv.name}; median of {args.repeat} runs")
    print(f"{'':32s}{'wall s':>8}{'CPU s':>8}")
    rows = (
        ("baseline (official procedure)", "base"),
        ("ours: read + all metrics", "ours"),
        ("  of which reading both files", "read"),
    )
    for label, key in rows:
        print(f"{label:32s}{med[key][0]:8.3f}{med[key][1]:8.3f}")
    print(f"{'speed-up (baseline / ours)':32s}{med['base'][0] / med['ours'][0]:7.1f}x"
          f"{med['base'][1] / med['ours'][1]:7.1f}x")  # fmt: skip
    print(f"results agree: max |difference| {worst:.1e} over {len(rb)} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
