"""The store reader: memory-mapped FrameArray == zarr/h5py reads, index, stats, verify, info."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import zarr
from corpus_fixture import make_corpus
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import featstore
from featstore.cli import main as featstore_main
from featstore.errors import ResourceError, StoreError
from featstore.features.registry import compute_feature
from featstore.store import FrameArray, check_name, open_store
from featstore.store.frame_array import Hole, Segment, merge_runs
from featstore.store.hdf5_backend import Hdf5Source
from featstore.store.inspect import store_info, verify_store
from featstore.store.statistics import column_moments

SMALL = {"chunk_frames": 32, "shard_frames": 128}  # many shards and chunks per split


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), {"train": 6, "dev": 4}, seed=1)


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def store_path(request, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    suffix = ".zarr" if request.param == "zarr" else ".h5"
    out = tmp_path_factory.mktemp("store") / f"s{suffix}"
    featstore.build(corpus / "protocols", corpus, out, jobs=1, quiet=True, **SMALL)
    return out


def native_reader(path: Path, split: str, feature: str):
    """zarr's / h5py's own slicing of the same array."""
    if path.suffix == ".zarr":
        arr = zarr.open_array(path / split / feature, mode="r")
        return arr, lambda a, b: arr[a:b]
    fh = h5py.File(path, "r")
    ds = fh[f"{split}/{feature}"]
    return ds, lambda a, b: ds[a:b]


def test_memmap_reads_equal_native_reads(store_path: Path) -> None:
    st = open_store(store_path)
    rng = np.random.default_rng(0)
    for split in st.splits:
        for feature in st.features:
            fa = st.array(split, feature)
            assert fa.memmapped
            native, read = native_reader(store_path, split, feature)
            assert fa.shape == tuple(native.shape)
            np.testing.assert_array_equal(fa[:], read(0, fa.shape[0]))
            for _ in range(30):  # crops crossing chunk and shard boundaries
                a = int(rng.integers(0, fa.shape[0] - 1))
                b = int(min(fa.shape[0], a + rng.integers(1, 300)))
                got = fa[a:b]
                assert got.dtype == np.float32 and got.flags.c_contiguous
                np.testing.assert_array_equal(got, read(a, b))
            np.testing.assert_array_equal(fa[5], read(5, 6)[0])
            np.testing.assert_array_equal(fa[-1], read(fa.shape[0] - 1, fa.shape[0])[0])


def test_zarr_layout_is_sharded_uncompressed(store_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    arr = zarr.open_array(store_path / "train" / "mgd", mode="r")
    assert arr.shards == (128, 257) and arr.chunks == (32, 257)
    assert arr.compressors == () and arr.dtype == np.float32
    shard_files = [p for p in (store_path / "train" / "mgd" / "c").rglob("*") if p.is_file()]
    assert len(shard_files) == -(-arr.shape[0] // 128)  # one file per shard, not per chunk


def test_shard_files_are_byte_identical_to_zarr_encoding(store_path: Path, tmp_path: Path):
    """The build writes shard files itself; zarr writing the same rows gives the same bytes."""
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    ours = store_path / "train" / "mgd"
    data = open_store(store_path).array("train", "mgd")[:]
    assert data.shape[0] % 128  # the last shard is partial, its last chunk padded
    ref = zarr.open_group(tmp_path / "ref.zarr", mode="w").create_array(
        name="mgd",
        shape=data.shape,
        dtype="float32",
        chunks=(32, 257),
        shards=(128, 257),
        compressors=None,
        filters=None,
        fill_value=0.0,
        config={"write_empty_chunks": True},
    )
    ref[:] = data
    files = sorted(p.relative_to(ours) for p in (ours / "c").rglob("*") if p.is_file())
    ref_files = sorted(
        p.relative_to(tmp_path / "ref.zarr" / "mgd")
        for p in (tmp_path / "ref.zarr" / "mgd" / "c").rglob("*")
        if p.is_file()
    )
    assert files == ref_files
    for rel in files:
        assert (ours / rel).read_bytes() == (tmp_path / "ref.zarr" / "mgd" / rel).read_bytes()


def test_hdf5_dataset_is_contiguous(store_path: Path) -> None:
    if store_path.suffix != ".h5":
        pytest.skip("hdf5 only")
    with h5py.File(store_path, "r") as fh:
        ds = fh["train/mgd"]
        assert ds.chunks is None and ds.id.get_offset() is not None


def test_index_frames_and_read_match_compute_feature(store_path: Path, corpus: Path) -> None:
    st = open_store(store_path)
    assert st.splits == ["dev", "train"]
    ix = st.index("train")
    assert ix.dtype.names[:9] == (
        "utt_id",
        "speaker",
        "system",
        "key",
        "label",
        "duration",
        "sample_rate",
        "channels",
        "notes",
    )
    assert ix["label"].dtype == np.int8 and ix["sample_rate"].dtype == np.int32
    assert ix["channels"].dtype == np.int16 and ix["duration"].dtype == np.float64
    assert list(ix["utt_id"]) == [f"LA_T_{1000000 + i}" for i in range(6)]
    assert list(ix["label"]) == [1, 0, 0, 1, 0, 0]
    assert list(ix["key"]) == ["bonafide", "spoof", "spoof", "bonafide", "spoof", "spoof"]
    assert ix["system"][1] == "A02" and ix["speaker"][1] == "LA_0001"
    for feature in ("mgd", "logmel"):
        offsets, n_frames = st.frames("train", feature)
        assert offsets.dtype == np.int64 and n_frames.dtype == np.int64
        assert offsets[0] == 0 and np.all(offsets[1:] == offsets[:-1] + n_frames[:-1])
        for row in (0, 3, 5):
            uid = str(ix["utt_id"][row])
            x, sr = sf.read(corpus / "flac" / f"{uid}.flac", dtype="float64")
            expected = compute_feature(feature, x, sr)
            np.testing.assert_array_equal(st.read("train", feature, uid), expected)
            np.testing.assert_array_equal(st.read("train", feature, uid, 10, 20), expected[10:20])
            np.testing.assert_array_equal(st.read("train", feature, uid, -5), expected[-5:])
            assert ix["duration"][row] == pytest.approx(x.size / 16000)


def test_stats_are_float64_accumulated_mean_std(store_path: Path) -> None:
    st = open_store(store_path)
    for split in st.splits:
        for feature in st.features:
            data = st.array(split, feature)[:].astype(np.float64)
            mean, std = st.stats(feature, split=split)
            assert mean.dtype == np.float32 and mean.shape == (data.shape[1],)
            np.testing.assert_allclose(mean, data.mean(axis=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(std, data.std(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(st.stats("mgd")[0], st.stats("mgd", split="train")[0])
    with pytest.raises(StoreError, match="no split 'eval'"):
        st.stats("mgd", split="eval")
    with pytest.raises(StoreError, match="no feature 'lfcc'"):
        st.array("train", "lfcc")


def test_metadata(store_path: Path) -> None:
    st = open_store(store_path)
    assert st.format == ("zarr" if store_path.suffix == ".zarr" else "hdf5")
    assert st.features["mgd"]["n_bins"] == 257 and st.features["mgd"]["rho"] == 0.1
    assert st.features["logmel"]["hop_length"] == 160
    assert len(st.fingerprint) == 64 and st.quarantine == []
    meta = st.metadata
    assert meta["format_version"] == 2 and meta["complete"] is True
    assert meta["config"]["format_version"] == 1  # the clean layout: fingerprints unchanged
    assert meta["augmentation"] is None and meta["view_quarantine"] == []
    assert {"spoofstore", "numpy", "numba", "soundfile", "soxr", "librosa"} <= set(meta["versions"])
    assert ("zarr" if st.format == "zarr" else "h5py") in meta["versions"]
    assert meta["splits"]["train"]["n_utterances"] == 6
    assert len(st.checksum("train", "mgd")) == 64


def test_store_pickles_by_path_and_reopens_after_fork(store_path: Path) -> None:
    st = open_store(store_path)
    before = st.array("dev", "mgd")[0:40]
    clone = pickle.loads(pickle.dumps(st))
    assert clone.path == st.path and not clone._arrays
    np.testing.assert_array_equal(clone.array("dev", "mgd")[0:40], before)
    st._pid = -1  # as if this were a forked child: handles are dropped and reopened
    np.testing.assert_array_equal(st.array("dev", "mgd")[0:40], before)
    assert st._pid == os.getpid()
    st.close()
    np.testing.assert_array_equal(st.array("dev", "mgd")[0:40], before)


def test_read_into_and_indexing_errors() -> None:
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    fa = FrameArray(
        (12, 4),
        segments=[Segment(0, 4, data[:4]), Segment(8, 10, data[8:])],
        holes=[Hole(4, 6, "s/f/c/1/0 is missing")],
        store="s.zarr",
        name="s/f",
    )
    out = np.full((12, 4), -1, dtype=np.float32)
    np.testing.assert_array_equal(fa.read_into(1, 4, out)[:3], data[1:4])
    np.testing.assert_array_equal(fa[8:10], data[8:10])
    with pytest.raises(StoreError, match=r"s.zarr: s/f: rows 4..8 .*s/f/c/1/0 is missing"):
        fa.read_into(2, 12, out)  # a hole is refused, never read as the fill value
    with pytest.raises(StoreError, match=r"rows 6..8 .*no stored bytes"):
        fa[6:9]  # a gap no hole explains
    with pytest.raises(StoreError, match=r"rows 10..12"):
        fa[9:12]  # past the last segment
    assert fa[3:3].shape == (0, 4) and fa[5:2].shape == (0, 4)
    with pytest.raises(IndexError):
        fa.read_into(0, 13, out)
    with pytest.raises(IndexError):
        fa[12]
    with pytest.raises(TypeError, match="step"):
        fa[::2]
    fallback = FrameArray((10, 4), reader=lambda a, b: data[a:b], holes=[Hole(6, 8, "gone")])
    assert not fallback.memmapped
    np.testing.assert_array_equal(fallback[3:6], data[3:6])
    with pytest.raises(StoreError, match=r"rows 6..7 .*gone"):
        fallback[5:7]


def test_merge_runs() -> None:
    assert merge_runs([(0, 2, 0), (2, 4, 8), (4, 6, 100), (6, 7, 108)], 4) == [
        (0, 4, 0),
        (4, 7, 100),
    ]
    assert merge_runs([(0, 2, 0), (3, 4, 12)], 4) == [(0, 2, 0), (3, 4, 12)]


def test_zarr_reads_missing_shards_and_chunks_as_the_fill_value(tmp_path: Path) -> None:
    """Why the reader refuses absent rows itself: zarr returns 0.0 for them, silently."""
    data = np.arange(1, 1 + 300 * 3, dtype=np.float32).reshape(300, 3)
    arr = zarr.create_array(
        tmp_path / "a.zarr",
        shape=data.shape,
        chunks=(32, 3),
        shards=(128, 3),
        dtype="float32",
        fill_value=0.0,
        compressors=None,
        config={"write_empty_chunks": True},
    )
    arr[:] = data
    (tmp_path / "a.zarr" / "c" / "1" / "0").unlink()
    assert not arr[128:256].any()  # a missing shard reads as zeros
    _drop_chunk(tmp_path / "a.zarr" / "c" / "0" / "0", chunk=1, n_chunks=4)
    assert not arr[32:64].any() and arr[0:32].all()  # so does a chunk absent from a shard


def _drop_chunk(shard: Path, chunk: int, n_chunks: int) -> None:
    """Mark ``chunk`` absent in a shard's index (valid crc32c; the file keeps its size)."""
    from featstore.store.zarr_shards import EMPTY_CHUNK, crc32c

    raw = bytearray(shard.read_bytes())
    at = len(raw) - n_chunks * 16 - 4
    index = np.frombuffer(bytes(raw[at : at + n_chunks * 16]), dtype="<u8").reshape(-1, 2).copy()
    index[chunk] = EMPTY_CHUNK
    raw[at:] = index.tobytes() + crc32c(index.tobytes())
    shard.write_bytes(bytes(raw))


def test_missing_shard_is_refused_on_open_and_on_read(store_path: Path, tmp_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    copy = _copy(store_path, tmp_path)
    (copy / "train" / "mgd" / "c" / "1" / "0").unlink()
    with pytest.raises(StoreError, match=r"damaged store: train/mgd/c/1/0 is missing;") as info:
        open_store(copy)
    assert str(info.value).startswith(str(copy)) and "\n" not in str(info.value)
    shard = copy / "dev" / "logmel" / "c" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match=r"dev/logmel/c/0/0 has \d+ bytes, expected \d+ .*1 more"):
        open_store(copy)

    st = open_store(copy, check_files=False)  # files gone after the store was opened
    fa = st.array("train", "mgd")
    np.testing.assert_array_equal(fa[0:128], open_store(store_path).array("train", "mgd")[:128])
    with pytest.raises(StoreError, match=r"train/mgd: rows 128..130 .*c/1/0 is missing"):
        fa[100:130]
    offsets, n_frames = st.frames("train", "mgd")
    utt = next(i for i in range(len(offsets)) if offsets[i] + n_frames[i] > 128)
    with pytest.raises(StoreError, match=r"train/mgd: rows .*train/mgd/c/1/0 is missing"):
        st.read("train", "mgd", str(st.index("train")["utt_id"][utt]))


def test_absent_chunk_in_a_present_shard_is_refused(store_path: Path, tmp_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    copy = _copy(store_path, tmp_path)
    _drop_chunk(copy / "train" / "mgd" / "c" / "0" / "0", chunk=2, n_chunks=4)
    fa = open_store(copy).array("train", "mgd")  # same file size: open passes, reads refuse
    assert fa[0:64].shape == (64, 257)
    with pytest.raises(StoreError, match=r"rows 64..96 .*train/mgd/c/0/0: chunk 2 is not stored"):
        fa[60:100]


def test_hdf5_missing_dataset_and_truncated_file(store_path: Path, tmp_path: Path) -> None:
    if store_path.suffix != ".h5":
        pytest.skip("hdf5 only")
    copy = _copy(store_path, tmp_path)
    with h5py.File(copy, "r+") as fh:
        del fh["train/logmel"]
        del fh["dev/index/label"]
    with pytest.raises(StoreError, match=r"dataset dev/index/label is missing \(and 1 more\)"):
        open_store(copy)
    st = open_store(copy, check_files=False)
    with pytest.raises(StoreError, match=r"train/logmel: no such frame array"):
        st.array("train", "logmel")
    with pytest.raises(StoreError, match=r"dev: index column 'label' is missing"):
        st.index("dev")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(store_path.read_bytes()[:-5000])
    with pytest.raises(StoreError, match="truncated file"):
        open_store(cut)


def test_remote_url_falls_back_to_zarr_reads(store_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    import fsspec

    fs = fsspec.filesystem("memory")
    remote = f"/remote-{os.getpid()}/s.zarr"
    fs.put(str(store_path), remote, recursive=True)
    try:
        st = open_store(f"memory://{remote}")
        local = open_store(store_path)
        assert st.splits == local.splits and st.fingerprint == local.fingerprint
        fa = st.array("train", "mgd")
        assert not fa.memmapped
        np.testing.assert_array_equal(fa[10:300], local.array("train", "mgd")[10:300])
        np.testing.assert_array_equal(st.index("dev"), local.index("dev"))
    finally:
        fs.rm(remote.rsplit("/", 1)[0], recursive=True)


def test_remote_store_with_a_missing_shard_is_refused(store_path: Path, tmp_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    import fsspec

    fs = fsspec.filesystem("memory")
    remote = f"/remote-missing-{os.getpid()}/s.zarr"
    fs.put(str(store_path), remote, recursive=True)
    fs.rm(f"{remote}/train/mgd/c/1/0")
    url = f"memory://{remote}"
    try:
        for cache_dir in (None, tmp_path / "cache"):
            with pytest.raises(StoreError, match=r"damaged store: train/mgd/c/1/0 is missing"):
                open_store(url, cache_dir=cache_dir)
            fa = open_store(url, cache_dir=cache_dir, check_files=False).array("train", "mgd")
            assert fa.memmapped == (cache_dir is not None)
            assert fa[0:128].any()
            with pytest.raises(StoreError, match=r"train/mgd: rows 128\.\..*c/1/0 is missing"):
                fa[120:130]  # zarr itself would return zeros here
    finally:
        fs.rm(remote.rsplit("/", 1)[0], recursive=True)


def test_hdf5_chunked_dataset_is_memory_mapped(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("dev/mgd", data=data, chunks=(64, 7), maxshape=(None, 7))
        fh.create_dataset("dev/zipped", data=data, chunks=(64, 7), compression="gzip")
    src = Hdf5Source(str(path))
    fa = src.frame_array("dev", "mgd")
    assert fa.memmapped
    np.testing.assert_array_equal(fa[:], data)
    np.testing.assert_array_equal(fa[63:130], data[63:130])
    zipped = src.frame_array("dev", "zipped")  # filtered: falls back to h5py reads
    assert not zipped.memmapped
    np.testing.assert_array_equal(zipped[10:500], data[10:500])
    src.close()


def test_open_store_errors(tmp_path: Path, store_path: Path) -> None:
    with pytest.raises(StoreError, match="no such feature store"):
        open_store(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="no such feature store"):
        open_store(tmp_path / "missing.h5")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a spoofstore feature store"):
        open_store(tmp_path / "plain.zarr")
    with pytest.raises(ValueError, match="read-only"):
        open_store(store_path, mode="w")


def test_info(store_path: Path) -> None:
    info = store_info(store_path)
    text = "\n".join(info.lines())
    assert [s.name for s in info.splits] == ["dev", "train"]
    assert info.splits[1].utterances == 6 and info.splits[1].disk_bytes > 0
    assert info.splits[1].frames["mgd"] == open_store(store_path).array("train", "mgd").shape[0]
    for word in ("mgd", "logmel", "257 bins", "hours", "MB on disk", "stats", "quarantined: 0"):
        assert word in text


def test_info_counts_labels_and_attacks(store_path: Path) -> None:
    info = store_info(store_path)
    train = info.splits[1]
    assert (train.bonafide, train.spoof, train.unlabelled) == (2, 4, 0)
    assert train.attacks == {"A02": 1, "A03": 1, "A05": 1, "A06": 1} and train.notes == {}
    assert "  train    bona fide 2, spoof 4; A02 1, A03 1, A05 1, A06 1" in info.lines()


def test_info_json_all_quarantined_and_notes(tmp_path: Path) -> None:
    """What happened to my data: quarantine with reasons, loading notes, as text and JSON."""
    import json

    root = make_corpus(tmp_path / "corpus", {"train": 3, "dev": 14}, seed=2)
    for i in range(2, 14):  # 12 dev utterances lose their audio: quarantined
        (root / "flac" / f"LA_D_{1000000 + i:07d}.flac").unlink()
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.3, 0.3, size=(44100, 2))
    sf.write(root / "flac" / "LA_T_1000001.flac", stereo, 44100)  # resampled + downmixed
    out = tmp_path / "s.zarr"
    featstore.build(
        root / "protocols", root, out, jobs=1, quiet=True, features="logmel", max_quarantine=0.9
    )

    text = "\n".join(store_info(out).lines())
    assert "quarantined: 12" in text and "... and 2 more (use --all)" in text
    assert text.count("no audio file") == 10
    assert "train    downmixed 1, resampled 1" in text
    full = "\n".join(store_info(out).lines(all_quarantined=True))
    assert full.count("no audio file") == 12 and "more (use --all)" not in full

    doc = store_info(out).to_dict()
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only
    assert doc["splits"]["dev"]["utterances"] == 2 and doc["splits"]["dev"]["quarantined"] == 12
    assert doc["splits"]["train"]["notes"] == {"downmixed": 1, "resampled": 1}
    assert doc["splits"]["train"]["attacks"] == {"A02": 1, "A03": 1}
    assert doc["splits"]["dev"]["bonafide"] + doc["splits"]["dev"]["spoof"] == 2
    assert len(doc["quarantined"]) == 12
    assert doc["quarantined"][0]["split"] == "dev" and "no audio" in doc["quarantined"][0]["reason"]
    assert set(doc["splits"]["train"]["stats"]["logmel"]) == {
        "mean_min",
        "mean_max",
        "std_min",
        "std_max",
    }


def test_info_cli_json_and_all(store_path: Path, capsys) -> None:
    import json

    for args in (["--json"], ["--all"], []):
        with pytest.raises(SystemExit) as exit_info:
            featstore_main(["info", str(store_path), *args])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        if args == ["--json"]:
            assert json.loads(out)["splits"]["train"]["spoof"] == 4
        else:
            assert "quarantined: 0" in out and "bona fide 2, spoof 4" in out


def test_verify_sound_store(store_path: Path) -> None:
    assert verify_store(store_path) == []


def _copy(store_path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / store_path.name
    if store_path.is_dir():
        shutil.copytree(store_path, copy)
    else:
        shutil.copy(store_path, copy)
    return copy


def _first_data_byte(path: Path, split: str, feature: str, row: int) -> tuple[Path, int]:
    """File and byte offset of ``row`` of a frame array (zarr shard 0 / h5 dataset)."""
    if path.suffix == ".zarr":
        return path / split / feature / "c" / "0" / "0", row * 257 * 4
    with h5py.File(path, "r") as fh:
        return path, fh[f"{split}/{feature}"].id.get_offset() + row * 257 * 4


def test_verify_finds_flipped_bytes_and_nan(store_path: Path, tmp_path: Path) -> None:
    copy = _copy(store_path, tmp_path)
    ix = open_store(copy).index("train")
    offsets, _ = open_store(copy).frames("train", "mgd")
    target, at = _first_data_byte(copy, "train", "mgd", int(offsets[1]) + 2)
    with open(target, "r+b") as fh:
        fh.seek(at)
        fh.write(np.array([np.nan], dtype="<f4").tobytes())
    problems = verify_store(copy)
    text = "\n".join(problems)
    assert f"train/mgd: checksum mismatch: {ix['utt_id'][1]}" in text
    assert "NaN/inf" in text and str(ix["utt_id"][1]) in text
    assert "train/logmel" not in text and "dev/" not in text


def test_verify_finds_truncated_shard_and_bad_index(store_path: Path, tmp_path: Path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    copy = _copy(store_path, tmp_path)
    shard = copy / "dev" / "logmel" / "c" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:100])
    n = zarr.open_array(copy / "train" / "index" / "n_frames.mgd", mode="r+")
    values = n[:]
    values[2] += 1
    n[:] = values
    problems = "\n".join(verify_store(copy))
    assert "dev/logmel: frame array unreadable" in problems
    assert "train/mgd: offsets not contiguous" in problems
    assert "train/mgd: index totals" in problems


@settings(max_examples=40)
@given(
    rows=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
        elements=st.floats(-1e6, 1e6, width=32),
    )
)
def test_column_moments_equal_float64_sums(rows: np.ndarray) -> None:
    sums, squares = column_moments(rows)
    y = rows.astype(np.float64)
    np.testing.assert_allclose(sums, y.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(squares, (y * y).sum(axis=0), rtol=1e-12)
    assert sums.dtype == squares.dtype == np.float64


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_column_moments_flag_non_finite_values(bad: float) -> None:
    rows = np.ones((5, 3), dtype=np.float32)
    rows[2, 1] = bad
    _, squares = column_moments(rows)
    assert np.isfinite(squares).tolist() == [True, False, True]


# --- names and index columns read from the store ----------------------------------------------


def _edit_metadata(path: Path, edit) -> None:
    """Apply ``edit(meta)`` to the store metadata of a Zarr or HDF5 store, in place."""
    import json

    if path.suffix == ".zarr":
        doc = json.loads((path / "zarr.json").read_text())
        edit(doc["attributes"]["spoofstore"])
        (path / "zarr.json").write_text(json.dumps(doc))
    else:
        with h5py.File(path, "r+") as fh:
            meta = json.loads(fh.attrs["spoofstore"])
            edit(meta)
            fh.attrs["spoofstore"] = json.dumps(meta)


def _rewrite_column(path: Path, split: str, column: str, values: np.ndarray) -> None:
    if path.suffix == ".zarr":
        group = zarr.open_group(path, mode="r+")
        dtype = str if values.dtype.kind == "U" else values.dtype
        group.create_array(
            f"{split}/index/{column}", shape=values.shape, dtype=dtype, overwrite=True
        )[:] = values
    else:
        with h5py.File(path, "r+") as fh:
            del fh[f"{split}/index/{column}"]
            if values.dtype.kind == "U":
                values = values.astype(object)
            fh.create_dataset(f"{split}/index/{column}", data=values)


@pytest.mark.parametrize("name", ["train", "LA-2019.dev_1", "a" * 128])
def test_check_name_accepts_plain_names(name: str) -> None:
    assert check_name(name, "split") == name


@pytest.mark.parametrize(
    "name", ["../../x", "..", "a..b", "/abs", ".hidden", "a/b", "a\\b", "", "a" * 129, 3, None]
)
def test_check_name_refuses_path_tricks(name: object) -> None:
    with pytest.raises(StoreError, match=r"invalid split name"):
        check_name(name, "split", "s.zarr")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["splits"].update({"../../x": m["splits"].pop("dev")}), "split name '../../x'"),
        (
            lambda m: m["features"].update({"../evil": m["features"].pop("mgd")}),
            "feature name '../evil'",
        ),
        (
            lambda m: m["splits"]["train"]["columns"].append("../../../etc/passwd"),
            "index column name '../../../etc/passwd'",
        ),
        (lambda m: m.update(splits=[]), "damaged store metadata: 'splits' is not an object"),
        (lambda m: m["splits"]["dev"].pop("n_utterances"), "splits.dev.n_utterances"),
    ],
)
def test_crafted_metadata_is_refused_on_open(store_path, tmp_path, edit, message) -> None:
    copy = _copy(store_path, tmp_path)
    _edit_metadata(copy, edit)
    with pytest.raises(StoreError, match=re.escape(message)):
        open_store(copy)
    with pytest.raises(SystemExit) as exit_info:
        featstore_main(["info", str(copy)])
    assert exit_info.value.code == 2


def test_names_given_by_callers_are_checked(store_path: Path) -> None:
    st = open_store(store_path)
    with pytest.raises(StoreError, match=re.escape("invalid split name '../dev'")):
        st.array("../dev", "mgd")
    with pytest.raises(StoreError, match=re.escape("invalid feature name 'mgd/../x'")):
        st.frames("train", "mgd/../x")


@pytest.mark.parametrize(
    "column, values, message",
    [
        ("offset.mgd", lambda v: v.astype(np.float64), "'offset.mgd' has dtype float64"),
        ("n_frames.mgd", lambda v: v[:-1], "'n_frames.mgd' has (5,) rows, expected 6"),
        ("n_frames.mgd", lambda v: v + (np.arange(len(v)) == 2), "'offset.mgd' is not contiguous"),
        ("n_frames.mgd", lambda v: v * (np.arange(len(v)) != 1), "'n_frames.mgd' is not positive"),
        ("offset.mgd", lambda v: v[::-1].copy(), "'offset.mgd' is not contiguous from 0 at row 0"),
        ("label", lambda v: np.zeros_like(v), "'label' disagrees with the key column"),
        ("utt_id", lambda v: np.array([""] * len(v)), "'utt_id' is empty at row 0"),
    ],
)
def test_damaged_index_columns_are_refused(store_path, tmp_path, column, values, message) -> None:
    copy = _copy(store_path, tmp_path)
    raw = open_store(copy).raw_index_columns("train")[column]
    _rewrite_column(copy, "train", column, values(raw))
    st = open_store(copy)
    with pytest.raises(StoreError, match=re.escape(f"train: index column {message}")):
        st.frames("train", "mgd")
    with pytest.raises(StoreError, match=re.escape(message)):
        st.index("train")
    st.index("dev")  # the other split is fine
    problems = verify_store(copy)  # verify lists the same finding
    assert any(message in p or f"{column} has {len(raw) - 1} rows" in p for p in problems)


def test_index_column_whose_chunk_is_missing_is_refused(store_path, tmp_path) -> None:
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    copy = _copy(store_path, tmp_path)
    (copy / "train" / "index" / "n_frames.logmel" / "c" / "0").unlink()  # zarr reads zeros
    with pytest.raises(StoreError, match=r"train: index column 'n_frames.logmel' is not positive"):
        open_store(copy).frames("train", "mgd")


def test_verify_lists_every_missing_file_and_the_utterances_in_them(store_path, tmp_path, capsys):
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    copy = _copy(store_path, tmp_path)
    (copy / "train" / "mgd" / "c" / "1" / "0").unlink()
    (copy / "dev" / "logmel" / "c" / "0" / "0").unlink()
    problems = verify_store(copy)
    assert "train/mgd/c/1/0 is missing" in problems and "dev/logmel/c/0/0 is missing" in problems
    assert any(p.startswith("train/mgd: rows not stored: LA_T_") for p in problems)
    with pytest.raises(StoreError, match=r"verify found \d+ problem\(s\), the first: dev/logmel"):
        verify_store(copy, strict=True)
    with pytest.raises(SystemExit) as exit_info:
        featstore_main(["verify", str(copy)])
    assert exit_info.value.code == 1 and "train/mgd/c/1/0 is missing" in capsys.readouterr().err


def test_unreadable_store_files_are_an_environment_fault(store_path, monkeypatch, capsys):
    """Permission denied is not bad input: one error line and exit code 1, not 2."""
    if store_path.suffix != ".zarr":
        pytest.skip("zarr only")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if "mgd/c/" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(ResourceError, match="cannot read the store: Permission denied"):
        open_store(store_path)
    with pytest.raises(SystemExit) as exit_info:
        featstore_main(["info", str(store_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1
