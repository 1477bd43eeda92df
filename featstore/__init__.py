"""spoofstore's feature store: protocols + audio in, a chunked Zarr/HDF5 feature store out.

Public API::

    from featstore import compute_feature, FEATURES, build, open_store

Heavy modules (Numba kernels, zarr, h5py) load on first use, so ``import featstore`` is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featstore._version import __version__

# Eager (it is light: no zarr/Numba at import) so that the package attribute ``build`` is the
# function, not the submodule of the same name that importing it would otherwise bind.
from featstore.build import build
from featstore.errors import (
    AudioError,
    FeatureError,
    ManifestError,
    SpoofstoreError,
    StoreError,
)
from featstore.features.registry import FEATURES, FeatureSpec, compute_feature

if TYPE_CHECKING:
    from featstore.store import open_store

_LAZY = {
    "open_store": "featstore.store",
}

__all__ = [
    "FEATURES",
    "AudioError",
    "FeatureError",
    "FeatureSpec",
    "ManifestError",
    "SpoofstoreError",
    "StoreError",
    "__version__",
    "build",
    "compute_feature",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")
