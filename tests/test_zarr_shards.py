"""featstore.store.zarr_shards: our shard encoding equals zarr's own, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from featstore.errors import StoreError
from featstore.store.zarr_shards import (
    EMPTY_CHUNK,
    check_shard_layout,
    crc32c,
    decode_shard_index,
    shard_trailer,
)

N_BINS = 5


def _zarr_array(root: Path, n_rows: int, chunk_frames: int, shard_frames: int):
    return zarr.open_group(root, mode="w", zarr_format=3).create_array(
        name="a",
        shape=(n_rows, N_BINS),
        dtype="float32",
        chunks=(chunk_frames, N_BINS),
        shards=(shard_frames, N_BINS),
        compressors=None,
        filters=None,
        fill_value=0.0,
        config={"write_empty_chunks": True},
    )


@pytest.mark.parametrize(
    ("n_rows", "chunk_frames", "shard_frames"),
    [(1, 4, 16), (4, 4, 16), (7, 4, 16), (16, 4, 16), (13, 8, 8), (3, 1, 4)],
)
def test_shard_bytes_equal_zarr_encoding(tmp_path, n_rows, chunk_frames, shard_frames):
    rng = np.random.default_rng(n_rows)
    data = rng.standard_normal((n_rows, N_BINS)).astype("<f4") + 1.0  # no row equals fill
    array = _zarr_array(tmp_path / "ref.zarr", n_rows, chunk_frames, shard_frames)
    array[:] = data
    check_shard_layout(array.metadata.to_dict(), tmp_path)
    row_bytes = N_BINS * 4
    for shard, start in enumerate(range(0, n_rows, shard_frames)):
        rows = data[start : start + shard_frames]
        ours = rows.tobytes() + shard_trailer(len(rows), chunk_frames, shard_frames, row_bytes)
        theirs = (tmp_path / "ref.zarr" / "a" / "c" / str(shard) / "0").read_bytes()
        assert ours == theirs
        table = decode_shard_index(theirs, shard_frames // chunk_frames, 1, True, tmp_path)
        present = -(-len(rows) // chunk_frames)
        assert table[:present, 1].tolist() == [chunk_frames * row_bytes] * present
        assert (table[present:] == EMPTY_CHUNK).all()


def test_decode_refuses_corrupt_and_truncated_index(tmp_path):
    good = bytes(8) + shard_trailer(2, 1, 4, row_bytes=4)
    decode_shard_index(good, 4, 1, True, tmp_path)
    bad = bytearray(good)
    bad[-10] ^= 1
    with pytest.raises(StoreError, match="crc32c"):
        decode_shard_index(bytes(bad), 4, 1, True, tmp_path)
    with pytest.raises(StoreError, match="truncated"):
        decode_shard_index(good[:20], 4, 1, True, tmp_path)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == (0xE3069283).to_bytes(4, "little")


def test_layout_check_refuses_compressed_arrays(tmp_path):
    array = zarr.open_group(tmp_path / "c.zarr", mode="w", zarr_format=3).create_array(
        name="a", shape=(8, N_BINS), dtype="float32", chunks=(4, N_BINS), shards=(8, N_BINS)
    )
    with pytest.raises(StoreError, match="sharded, uncompressed layout"):
        check_shard_layout(array.metadata.to_dict(), tmp_path)
