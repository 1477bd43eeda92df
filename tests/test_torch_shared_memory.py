"""trainer.torch_shared_memory: what the private torch allocator is relied on to do.

These tests fail loudly when a torch release changes ``UntypedStorage._new_shared`` (gone,
renamed, other arguments, or storage no longer shared), before a training run misbehaves.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.multiprocessing as mp

from trainer import torch_shared_memory
from trainer.torch_shared_memory import empty_shared


def test_torch_still_has_the_private_allocator():
    assert torch_shared_memory.HAS_NEW_SHARED, (
        "torch.UntypedStorage._new_shared is gone: batches from DataLoader workers now take "
        "the copying fallback; find the new allocator and update trainer/torch_shared_memory.py"
    )
    storage = torch.UntypedStorage._new_shared(64)
    assert storage.nbytes() == 64 and storage.is_shared()


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_empty_shared_gives_a_contiguous_shared_tensor(dtype):
    t = empty_shared((3, 5, 2), dtype)
    assert t.shape == (3, 5, 2) and t.dtype == dtype
    assert t.is_contiguous() and t.is_shared()
    assert t.untyped_storage().nbytes() == 30 * t.element_size()
    t.fill_(7)
    assert t.sum().item() == 7 * 30
    view = t.numpy()  # the data layer fills batches through a NumPy view
    view[0, 0, 0] = 1
    assert t[0, 0, 0].item() == 1


def _fill(queue, received):
    t = empty_shared((4,))
    t.copy_(torch.arange(4.0))
    queue.put(t)
    received.wait(60)  # the sender must outlive the hand-over of its shared block


def test_a_tensor_sent_from_another_process_arrives_intact():
    ctx = mp.get_context("fork")
    queue, received = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_fill, args=(queue, received))
    proc.start()
    got = queue.get(timeout=60).clone()
    received.set()
    proc.join(timeout=60)
    assert got.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_empty_shared_tensor_pickles_by_value():
    t = empty_shared((2,))
    t.copy_(torch.tensor([1.5, -2.0]))
    assert pickle.loads(pickle.dumps(t)).tolist() == [1.5, -2.0]
