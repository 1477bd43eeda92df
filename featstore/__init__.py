"""spoofstore's feature store: protocols + audio in, a chunked Zarr/HDF5 feature store out.

Public API::

    from featstore import compute_feature, FEATURES, build, open_store

``import featstore`` is fast: heavy and optional dependencies are imported only where they
are first needed, inside the functions that use them, and nowhere else:

- ``zarr`` (Zarr backend, :mod:`featstore.store.zarr_backend`; ``google_crc32c`` with it),
- ``h5py`` (HDF5 backend, :mod:`featstore.store.hdf5_backend`),
- ``fsspec`` and its protocol packages such as ``s3fs`` (stores at URLs,
  :mod:`featstore.store.fsspec_io`; ``pip install 'spoofstore[scale]'``),
- ``dask`` / ``distributed`` (``--backend dask``, :mod:`featstore.parallel` and
  :mod:`featstore.joblib_dask_adapter`; ``spoofstore[scale]``),
- the Numba feature kernels (:mod:`featstore.features`).
"""

from __future__ import annotations

from featstore._version import __version__

# Imported eagerly so that the package attribute ``build`` is the function, not the submodule
# of the same name that importing it would otherwise bind.
from featstore.build import build
from featstore.errors import (
    AudioError,
    FeatureError,
    ManifestError,
    SpoofstoreError,
    StoreError,
)
from featstore.features.registry import FEATURES, FeatureSpec, compute_feature
from featstore.store import open_store

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
