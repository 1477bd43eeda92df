"""Back-ends: classifiers of utterance embeddings that give natural-log LLR scores.

``plda`` (two-covariance PLDA on length-normalised, LDA-reduced embeddings, classes bona fide
and each attack), ``gmm`` (a GMM per class), ``logreg`` (regularised logistic regression)
and ``cosine`` (cosine to the class means). One module per kind, the table in
:mod:`~trainer.backends.registry`, the file format in :mod:`~trainer.backends.files`.

Examples
--------
>>> from trainer.backends import fit_backend, save_backend, score_embeddings  # doctest: +SKIP
>>> b = fit_backend("runs/x/embeddings_train.zarr", kind="plda",
...                 dev="runs/x/embeddings_dev.zarr")  # doctest: +SKIP
>>> save_backend("plda.npz", b)  # doctest: +SKIP
>>> score_embeddings("plda.npz", "runs/x/embeddings_eval.zarr", "scores.txt")  # doctest: +SKIP
"""

from __future__ import annotations

from trainer.backends.api import check_compatible, fit_backend, score_embeddings
from trainer.backends.files import TrainedBackend, load_backend, save_backend
from trainer.backends.registry import BACKENDS, Backend, backend_class

__all__ = [
    "BACKENDS",
    "Backend",
    "TrainedBackend",
    "backend_class",
    "check_compatible",
    "fit_backend",
    "load_backend",
    "save_backend",
    "score_embeddings",
]
