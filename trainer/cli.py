"""``trainer``: the command-line layer over the :mod:`trainer` API (fit, score, metrics).

Only parses arguments, calls the API and prints. Errors from bad input
(:class:`featstore.errors.SpoofstoreError`) become one ``error: ...`` line and exit code 2.
Each command lives in its own section below and imports its API lazily.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import ExitStack
from pathlib import Path

import click

from featstore._version import __version__
from featstore.atomic_files import atomic_path
from featstore.cli_runner import run_cli
from trainer.errors import ScoreFileError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainer")
def cli() -> None:
    """Train, score and evaluate spoofing countermeasures on a featstore store."""


# --- fit --------------------------------------------------------------------------------------


@cli.command("fit")
@click.argument("store", type=click.Path())
@click.option("--model", default=None, help="Model name [default: grcnn].")
@click.option("--out", default=None, help="Run directory [default: runs/<model>-<time>].")
@click.option("--epochs", type=int, default=None, help="Epochs [default: 20].")
@click.option("--batch-size", type=int, default=None, help="Crops per step [default: 32].")
@click.option("--crop-frames", type=int, default=None, help="Crop length [default: model's].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 3e-4].")
@click.option("--seed", type=int, default=None, help="Random seed [default: 0].")
@click.option("--device", default=None, help="auto|cpu|cuda[:N] [default: auto].")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default=None,
    help="Autocast precision [default: auto = bf16/fp16 on CUDA, fp32 on CPU].",
)
@click.option("--workers", type=int, default=None, help="DataLoader workers [default: 2].")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Local cache of a store at a URL (s3://...) [default: $SPOOFSTORE_CACHE_DIR; none].",
)
@click.option(
    "--balance/--no-balance",
    default=None,
    help="Class-balanced crops instead of a class-weighted loss.",
)
@click.option("--resume", is_flag=True, default=False, help="Continue the run from last.pt.")
@click.option("--patience", type=int, default=None, help="Early stopping after N bad epochs.")
@click.option("--compile", "compile_", is_flag=True, default=False, help="torch.compile.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads.")
@click.option("--quiet", is_flag=True, default=False, help="No progress output.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of FitConfig fields (flags override it).",
)
def fit_cmd(store: str, config_file: str | None, compile_: bool, quiet: bool, **flags) -> None:
    """Train a countermeasure on STORE (a featstore store) into a run directory."""
    from trainer.training import fit

    if flags.get("cache_dir"):
        flags["cache_dir"] = os.path.abspath(flags["cache_dir"])
    settings = {k: v for k, v in flags.items() if v is not None}
    if not settings.get("resume"):
        settings.pop("resume", None)
    if compile_:
        settings["compile"] = True
    if quiet:
        settings["progress"] = False
    result = fit(store, config=config_file, **settings)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    if result.best_epoch and result.best_dev_eer == result.best_dev_eer:
        click.echo(
            f"done: {result.out}  best dev EER {100 * result.best_dev_eer:.2f}% "
            f"(epoch {result.best_epoch}, {result.best})"
        )
    else:
        click.echo(f"done: {result.out}")


# --- score ------------------------------------------------------------------------------------


@cli.command("score")
@click.option(
    "--run",
    default=None,
    help="Run directory [default: the one under ./runs whose checkpoint was written last].",
)
@click.option("--split", default="eval", show_default=True, help="Store split to score.")
@click.option("--store", default=None, help="Feature store [default: the run's training store].")
@click.option(
    "--checkpoint", default="best", show_default=True, help="best, last or a checkpoint path."
)
@click.option("--out", default=None, help="Score file [default: <run>/scores_<split>.txt].")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["asvspoof2019", "asvspoof2021", "asvspoof5"]),
    default=None,
    help="Layout [default: asvspoof2019; asvspoof2021 for a split without keys].",
)
@click.option("--batch-size", type=int, default=None, help="Segments per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda[:N].")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Autocast precision of the forward passes.",
)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers.")
@click.option("--force", is_flag=True, help="Score a store whose fingerprint differs.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def score_cmd(format_: str | None, quiet: bool, **options) -> None:
    """Score every utterance of a store split with a trained run into one score file.

    Scores are log-likelihood ratios logit[bona fide] - logit[spoof] (higher = bona fide),
    in the store's index order; provenance goes to <out>.json. Read the file back with
    'trainer metrics' (with --protocol for the asvspoof2021 and asvspoof5 layouts).
    """
    from trainer.scoring import score

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = score(format=format_, progress=not quiet, **options)
    for w in caught:  # quarantined or frameless utterances: one line each, not a traceback
        click.echo(f"warning: {w.message}", err=True)
    info = json.loads(path.with_name(path.name + ".json").read_text())
    click.echo(
        f"wrote {path} ({info['n_utterances']} utterances of {info['split']!r}, "
        f"{info['format']}, checkpoint epoch {info['checkpoint']['epoch']})"
    )


# --- metrics ----------------------------------------------------------------------------------


@cli.command("metrics")
@click.argument("scores", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--asv-scores", type=click.Path(dir_okay=False), help="ASV scores (for t-DCF).")
@click.option("--protocol", type=click.Path(dir_okay=False), help="Key / protocol file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write all as JSON.")
@click.option("--det", type=click.Path(dir_okay=False), help="Draw the DET curve(s) (PNG).")
@click.option("--by", default="attack", show_default=True, help="Breakdown: key-file column.")
@click.option("--legacy-tdcf", is_flag=True, help="Show the ASVspoof 2019 challenge t-DCF.")
def metrics_cmd(
    scores: tuple[str, ...],
    asv_scores: str | None,
    protocol: str | None,
    json_out: str | None,
    det: str | None,
    by: str,
    legacy_tdcf: bool,
) -> None:
    """EER, min t-DCF, minDCF, actDCF, Cllr and a per-attack table of CM score files.

    SCORES: 2019 6-column (SPEAKER UTT - SYSTEM KEY SCORE), 2021 'UTT SCORE' or ASVspoof 5
    tsv files; the last two need --protocol. With several files, --json writes
    {"results": [...]} and --det overlays their curves.
    """
    from trainer.metrics import format_metrics, format_summary
    from trainer.scorefiles import evaluate_score_files, results_to_json

    results = evaluate_score_files(scores, asv_scores=asv_scores, protocol=protocol, by=by)
    names = [Path(r.cm.path).name for r in results]
    if len(set(names)) < len(names):
        names = [r.cm.path for r in results]
    try:  # both files or neither: each replaces its destination only once both are written
        with ExitStack() as stack:
            if det:
                from trainer.plots import plot_det

                tmp = stack.enter_context(atomic_path(det))
                plot_det([(n, r.metrics.det) for n, r in zip(names, results, strict=True)], tmp)
            if json_out:
                tmp = stack.enter_context(atomic_path(json_out))
                tmp.write_text(json.dumps(results_to_json(results), indent=2) + "\n")
    except OSError as exc:
        raise ScoreFileError(exc.filename, f"cannot write: {exc.strerror or exc}") from None
    for n, r in zip(names, results, strict=True):
        title = f"{n}  ({r.cm.format} format)"
        click.echo(format_metrics(r.metrics, title=title, legacy_tdcf=legacy_tdcf, by=by))
        click.echo("")
    if len(results) > 1:
        named = [(n, r.metrics) for n, r in zip(names, results, strict=True)]
        click.echo(format_summary(named, legacy_tdcf=legacy_tdcf))


# --- backend ----------------------------------------------------------------------------------


@cli.group("backend")
def backend_group() -> None:
    """Back-ends on utterance embeddings (plda, gmm, logreg, cosine): fit, then score."""


@backend_group.command("fit")
@click.argument("embeddings", type=click.Path())
@click.option("--kind", required=True, help="plda, gmm, logreg or cosine.")
@click.option("--dev", type=click.Path(), default=None, help="Dev embeddings: report metrics.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Back-end file.")
@click.option("--lda-dim", type=int, default=None, help="plda: LDA dimension [classes - 1].")
@click.option("--components", type=int, default=None, help="gmm: components per class [8].")
@click.option("--c", "c", type=float, default=None, help="logreg: inverse L2 strength [1.0].")
@click.option("--seed", type=int, default=None, help="gmm: random seed [0].")
def backend_fit_cmd(
    embeddings: str, kind: str, dev: str | None, out: str, **options: int | float | None
) -> None:
    """Fit a back-end on labelled EMBEDDINGS (.npz or Zarr, from 'trainer embed') into OUT."""
    from trainer.backends import fit_backend, save_backend

    settings = {k: v for k, v in options.items() if v is not None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = fit_backend(embeddings, kind=kind, dev=dev, **settings)
    for message in dict.fromkeys(str(w.message) for w in caught):
        click.echo(f"warning: {message}", err=True)
    save_backend(out, trained)
    n = trained.training
    click.echo(
        f"wrote {out} ({kind}, {trained.dim} dims, {n['n']} embeddings: "
        f"{n['n_bonafide']} bona fide, {n['n_spoof']} spoof)"
    )
    if trained.dev is not None:
        d = trained.dev
        click.echo(
            f"dev: EER {100 * d['eer']:.2f}%  minDCF {d['min_dcf']:.4f}  "
            f"actDCF {d['act_dcf']:.4f}  Cllr {d['cllr']:.4f}"
        )


@backend_group.command("score")
@click.argument("backend", type=click.Path())
@click.argument("embeddings", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Score file.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["asvspoof2019", "asvspoof2021", "asvspoof5"]),
    default=None,
    help="Layout [default: asvspoof2019; asvspoof2021 for embeddings without keys].",
)
@click.option("--force", is_flag=True, help="Apply to embeddings of another model or run.")
def backend_score_cmd(
    backend: str, embeddings: str, out: str, format_: str | None, force: bool
) -> None:
    """Score EMBEDDINGS with BACKEND into one score file (natural-log LLRs; provenance in
    <out>.json), readable by 'trainer metrics'."""
    from trainer.backends import score_embeddings

    path = score_embeddings(backend, embeddings, out, format=format_, force=force)
    info = json.loads(path.with_name(path.name + ".json").read_text())
    click.echo(
        f"wrote {path} ({info['n_utterances']} utterances, {info['format']}, "
        f"{info['backend']['kind']} back-end)"
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``error: ...`` and exit code 2 for bad input)."""
    run_cli(cli, "trainer", argv)


if __name__ == "__main__":  # pragma: no cover
    main()
