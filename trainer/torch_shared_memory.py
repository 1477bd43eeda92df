"""Tensors allocated directly in shared memory: the one place a private torch API is used.

A DataLoader worker's batch reaches the main process through shared memory. torch moves a
tensor there when it sends it (``share_memory_()``: a new block plus a copy); allocating the
batch in shared memory in the first place saves that copy. torch has no public call for it,
so this module wraps the private ``torch.UntypedStorage._new_shared`` and falls back to the
public (copying) route when it is missing. ``tests/test_torch_shared_memory.py`` pins what is
relied on, so a torch release that changes it fails there, not in a training run.
"""

from __future__ import annotations

import math

import torch

__all__ = ["HAS_NEW_SHARED", "empty_shared"]

_new_shared = getattr(torch.UntypedStorage, "_new_shared", None)

HAS_NEW_SHARED = _new_shared is not None
"""Whether this torch allocates shared storage directly (else :func:`empty_shared` copies)."""


def empty_shared(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` whose storage lives in shared memory.

    Parameters
    ----------
    shape : tuple of int
        Tensor shape.
    dtype : torch.dtype, default torch.float32
        Element type.

    Returns
    -------
    torch.Tensor
        Contiguous, ``is_shared()``; contents undefined.

    Examples
    --------
    >>> t = empty_shared((2, 3))
    >>> t.shape, t.is_shared()
    (torch.Size([2, 3]), True)
    """
    if _new_shared is None:  # pragma: no cover - a torch without the private allocator
        return torch.empty(shape, dtype=dtype).share_memory_()
    itemsize = torch.empty(0, dtype=dtype).element_size()
    storage = _new_shared(math.prod(shape) * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
