"""Back-end fit and scoring times at the ASVspoof 2019 LA sizes (generated embeddings).

25,380 training embeddings (2,580 bona fide, 22,800 spoof in six attacks, as LA train) and
71,237 evaluation embeddings (7,355 bona fide, 63,882 spoof in 13 attacks, as LA eval), of 960
dimensions (GRCNN's embedding), float32, drawn from Gaussians: one random mean per class, a
shared random within-class covariance of low rank plus noise. For each kind (``plda``,
``gmm``, ``logreg``, ``cosine``) it times :func:`trainer.backends.fit_backend` and
``model.score`` on the evaluation set (medians of ``--repeat`` runs), and prints them beside a
*baseline* measured in the same run: the training set's 960 x 960 scatter matrix (the least
work an LDA or full-covariance back-end does), so that the ratios are comparable across
machines. ``--threads 1`` limits BLAS to one thread: on a machine shared with other jobs,
OpenBLAS threads that wait for busy cores make scikit-learn's GMM 3-4x slower. Target
(issue 14): fit + scoring under 30 s on 2 cores for every kind. The load average is printed:
other jobs on the machine slow the figures.

Usage::

    python bench/bench_backend.py [--repeat N] [--kinds plda,gmm,...] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

N_TRAIN = (2580, [3800] * 6)  # bona fide, per attack
N_EVAL = (7355, [4914] * 13)  # 63,882 spoof in 13 attacks
DIM = 960
TARGET_S = 30.0


def generate(seed: int = 0):
    """Train and eval EmbeddingSets of the LA sizes (see the module docstring)."""
    from trainer.embeddings import EmbeddingSet

    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(32, DIM)).astype(np.float32)

    bona_mean = rng.normal(scale=0.1, size=DIM).astype(np.float32)
    attack_means = rng.normal(scale=0.1, size=(6, DIM)).astype(np.float32)

    def draw(n_bona: int, per_attack: list[int], first_attack: int, prefix: str):
        # eval attacks A07.. are perturbed copies of the six training attacks (partly unseen)
        counts = [n_bona, *per_attack]
        names = ["-", *[f"A{first_attack + k:02d}" for k in range(len(per_attack))]]
        means = [bona_mean] + [
            attack_means[k % 6] + rng.normal(scale=0.03, size=DIM).astype(np.float32)
            for k in range(len(per_attack))
        ]
        rows, labels, attacks = [], [], []
        for k, n in enumerate(counts):
            low = rng.normal(size=(n, basis.shape[0])).astype(np.float32) @ basis
            rows.append(means[k] + 0.3 * low + rng.normal(size=(n, DIM)).astype(np.float32))
            labels += [1 if k == 0 else 0] * n
            attacks += [names[k]] * n
        x = np.concatenate(rows)
        ids = [f"{prefix}_{i:07d}" for i in range(x.shape[0])]
        meta = {"model": "grcnn", "run": "bench", "dim": DIM}
        return EmbeddingSet(x, ids, np.array(labels), np.array(attacks), meta)

    train = draw(N_TRAIN[0], N_TRAIN[1], 1, "LA_T")
    evaluation = draw(N_EVAL[0], N_EVAL[1], 7, "LA_E")
    return train, evaluation


def baseline(train) -> float:
    t0 = time.perf_counter()
    x = train.vectors.astype(np.float64)
    x -= x.mean(axis=0)
    _ = x.T @ x
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", default="plda,gmm,logreg,cosine")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads [default: all]")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    from trainer.backends import fit_backend
    from trainer.metrics import compute_eer

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    t0 = time.perf_counter()
    train, evaluation = generate()
    print(
        f"generated {len(train)} train + {len(evaluation)} eval embeddings of {DIM} dims "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    base = statistics.median(baseline(train) for _ in range(args.repeat))
    print(f"baseline (960x960 scatter matrix of the training set): {base:.3f} s\n")
    print(
        f"{'kind':8} {'fit s':>8} {'score s':>8} {'total s':>8} {'x base':>7} {'EER %':>7}  target"
    )
    worst = 0.0
    for kind in args.kinds.split(","):
        fits, scores = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            trained = fit_backend(train, kind=kind)
            fits.append(time.perf_counter() - t)
            t = time.perf_counter()
            s = trained.model.score(evaluation.vectors)
            scores.append(time.perf_counter() - t)
        fit_s, score_s = statistics.median(fits), statistics.median(scores)
        total = fit_s + score_s
        worst = max(worst, total)
        eer = compute_eer(s[evaluation.label == 1], s[evaluation.label == 0])[0]
        ok = "ok" if total < TARGET_S else f"MISSED ({TARGET_S:.0f} s)"
        print(
            f"{kind:8} {fit_s:8.2f} {score_s:8.2f} {total:8.2f} {total / base:7.1f} "
            f"{100 * eer:7.2f}  {ok}"
        )
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
