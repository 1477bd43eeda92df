"""Maxout over adjacent channel pairs (the max-feature-map of light CNNs).

Shared by the GRCNN gates and embedding layer and by the LCNN max-feature-map blocks. It is a
plain reshape + ``max`` (autograd-native; the backward pass is one index scatter), not a
Python-level ``torch.autograd.Function``.
"""

from __future__ import annotations

import torch
from torch import nn


def maxout(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Maximum over adjacent pairs ``(2i, 2i+1)`` along ``dim``, halving that dimension.

    Parameters
    ----------
    x : torch.Tensor
        Any tensor whose size along ``dim`` is even.
    dim : int, default 1
        The channel (feature) dimension.

    Returns
    -------
    torch.Tensor
        ``x`` with ``x.shape[dim] // 2`` entries along ``dim``: ``out[.., i, ..] =
        max(x[.., 2i, ..], x[.., 2i + 1, ..])``.

    Raises
    ------
    ValueError
        The size along ``dim`` is odd.

    Examples
    --------
    >>> maxout(torch.tensor([[1.0, 3.0, 5.0, 2.0]]))
    tensor([[3., 5.]])
    """
    dim = dim % x.ndim
    size = x.shape[dim]
    if size % 2:
        raise ValueError(f"maxout needs an even size along dim {dim}, got {size}")
    pairs = x.unflatten(dim, (size // 2, 2))
    return pairs.max(dim=dim + 1).values


class Maxout(nn.Module):
    """Module form of :func:`maxout` (pairs along ``dim``).

    Parameters
    ----------
    dim : int, default 1
        The channel (feature) dimension.

    Examples
    --------
    >>> Maxout()(torch.zeros(2, 6, 3, 3)).shape
    torch.Size([2, 3, 3, 3])
    """

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maxout(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
