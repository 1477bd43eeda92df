"""trainer.models.pooling: the no-grad max pooling equals F.max_pool2d, values and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.models.pooling import MaxPool2d, max_pool2d


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 9),
    st.integers(1, 9),
    st.sampled_from([2, (2, 1), (1, 2), 3, (3, 2)]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_max_pool2d_equals_torch_without_grad(channels, height, width, kernel, ties, seed):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    height, width = max(height, kh), max(width, kw)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, height, width, generator=g)
    if ties:
        x = x.round()
    with torch.no_grad():
        assert torch.equal(max_pool2d(x, kernel), F.max_pool2d(x, kernel))


def test_nan_propagates_as_in_torch():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = float("nan")
    with torch.no_grad():
        out, ref = max_pool2d(x, 2), F.max_pool2d(x, 2)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 1


def test_channels_last_and_bf16():
    x = torch.randn(2, 4, 6, 8).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(max_pool2d(x, 2), F.max_pool2d(x, 2))
        xb = x.to(torch.bfloat16)
        assert torch.equal(max_pool2d(xb, (2, 1)), F.max_pool2d(xb, (2, 1)))


@pytest.mark.parametrize("kernel", [2, (2, 1), (1, 2), 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_gradients_are_torch_ones(kernel, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 5, generator=g).round().to(dtype)  # ties, odd sizes (cropped)
    x[0, 0] = 0.0  # whole tied windows
    x_new, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    new, ref = max_pool2d(x_new, kernel), F.max_pool2d(x_ref, kernel)
    assert torch.equal(new, ref)
    upstream = torch.randn(ref.shape, generator=g).to(dtype)
    new.backward(upstream)
    ref.backward(upstream)
    assert torch.equal(x_new.grad, x_ref.grad)  # a tie's gradient goes where torch sends it


def test_too_small_input_is_torch_error():
    with torch.no_grad(), pytest.raises(RuntimeError):
        max_pool2d(torch.zeros(1, 1, 1, 4), 2)


def test_module_form():
    pool = MaxPool2d((2, 1))
    assert pool.kernel_size == (2, 1) and "kernel_size=(2, 1)" in repr(pool)
    assert pool(torch.zeros(1, 2, 5, 3)).shape == (1, 2, 2, 3)
