"""Countermeasure models: GRCNN (dual-stream gated recurrent CNN), VGG10, LFCC-LCNN.

Models are plain ``nn.Module`` s without I/O (the training loop owns devices)::

    from trainer.models import build_model
    model = build_model("grcnn")
    logits = model(mgd=x1, logmel=x2)        # each (B, n_frames, 256) -> (B, 2)

See :mod:`trainer.models.registry` for the attributes every model carries and
:func:`register_model` to add one.
"""

from __future__ import annotations

from trainer.models.registry import (
    MODELS,
    CountermeasureModel,
    ModelConfigError,
    ModelError,
    ModelSpec,
    build_model,
    register_model,
)

__all__ = [
    "MODELS",
    "CountermeasureModel",
    "ModelConfigError",
    "ModelError",
    "ModelSpec",
    "build_model",
    "register_model",
]
