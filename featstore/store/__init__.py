"""The feature store: versioned layout, Zarr v3 and HDF5 backends, memory-mapped reader.

Public API::

    from featstore.store import open_store, verify_store, check_name, Store, FrameArray
"""

from __future__ import annotations

from featstore.store.frame_array import FrameArray
from featstore.store.inspect import verify_store
from featstore.store.layout import check_name
from featstore.store.reader import Store, open_store

__all__ = ["FrameArray", "Store", "check_name", "open_store", "verify_store"]
