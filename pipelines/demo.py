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
from pipelines.demo_corpus import (
    DEMO_EVAL_CHANNEL,
    EVAL_ATTACKS,
    PROTOCOL_DIR,
    TRAIN_ATTACKS,
    CorpusConfig,
)
from trainer.plots import plot_training_curves

DEFAULT_MODEL = "lcnn"
"""The model the demo trains (see the README's "Demo" section for why and how long)."""

DEFAULT_AUGMENT = "rawboost-3|codec"
"""Augmented views of the demo store (RawBoost-3 or a codec round trip per copy)."""

GMM_COMPONENTS = 16
"""Components per class of the demo's LFCC-GMM baseline (the official one has 512)."""


@dataclass(frozen=True)
class DemoSystem:
    """One trained system of the demo.

    Parameters
    ----------
    name : str
        Its run directory under ``runs/`` and its label in the tables.
    model : str
        The ``trainer fit --model``.
    fit_args : tuple of str
        Its own ``trainer fit`` options (views, components).
    neural : bool
        Whether the demo's epochs, batch, crops, workers and threads apply.
    """

    name: str
    model: str
    fit_args: tuple[str, ...] = ()
    neural: bool = True


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Parameters
    ----------
    out : Path
        Output directory (corpus, store, runs, plots).
    corpus : CorpusConfig
        Synthetic corpus sizes, seed and eval-only channel.
    model : str
        Neural model to train, once on the clean view and once on all views (its features
        are the ones extracted).
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
        More ``trainer fit`` options for the neural models, passed through.
    augment : str
        ``featstore build --augment`` recipe of the train split's augmented views; empty:
        no views, and no augmented system.
    views : int
        Augmented copies per training utterance.
    gmm_components : int
        Components per class of the LFCC-GMM baseline; 0: no baseline (and no fusion).
    """

    out: Path
    corpus: CorpusConfig = field(
        default_factory=lambda: CorpusConfig(eval_channel=DEMO_EVAL_CHANNEL)
    )
    model: str = DEFAULT_MODEL
    epochs: int = 6
    batch_size: int = 16
    crop_frames: int = 160
    seed: int = 0
    jobs: int = 2
    workers: int = 1
    threads: int | None = None
    extra_fit_args: tuple[str, ...] = ()
    augment: str = DEFAULT_AUGMENT
    views: int = 1
    gmm_components: int = GMM_COMPONENTS

    @property
    def corpus_dir(self) -> Path:
        return self.out / "corpus"

    @property
    def store(self) -> Path:
        return self.out / "store.zarr"

    @property
    def systems(self) -> tuple[DemoSystem, ...]:
        """The systems trained, clean model first; the last neural one is the main one."""
        out = [DemoSystem(f"{self.model}-clean", self.model, ("--views", "clean"))]
        if self.augment:
            out.append(DemoSystem(f"{self.model}-aug", self.model, ("--views", "all")))
        if self.gmm_components:
            out.append(
                DemoSystem(
                    "lfcc-gmm", "lfcc-gmm", ("--components", str(self.gmm_components)), False
                )
            )
        return tuple(out)

    @property
    def main_system(self) -> DemoSystem:
        """The system of ``metrics_eval.json``, the DET and the training curves."""
        return [s for s in self.systems if s.neural][-1]

    @property
    def fused_systems(self) -> tuple[DemoSystem, ...]:
        """What the fusion combines: the main neural system and the GMM baseline."""
        gmm = [s for s in self.systems if not s.neural]
        return (self.main_system, *gmm) if gmm else ()

    def run_dir(self, system: DemoSystem | None = None) -> Path:
        """``runs/<name>`` of ``system`` (default: the main one)."""
        return self.out / "runs" / (system or self.main_system).name

    def scores(self, system: DemoSystem | None = None, split: str = "eval") -> Path:
        """The ``trainer score`` file of ``system`` on ``split``."""
        return self.run_dir(system) / f"scores_{split}.txt"

    def calibrated(self, system: DemoSystem) -> Path:
        """Eval scores of ``system`` calibrated on dev (``<file>.json``: the metrics)."""
        return self.out / "calibrated" / f"{system.name}_eval.txt"

    @property
    def fused(self) -> Path:
        """Eval scores of the fusion (``<file>.json``: the metrics)."""
        return self.out / "calibrated" / "fused_eval.txt"


class StageFailed(Exception):
    """A stage's command exited with an error."""


def python_m(module: str, *args: object) -> list[object]:
    """``python -m MODULE ARGS...`` with this interpreter (the demo needs no activated venv)."""
    return [sys.executable, "-m", module, *args]


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


def _corpus_args(cfg: DemoConfig) -> list[object]:
    c = cfg.corpus
    argv = python_m(
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
    )
    if c.eval_channel:
        argv += ["--eval-channel", c.eval_channel]
    return [*argv, "--jobs", str(cfg.jobs)]


def stage_corpus(cfg: DemoConfig) -> float:
    """Generate (or reuse) the synthetic corpus."""
    return run_command(_corpus_args(cfg))


def _build_args(cfg: DemoConfig) -> list[object]:
    argv = python_m(
        "featstore",
        "build",
        "--manifest",
        str(cfg.corpus_dir / PROTOCOL_DIR),
        "--audio-root",
        str(cfg.corpus_dir),
        "--out",
        str(cfg.store),
        "--features",
        ",".join(model_features(cfg.model)),
    )
    if cfg.augment:
        argv += ["--augment", cfg.augment, "--views", str(cfg.views)]
    return [*argv, "--jobs", str(cfg.jobs), "--quiet"]


def _store_stamp(cfg: DemoConfig) -> Path:
    return cfg.out / "store.build.json"


def stage_features(cfg: DemoConfig) -> float:
    """``featstore build`` of the model's features and the train split's augmented views.

    An existing store is reused (the build resumes or finds it complete) when it was built
    from this corpus with the same command; otherwise it is rebuilt with ``--overwrite``.
    """
    argv = _build_args(cfg)
    stamp = _store_stamp(cfg)
    if cfg.store.exists():
        if not _store_matches(cfg.store, model_features(cfg.model), cfg.corpus_dir) or (
            _read_json(stamp) != argv[3:]
        ):
            argv.append("--overwrite")
    stamp.unlink(missing_ok=True)
    seconds = run_command(argv)
    stamp.write_text(json.dumps(_build_args(cfg)[3:]) + "\n")
    return seconds


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def _fit_args(cfg: DemoConfig, system: DemoSystem) -> list[object]:
    argv: list[object] = python_m(
        "trainer",
        "fit",
        cfg.store,
        "--model",
        system.model,
        "--out",
        cfg.run_dir(system),
        "--seed",
        cfg.seed,
        *system.fit_args,
    )
    if system.neural:
        argv += [
            "--epochs",
            cfg.epochs,
            "--batch-size",
            cfg.batch_size,
            "--crop-frames",
            cfg.crop_frames,
            "--workers",
            cfg.workers,
        ]
        if cfg.threads:
            argv += ["--threads", cfg.threads]
        argv += list(cfg.extra_fit_args)
    return argv


def stage_fit(cfg: DemoConfig) -> float:
    """``trainer fit`` of every system (clean, augmented, GMM) into fresh run directories."""
    total = 0.0
    for system in cfg.systems:
        if cfg.run_dir(system).exists():
            shutil.rmtree(cfg.run_dir(system))
        seconds = run_command(_fit_args(cfg, system))
        print(f"fit {system.name}: {seconds:.1f} s", flush=True)
        total += seconds
    return total


def stage_score(cfg: DemoConfig) -> float:
    """``trainer score`` of every system on dev (for calibration) and eval."""
    total = 0.0
    for system in cfg.systems:
        for split in ("dev", "eval"):
            argv = python_m(
                "trainer",
                "score",
                "--run",
                cfg.run_dir(system),
                "--split",
                split,
            )
            total += run_command(argv)
    return total


def metrics_json(cfg: DemoConfig, system: DemoSystem) -> Path:
    """``trainer metrics --json`` of ``system`` on eval (the main one: ``metrics_eval.json``)."""
    if system == cfg.main_system:
        return cfg.out / "metrics_eval.json"
    return cfg.out / f"metrics_eval_{system.name}.json"


def stage_metrics(cfg: DemoConfig) -> float:
    """``trainer metrics`` on each system's eval scores (the main one also gets a DET plot)."""
    total = 0.0
    for system in cfg.systems:
        argv = python_m(
            "trainer",
            "metrics",
            cfg.scores(system),
            "--json",
            metrics_json(cfg, system),
        )
        if system == cfg.main_system:
            argv += ["--det", cfg.out / "det_eval.png"]
        total += run_command(argv)
    return total


def stage_fusion(cfg: DemoConfig) -> float:
    """``trainer calibrate`` of each system on dev, then ``trainer fuse`` (main + GMM)."""
    (cfg.out / "calibrated").mkdir(parents=True, exist_ok=True)
    total = 0.0
    for system in cfg.systems:
        argv = python_m(
            "trainer",
            "calibrate",
            cfg.scores(system, "dev"),
            "--apply",
            cfg.scores(system),
            "--out",
            cfg.calibrated(system),
        )
        total += run_command(argv)
    fused = cfg.fused_systems
    if len(fused) >= 2:
        argv = python_m(
            "trainer",
            "fuse",
            *(cfg.scores(s, "dev") for s in fused),
            "--apply",
            *(cfg.scores(s) for s in fused),
            "--out",
            cfg.fused,
        )
        total += run_command(argv)
    return total


def stage_curves(cfg: DemoConfig) -> float:
    """Training loss and dev EER per epoch of the main system -> ``training_curves.png``."""
    start = time.perf_counter()
    path = plot_training_curves(cfg.run_dir() / "metrics.csv", cfg.out / "training_curves.png")
    print(f"\nwrote {path}")
    return time.perf_counter() - start


STAGES = (
    ("corpus", stage_corpus),
    ("features", stage_features),
    ("fit", stage_fit),
    ("score", stage_score),
    ("metrics", stage_metrics),
    ("fusion", stage_fusion),
    ("curves", stage_curves),
)
"""The demo's stages, in order."""


def _pooled(record: dict) -> dict:
    return record["results"][0] if "results" in record else record


def attack_table(cfg: DemoConfig) -> list[str]:
    """Eval EER per attack (rows) and system (columns), from the ``trainer metrics`` JSONs."""
    results = {}
    for system in cfg.systems:
        record = _read_json(metrics_json(cfg, system))
        if isinstance(record, dict):
            results[system.name] = _pooled(record)
    if not results:
        return []
    names = list(results)
    attacks = sorted({a for r in results.values() for a in r.get("per_attack", {})})
    lines = [
        f"eval EER (%), attacks {', '.join(EVAL_ATTACKS)} unseen in training on "
        f"{', '.join(TRAIN_ATTACKS)}"
        + (
            f"; eval channel unseen in training: {cfg.corpus.eval_channel}"
            if cfg.corpus.eval_channel
            else ""
        ),
        "  " + f"{'attack':8s}" + "".join(f"{n:>14s}" for n in names),
    ]
    for attack in attacks:
        cells = []
        for n in names:
            row = results[n].get("per_attack", {}).get(attack)
            cells.append(f"{100 * row['eer']:14.2f}" if row else f"{'-':>14s}")
        lines.append(f"  {attack:8s}" + "".join(cells))
    lines.append(f"  {'pooled':8s}" + "".join(f"{100 * results[n]['eer']:14.2f}" for n in names))
    return lines


def system_table(cfg: DemoConfig) -> list[str]:
    """EER, minDCF, actDCF and Cllr on eval of each system, raw and calibrated on dev, and of
    the fusion (from the ``trainer calibrate`` / ``trainer fuse`` sidecars)."""
    rows: list[tuple[str, dict]] = []
    for system in cfg.systems:
        record = _read_json(Path(str(cfg.calibrated(system)) + ".json"))
        if isinstance(record, dict) and record.get("metrics", {}).get("eval"):
            rows.append((system.name, record["metrics"]["eval"]["before"][0]))
            rows.append((f"{system.name} (cal)", record["metrics"]["eval"]["after"]))
    record = _read_json(Path(str(cfg.fused) + ".json"))
    if isinstance(record, dict) and record.get("metrics", {}).get("eval"):
        label = "fused " + "+".join(s.name for s in cfg.fused_systems)
        rows.append((label, record["metrics"]["eval"]["after"]))
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)
    lines = [
        "eval, calibrated on dev (ASVspoof 5 operating point)",
        f"  {'system':{width}s}  EER (%)  minDCF  actDCF    Cllr",
    ]
    for name, m in rows:
        lines.append(
            f"  {name:{width}s} {100 * m['eer']:8.2f} {m['mindcf']:7.4f} {m['actdcf']:7.4f}"
            f" {m['cllr']:7.4f}"
        )
    return lines


def summary(cfg: DemoConfig, timings: dict[str, float]) -> str:
    """The closing summary: timings, then the EER table per attack and the system table."""
    lines = ["", "=" * 64, "demo summary"]
    for name, seconds in timings.items():
        lines.append(f"  {name:9s} {seconds:7.1f} s")
    lines.append(f"  {'total':9s} {sum(timings.values()):7.1f} s")
    lines += attack_table(cfg)
    lines += system_table(cfg)
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
        "--eval-channel",
        default=c.eval_channel,
        metavar="RECIPE",
        help=f"augmentation recipe of the eval-only channel; '' for none [{c.eval_channel}]",
    )
    parser.add_argument(
        "--augment",
        default=d.augment,
        metavar="RECIPE",
        help=f"recipe of the train split's augmented views; '' for none [{d.augment}]",
    )
    parser.add_argument("--views", type=int, default=d.views, help="augmented copies [1]")
    parser.add_argument(
        "--gmm-components",
        type=int,
        default=d.gmm_components,
        help=f"LFCC-GMM baseline components; 0 for no baseline or fusion [{d.gmm_components}]",
    )
    parser.add_argument(
        "--stop-after", choices=[name for name, _ in STAGES], help="last stage to run"
    )
    args, extra = parser.parse_known_args(argv)
    try:
        cfg = _config(args, extra)
    except ValueError as exc:  # a bad corpus option or eval-channel recipe
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_demo(cfg, stop_after=args.stop_after)


def _config(args: argparse.Namespace, extra: Sequence[str]) -> DemoConfig:
    return DemoConfig(
        out=Path(args.out),
        corpus=CorpusConfig(
            seed=args.corpus_seed,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_eval=args.n_eval,
            eval_channel=args.eval_channel,
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
        augment=args.augment,
        views=args.views,
        gmm_components=args.gmm_components,
    )


if __name__ == "__main__":
    sys.exit(main())
