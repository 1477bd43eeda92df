"""Cosine back-end: cosine similarity to the bona fide class mean minus that to the spoof mean.

The embeddings are centred by the training mean; the class means are those of the centred
bona fide and spoofed training embeddings::

    score(x) = cos(x - c, mu_bona) - cos(x - c, mu_spoof)      in [-2, 2]

A similarity, not a likelihood ratio: calibrate it (``trainer calibrate``) before reading it
as an LLR. It needs no fitting beyond two means and is the baseline the others must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trainer.backends.common import length_normalise

__all__ = ["CosineBackend"]


@dataclass(frozen=True)
class CosineBackend:
    """The training mean and the unit-length bona fide and spoof means."""

    kind: ClassVar[str] = "cosine"

    centre: np.ndarray
    bonafide_mean: np.ndarray
    spoof_mean: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, label: np.ndarray, attack: np.ndarray) -> CosineBackend:
        """The means of the centred training embeddings (``attack`` is not used)."""
        x = np.asarray(x, dtype=np.float64)
        label = np.asarray(label)
        centre = x.mean(axis=0)
        means = np.stack([(x[label == k] - centre).mean(axis=0) for k in (1, 0)])
        bona, spoof = length_normalise(means)
        return cls(centre=centre, bonafide_mean=bona, spoof_mean=spoof)

    def score(self, x: np.ndarray) -> np.ndarray:
        """``cos(x - c, mu_bona) - cos(x - c, mu_spoof)``, ``(N,)`` float64.

        Examples
        --------
        >>> b = CosineBackend(np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
        >>> b.score(np.array([[2.0, 0.0], [1.0, 1.0]])).tolist()
        [1.0, 0.0]
        """
        xn = length_normalise(np.asarray(x, dtype=np.float64) - self.centre)
        return xn @ (self.bonafide_mean - self.spoof_mean)

    def params(self) -> dict[str, np.ndarray]:
        return {
            "centre": self.centre,
            "bonafide_mean": self.bonafide_mean,
            "spoof_mean": self.spoof_mean,
        }

    def settings(self) -> dict[str, Any]:
        return {"classes": ["bonafide", "spoof"]}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], settings: dict[str, Any]) -> CosineBackend:
        return cls(**params)
