"""GMM baseline training time per million frames: our chunked EM against scikit-learn's.

Trains a diagonal-covariance GMM (``--components``, default 512 as the ASVspoof baselines) on
``--frames`` generated 60-dimensional frames (a mixture of 64 Gaussians, standardised like
the store's features) with :func:`trainer.gmm_baseline.fit_diagonal_gmm`, and, in the same
run and from the same initial parameters, with ``sklearn.mixture.GaussianMixture(
covariance_type="diag", max_iter=..., tol=0)``. Prints seconds per EM iteration per million
frames (medians of ``--repeat`` runs) and the ratio sklearn/ours, and the peak extra memory
each needs (``tracemalloc``: NumPy allocations). The official baselines run 10 iterations,
so the training time of one GMM per million frames is ten times the per-iteration figure.

Usage::

    python bench/bench_gmm.py [--frames 200000] [--components 512] [--iterations 3]
                              [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import os
import sys

_THREADS = "2"
for _i, _arg in enumerate(sys.argv):
    if _arg == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)  # before numpy loads

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from trainer.gmm_baseline import fit_diagonal_gmm  # noqa: E402


def frames(n: int, dim: int = 60, seed: int = 0) -> np.ndarray:
    """Standardised float32 frames from a 64-component mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim)) * 1.5
    which = rng.integers(0, 64, n)
    x = centres[which] + rng.standard_normal((n, dim)) * rng.uniform(0.3, 1.0, (64, dim))[which]
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


def ours(x: np.ndarray, k: int, iterations: int) -> None:
    fit_diagonal_gmm(x, k, max_iter=iterations, seed=0)


def sklearn_em(x: np.ndarray, k: int, iterations: int) -> None:
    from sklearn.mixture import GaussianMixture

    init = np.sort(np.random.default_rng(0).choice(x.shape[0], size=k, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(
            k,
            covariance_type="diag",
            max_iter=iterations,
            tol=0.0,
            weights_init=np.full(k, 1.0 / k),
            means_init=x[init].astype(np.float64),
            precisions_init=np.ones((k, x.shape[1])),
        ).fit(x)


def timed(run, *args) -> tuple[float, float]:
    """Wall seconds and peak traced memory (MiB) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    run(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--components", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=3, help="EM iterations per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (median)")
    parser.add_argument("--threads", type=int, default=int(_THREADS), help="BLAS threads")
    parser.add_argument("--skip-sklearn", action="store_true", help="time our EM only")
    args = parser.parse_args(argv)

    x = frames(args.frames)
    print(
        f"{args.frames} frames x 60 dims, {args.components} components, {args.iterations} EM "
        f"iterations per run, median of {args.repeat}, {args.threads} BLAS thread(s)"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    rows = [("ours (chunked, float32 products)", ours)]
    if not args.skip_sklearn:
        rows.append(("sklearn GaussianMixture(diag)", sklearn_em))
    per_iteration = {}
    for name, run in rows:
        run(x[: 4 * args.components], args.components, 1)  # warm-up
        results = [timed(run, x, args.components, args.iterations) for _ in range(args.repeat)]
        seconds = statistics.median(r[0] for r in results)
        peak = max(r[1] for r in results)
        per_million = seconds / args.iterations / (args.frames / 1e6)
        per_iteration[name] = per_million
        print(
            f"{name:<34} {per_million:7.2f} s / iteration / M frames   "
            f"{10 * per_million:7.1f} s / 10-iteration GMM / M frames   peak {peak:8.0f} MiB"
        )
    if len(per_iteration) == 2:
        a, b = per_iteration.values()
        print(f"ratio sklearn / ours: {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
