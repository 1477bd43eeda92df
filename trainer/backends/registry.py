"""The table of back-end kinds: ``BACKENDS[kind]`` is a class with ``fit``, ``score``,
``params``, ``settings`` and ``from_params`` (the :class:`Backend` protocol)."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Protocol

import numpy as np

from featstore.errors import ConfigError
from trainer.backends.cosine import CosineBackend
from trainer.backends.gmm import GmmBackend
from trainer.backends.logreg import LogregBackend
from trainer.backends.plda import PldaBackend

__all__ = ["BACKENDS", "Backend", "backend_class"]


class Backend(Protocol):
    """What every back-end kind provides (see :mod:`trainer.backends.plda` for an example)."""

    kind: ClassVar[str]

    @classmethod
    def fit(cls, x: np.ndarray, label: np.ndarray, attack: np.ndarray, **options: Any) -> Any:
        """Fit on ``(N, D)`` embeddings with 1/0 labels and attack ids."""
        ...

    def score(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 scores, higher = more bona fide (natural-log LLRs)."""
        ...

    def params(self) -> dict[str, np.ndarray]:
        """The arrays that define it (saved in the back-end's ``.npz``)."""
        ...

    def settings(self) -> dict[str, Any]:
        """JSON facts for the header (``classes`` at least)."""
        ...

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], settings: dict[str, Any]) -> Any:
        """Rebuild from :meth:`params` and :meth:`settings`."""
        ...


#: kind -> back-end class
BACKENDS: dict[str, type] = {
    cls.kind: cls for cls in (PldaBackend, GmmBackend, LogregBackend, CosineBackend)
}


def backend_class(kind: str, options: dict[str, Any] | None = None) -> type:
    """The class of ``kind``, with ``options`` checked against its ``fit`` keywords.

    Raises
    ------
    ConfigError
        Unknown kind, or an option its ``fit`` does not take (the message lists them).

    Examples
    --------
    >>> backend_class("plda").__name__
    'PldaBackend'
    """
    try:
        cls = BACKENDS[kind]
    except KeyError:
        raise ConfigError(
            f"unknown back-end kind {kind!r} (known: {', '.join(sorted(BACKENDS))})"
        ) from None
    accepted = [
        p.name
        for p in inspect.signature(cls.fit).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in options or {}:
        if name not in accepted:
            have = ", ".join(accepted) or "none"
            raise ConfigError(f"back-end {kind!r} has no option {name!r} (options: {have})")
    return cls
