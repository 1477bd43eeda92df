"""featstore.store.backends: Zarr and HDF5 implement the declared writer, sink and source."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from featstore.errors import StoreError
from featstore.store.backends import BACKENDS, FrameSink, StoreSource, StoreWriter
from featstore.store.hdf5_backend import Hdf5Source, Hdf5Writer, RawSink
from featstore.store.zarr_backend import ZarrSink, ZarrSource, ZarrWriter

IMPLEMENTATIONS = {
    "zarr": (ZarrWriter, ZarrSink, ZarrSource),
    "hdf5": (Hdf5Writer, RawSink, Hdf5Source),
}


def _members(protocol: type) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def _parameters(func: object) -> list[tuple[str, object]]:
    if isinstance(func, property):
        return []
    params = list(inspect.signature(func).parameters.values())[1:]  # without self
    return [(p.name, p.kind) for p in params]


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("index", [0, 1, 2], ids=["writer", "sink", "source"])
def test_backend_classes_implement_the_protocols(name: str, index: int) -> None:
    protocol = (StoreWriter, FrameSink, StoreSource)[index]
    cls = IMPLEMENTATIONS[name][index]
    for member, declared in _members(protocol).items():
        implemented = inspect.getattr_static(cls, member, None)
        assert implemented is not None, f"{cls.__name__} lacks {member}"
        assert isinstance(implemented, property) == isinstance(declared, property), member
        assert _parameters(implemented) == _parameters(declared), f"{cls.__name__}.{member}"
    extra = {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)} - set(
        _members(protocol)
    )
    assert not extra, f"{cls.__name__} has public methods outside {protocol.__name__}: {extra}"


def test_table_names_match_the_formats() -> None:
    assert sorted(BACKENDS) == ["hdf5", "zarr"]
    assert all(backend.name == key for key, backend in BACKENDS.items())
    assert BACKENDS["zarr"].writer is ZarrWriter and BACKENDS["hdf5"].writer is Hdf5Writer


def test_writer_factories_take_path_and_fsync(tmp_path: Path) -> None:
    for name, backend in BACKENDS.items():
        writer = backend.writer(tmp_path / f"s.{name}", fsync=False)
        assert not writer.exists() and not writer.is_store()
        assert writer.complete_metadata() is None


def test_remote_hdf5_is_refused_with_advice() -> None:
    with pytest.raises(StoreError, match="remote HDF5 stores are not supported; use Zarr"):
        BACKENDS["hdf5"].source("s3://bucket/store.h5", None)


def test_sinks_round_trip_a_shard(tmp_path: Path) -> None:
    rows = np.arange(40, dtype="<f4").reshape(8, 5)
    for name, backend in BACKENDS.items():
        writer = backend.writer(tmp_path / f"s.{'zarr' if name == 'zarr' else 'h5'}", fsync=False)
        writer.open({"format": "spoofstore.featstore", "complete": False})
        sink = writer.sink("train", "mgd", 5, chunk_frames=4, shard_frames=8)
        sink.write(0, rows)
        sink.write(8, rows[:3])
        np.testing.assert_array_equal(sink.read(8, 10), rows[:2])
        sink.truncate(8)
        sink.finish(8)
        np.testing.assert_array_equal(sink.read(0, 8), rows)


def test_zarr_resume_removes_temporary_shards_of_a_killed_build(tmp_path: Path) -> None:
    from featstore.atomic_files import temporary_sibling

    writer = BACKENDS["zarr"].writer(tmp_path / "s.zarr", fsync=False)
    writer.open({"format": "spoofstore.featstore", "complete": False})
    sink = writer.sink("train", "mgd", 5, chunk_frames=4, shard_frames=8)
    sink.write(0, np.ones((8, 5), dtype="<f4"))
    shard = tmp_path / "s.zarr" / "train" / "mgd" / "c" / "0" / "0"
    stray = temporary_sibling(shard)
    stray.write_bytes(b"half a shard")
    sink.truncate(8)
    assert shard.is_file() and not stray.exists()
