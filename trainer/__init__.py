"""spoofstore's trainer: crop samplers over a feature store, models, training, scoring, metrics.

Public API::

    import trainer
    model = trainer.build_model("grcnn")
    run = trainer.fit("store.zarr", model="grcnn", out="runs/grcnn", epochs=1)

Modules load on first use, so ``import trainer`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from featstore._version import __version__

_LAZY = {
    "build_model": "trainer.models",
    "MODELS": "trainer.models",
    "register_model": "trainer.models",
    "fit": "trainer.training",
    "FitConfig": "trainer.config",
    "score": "trainer.scoring",
    "compute_metrics": "trainer.metrics",
    "embed": "trainer.embedding_extraction",
    "read_embeddings": "trainer.embeddings",
    "write_embeddings": "trainer.embeddings",
    "fit_backend": "trainer.backends",
    "score_embeddings": "trainer.backends",
}

__all__ = [
    "MODELS",
    "FitConfig",
    "__version__",
    "build_model",
    "compute_metrics",
    "embed",
    "fit",
    "fit_backend",
    "read_embeddings",
    "register_model",
    "score",
    "score_embeddings",
    "write_embeddings",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
