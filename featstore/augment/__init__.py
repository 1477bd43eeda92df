"""Waveform augmentations: pure functions ``f(signal, rng, **params) -> signal``.

One module per family: :mod:`~featstore.augment.rawboost` (RawBoost algorithms 1-8),
:mod:`~featstore.augment.codec` (MP3/Vorbis/Opus, G.711), :mod:`~featstore.augment.noise`,
:mod:`~featstore.augment.reverb`, :mod:`~featstore.augment.channel` (gain, band limit).
:mod:`~featstore.augment.registry` names them with their parameter defaults (read from the
functions' signatures, as for features); :mod:`~featstore.augment.recipe` parses recipe
strings (``"rawboost-5|codec+noise"``) and applies them with a per-view RNG. See
``docs/augment.md``.

Every augmentation takes float64 samples at 16 kHz and a ``numpy.random.Generator`` (its
only source of randomness) and returns as many samples, finite, in [-1, 1) (scaled, never
clipped), the same for the same generator state. The built-ins also offer
``f.with_params(signal, rng, **params) -> (signal, drawn)``, the values they drew.

Importing this package imports no augmentation module and no SciPy.
"""

from __future__ import annotations

from featstore.augment.recipe import (
    Chain,
    Recipe,
    Step,
    apply_chain,
    apply_chain_with_params,
    augment,
    parse_recipe,
    view_rng,
)
from featstore.augment.registry import (
    AUGMENTATIONS,
    AugmentationSpec,
    get_augmentation,
    register_augmentation,
)

__all__ = [
    "AUGMENTATIONS",
    "AugmentationSpec",
    "Chain",
    "Recipe",
    "Step",
    "apply_chain",
    "apply_chain_with_params",
    "augment",
    "get_augmentation",
    "parse_recipe",
    "register_augmentation",
    "view_rng",
]
