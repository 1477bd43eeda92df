"""``featstore``: the command-line layer over the :mod:`featstore` API.

Only parses arguments, calls the API and prints. Errors from bad input
(:class:`featstore.errors.SpoofstoreError`) become one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import sys

import click

from featstore._version import __version__
from featstore.errors import SpoofstoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featstore")
def cli() -> None:
    """Extract anti-spoofing features from ASVspoof corpora into a Zarr/HDF5 store."""


@cli.command("features")
def features_cmd() -> None:
    """List the registered features with their defaults."""
    from featstore.features.registry import FEATURES

    for name in sorted(FEATURES):
        spec = FEATURES[name]
        d = spec.describe()
        params = ", ".join(f"{k}={v}" for k, v in spec.defaults.items())
        click.echo(f"{name:8s} {d['n_bins']:4d} bins  hop {spec.hop_length:4d}  {spec.description}")
        click.echo(f"{'':8s} {params}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        rc = cli.main(args=argv, prog_name="featstore", standalone_mode=False)
    except SpoofstoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
