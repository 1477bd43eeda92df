"""Cost of each augmentation per second of audio, against a feature extraction in the same run.

For every registered augmentation (the RawBoost aliases ``rawboost-1..3`` skipped), each codec
separately, and ``noise``/``reverb`` from a directory of files (written to a temporary folder:
noise at 44.1 kHz, so the resampling path is timed), times ``f(signal, rng)`` over the 25 real
ASVspoof 2019 LA utterances of ``../shared/data/asvspoof2019_la_mini/flac`` (or generated
speech-like audio when they are absent), interleaved with the ``mgd`` feature kernel on the
same audio: an augmented view costs its augmentation plus one extraction, so the ratio
augmentation/mgd says how much a view adds. Prints the real-time factor (seconds of audio per
second of wall time, one process, one thread) and that ratio. Medians of ``--repeat`` runs after
one warm-up run (Numba compilation and the codec delay probes excluded).

Usage::

    python bench/bench_augment.py [--repeat N] [--only NAME ...] [--data DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single process, single thread (before numpy loads)

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import soundfile as sf  # noqa: E402
from bench_features import bench, load_corpus  # noqa: E402  (same folder)

from featstore import FEATURES  # noqa: E402
from featstore.augment import AUGMENTATIONS, get_augmentation  # noqa: E402
from featstore.augment.codec import available_codecs  # noqa: E402
from featstore.signal import SAMPLE_RATE  # noqa: E402

ALIASES = ("rawboost-1", "rawboost-2", "rawboost-3")


def rows(tmp: Path) -> list[tuple[str, str, dict]]:
    """(label, augmentation, parameters) of every timed row."""
    noise_dir = tmp / "noise"
    rir_dir = tmp / "rir"
    noise_dir.mkdir()
    rir_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(noise_dir / f"n{i}.wav", 0.1 * rng.standard_normal(44100 * 20), 44100)
        h = rng.standard_normal(8000) * np.exp(-np.arange(8000) / 1500)
        h[0] = 5.0
        sf.write(rir_dir / f"r{i}.wav", h / 6, SAMPLE_RATE)
    out = [(name, name, {}) for name in AUGMENTATIONS if name not in ALIASES]
    out += [(f"codec={c}", "codec", {"codecs": c}) for c in available_codecs()]
    out.append(("noise(dir,44.1k)", "noise", {"noise_dir": str(noise_dir)}))
    out.append(("reverb(dir)", "reverb", {"rir_dir": str(rir_dir)}))
    return out


def augment_run(signals: list[np.ndarray], name: str, params: dict) -> Callable[[], None]:
    spec = get_augmentation(name)
    spec.resolve(**params)  # checks (and indexes directories) outside the timing

    def run() -> None:
        rng = np.random.default_rng(0)  # the same draws in every run
        for x in signals:
            spec(x, rng, **params)

    return run


def feature_run(signals: list[np.ndarray], feature: str) -> Callable[[], None]:
    spec = FEATURES[feature]
    function, params = spec.function, spec.resolve()

    def run() -> None:
        for x in signals:
            function(x, **params)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument("--only", nargs="+", default=None, help="row labels to run")
    parser.add_argument("--data", type=Path, default=None, help="directory of .flac/.wav files")
    parser.add_argument("--feature", default="mgd", help="baseline feature (default: mgd)")
    args = parser.parse_args(argv)

    signals, source = load_corpus(args.data)
    seconds = sum(x.size for x in signals) / SAMPLE_RATE
    print(f"audio: {source}, {seconds:.2f} s; repeat={args.repeat} (median), 1 thread")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"libsndfile {sf.__libsndfile_version__}; codecs: {', '.join(available_codecs())}"
    )
    header = f"{'augmentation':<18} {'aug xRT':>9} {args.feature + ' xRT':>9} {'aug/feat':>9}"
    print(header)
    print("-" * len(header))
    baseline = feature_run(signals, args.feature)
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, params in rows(Path(tmp)):
            if args.only and label not in args.only:
                continue
            t_aug, t_feat = bench(augment_run(signals, name, params), baseline, args.repeat)
            print(
                f"{label:<18} {seconds / t_aug:>8.0f}x {seconds / t_feat:>8.0f}x "
                f"{t_aug / t_feat:>9.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
