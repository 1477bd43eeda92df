"""PLDA back-end: two-covariance PLDA on length-normalised, LDA-reduced embeddings.

The recipe of LC-GRNN (Gomez-Alanis et al., 2019): every training embedding is centred
(training mean) and length-normalised, reduced by LDA (scikit-learn's
``LinearDiscriminantAnalysis``, eigen solver, shrinkage 1e-3) over the classes *bona fide*
and *each training attack*, and modelled by a two-covariance PLDA (Sizov et al., 2014,
"Unifying probabilistic linear discriminant analysis variants"), written here:

    y_k ~ N(mu, B)            the latent mean of class k
    x | y_k ~ N(y_k, W)       an embedding of class k

fitted by EM (:meth:`TwoCovariancePLDA.fit`). Given class k's ``n_k`` training embeddings
with sum ``s_k``, the posterior of ``y_k`` is ``N(m_k, S_k)`` with
``S_k = (B^-1 + n_k W^-1)^-1`` and ``m_k = S_k (B^-1 mu + W^-1 s_k)``, and a new embedding
of class k has the *predictive* distribution ``N(m_k, W + S_k)``.

The score of an embedding x (after centring, length normalisation and LDA) is the
natural-log likelihood ratio of bona fide against spoof, the spoof hypothesis being an
equal-weight mixture of the K training attacks::

    LLR(x) = log N(x; m_bona, W + S_bona) - log( (1/K) sum_k N(x; m_k, W + S_k) )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from trainer.backends.common import class_names, length_normalise, spoof_vs_bonafide

__all__ = ["PldaBackend", "PredictiveClasses", "TwoCovariancePLDA"]

_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class PredictiveClasses:
    """Gaussian predictive distributions of K classes, ``N(means[k], covariances[k])``.

    Attributes
    ----------
    means : np.ndarray
        ``(K, d)``.
    covariances : np.ndarray
        ``(K, d, d)``, symmetric positive definite.
    """

    means: np.ndarray
    covariances: np.ndarray

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """``log N(x_i; means[k], covariances[k])`` for every row and class, ``(N, K)``.

        Examples
        --------
        >>> pc = PredictiveClasses(np.zeros((1, 1)), np.ones((1, 1, 1)))
        >>> round(float(pc.log_likelihoods(np.zeros((1, 1)))[0, 0]), 6)  # -log(2 pi) / 2
        -0.918939
        """
        x = np.asarray(x, dtype=np.float64)
        chol = np.linalg.cholesky(self.covariances)  # (K, d, d)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        out = np.empty((x.shape[0], self.means.shape[0]))
        for k in range(self.means.shape[0]):
            # solve L z = (x - m)^T: |z|^2 is the Mahalanobis distance
            z = np.linalg.solve(chol[k], (x - self.means[k]).T)
            out[:, k] = -0.5 * (np.einsum("ij,ij->j", z, z) + logdet[k] + x.shape[1] * _LOG_2PI)
        return out


@dataclass(frozen=True)
class TwoCovariancePLDA:
    """The two-covariance PLDA model: class means ``~ N(mean, between)``, embeddings of a
    class ``~ N(class mean, within)``.

    Attributes
    ----------
    mean : np.ndarray
        ``(d,)``.
    between, within : np.ndarray
        ``(d, d)`` covariances B and W.
    """

    mean: np.ndarray
    between: np.ndarray
    within: np.ndarray

    @classmethod
    def fit(
        cls, x: np.ndarray, classes: np.ndarray, *, n_iter: int = 100, tol: float = 1e-6
    ) -> TwoCovariancePLDA:
        """Maximum-likelihood B, W and mean by EM, started from the moment estimates.

        Parameters
        ----------
        x : np.ndarray
            ``(N, d)`` embeddings.
        classes : np.ndarray
            ``(N,)`` integer class of every row, 0..K-1, every class present; K >= 2.
        n_iter : int, default 100
            Most EM iterations.
        tol : float, default 1e-6
            Stop when B and W change by less than ``tol`` relative (Frobenius norm).

        Returns
        -------
        TwoCovariancePLDA
        """
        x = np.asarray(x, dtype=np.float64)
        n_k, sums = _class_sums(x, classes)
        n, d = x.shape
        means = sums / n_k[:, None]
        scatter = x.T @ x
        mu = means.mean(axis=0)
        within = (scatter - (sums.T / n_k) @ sums) / n
        between = np.cov(means.T, bias=True).reshape(d, d)
        for _ in range(n_iter):
            between = _floor(between)
            within = _floor(within)
            post_means, post_covs = _posteriors(mu, between, within, n_k, sums)
            mu_new = post_means.mean(axis=0)
            dm = post_means - mu_new
            b_new = (post_covs.sum(axis=0) + dm.T @ dm) / len(n_k)
            cross = sums.T @ post_means
            w_new = (
                scatter
                - cross
                - cross.T
                + (post_means.T * n_k) @ post_means
                + np.einsum("k,kij->ij", n_k, post_covs)
            ) / n
            change = max(
                np.linalg.norm(b_new - between) / np.linalg.norm(between),
                np.linalg.norm(w_new - within) / np.linalg.norm(within),
            )
            mu, between, within = mu_new, _sym(b_new), _sym(w_new)
            if change < tol:
                break
        return cls(mean=mu, between=_floor(between), within=_floor(within))

    def class_models(self, x: np.ndarray, classes: np.ndarray) -> PredictiveClasses:
        """The predictive distribution ``N(m_k, W + S_k)`` of each class given its data.

        Parameters
        ----------
        x : np.ndarray
            ``(N, d)`` enrolment embeddings.
        classes : np.ndarray
            ``(N,)`` class of every row, 0..K-1, every class present.

        Returns
        -------
        PredictiveClasses

        Examples
        --------
        A hand-worked case: B = W = 1, mean 0, one embedding per class (2 and -2): the
        posterior precision is 1/B + 1/W = 2, so m = (0 + 2) / 2 = 1 (and -1), and the
        predictive variance is W + 1/2 = 1.5.

        >>> plda = TwoCovariancePLDA(np.zeros(1), np.ones((1, 1)), np.ones((1, 1)))
        >>> pc = plda.class_models(np.array([[2.0], [-2.0]]), np.array([0, 1]))
        >>> pc.means.ravel().tolist(), pc.covariances.ravel().tolist()
        ([1.0, -1.0], [1.5, 1.5])
        """
        n_k, sums = _class_sums(np.asarray(x, dtype=np.float64), classes)
        means, covs = _posteriors(self.mean, self.between, self.within, n_k, sums)
        return PredictiveClasses(means=means, covariances=_sym(covs + self.within))


def _class_sums(x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.asarray(classes)
    k = int(classes.max()) + 1
    n_k = np.bincount(classes, minlength=k).astype(np.float64)
    if np.any(n_k == 0):
        raise ValueError(f"class {int(np.flatnonzero(n_k == 0)[0])} has no embeddings")
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, classes, x)
    return n_k, sums


def _posteriors(
    mu: np.ndarray, between: np.ndarray, within: np.ndarray, n_k: np.ndarray, sums: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means ``(K, d)`` and covariances ``(K, d, d)`` of the class means."""
    b_inv = np.linalg.inv(between)
    w_inv = np.linalg.inv(within)
    precisions = b_inv[None] + n_k[:, None, None] * w_inv[None]
    covs = _sym(np.linalg.inv(precisions))
    rhs = (b_inv @ mu)[None] + sums @ w_inv  # (K, d); W^-1 symmetric
    means = np.einsum("kij,kj->ki", covs, rhs)
    return means, covs


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def _floor(cov: np.ndarray, rel: float = 1e-8) -> np.ndarray:
    """``cov`` with its eigenvalues raised to ``rel`` x the largest (keeps it invertible)."""
    vals, vecs = np.linalg.eigh(_sym(cov))
    floor = max(rel * float(vals.max()), 1e-12)
    if vals.min() >= floor:
        return _sym(cov)
    return _sym((vecs * np.maximum(vals, floor)) @ vecs.T)


@dataclass(frozen=True)
class PldaBackend:
    """Centre, length-normalise, LDA, then two-covariance PLDA; see the module docstring.

    Attributes
    ----------
    centre : np.ndarray
        ``(D,)`` training mean, subtracted before length normalisation.
    lda_mean : np.ndarray
        ``(D,)`` the LDA's centre (of the normalised embeddings).
    lda_scalings : np.ndarray
        ``(D, d)`` the LDA projection.
    plda_mean, between, within : np.ndarray
        The PLDA model in the LDA space.
    class_means : np.ndarray
        ``(K + 1, d)`` predictive means, bona fide first.
    class_covariances : np.ndarray
        ``(K + 1, d, d)`` predictive covariances.
    classes : tuple of str
        ``bonafide`` and the training attacks, in the order of ``class_means``.
    """

    kind: ClassVar[str] = "plda"

    centre: np.ndarray
    lda_mean: np.ndarray
    lda_scalings: np.ndarray
    plda_mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    class_means: np.ndarray
    class_covariances: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        label: np.ndarray,
        attack: np.ndarray,
        *,
        lda_dim: int | None = None,
        n_iter: int = 100,
    ) -> PldaBackend:
        """Fit on labelled embeddings (classes: bona fide and every attack).

        Parameters
        ----------
        x : np.ndarray
            ``(N, D)`` embeddings.
        label : np.ndarray
            ``(N,)`` 1 bona fide, 0 spoof.
        attack : np.ndarray
            ``(N,)`` attack id of every spoofed embedding (a spoof class each).
        lda_dim : int, optional
            LDA output dimension [default and maximum: number of classes - 1, at most D].
        n_iter : int, default 100
            Most EM iterations of the PLDA.
        """
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        names, classes = class_names(label, attack)
        x = np.asarray(x, dtype=np.float64)
        centre = x.mean(axis=0)
        xn = length_normalise(x - centre)
        max_dim = min(len(names) - 1, x.shape[1])
        dim = max_dim if lda_dim is None else max(1, min(int(lda_dim), max_dim))
        # the eigen solver (with a slight fixed shrinkage, so that the within-class covariance
        # is invertible) is 8-20x faster than the default SVD one at 25k x 960 (bench)
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=1e-3, n_components=dim)
        lda.fit(xn, classes)
        scalings = np.asarray(lda.scalings_)[:, :dim]
        lda_mean = xn.mean(axis=0)
        z = (xn - lda_mean) @ scalings
        plda = TwoCovariancePLDA.fit(z, classes, n_iter=n_iter)
        pc = plda.class_models(z, classes)
        return cls(
            centre=centre,
            lda_mean=lda_mean,
            lda_scalings=scalings,
            plda_mean=plda.mean,
            between=plda.between,
            within=plda.within,
            class_means=pc.means,
            class_covariances=pc.covariances,
            classes=tuple(names),
        )

    def project(self, x: np.ndarray) -> np.ndarray:
        """Centred, length-normalised, LDA-projected embeddings ``(N, d)``."""
        xn = length_normalise(np.asarray(x, dtype=np.float64) - self.centre)
        return (xn - self.lda_mean) @ self.lda_scalings

    def score(self, x: np.ndarray) -> np.ndarray:
        """Natural-log LLR of bona fide against the spoof classes, ``(N,)`` float64."""
        pc = PredictiveClasses(self.class_means, self.class_covariances)
        return spoof_vs_bonafide(pc.log_likelihoods(self.project(x)))

    @property
    def output_dim(self) -> int:
        """The LDA / PLDA dimension."""
        return int(self.lda_scalings.shape[1])

    def params(self) -> dict[str, np.ndarray]:
        """The arrays to save (see :func:`trainer.backends.files.save_backend`)."""
        names = (
            "centre",
            "lda_mean",
            "lda_scalings",
            "plda_mean",
            "between",
            "within",
            "class_means",
            "class_covariances",
        )
        return {n: getattr(self, n) for n in names}

    def settings(self) -> dict[str, Any]:
        """JSON facts of the header: the classes and the LDA dimension."""
        return {"classes": list(self.classes), "lda_dim": self.output_dim}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], settings: dict[str, Any]) -> PldaBackend:
        """Rebuild from :meth:`params` and :meth:`settings`."""
        return cls(**params, classes=tuple(settings["classes"]))
