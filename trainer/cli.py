"""``trainer``: the command-line layer over the :mod:`trainer` API (fit, score, metrics, ...).

Only parses arguments, calls the API and prints. Errors from bad input
(:class:`featstore.errors.SpoofstoreError`) become one ``error: ...`` line and exit code 2.
Each command lives in its own section below and imports its API lazily.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
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


class _FitCommand(click.Command):
    """``trainer fit``, whose help ends with the registered models and the features each needs.

    The model registry imports torch, so it is read only when the help is shown.
    """

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Models (--model) and the store features each needs"):
            formatter.write_dl(_model_rows())
        super().format_epilog(ctx, formatter)


def _model_rows() -> list[tuple[str, str]]:
    from trainer.models import MODELS

    return [
        (name, f"{', '.join(spec.features)}: {spec.description}".rstrip(": "))
        for name, spec in sorted(MODELS.items())
    ]


def _parse_model_args(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    """``--model-arg KEY=VALUE`` (repeatable) -> dict; values are TOML literals or strings."""
    import tomllib

    out = {}
    for item in values:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx, param)
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()  # a bare word: a string
    return out or None


@cli.command("fit", cls=_FitCommand)
@click.argument("store", type=click.Path(), required=False)
@click.option("--model", default=None, help="Model name (listed below) [default: grcnn].")
@click.option("--out", default=None, help="Run directory [default: runs/<model>-<time>].")
@click.option("--epochs", type=int, default=None, help="Epochs [default: 20].")
@click.option("--batch-size", type=int, default=None, help="Crops per step [default: 32].")
@click.option("--crop-frames", type=int, default=None, help="Crop length [default: model's].")
@click.option(
    "--crops-per-utt",
    type=int,
    default=None,
    help="Random crops of each training utterance per epoch, spread over it "
    "[default: model's: vgg10 32, others 1].",
)
@click.option(
    "--views",
    type=click.Choice(["all", "clean", "aug"]),
    default=None,
    help="Views of a store with augmented views to train on: all, the clean one, or the "
    "augmented ones; picked per crop and epoch, quarantined ones never [default: all].",
)
@click.option(
    "--clean-prob",
    type=float,
    default=None,
    help="With --views all: probability of the clean view per crop [default: uniform over "
    "all views].",
)
@click.option(
    "--spec-mask/--no-spec-mask",
    default=None,
    help="SpecAugment-style time and frequency masks on training batches [default: no].",
)
@click.option("--time-masks", type=int, default=None, help="Time masks per crop [default: 2].")
@click.option(
    "--time-mask-width", type=int, default=None, help="Widest time mask, frames [default: 20]."
)
@click.option("--freq-masks", type=int, default=None, help="Frequency masks per crop [default: 2].")
@click.option(
    "--freq-mask-width", type=int, default=None, help="Widest frequency mask, bins [default: 16]."
)
@click.option(
    "--features",
    default=None,
    help="Store features the model reads, comma-separated, one input channel each (lcnn, "
    "vgg10), e.g. mgd or mgd,logmel [default: the model's].",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 3e-4].")
@click.option(
    "--weight-decay", type=float, default=None, help="AdamW weight decay [default: 0.01]."
)
@click.option(
    "--warmup",
    type=float,
    default=None,
    help="Fraction of all steps in linear LR warm-up, then cosine decay [default: 0.05].",
)
@click.option(
    "--grad-clip",
    type=float,
    default=None,
    help="Max global gradient norm; 0 turns clipping off [default: 5.0].",
)
@click.option("--seed", type=int, default=None, help="Random seed [default: 0].")
@click.option("--device", default=None, help="auto|cpu|cuda[:N] [default: auto].")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default=None,
    help="Autocast precision [default: auto = bf16/fp16 on CUDA; on CPU bf16 where it has "
    "AVX-512 BF16 or AMX, else fp32].",
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
    help="Class-balanced crops instead of a class-weighted loss [default: no-balance].",
)
@click.option("--resume", is_flag=True, default=False, help="Continue the run from last.pt.")
@click.option("--patience", type=int, default=None, help="Early stopping after N bad epochs.")
@click.option("--train-split", default=None, help="Store split to train on [default: train].")
@click.option("--dev-split", default=None, help="Store split to validate on [default: dev].")
@click.option(
    "--eval-batch-size",
    type=int,
    default=None,
    help="Segments per dev batch [default: --batch-size].",
)
@click.option(
    "--model-arg",
    "model_kwargs",
    multiple=True,
    callback=_parse_model_args,
    metavar="KEY=VALUE",
    help="Model parameter (repeatable), e.g. dropout=0.2; replaces that key of the "
    "config file's model_kwargs.",
)
@click.option(
    "--compile/--no-compile", "compile_", default=None, help="torch.compile [default: no]."
)
@click.option(
    "--checkpoint-windows/--no-checkpoint-windows",
    default=None,
    help="GRCNN: recompute each window's activations in the backward pass instead of keeping "
    "them (a fraction of the memory, ~1/3 more compute, same results) [default: no].",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="Channels-last memory format on CUDA with bf16/fp16 [default: yes].",
)
@click.option(
    "--deterministic/--no-deterministic",
    default=None,
    help="torch.use_deterministic_algorithms [default: no].",
)
@click.option("--threads", type=int, default=None, help="torch.set_num_threads.")
@click.option(
    "--tensorboard/--no-tensorboard",
    default=None,
    help="TensorBoard events in <out>/tb; --tensorboard fails without the tensorboard "
    "package (pip install 'spoofstore[tensorboard]') [default: when installed].",
)
@click.option(
    "--quiet/--no-quiet",
    default=None,
    help="No progress output (train.log is still written) [default: no-quiet].",
)
@click.option(
    "--verify",
    is_flag=True,
    default=None,
    help="Check the store's checksums first (featstore verify); refuse it on problems.",
)
@click.option(
    "--components",
    type=click.IntRange(min=1),
    default=None,
    help="GMM baselines (lfcc-gmm, cqcc-gmm): components per GMM [default: 512].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of FitConfig fields, at the top level or in a [fit] table, e.g. "
    "'epochs = 30' and 'batch-size = 16' (docs/config.md lists them all; examples in "
    "pipelines/conf/). Flags override it; it may set store instead of STORE.",
)
def fit_cmd(
    store: str | None, config_file: str | None, compile_: bool | None, quiet: bool | None, **flags
) -> None:
    """Train a countermeasure on STORE (a featstore store) into a run directory.

    The run directory gets config.json, last.pt, best.pt, metrics.csv, train.log (what was
    printed, every session) and training_curves.png. Settings: flags, then the --config
    file, then the defaults shown.
    """
    from trainer.training import fit

    if store is None and config_file is None:
        raise click.UsageError("Missing argument 'STORE' (or a --config file that sets store).")
    if flags.get("cache_dir"):
        flags["cache_dir"] = os.path.abspath(flags["cache_dir"])
    if flags.get("model_kwargs") and config_file is not None:
        from trainer.config import load_config_file

        base = load_config_file(config_file).get("model_kwargs", {})
        flags["model_kwargs"] = {**base, **flags["model_kwargs"]}
    components = flags.pop("components")
    settings = {k: v for k, v in flags.items() if v is not None}
    if components is not None:  # GMM baselines: a model parameter
        settings["model_kwargs"] = {**settings.get("model_kwargs", {}), "n_components": components}
    if not settings.get("resume"):
        settings.pop("resume", None)
    if compile_ is not None:
        settings["compile"] = compile_
    if quiet is not None:
        settings["progress"] = not quiet
    with warnings.catch_warnings():  # one 'warning: ...' line each, printed when they happen
        warnings.showwarning = _print_warning
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


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one ``warning: ...`` line on stderr, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


@cli.command("models")
def models_cmd() -> None:
    """List the models 'trainer fit --model' takes and the store features each needs."""
    from trainer.models import MODELS

    width = max(len(name) for name in MODELS)
    for name, spec in sorted(MODELS.items()):
        click.echo(f"{name:{width}s}  {','.join(spec.features):12s}  {spec.description}")


# --- options shared by score, embed and predict -----------------------------------------------


def _all_of(*decorators: Callable) -> Callable:
    """One decorator applying ``decorators`` in order (the options show in this order)."""

    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


_run_option = click.option(
    "--run",
    default=None,
    help="Run directory [default: the one under ./runs whose checkpoint was written last].",
)
_checkpoint_option = click.option(
    "--checkpoint", default="best", show_default=True, help="best, last or a checkpoint path."
)
_store_option = click.option(
    "--store", default=None, help="Feature store [default: the run's training store]."
)
_forward_pass_options = _all_of(
    click.option("--batch-size", type=int, default=None, help="Segments per forward pass."),
    click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda[:N]."),
    click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16", "fp16"]),
        default="fp32",
        show_default=True,
        help="Autocast precision of the forward passes.",
    ),
)
_segment_options = _all_of(  # trainer.score_batches: EVAL_MODES, DEFAULT_MAX_FRAMES
    click.option(
        "--eval-mode",
        type=click.Choice(["full", "fixed"]),
        default="full",
        show_default=True,
        help="full: whole utterances; fixed: the first 4 s, tiled when shorter (AASIST/RawNet).",
    ),
    click.option(
        "--max-frames",
        type=click.IntRange(min=1),
        default=4000,
        show_default=True,
        help="Longest segment scored in one pass: longer utterances get the mean score of "
        "MAX_FRAMES-frame windows (trainer score lists them in the sidecar). Bounds memory.",
    ),
)
_workers_option = click.option(
    "--workers", type=int, default=0, show_default=True, help="DataLoader workers."
)
_quiet_option = click.option("--quiet", is_flag=True, help="No progress output.")
_verify_option = click.option(
    "--verify",
    is_flag=True,
    help="Check the store's checksums first (featstore verify); refuse it on problems.",
)


# --- score ------------------------------------------------------------------------------------


@cli.command("score")
@_run_option
@click.option("--split", default="eval", show_default=True, help="Store split to score.")
@_store_option
@_checkpoint_option
@click.option(
    "--out",
    default=None,
    help="Score file [default: <run>/scores_<split>.txt; <run>/scores_<storename>_<split>.txt "
    "for a store other than the run's].",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["asvspoof2019", "asvspoof2021", "asvspoof5"]),
    default=None,
    help="Layout [default: asvspoof2019; asvspoof2021 for a split without keys].",
)
@_forward_pass_options
@_segment_options
@_workers_option
@click.option(
    "--force",
    is_flag=True,
    help="Score a store whose fingerprint differs; replace an --out file of another run, store "
    "or split.",
)
@_quiet_option
@_verify_option
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
@click.option(
    "--asv-protocol",
    type=click.Path(dir_okay=False),
    help="ASV key file of 2021 'ASV_SPK TRIAL SCORE' ASV scores (keys/LA/ASV/trial_metadata.txt).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write all as JSON.")
@click.option("--det", type=click.Path(dir_okay=False), help="Draw the DET curve(s) (PNG).")
@click.option("--by", default="attack", show_default=True, help="Breakdown: key-file column.")
@click.option("--legacy-tdcf", is_flag=True, help="Show the ASVspoof 2019 challenge t-DCF.")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Evaluate the trials in both the score file and --protocol (warn with the counts) "
    "instead of refusing a score file that misses or adds trials.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="TEXT",
    help="Name of a score file in the DET legend and the tables; one per score file, in order.",
)
def metrics_cmd(
    scores: tuple[str, ...],
    asv_scores: str | None,
    asv_protocol: str | None,
    protocol: str | None,
    json_out: str | None,
    det: str | None,
    by: str,
    legacy_tdcf: bool,
    allow_missing: bool,
    labels: tuple[str, ...],
) -> None:
    """EER, min t-DCF, minDCF, actDCF, Cllr and a per-attack table of CM score files.

    SCORES: 2019 6-column (SPEAKER UTT - SYSTEM KEY SCORE), 2021 'UTT SCORE' or ASVspoof 5
    tsv files; the last two need --protocol, which every file must cover exactly (unless
    --allow-missing). --asv-scores must be of the same trials (partition). With several
    files, --json writes {"results": [...]} and --det overlays their curves.
    """
    from featstore.errors import ConfigError
    from trainer.metrics import format_metrics, format_summary
    from trainer.plots import check_plot_path, plot_det
    from trainer.scorefiles import evaluate_score_files, results_to_json

    if labels and len(labels) != len(scores):
        raise ConfigError(
            f"{len(labels)} --label for {len(scores)} score files: give one per score file"
        )
    if det:
        check_plot_path(det)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        results = evaluate_score_files(
            scores,
            asv_scores=asv_scores,
            asv_protocol=asv_protocol,
            protocol=protocol,
            by=by,
            allow_missing=allow_missing,
        )
    for w in caught:  # --allow-missing: the counts of trials left out, one line each
        click.echo(f"warning: {w.message}", err=True)
    names = [Path(r.cm.path).name for r in results]
    if len(set(names)) < len(names):
        names = [r.cm.path for r in results]
    if labels:
        names = list(labels)
    try:  # both files or neither: each replaces its destination only once both are written
        with ExitStack() as stack:
            if det:
                tmp = stack.enter_context(atomic_path(det))
                plot_det([(n, r.metrics.det) for n, r in zip(names, results, strict=True)], tmp)
            if json_out:
                tmp = stack.enter_context(atomic_path(json_out))
                tmp.write_text(json.dumps(results_to_json(results), indent=2) + "\n")
    except OSError as exc:
        raise ScoreFileError(exc.filename, f"cannot write: {exc.strerror or exc}") from None
    for n, r in zip(names, results, strict=True):
        title = f"{n}  ({f'{r.cm.path}, ' if labels else ''}{r.cm.format} format)"
        click.echo(format_metrics(r.metrics, title=title, legacy_tdcf=legacy_tdcf, by=by))
        click.echo("")
    if len(results) > 1:
        named = [(n, r.metrics) for n, r in zip(names, results, strict=True)]
        click.echo(format_summary(named, legacy_tdcf=legacy_tdcf))


# --- calibrate and fuse -----------------------------------------------------------------------

_PRIOR_HELP = "Spoof prior of the operating point (ASVspoof 5: Cmiss 1, Cfa 10)."


def _print_calibration_report(report) -> None:  # a trainer.calibration_files.CalibrationReport
    """Parameters, then EER/minDCF/actDCF/Cllr of every input and of the result."""
    cal, cost = report.calibration, report.cost
    names = [Path(p).name for p in report.dev_files]
    kind = "calibration" if len(names) == 1 else f"fusion of {len(names)} systems"
    click.echo(
        f"{kind} trained on {report.n_dev} dev trials at p_spoof={cost.p_spoof:g}, "
        f"Cmiss={cost.c_miss:g}, Cfa={cost.c_fa:g} (effective bona fide prior "
        f"{cal.effective_prior:.4f})"
    )
    for name, w in zip(names, cal.weights, strict=True):
        click.echo(f"  weight  {w:12.6g}  {name}")
    click.echo(f"  offset  {cal.offset:12.6g}")
    width = max(len("calibrated"), *(len(n) for n in names))
    head = f"  {'set':<5} {'scores':<{width}} {'EER %':>8} {'minDCF':>8} {'actDCF':>8} {'Cllr':>8}"
    click.echo("")
    click.echo(head)
    after = "calibrated" if len(names) == 1 else "fused"
    for label, sm, set_names in (
        ("dev", report.dev, names),
        ("eval", report.eval, [Path(p).name for p in report.eval_files]),
    ):
        if sm is None:
            click.echo(f"  {label:<5} (no keys: give --eval-protocol for eval metrics)")
            continue
        for name, m in [*zip(set_names, sm.before, strict=True), (after, sm.after)]:
            click.echo(
                f"  {label:<5} {name:<{width}} {100 * m.eer:8.4f} {m.mindcf:8.5f} "
                f"{m.actdcf:8.5f} {m.cllr:8.5f}"
            )
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(
        f"wrote {report.out} ({report.n_eval} natural-log LLRs, {report.format}) and "
        f"{report.sidecar.name}"
    )


@cli.command("calibrate")
@click.argument("dev_scores", type=click.Path(dir_okay=False))
@click.option(
    "--apply",
    "eval_scores",
    required=True,
    type=click.Path(dir_okay=False),
    help="Eval score file to calibrate.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Calibrated file.")
@click.option("--protocol", type=click.Path(dir_okay=False), help="Key file of DEV_SCORES.")
@click.option("--eval-protocol", type=click.Path(dir_okay=False), help="Key file of eval.")
@click.option("--prior", type=float, default=0.05, show_default=True, help=_PRIOR_HELP)
def calibrate_cmd(
    dev_scores: str,
    eval_scores: str,
    out: str,
    protocol: str | None,
    eval_protocol: str | None,
    prior: float,
) -> None:
    """Calibrate a system's scores to natural-log LLRs: train on DEV_SCORES, apply to eval.

    Prior-weighted logistic regression (an affine map minimising Cllr at the ASVspoof 5
    operating point). Writes the eval scores in their own layout plus OUT.json (parameters,
    metrics, provenance) and prints EER, minDCF, actDCF and Cllr before and after.
    """
    from trainer.calibration_files import calibrate_score_files

    report = calibrate_score_files(
        dev_scores, eval_scores, out, protocol=protocol, eval_protocol=eval_protocol, prior=prior
    )
    _print_calibration_report(report)


@cli.command("fuse", context_settings={"ignore_unknown_options": True})
@click.argument(
    "files", nargs=-1, type=click.UNPROCESSED, metavar="DEV_A DEV_B ... --apply EVAL_A EVAL_B ..."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Fused file.")
@click.option("--protocol", type=click.Path(dir_okay=False), help="Key file of the dev files.")
@click.option("--eval-protocol", type=click.Path(dir_okay=False), help="Key file of eval.")
@click.option("--prior", type=float, default=0.05, show_default=True, help=_PRIOR_HELP)
def fuse_cmd(
    files: tuple[str, ...],
    out: str,
    protocol: str | None,
    eval_protocol: str | None,
    prior: float,
) -> None:
    """Fuse systems by logistic regression: one weight per system, trained on dev.

    The dev score files come first, then --apply and the eval score files of the same
    systems in the same order. Every file of a set must score the same utterances. Writes
    the fused eval LLRs in the first eval file's layout plus OUT.json, and prints EER,
    minDCF, actDCF and Cllr of each system and of the fusion.
    """
    from trainer.calibration_files import fuse_score_files

    args = list(files)
    unknown = [a for a in args if a.startswith("-") and a != "--apply"]
    if unknown:
        raise click.UsageError(f"no such option: {unknown[0]}")
    if args.count("--apply") != 1:
        raise click.UsageError("give the eval score files after one --apply")
    cut = args.index("--apply")
    dev, eval_ = args[:cut], args[cut + 1 :]
    if len(dev) < 2:
        raise click.UsageError("fuse needs two or more systems (use 'trainer calibrate' for one)")
    if len(eval_) != len(dev):
        raise click.UsageError(
            f"{len(dev)} dev score files but {len(eval_)} after --apply: one eval file per system"
        )
    report = fuse_score_files(
        dev, eval_, out, protocol=protocol, eval_protocol=eval_protocol, prior=prior
    )
    _print_calibration_report(report)


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


# --- embed ------------------------------------------------------------------------------------


@cli.command("embed")
@_run_option
@click.option("--split", default="eval", show_default=True, help="Store split to embed.")
@_store_option
@_checkpoint_option
@click.option(
    "--out",
    default=None,
    help="Embedding file, .npz by suffix, else Zarr [default: <run>/embeddings_<split>.zarr; "
    "<run>/embeddings_<storename>_<split>.zarr for a store other than the run's].",
)
@_forward_pass_options
@_workers_option
@click.option(
    "--force",
    is_flag=True,
    help="Embed a store whose fingerprint differs; replace an --out file of another run, "
    "store or split.",
)
@_quiet_option
@_verify_option
def embed_cmd(quiet: bool, **options) -> None:
    """Write the utterance embeddings of a store split (the input of the model's last linear
    layer; the mean over windows for windowed models) with their ids, labels and attacks, in
    the order of 'trainer score', for 'trainer backend fit/score'."""
    from trainer.embedding_extraction import embed
    from trainer.embeddings import read_embeddings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = embed(progress=not quiet, **options)
    for w in caught:  # quarantined or frameless utterances: one line each, not a traceback
        click.echo(f"warning: {w.message}", err=True)
    emb = read_embeddings(path)
    click.echo(
        f"wrote {path} ({len(emb)} embeddings of {emb.dim} dims of split {emb.meta['split']!r}: "
        f"{emb.n_bonafide} bona fide, {emb.n_spoof} spoof, model {emb.meta['model']})"
    )


# --- predict ----------------------------------------------------------------------------------


@cli.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_run_option
@_checkpoint_option
@click.option(
    "--store",
    default=None,
    help="Store with the run's fingerprint to read the feature parameters from [default: the "
    "run's training store].",
)
@click.option("--out", default=None, help="Write the results here instead of stdout.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["tsv", "jsonl"]),
    default="tsv",
    show_default=True,
    help="tsv: file<TAB>score<TAB>label; jsonl: one JSON object per file.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Label bonafide at or above this score [default: the ASVspoof 5 Bayes threshold "
    "-ln 1.9 = -0.642, for calibrated LLRs].",
)
@_forward_pass_options
@_segment_options
@_quiet_option
def predict_cmd(
    paths: tuple[str, ...], out: str | None, format_: str, quiet: bool, **options
) -> int:
    """Score audio files (and directories of .flac/.wav) with a trained run; no store build.

    Features are computed from each file exactly as 'featstore build' would, with the run's
    store parameters, and scored as 'trainer score' scores them. Prints
    file<TAB>score<TAB>label. Files that cannot be scored get one 'error:' line each on
    stderr and exit code 1, after the others are scored.
    """
    from trainer.predict import format_predictions, predict, write_predictions

    def report(message: str) -> None:
        click.echo(f"error: {message}", err=True)

    result = predict(list(paths), progress=not quiet, on_failure=report, **options)
    if out is None:
        click.echo(format_predictions(result, format_), nl=False)
    else:
        write_predictions(result, out, format_)
        if not quiet:
            click.echo(f"wrote {out} ({len(result.predictions)} files)", err=True)
    if result.failures:
        click.echo(
            f"{len(result.failures)} of {len(result.failures) + len(result.predictions)} "
            "input(s) could not be scored",
            err=True,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``error: ...`` and exit code 2 for bad input)."""
    run_cli(cli, "trainer", argv)


if __name__ == "__main__":  # pragma: no cover
    main()
