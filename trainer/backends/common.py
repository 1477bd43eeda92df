"""Pieces the back-end kinds share: class lists, length normalisation, the spoof mixture."""

from __future__ import annotations

import numpy as np

__all__ = ["BONAFIDE", "SPOOF", "class_names", "length_normalise", "spoof_vs_bonafide"]

#: the class name of bona fide embeddings (always class 0)
BONAFIDE = "bonafide"
#: the class of spoofed embeddings whose attack is unknown (``-``)
SPOOF = "spoof"


def class_names(label: np.ndarray, attack: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Classes *bona fide* and each attack, and the class index of every embedding.

    Parameters
    ----------
    label : np.ndarray
        ``(N,)`` 1 bona fide, 0 spoof.
    attack : np.ndarray
        ``(N,)`` attack ids; a spoofed embedding with attack ``-`` is of class ``spoof``.

    Returns
    -------
    names : list of str
        ``bonafide`` first, then the attacks in sorted order.
    classes : np.ndarray
        ``(N,)`` int64 index into ``names``.

    Examples
    --------
    >>> names, cls = class_names(np.array([1, 0, 0]), np.array(["-", "A02", "A01"]))
    >>> names, cls.tolist()
    (['bonafide', 'A01', 'A02'], [0, 2, 1])
    """
    label = np.asarray(label)
    attack = np.where(np.asarray(attack) == "-", SPOOF, np.asarray(attack))
    attacks = sorted(set(attack[label == 0].tolist()))
    names = [BONAFIDE, *attacks]
    lookup = {a: i + 1 for i, a in enumerate(attacks)}
    classes = np.array(
        [
            0 if lab == 1 else lookup[a]
            for lab, a in zip(label.tolist(), attack.tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    return names, classes


def length_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit Euclidean length (zero rows stay zero).

    Examples
    --------
    >>> length_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def spoof_vs_bonafide(loglik: np.ndarray) -> np.ndarray:
    """``loglik[:, 0] - log mean_k exp(loglik[:, k])`` over the spoof classes ``k >= 1``.

    The LLR of bona fide (column 0) against an equal-weight mixture of the spoof classes.

    Examples
    --------
    >>> float(spoof_vs_bonafide(np.log(np.array([[0.5, 0.2, 0.3]])))[0])  # log(0.5 / 0.25)
    0.6931471805599453
    """
    from scipy.special import logsumexp

    spoof = logsumexp(loglik[:, 1:], axis=1) - np.log(loglik.shape[1] - 1)
    return loglik[:, 0] - spoof
