"""Typed errors users can act on.

Every error that bad *input* can cause derives from :class:`SpoofstoreError`. The command-line
tools print ``error: <message>`` on one line and exit with code 2 for these, and with code 1
for a :class:`ResourceError` (the environment is at fault, not the input); anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class SpoofstoreError(Exception):
    """Base class of every error caused by bad input (files, arguments, stores)."""


class LocatedError(SpoofstoreError):
    """An error about a place in a file: ``FILE:LINE: message`` (line optional).

    Parameters
    ----------
    path : str or os.PathLike or None
        The file the problem is in.
    message : str
        What is wrong, and where possible what to do about it.
    line : int, optional
        1-based line number in ``path``.
    """

    def __init__(self, path: str | os.PathLike | None, message: str, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.message = message
        where = "" if self.path is None else self.path
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ManifestError(LocatedError):
    """A protocol/manifest file cannot be parsed (wrong columns, duplicate ids, ...)."""


class AudioError(LocatedError):
    """An audio file is missing, unreadable, empty, or holds non-finite samples."""


class StoreError(LocatedError):
    """A feature store is missing, inconsistent, or was built with another configuration."""


class FeatureError(SpoofstoreError, ValueError):
    """A feature name or parameter is unknown or out of range."""


class ConfigError(FeatureError):
    """A configuration value (CLI option, TOML field, feature or model parameter) is invalid.

    A :class:`FeatureError` too: ``except FeatureError`` also catches bad feature parameters.
    An unknown feature *name* is a plain :class:`FeatureError`.
    """


class ResourceError(SpoofstoreError):
    """The environment, not the input, is at fault (disk full, permission denied, lock held,
    missing credentials, ...): one ``error:`` line and exit code 1."""
