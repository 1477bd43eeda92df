"""``trainer``: the command-line layer over the :mod:`trainer` API (fit, score, metrics).

Only parses arguments, calls the API and prints. Errors from bad input
(:class:`featstore.errors.SpoofstoreError`) become one ``error: ...`` line and exit code 2.
Each command lives in its own section below and imports its API lazily.
"""

from __future__ import annotations

import sys

import click

from featstore._version import __version__
from featstore.errors import SpoofstoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainer")
def cli() -> None:
    """Train, score and evaluate spoofing countermeasures on a featstore store."""


# --- fit --------------------------------------------------------------------------------------

# --- score ------------------------------------------------------------------------------------

# --- metrics ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        rc = cli.main(args=argv, prog_name="trainer", standalone_mode=False)
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
