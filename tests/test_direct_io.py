"""Shard files written with O_DIRECT (where available) hold exactly the intended bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from featstore.store.direct_io import ALIGNMENT, aligned_empty, write_new_file


@pytest.mark.parametrize(
    "nbytes", [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, 3 * ALIGNMENT + 17, (9 << 20) + 5]
)
@pytest.mark.parametrize("aligned", [True, False])
def test_file_holds_payload_then_trailer(tmp_path: Path, nbytes: int, aligned: bool) -> None:
    buf = aligned_empty((nbytes + 1,), np.uint8)
    buf[:] = np.random.default_rng(nbytes).integers(0, 256, nbytes + 1, dtype=np.uint8)
    payload = buf[:nbytes] if aligned else buf[1:]
    path = tmp_path / "shard"
    path.write_bytes(b"x" * (nbytes + 10_000))  # an older, longer file is truncated
    direct = write_new_file(path, payload, b"trailer", fsync=True)
    assert path.read_bytes() == payload.tobytes() + b"trailer"
    if not aligned or nbytes < ALIGNMENT:
        assert not direct


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_falls_back_where_o_direct_is_refused(tmp_path: Path, monkeypatch, refused_at: str):
    real_open, real_pwrite = os.open, os.pwrite
    direct_fds: set[int] = set()

    def fake_open(path, flags, *args):
        if flags & os.O_DIRECT and refused_at == "open":
            raise OSError(errno.EINVAL, "Invalid argument")
        fd = real_open(path, flags, *args)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def fake_pwrite(fd, data, offset):
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "pwrite", fake_pwrite)
    payload = aligned_empty((4 * ALIGNMENT + 3,), np.uint8)
    payload[:] = np.arange(payload.size) % 251
    path = tmp_path / "f"
    assert not write_new_file(path, payload, b"end", fsync=False)
    assert path.read_bytes() == payload.tobytes() + b"end"


def test_aligned_empty_shapes_and_alignment() -> None:
    for shape in [(0,), (1, 257), (512, 256), (3, 4, 5)]:
        a = aligned_empty(shape, np.float32)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        assert a.flags.writeable
        assert a.size == 0 or a.ctypes.data % ALIGNMENT == 0  # (numpy moves empty views)


def test_non_contiguous_payload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        write_new_file(tmp_path / "f", np.zeros((4, 4))[:, ::2], b"", fsync=False)
