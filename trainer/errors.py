"""Typed errors of the trainer; all derive from :class:`featstore.errors.SpoofstoreError`."""

from __future__ import annotations

from featstore.errors import LocatedError, SpoofstoreError


class ScoreFileError(LocatedError):
    """A score, key or ASV file is malformed or inconsistent (``FILE:LINE: message``)."""


class MetricsError(SpoofstoreError, ValueError):
    """Scores cannot give the asked metric (no bona fide trials, no spoof trials, ...)."""


class TrainingError(SpoofstoreError):
    """Training cannot go on (non-finite loss, incompatible store or checkpoint, ...)."""


class EmbeddingError(LocatedError):
    """An embedding file is malformed or inconsistent (shapes, non-finite vectors, duplicate
    ids, ...): ``FILE: message``."""


class BackendError(LocatedError):
    """A back-end cannot be trained or applied (one class only, another embedding dimension
    or model, a malformed back-end file): ``FILE: message``."""
