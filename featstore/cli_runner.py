"""How both command-line tools (``featstore``, ``trainer``) run and exit.

Errors from bad input (:class:`featstore.errors.SpoofstoreError`) become one
``error: ...`` line on stderr and exit code 2 (exit code 1 for a
:class:`featstore.errors.ResourceError`: disk full, permission, ...); usage errors keep
click's message and code; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from featstore.errors import ResourceError, SpoofstoreError


def run_cli(group: click.Group, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a click ``group`` as a console script and exit with the right code.

    Parameters
    ----------
    group : click.Group
        The command group.
    prog_name : str
        Name shown in usage and ``--version``.
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    """
    try:
        rc = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except ResourceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
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
