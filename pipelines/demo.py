"""``make demo``: the whole job end to end on the synthetic demo corpus.

Stages (each printed with the exact command a user would type)::

    python -m pipelines.demo_corpus --out demo_out/corpus --seed 0          # corpus (reused)
    featstore build --manifest demo_out/corpus/ASVspoof2019_LA_cm_protocols \\
        --audio-root demo_out/corpus --out demo_out/store.zarr --features ...
    trainer fit demo_out/store.zarr --model M --out demo_out/runs/M --epochs N ...
    trainer score --run demo_out/runs/M --split eval
    trainer metrics demo_out/runs/M/scores_eval.txt --json ... --det demo_out/det_eval.png

then a training-curve PNG (``trainer.plots.plot_training_curves``) and a summary. The corpus
and the store are caches (reused when their configuration is unchanged); the model is
retrained on every run. The commands run as ``python -m featstore`` / ``python -m trainer``
with this interpreter, so the demo needs no activated environment. A stage that fails stops
the demo with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import featstore
from pipelines.demo_corpus import EVAL_ATTACKS, PROTOCOL_DIR, TRAIN_ATTACKS, CorpusConfig
from trainer.plots import plot_training_curves

DEFAULT_MODEL = "lcnn"
"""The model the demo trains (see the README's "Demo" section for why and how long)."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Parameters
    ----------
    out : Path
        Output directory (corpus, store, run, plots).
    corpus : CorpusConfig
        Synthetic corpus sizes and seed.
    model : str
        Model to train (its features are the ones extracted).
    epochs, batch_size, crop_frames : int
        Training length, crops per step and crop length (frames).
    seed : int
        Training seed.
    jobs : int
        Processes for corpus generation and feature extraction.
    workers : int
        DataLoader workers for training.
    threads : int or None
        torch threads for training (None: torch's default).
    extra_fit_args : tuple of str
        More ``trainer fit`` options, passed through.
    """

    out: Path
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: str = DEFAULT_MODEL
    epochs: int = 15
    batch_size: int = 16
    crop_frames: int = 200
    seed: int = 0
    jobs: int = 2
    workers: int = 1
    threads: int | None = None
    extra_fit_args: tuple[str, ...] = ()

    @property
    def corpus_dir(self) -> Path:
        return self.out / "corpus"

    @property
    def store(self) -> Path:
        return self.out / "store.zarr"

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.model

    @property
    def scores(self) -> Path:
        return self.run_dir / "scores_eval.txt"


class StageFailed(Exception):
    """A stage's command exited with an error."""


def _display(argv: Sequence[str]) -> str:
    """How a user would type the command (``python -m featstore`` -> ``featstore``)."""
    words = list(argv)
    if len(words) >= 3 and words[0] == sys.executable and words[1] == "-m":
        if words[2] in ("featstore", "trainer"):
            words = words[2:]
        else:
            words = ["python", *words[1:]]
    return shlex.join(str(w) for w in words)


def run_command(argv: Sequence[str], *, cwd: Path | None = None) -> float:
    """Print and run one command, streaming its output; return the seconds it took.

    Raises
    ------
    StageFailed
        The command exited non-zero.
    """
    print(f"\n$ {_display(argv)}", flush=True)
    start = time.perf_counter()
    rc = subprocess.call([str(a) for a in argv], cwd=cwd)
    seconds = time.perf_counter() - start
    if rc != 0:
        raise StageFailed(f"`{_display(argv)}` exited with code {rc}")
    return seconds


def model_features(model: str) -> tuple[str, ...]:
    """The store features ``model`` reads (from the trainer's model registry).

    Raises
    ------
    StageFailed
        The registry does not know ``model``.
    """
    from trainer.models import MODELS  # imports torch, which the other stages do not need

    if model not in MODELS:
        raise StageFailed(f"model {model!r} is not registered (have: {', '.join(MODELS)})")
    return tuple(MODELS[model].features)


def _corpus_args(cfg: DemoConfig) -> list[str]:
    c = cfg.corpus
    return [
        sys.executable,
        "-m",
        "pipelines.demo_corpus",
        "--out",
        str(cfg.corpus_dir),
        "--seed",
        str(c.seed),
        "--n-train",
        str(c.n_train),
        "--n-dev",
        str(c.n_dev),
        "--n-eval",
        str(c.n_eval),
        "--bonafide-fraction",
        str(c.bonafide_fraction),
        "--min-duration",
        str(c.min_duration),
        "--max-duration",
        str(c.max_duration),
        "--jobs",
        str(cfg.jobs),
    ]


def stage_corpus(cfg: DemoConfig) -> float:
    """Generate (or reuse) the synthetic corpus."""
    return run_command(_corpus_args(cfg))


def stage_features(cfg: DemoConfig) -> float:
    """``featstore build`` of the model's features (resumes/reuses an up-to-date store)."""
    features = ",".join(model_features(cfg.model))
    argv = [
        sys.executable,
        "-m",
        "featstore",
        "build",
        "--manifest",
        cfg.corpus_dir / PROTOCOL_DIR,
        "--audio-root",
        cfg.corpus_dir,
        "--out",
        cfg.store,
        "--features",
        features,
        "--jobs",
        cfg.jobs,
        "--quiet",
    ]
    if cfg.store.exists():
        if not _store_matches(cfg.store, model_features(cfg.model), cfg.corpus_dir):
            argv.append("--overwrite")
    return run_command(argv)


def _store_matches(store: Path, features: Sequence[str], corpus_dir: Path) -> bool:
    """Whether an existing store was built from this corpus with these features.

    A store older than the corpus' ``corpus.json`` (regenerated corpus) or holding other
    features is rebuilt.
    """
    stamp = corpus_dir / "corpus.json"
    if stamp.exists() and store.stat().st_mtime < stamp.stat().st_mtime:
        return False
    try:
        st = featstore.open_store(str(store), mode="r")
        try:
            return sorted(st.features) == sorted(features)
        finally:
            st.close()
    except Exception:  # an unreadable or half-written store is rebuilt
        return False


def stage_fit(cfg: DemoConfig) -> float:
    """``trainer fit`` into a fresh run directory."""
    if cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)
    argv = [
        sys.executable,
        "-m",
        "trainer",
        "fit",
        cfg.store,
        "--model",
        cfg.model,
        "--out",
        cfg.run_dir,
        "--epochs",
        cfg.epochs,
        "--batch-size",
        cfg.batch_size,
        "--crop-frames",
        cfg.crop_frames,
        "--seed",
        cfg.seed,
        "--workers",
        cfg.workers,
    ]
    if cfg.threads:
        argv += ["--threads", cfg.threads]
    argv += list(cfg.extra_fit_args)
    return run_command(argv)


def stage_score(cfg: DemoConfig) -> float:
    """``trainer score --split eval`` -> ``<run>/scores_eval.txt``."""
    argv = [
        sys.executable,
        "-m",
        "trainer",
        "score",
        "--run",
        cfg.run_dir,
        "--split",
        "eval",
    ]
    return run_command(argv)


def stage_metrics(cfg: DemoConfig) -> float:
    """``trainer metrics`` on the eval scores: EER table, JSON and a DET plot."""
    argv = [
        sys.executable,
        "-m",
        "trainer",
        "metrics",
        cfg.scores,
        "--json",
        cfg.out / "metrics_eval.json",
        "--det",
        cfg.out / "det_eval.png",
    ]
    return run_command(argv)


def stage_curves(cfg: DemoConfig) -> float:
    """Training loss and dev EER per epoch -> ``training_curves.png``."""
    start = time.perf_counter()
    path = plot_training_curves(cfg.run_dir / "metrics.csv", cfg.out / "training_curves.png")
    print(f"\nwrote {path}")
    return time.perf_counter() - start


STAGES = (
    ("corpus", stage_corpus),
    ("features", stage_features),
    ("fit", stage_fit),
    ("score", stage_score),
    ("metrics", stage_metrics),
    ("curves", stage_curves),
)
"""The demo's stages, in order."""


def summary(cfg: DemoConfig, timings: dict[str, float]) -> str:
    """The closing summary: timings, and the eval EERs when the metrics exist."""
    lines = ["", "=" * 64, "demo summary"]
    for name, seconds in timings.items():
        lines.append(f"  {name:9s} {seconds:7.1f} s")
    lines.append(f"  {'total':9s} {sum(timings.values()):7.1f} s")
    report = cfg.out / "metrics_eval.json"
    if report.is_file():
        data = json.loads(report.read_text())
        result = data["results"][0] if "results" in data else data
        lines.append(
            f"eval EER ({cfg.model}, attacks {', '.join(EVAL_ATTACKS)} unseen in training "
            f"on {', '.join(TRAIN_ATTACKS)}): {100 * result['eer']:.2f} %  (chance: 50 %)"
        )
        for attack, row in sorted(result.get("per_attack", {}).items()):
            lines.append(f"  {attack}: {100 * row['eer']:.2f} %")
    for name in ("det_eval.png", "training_curves.png", "metrics_eval.json"):
        if (cfg.out / name).is_file():
            lines.append(f"  {cfg.out / name}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig, stop_after: str | None = None) -> int:
    """Run the stages in order; return the exit code.

    Parameters
    ----------
    cfg : DemoConfig
        What to run.
    stop_after : str, optional
        Name of the last stage to run (see :data:`STAGES`).

    Returns
    -------
    int
        0 when every stage succeeded, 1 when a stage failed (the later ones do not run).
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for name, stage in STAGES:
        print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
        try:
            timings[name] = stage(cfg)
        except StageFailed as exc:
            print(f"stage '{name}' failed: {exc}", file=sys.stderr)
            print(summary(cfg, timings))
            return 1
        if name == stop_after:
            break
    print(summary(cfg, timings))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.demo --out demo_out [options]``."""
    d = DemoConfig(out=Path("demo_out"))
    c = d.corpus
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo",
        description="Corpus -> features -> training -> scores -> EER on the demo corpus.",
    )
    parser.add_argument("--out", default="demo_out", help="output directory [demo_out]")
    parser.add_argument("--model", default=d.model, help=f"model to train [{d.model}]")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--crop-frames", type=int, default=d.crop_frames)
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed")
    parser.add_argument("--corpus-seed", type=int, default=c.seed)
    parser.add_argument("--n-train", type=int, default=c.n_train)
    parser.add_argument("--n-dev", type=int, default=c.n_dev)
    parser.add_argument("--n-eval", type=int, default=c.n_eval)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--stop-after", choices=[name for name, _ in STAGES], help="last stage to run"
    )
    args, extra = parser.parse_known_args(argv)
    cfg = DemoConfig(
        out=Path(args.out),
        corpus=CorpusConfig(
            seed=args.corpus_seed, n_train=args.n_train, n_dev=args.n_dev, n_eval=args.n_eval
        ),
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop_frames=args.crop_frames,
        seed=args.seed,
        jobs=args.jobs,
        workers=args.workers,
        threads=args.threads,
        extra_fit_args=tuple(extra),
    )
    return run_demo(cfg, stop_after=args.stop_after)


if __name__ == "__main__":
    sys.exit(main())
