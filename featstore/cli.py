"""``featstore``: the command-line layer over the :mod:`featstore` API.

Only parses arguments, calls the API and prints. Errors from bad input
(:class:`featstore.errors.SpoofstoreError`) become one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import json

import click

from featstore._version import __version__
from featstore.build import build
from featstore.cli_runner import run_cli
from featstore.features.registry import FEATURES
from featstore.store.inspect import store_info, verify_store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featstore")
def cli() -> None:
    """Extract anti-spoofing features from ASVspoof corpora into a Zarr/HDF5 store."""


@cli.command("features")
def features_cmd() -> None:
    """List the registered features with their defaults."""
    for name in sorted(FEATURES):
        spec = FEATURES[name]
        d = spec.describe()
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults.items())
        click.echo(f"{name:8s} {d['n_bins']:4d} bins  hop {spec.hop_length:4d}  {spec.description}")
        click.echo(f"{'':8s} {params}")


# --- build / info / verify ------------------------------------------------------------------


@cli.command("build")
@click.option(
    "--manifest",
    "manifest",
    required=True,
    multiple=True,
    type=click.Path(),
    help="Protocol file or directory of protocol files (repeatable).",
)
@click.option("--audio-root", required=True, type=click.Path(), help="Directory with the audio.")
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Store: DIR.zarr, FILE.h5, or a URL (s3://bucket/store.zarr; staged, then uploaded).",
)
@click.option("--features", default=None, help="Comma-separated features [default: mgd,logmel].")
@click.option("--jobs", "-j", type=int, default=None, help="Worker processes [default: 2].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zarr", "hdf5"]),
    default=None,
    help="Store format [default: from the --out suffix; .h5/.hdf5 -> hdf5, else zarr].",
)
@click.option(
    "--config",
    "config",
    type=click.Path(),
    default=None,
    help="TOML file: BuildConfig fields at the top level (jobs = 2, chunk_frames = 512, ...) "
    "and [features.NAME] tables of feature parameters, e.g. [features.mgd] rho = 0.2; "
    "options given here win (README: 'featstore build --config'; pipelines/conf/).",
)
@click.option("--strict", is_flag=True, default=None, help="Fail (exit 2) on a bad utterance.")
@click.option(
    "--max-quarantine",
    type=float,
    default=None,
    metavar="FRACTION",
    help="Fail (exit 2, store left unfinished) when a split loses more than this fraction of "
    "its utterances to quarantine, or all of them [default: 0.5].",
)
@click.option(
    "--retry-quarantined",
    is_flag=True,
    help="Extract again the splits holding quarantined utterances, also of a complete store "
    "(rebuilt). Without it, a re-run retries only a split that failed --max-quarantine.",
)
@click.option("--overwrite", is_flag=True, help="Replace a store built another way.")
@click.option(
    "--all", "list_all", is_flag=True, help="List every quarantined utterance [default: 20]."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--backend",
    type=click.Choice(["loky", "dask"]),
    default="loky",
    show_default=True,
    help="Local worker processes, or Dask (--scheduler, else a LocalCluster of --jobs workers).",
)
@click.option("--scheduler", default=None, help="Dask scheduler address, tcp://HOST:PORT.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Staging dir of a URL --out [default: $SPOOFSTORE_CACHE_DIR or ~/.cache/spoofstore].",
)
@click.option(
    "--augment",
    default=None,
    metavar="RECIPE",
    help="Also store augmented views: RECIPE of waveform augmentations, '|' between "
    "alternatives (one drawn per copy), '+' chaining, e.g. 'rawboost-5|codec|noise+reverb' "
    "(docs/augment.md). On a finished store without views, adds them and keeps its clean view.",
)
@click.option(
    "--views",
    type=int,
    default=None,
    metavar="K",
    help="Augmented copies per utterance (views 1..K; view 0 is clean) [default: 1].",
)
@click.option(
    "--augment-seed",
    type=int,
    default=None,
    metavar="S",
    help="Seed of the views: copy k of utterance u depends on (S, u, k) only [default: 0].",
)
@click.option(
    "--augment-splits",
    default=None,
    metavar="SPLITS",
    help="Comma-separated splits to augment [default: train].",
)
@click.option(
    "--noise-dir",
    type=click.Path(),
    default=None,
    help="Noise files for the recipe's noise step (MUSAN layout or any folder of audio).",
)
@click.option(
    "--rir-dir",
    type=click.Path(),
    default=None,
    help="Room impulse responses for the recipe's reverb step.",
)
def build_cmd(
    manifest: tuple[str, ...],
    audio_root: str,
    out: str,
    features: str | None,
    jobs: int | None,
    fmt: str | None,
    config: str | None,
    strict: bool | None,
    max_quarantine: float | None,
    retry_quarantined: bool,
    overwrite: bool,
    list_all: bool,
    quiet: bool,
    backend: str,
    scheduler: str | None,
    cache_dir: str | None,
    augment: str | None,
    views: int | None,
    augment_seed: int | None,
    augment_splits: str | None,
    noise_dir: str | None,
    rir_dir: str | None,
) -> None:
    """Extract features of every utterance of the protocols into a store (resumable).

    With --augment RECIPE --views K, each utterance of the augmented splits also gets K
    augmented copies, extracted with the same features (the recipe is checked first).

    Exit codes: 0 done, 2 bad input (protocols, audio, configuration, too many
    quarantined utterances), 1 environment (disk full, permission, lock held, no
    credentials).
    """
    summary = build(
        list(manifest) if len(manifest) > 1 else manifest[0],
        audio_root,
        out,
        features=features,
        jobs=jobs,
        format=fmt,
        config=config,
        strict=strict or None,
        max_quarantine=max_quarantine,
        retry_quarantined=retry_quarantined,
        overwrite=overwrite,
        quiet=quiet,
        backend=backend,
        scheduler=scheduler,
        cache_dir=cache_dir,
        augment=augment,
        views=views,
        augment_seed=augment_seed,
        augment_splits=augment_splits,
        noise_dir=noise_dir,
        rir_dir=rir_dir,
    )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(summary.report(None if list_all else 20))


@cli.command("info")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--all", "all_quarantined", is_flag=True, help="List every quarantined utterance.")
def info_cmd(store: str, as_json: bool, all_quarantined: bool) -> None:
    """Splits, utterances, views and recipe, labels, attacks, notes, shapes, stats, quarantine."""
    info = store_info(store)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
    else:
        click.echo("\n".join(info.lines(all_quarantined=all_quarantined)))


@cli.command("verify")
@click.argument("store", type=click.Path())
def verify_cmd(store: str) -> int:
    """Check index/array consistency, checksums (augmented views too) and NaN/inf; exit 1
    listing any problem."""
    problems = verify_store(store)
    if problems:
        click.echo(f"{store}: {len(problems)} problem(s):", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        return 1
    click.echo(f"{store}: OK")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``error: ...`` and exit code 2 for bad input)."""
    run_cli(cli, "featstore", argv)


if __name__ == "__main__":  # pragma: no cover
    main()
