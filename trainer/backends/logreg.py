"""Logistic-regression back-end: a regularised linear classifier of bona fide vs spoof.

The embeddings are standardised (training mean and standard deviation per dimension) and
scikit-learn's ``LogisticRegression`` (L2, inverse strength ``C``, L-BFGS) is fitted without
class weights. Its logit ``w . z + b`` estimates the log posterior odds at the training
prior, ``LLR + log(n_bonafide / n_spoof)``; the score removes that prior:

    LLR(x) = w . z + b - log(n_bonafide / n_spoof)

(natural log; exact only as far as the regularised model is calibrated: use
``trainer calibrate`` for calibrated LLRs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["LogregBackend"]


@dataclass(frozen=True)
class LogregBackend:
    """Standardisation, weights, bias and the training prior log-odds."""

    kind: ClassVar[str] = "logreg"

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    prior_log_odds: float

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        label: np.ndarray,
        attack: np.ndarray,
        *,
        c: float = 1.0,
        max_iter: int = 1000,
    ) -> LogregBackend:
        """Fit on labelled embeddings (``attack`` is not used).

        Parameters
        ----------
        c : float, default 1.0
            Inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter : int, default 1000
            Most L-BFGS iterations.
        """
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        label = np.asarray(label)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        model = LogisticRegression(C=c, max_iter=max_iter).fit((x - mean) / scale, label)
        n_bona = int(np.count_nonzero(label == 1))
        return cls(
            mean=mean,
            scale=scale,
            coef=np.asarray(model.coef_[0], dtype=np.float64),
            intercept=float(model.intercept_[0]),
            prior_log_odds=float(np.log(n_bona / (label.size - n_bona))),
        )

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The classifier's logit (log posterior odds at the training prior), ``(N,)``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def score(self, x: np.ndarray) -> np.ndarray:
        """``logit(x) - log(n_bonafide / n_spoof)``, ``(N,)`` float64."""
        return self.logit(x) - self.prior_log_odds

    def params(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": np.array(self.intercept),
            "prior_log_odds": np.array(self.prior_log_odds),
        }

    def settings(self) -> dict[str, Any]:
        return {"classes": ["bonafide", "spoof"], "prior_log_odds": self.prior_log_odds}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], settings: dict[str, Any]) -> LogregBackend:
        return cls(
            mean=params["mean"],
            scale=params["scale"],
            coef=params["coef"],
            intercept=float(params["intercept"]),
            prior_log_odds=float(params["prior_log_odds"]),
        )
