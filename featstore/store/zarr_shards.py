"""Our own encoding of Zarr v3 shard files, byte-identical to zarr's ``sharding_indexed`` codec.

The build writes frame-array shards without zarr's codec pipeline (which costs a thread hop
and several copies per shard) and the reader memory-maps them without it. Both rely on the
layout this module encodes and decodes, which is what zarr itself writes for an array with
``bytes``-only (little-endian) inner codecs, full-width chunks, ``index_codecs = [bytes,
crc32c]`` and ``index_location = end``::

    rows of chunk 0 | rows of chunk 1 | ... | last chunk padded with 0.0 to chunk_frames rows
    | index: (offset, nbytes) little-endian uint64 per chunk, 2**64 - 1 for absent chunks
    | crc32c of the index, 4 bytes little endian

``tests/test_zarr_shards.py`` checks this module byte for byte against zarr's own encoding,
so an upstream change of the format fails loudly there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError

__all__ = [
    "EMPTY_CHUNK",
    "check_shard_layout",
    "crc32c",
    "decode_shard_index",
    "shard_file_sizes",
    "shard_trailer",
]

EMPTY_CHUNK = 2**64 - 1
"""Offset and size recorded in a shard index for a chunk that is not stored."""

CRC_BYTES = 4
"""Size of the crc32c checksum that follows the shard index."""


def crc32c(data: bytes | memoryview) -> bytes:
    """The crc32c of ``data`` as zarr's ``crc32c`` codec stores it (4 bytes, little endian).

    Examples
    --------
    >>> crc32c(b"123456789").hex()  # the standard check value 0xe3069283
    '839206e3'
    """
    import google_crc32c  # a dependency of zarr's crc32c codec

    return int(google_crc32c.value(bytes(data))).to_bytes(CRC_BYTES, "little")


def shard_trailer(n_rows: int, chunk_frames: int, shard_frames: int, row_bytes: int) -> bytes:
    """The bytes that follow ``n_rows`` rows of data in a shard file.

    Parameters
    ----------
    n_rows : int
        Rows in the shard, ``1 <= n_rows <= shard_frames``.
    chunk_frames : int
        Rows per inner chunk (divides ``shard_frames``).
    shard_frames : int
        Rows per shard.
    row_bytes : int
        Bytes per row.

    Returns
    -------
    bytes
        Zero padding of the last chunk, the shard index and its crc32c.

    Examples
    --------
    >>> len(shard_trailer(3, 2, 4, row_bytes=4))  # 1 padding row, 2 index entries, crc
    40
    """
    if not 0 < n_rows <= shard_frames or shard_frames % chunk_frames:
        raise ValueError(
            f"not a shard: {n_rows} rows in shards of {shard_frames}, chunks of {chunk_frames}"
        )
    n_chunks = shard_frames // chunk_frames
    present = -(-n_rows // chunk_frames)
    chunk_bytes = chunk_frames * row_bytes
    index = np.full((n_chunks, 2), EMPTY_CHUNK, dtype="<u8")
    index[:present, 0] = np.arange(present, dtype=np.uint64) * chunk_bytes
    index[:present, 1] = chunk_bytes
    index_bytes = index.tobytes()
    pad = (present * chunk_frames - n_rows) * row_bytes
    return bytes(pad) + index_bytes + crc32c(index_bytes)


def shard_file_sizes(n_frames: int, n_bins: int, chunk_frames: int, shard_frames: int) -> list[int]:
    """Byte size of each shard file of an array of ``n_frames`` rows, as :func:`shard_trailer`
    (and zarr) write them: whole chunks, the last one padded, then the index and its crc32c.

    Parameters
    ----------
    n_frames, n_bins : int
        Shape of the array.
    chunk_frames, shard_frames : int
        Rows per inner chunk and per shard.

    Returns
    -------
    list of int
        One size per shard file ``c/<i>/0``, ``i = 0, 1, ...``.

    Examples
    --------
    >>> shard_file_sizes(3, 1, 2, 4)  # 2 chunks of 2 rows x 4 bytes, 2 index entries, crc
    [52]
    """
    sizes = []
    index_bytes = (shard_frames // chunk_frames) * 16 + CRC_BYTES
    for start in range(0, n_frames, shard_frames):
        rows = min(shard_frames, n_frames - start)
        present = -(-rows // chunk_frames)
        sizes.append(present * chunk_frames * n_bins * 4 + index_bytes)
    return sizes


def decode_shard_index(
    buffer: Any, n_chunks: int, n_checksums: int, at_end: bool, where: Path
) -> np.ndarray:
    """The ``(n_chunks, 2)`` table of ``(offset, nbytes)`` of a shard file's index.

    Parameters
    ----------
    buffer : bytes-like
        The whole shard file (a memory map).
    n_chunks : int
        Inner chunks per shard.
    n_checksums : int
        ``crc32c`` codecs applied to the index after ``bytes`` (1 for the layout of
        :func:`shard_trailer`); the outermost one is checked.
    at_end : bool
        The index is at the end of the file (else at its start).
    where : Path
        The file, for error messages.

    Returns
    -------
    np.ndarray
        uint64; entries of absent chunks are :data:`EMPTY_CHUNK`.

    Raises
    ------
    StoreError
        The file is shorter than its index, or the crc32c does not match.
    """
    size = n_chunks * 16 + n_checksums * CRC_BYTES
    if len(buffer) < size:
        raise StoreError(where, f"shard is truncated ({len(buffer)} bytes)")
    at = len(buffer) - size if at_end else 0
    end = at + size
    if n_checksums and crc32c(buffer[at : end - CRC_BYTES]) != bytes(buffer[end - CRC_BYTES : end]):
        raise StoreError(where, "corrupt shard: its index fails the crc32c check")
    return np.frombuffer(buffer, dtype="<u8", count=2 * n_chunks, offset=at).reshape(n_chunks, 2)


def check_shard_layout(meta: dict[str, Any], where: Path) -> None:
    """Refuse to hand-encode shards of an array whose ``zarr.json`` is not the expected layout.

    Parameters
    ----------
    meta : dict
        The array's parsed ``zarr.json``.
    where : Path
        The array's directory, for the error message.

    Raises
    ------
    StoreError
        Codecs, chunk key encoding, data type, fill value or chunk shape differ from the
        layout :func:`shard_trailer` encodes.
    """
    try:
        (codec,) = meta["codecs"]
        conf = codec["configuration"]
        ok = (
            codec["name"] == "sharding_indexed"
            and [c["name"] for c in conf["codecs"]] == ["bytes"]
            and conf["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
            and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
            and conf.get("index_location", "end") == "end"
            and meta["chunk_key_encoding"]["name"] == "default"
            and meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
            and meta["data_type"] == "float32"
            and float(meta["fill_value"]) == 0.0
            and tuple(conf["chunk_shape"])[1:] == tuple(meta["shape"])[1:]
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise StoreError(where, "frame array does not have the sharded, uncompressed layout")
