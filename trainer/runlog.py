"""What a training session said, kept in the run directory: ``train.log`` and the curves.

``train.log`` gets every line the session prints (run directory, resume point, per-epoch
summaries, estimates, early stop), every warning raised while it runs and how it ended
(an error, Ctrl-C), each line stamped with the time; never the progress bar's redraws. Each
session (a new run, every ``--resume``) appends a header. ``training_curves.png`` is redrawn
from ``metrics.csv`` after every epoch (:func:`redraw_curves`).

This module imports neither torch nor matplotlib (the curves import it on first use).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from featstore.atomic_files import atomic_path
from featstore.errors import ResourceError

__all__ = ["CURVES", "TRAIN_LOG", "RunLog", "redraw_curves", "session_summary"]

TRAIN_LOG = "train.log"
"""The session log in a run directory."""

CURVES = "training_curves.png"
"""Training loss and dev EER per epoch, in a run directory."""


class RunLog:
    """The lines of one training session: printed (optional) and appended to ``train.log``.

    Call the instance with a line to log it. Lines logged before :meth:`open` (the run
    directory does not exist yet) are kept and written, with their times, when it is opened.

    Parameters
    ----------
    echo : bool
        Also print the lines on stdout (above a tqdm bar).
    enabled : bool, default True
        False: do nothing at all (the ranks other than 0 of a distributed run).

    Examples
    --------
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> log = RunLog(echo=False)
    >>> log("run directory: runs/x")
    >>> _ = log.open(run, "new run")
    >>> log.close()
    >>> lines = (run / TRAIN_LOG).read_text().splitlines()
    >>> lines[0].startswith("==== "), lines[-1].endswith("run directory: runs/x")
    (True, True)
    """

    def __init__(self, echo: bool, enabled: bool = True):
        self.echo = echo and enabled
        self.enabled = enabled
        self._pending: list[str] = []
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._warned: set[str] = set()
        self._started = _now()

    @property
    def path(self) -> Path | None:
        """``train.log`` once :meth:`open` was called, else None."""
        return self._path

    def __call__(self, message: str) -> None:
        """Log ``message`` (printed when ``echo``; into ``train.log``)."""
        if not self.enabled:
            return
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)
        self._record(message)

    def open(self, run_dir: str | os.PathLike, summary: str) -> Path:
        """Append a session header to ``run_dir/train.log``, then the lines kept so far.

        Parameters
        ----------
        run_dir : str or os.PathLike
            The run directory (it exists).
        summary : str
            One line about the session (new run or resumed, model, device ...).

        Returns
        -------
        Path
            The log file.

        Raises
        ------
        ResourceError
            The file cannot be opened or written (no space, no permission).
        """
        if not self.enabled or self._file is not None:
            return Path(run_dir) / TRAIN_LOG
        path = Path(run_dir) / TRAIN_LOG
        command = " ".join(shlex.quote(a) for a in sys.argv)
        header = [
            f"==== {self._started}  session of pid {os.getpid()} on {platform.node() or '?'}",
            f"{_now()}  {summary}",
            f"{_now()}  command line: {command}",
        ]
        try:
            self._file = open(path, "a", encoding="utf-8")  # held for the session
            self._path = path
            self._write("\n".join(header) + "\n" + "".join(self._pending))
        except OSError as exc:
            self._file = None
            raise ResourceError(
                f"{path}: cannot write the training log: {exc.strerror or exc}"
            ) from None
        self._pending.clear()
        return path

    def warning(self, message: str) -> None:
        """Record a warning that was already shown (by the :mod:`warnings` machinery)."""
        if self.enabled:
            self._record(f"warning: {message}")

    def warn_once(self, key: str, message: str) -> None:
        """Raise ``message`` as a :class:`UserWarning` the first time ``key`` is given."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)

    def ended(self, exc: BaseException | None) -> None:
        """Record how the session ended: done, an error (its message), or interrupted."""
        if not self.enabled:
            return
        if exc is None:
            self._record("session done")
        elif isinstance(exc, KeyboardInterrupt):
            self._record("session interrupted (Ctrl-C)")
        else:
            self._record(f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}")

    def close(self) -> None:
        """Close ``train.log`` (lines not yet written, without a directory, are dropped)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @contextmanager
    def capturing_warnings(self) -> Iterator[RunLog]:
        """Within the block, every warning shown is also recorded in the log.

        The warning is then shown as it would have been (the previous ``showwarning``), so
        ``pytest.warns``, a caller's filters and the CLI's one-line format still apply.
        """
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
                self.warning(str(message))
                shown(message, category, filename, lineno, file, line)

            warnings.showwarning = showwarning
            yield self

    def _record(self, message: str) -> None:
        line = f"{_now()}  {message}\n"
        if self._file is None:
            self._pending.append(line)
            return
        try:
            self._write(line)
        except OSError as exc:  # the run goes on; its checkpoints will report a full disk
            self.close()
            self.warn_once("log", f"{self._path}: stopped writing the training log: {exc}")

    def _write(self, text: str) -> None:
        assert self._file is not None
        self._file.write(text)
        self._file.flush()


def redraw_curves(run_dir: str | os.PathLike, metrics_csv: str | os.PathLike, log: RunLog) -> bool:
    """Redraw ``run_dir/training_curves.png`` from ``metrics_csv``; never raises.

    A failure (matplotlib missing, a full disk, ...) is warned about once per session
    through ``log`` and training goes on.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run directory.
    metrics_csv : str or os.PathLike
        The run's ``metrics.csv``.
    log : RunLog
        The session log (for the one warning).

    Returns
    -------
    bool
        True when the image was written.
    """
    target = Path(run_dir) / CURVES
    try:
        from trainer.plots import plot_training_curves

        with atomic_path(target, fsync=False) as tmp:
            plot_training_curves(metrics_csv, tmp)
    except Exception as exc:  # drawing must never stop training
        log.warn_once(
            "curves", f"{target}: cannot draw the training curves ({exc}); training goes on"
        )
        return False
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def session_summary(resumed_after: int | None, fields: dict[str, Any]) -> str:
    """One line about a session: ``new run`` or ``resumed after epoch N``, then ``k=v`` pairs.

    Examples
    --------
    >>> session_summary(None, {"model": "lcnn", "epochs": 3})
    'new run: model=lcnn epochs=3'
    >>> session_summary(2, {"model": "lcnn"})
    'resumed after epoch 2: model=lcnn'
    """
    what = "new run" if resumed_after is None else f"resumed after epoch {resumed_after}"
    return f"{what}: " + " ".join(f"{k}={v}" for k, v in fields.items())
