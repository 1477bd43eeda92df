"""Feature-extraction throughput against a plain STFT floor measured in the same run.

For every registered feature (``featstore.FEATURES``), times the kernel on the 25 real
ASVspoof 2019 LA utterances of ``../shared/data/asvspoof2019_la_mini/flac`` (or generated
speech-like audio when they are absent) and, in the same run and interleaved with it, a plain
``scipy.fft.rfft`` power STFT of the same frames (same ``win_length``/``hop_length``/``n_fft``):
the floor no front end on those frames can beat. ``cqcc`` has no ``n_fft`` (its constant-Q
transform takes one DFT of the whole utterance): its floor is the STFT of its frames
zero-padded to 512 points, the FFT size of ``lfcc``. Prints the real-time factor of both (seconds
of audio per second of wall time, single process, one thread) and the ratio feature/floor
(time). Medians of ``--repeat`` runs after one warm-up call, so Numba compilation is excluded.
Audio is loaded once, up front, and not timed.

Usage::

    python bench/bench_features.py [--repeat N] [--features NAME ...] [--data DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single process, single thread (before numpy loads)

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.signal  # noqa: E402

from featstore import FEATURES  # noqa: E402
from featstore.audio import load_audio  # noqa: E402
from featstore.features.framing import frame_signal  # noqa: E402
from featstore.signal import SAMPLE_RATE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = (
    Path("/work/shared/data/asvspoof2019_la_mini/flac"),
    REPO.parent / "shared" / "data" / "asvspoof2019_la_mini" / "flac",
)
TARGETS = {
    "mgd": ">= 2000x RT, <= 3x floor",
    "mgd_cep": "<= 3x floor",
    "logmel": "<= 2x floor",
    "fbank": "<= 2x floor",
    "cqcc": ">= 50x RT",
}


def load_corpus(data: Path | None) -> tuple[list[np.ndarray], str]:
    """The real utterances (float64, 16 kHz) or, when absent, generated speech-like audio."""
    candidates = (data,) if data is not None else DATA_CANDIDATES
    for directory in candidates:
        if directory is not None and directory.is_dir():
            files = sorted(directory.glob("*.flac")) + sorted(directory.glob("*.wav"))
            if files:
                return [load_audio(f).signal for f in files], f"{len(files)} files in {directory}"
    return synthetic_corpus(), "25 generated speech-like utterances (real data absent)"


def synthetic_corpus(n: int = 25, seed: int = 0) -> list[np.ndarray]:
    """Voiced pulse trains through moving formant resonators, with noise and pauses."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.uniform(2.0, 4.5) * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        f0 = rng.uniform(90, 220) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        source = (np.sin(phase) > 0.95).astype(np.float64) + 0.05 * rng.standard_normal(length)
        x = source
        for formant in (rng.uniform(400, 900), rng.uniform(1000, 2200), rng.uniform(2400, 3400)):
            r = 0.97
            theta = 2 * np.pi * formant / SAMPLE_RATE
            x = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)
        envelope = (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > -0.3).astype(np.float64)
        x = x * envelope + 1e-3 * rng.standard_normal(length)
        out.append(0.5 * x / np.max(np.abs(x)))
    return out


def floor_stft(signals: list[np.ndarray], params: dict) -> Callable[[], None]:
    """A plain windowed ``scipy.fft.rfft`` power STFT of the feature's frames."""
    win, hop, n_fft = int(params["win_length"]), int(params["hop_length"]), _n_fft(params)
    window = scipy.signal.get_window(str(params.get("window", "hamming")), win)

    def run() -> None:
        for x in signals:
            frames = frame_signal(x, win, hop)
            np.abs(scipy.fft.rfft(frames * window, n=n_fft, axis=-1, workers=1)) ** 2

    return run


def _n_fft(params: dict) -> int:
    return int(params.get("n_fft", max(512, int(params["win_length"]))))


def feature_run(signals: list[np.ndarray], function: Callable, params: dict) -> Callable:
    def run() -> None:
        for x in signals:
            function(x, **params)

    return run


def bench(run_a: Callable, run_b: Callable, repeat: int) -> tuple[float, float]:
    """Median wall times of two callables, interleaved, after one warm-up call each."""
    run_a()
    run_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        run_a()
        times_a.append(time.perf_counter() - start)
        start = time.perf_counter()
        run_b()
        times_b.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per row (median)")
    parser.add_argument(
        "--features", nargs="+", default=None, help="feature names (default: all registered)"
    )
    parser.add_argument("--data", type=Path, default=None, help="directory of .flac/.wav files")
    args = parser.parse_args(argv)

    names = args.features or list(FEATURES)
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        print(f"error: unknown feature(s) {', '.join(unknown)}; available: {', '.join(FEATURES)}")
        return 2

    signals, source = load_corpus(args.data)
    seconds = sum(x.size for x in signals) / SAMPLE_RATE
    print(f"audio: {source}, {seconds:.2f} s; repeat={args.repeat} (median), 1 thread")
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    header = (
        f"{'feature':<9} {'bins':>5} {'win/hop/nfft':>14} {'feature xRT':>12} "
        f"{'floor xRT':>10} {'ratio':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        spec = FEATURES[name]
        params = spec.resolve()
        geometry = f"{params['win_length']}/{params['hop_length']}/{_n_fft(params)}"
        try:
            function = spec.function
        except Exception as exc:  # an absent or broken kernel is a row, not a crash
            print(f"{name:<9} {'-':>5} {geometry:>14}  unavailable ({type(exc).__name__}: {exc})")
            continue
        t_feature, t_floor = bench(
            feature_run(signals, function, params), floor_stft(signals, params), args.repeat
        )
        print(
            f"{name:<9} {spec.n_bins(params):>5} {geometry:>14} {seconds / t_feature:>11.0f}x "
            f"{seconds / t_floor:>9.0f}x {t_feature / t_floor:>6.2f}  {TARGETS.get(name, '')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
