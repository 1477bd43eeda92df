"""spoofstore's feature store: protocols + audio in, a chunked Zarr/HDF5 feature store out.

Public API::

    from featstore import compute_feature, FEATURES, build, open_store, verify_store

``import featstore`` is fast: heavy and optional dependencies (zarr, h5py, fsspec/s3fs,
dask/distributed, the Numba kernels) load inside the functions that need them; the full list
is in ``DEVELOPERS.md``.
"""

from __future__ import annotations

from featstore._version import __version__

# Imported eagerly so that the package attribute ``build`` is the function, not the submodule
# of the same name that importing it would otherwise bind.
from featstore.build import build
from featstore.errors import (
    AudioError,
    ConfigError,
    FeatureError,
    ManifestError,
    SpoofstoreError,
    StoreError,
)
from featstore.features.registry import FEATURES, FeatureSpec, compute_feature, register_feature
from featstore.store import open_store, verify_store

__all__ = [
    "FEATURES",
    "AudioError",
    "ConfigError",
    "FeatureError",
    "FeatureSpec",
    "ManifestError",
    "SpoofstoreError",
    "StoreError",
    "__version__",
    "build",
    "compute_feature",
    "open_store",
    "register_feature",
    "verify_store",
]
