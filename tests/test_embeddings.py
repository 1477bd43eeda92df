"""Embedding files: EmbeddingSet checks, .npz and Zarr round trips, atomic replacement, and
every malformed file refused with one EmbeddingError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from trainer.embeddings import EmbeddingSet, read_embeddings, write_embeddings
from trainer.errors import EmbeddingError


def _emb(n: int = 6, d: int = 4, seed: int = 0, **meta) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    label = np.array([1, 0, 0, -1, 1, 0][:n] * (n // 6 + 1))[:n]
    attack = np.where(label == 1, "-", np.where(label == 0, "A07", "-"))
    return EmbeddingSet(
        rng.normal(size=(n, d)).astype(np.float32),
        [f"LA_E_{i:05d}" for i in range(n)],
        label,
        attack,
        {"model": "grcnn", "run": "runs/grcnn-1", "split": "eval", "dim": d, **meta},
    )


@pytest.mark.parametrize("name", ["e.npz", "e.zarr", "embeddings_eval"])
def test_round_trip_is_exact(tmp_path, name):
    emb = _emb(n=13, d=7)
    path = write_embeddings(tmp_path / "sub" / name, emb)
    back = read_embeddings(path)
    assert back.vectors.dtype == np.float32 and back.label.dtype == np.int8
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.utt_id.tolist() == emb.utt_id.tolist()
    assert back.label.tolist() == emb.label.tolist()
    assert back.attack.tolist() == emb.attack.tolist()
    assert back.meta == emb.meta
    assert (back.dim, len(back), back.n_bonafide, back.n_spoof) == (7, 13, 5, 6)
    assert not back.has_keys
    # atomic writes leave no temporary siblings behind
    assert sorted(os.listdir(path.parent)) == [name]


def test_npz_form_is_plain_arrays_without_pickle(tmp_path):
    path = write_embeddings(tmp_path / "e.npz", _emb())
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["attack", "label", "meta", "utt_id", "vectors"]
        assert json.loads(str(data["meta"][()]))["model"] == "grcnn"


def test_zarr_form_is_a_v3_group_with_meta_in_attributes(tmp_path):
    import zarr

    path = write_embeddings(tmp_path / "e.zarr", _emb())
    group = zarr.open_group(path, mode="r")
    assert json.loads((path / "zarr.json").read_text())["zarr_format"] == 3
    assert group.attrs["spoofstore_embeddings"]["meta"]["split"] == "eval"
    assert group["vectors"].shape == (6, 4)


@pytest.mark.parametrize("name", ["e.npz", "e.zarr"])
def test_rewriting_replaces_the_old_file(tmp_path, name):
    write_embeddings(tmp_path / name, _emb(n=12, seed=1))
    new = _emb(n=6, seed=2)
    write_embeddings(tmp_path / name, new)
    assert len(read_embeddings(tmp_path / name)) == 6
    np.testing.assert_array_equal(read_embeddings(tmp_path / name).vectors, new.vectors)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_failed_zarr_write_leaves_the_old_group(tmp_path, monkeypatch):
    import trainer.embeddings as mod

    write_embeddings(tmp_path / "e.zarr", _emb(n=6, seed=1))

    def broken(new, final):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mod, "_replace_directory", broken)
    from featstore.errors import ResourceError

    with pytest.raises(ResourceError, match="No space left"):
        write_embeddings(tmp_path / "e.zarr", _emb(n=12, seed=2))
    assert len(read_embeddings(tmp_path / "e.zarr")) == 6
    assert sorted(os.listdir(tmp_path)) == ["e.zarr"]


# --- bad records and files --------------------------------------------------------------------


def _raw_npz(path: Path, **override) -> Path:
    """An .npz written without validation (what a buggy or foreign writer could leave)."""
    emb = _emb()
    arrays = {
        "vectors": emb.vectors,
        "utt_id": emb.utt_id,
        "label": emb.label,
        "attack": emb.attack,
        "meta": np.array(json.dumps(emb.meta)),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _nan_vectors() -> np.ndarray:
    v = _emb().vectors.copy()
    v[3, 1] = np.nan
    return v


def _inf_vectors() -> np.ndarray:
    v = _emb().vectors.copy()
    v[2, 0] = np.inf
    return v


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"utt_id": np.array(["a", "b", "c", "b", "e", "f"])}, "duplicate utterance id 'b'"),
        ({"vectors": _nan_vectors()}, "hold NaN or inf, the first of utterance 'LA_E_00003'"),
        ({"vectors": _inf_vectors()}, "hold NaN or inf, the first of utterance 'LA_E_00002'"),
        ({"label": np.array([1, 0, 0, 2, 1, 0])}, "label must be 1, 0 or -1"),
        ({"label": np.array([1, 0, 0])}, r"label has shape \(3,\), expected \(6,\)"),
        ({"utt_id": np.array(["a", "b"])}, r"utt_id has shape \(2,\), expected \(6,\)"),
        ({"vectors": np.zeros(6, dtype=np.float32)}, r"vectors must have shape \(N, D\)"),
        ({"vectors": np.zeros((0, 4), dtype=np.float32)}, "no embeddings"),
        ({"attack": np.array(["A01", "-", "-", "-", "-", "-"])}, "bona fide utterance"),
        ({"utt_id": np.array(["a", "b c", "d", "e", "f", "g"])}, "holds whitespace"),
        ({"meta": np.array(json.dumps({"dim": 5}))}, "meta says dim 5"),
        ({"meta": np.array("{not json")}, "meta is not JSON"),
        ({"label": None}, "no label array"),
        ({"utt_id": np.array([object()] * 6, dtype=object)}, "not a valid embedding file"),
    ],
)
def test_malformed_npz_is_one_error_naming_the_file(tmp_path, override, message):
    path = _raw_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(EmbeddingError, match=message) as exc:
        read_embeddings(path)
    assert exc.value.path == str(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(EmbeddingError, match="does not exist"):
        read_embeddings(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EmbeddingError, match=r"not a readable \.npz file \(not a zip"):
        read_embeddings(tmp_path / "junk.npz")
    (tmp_path / "dir.zarr").mkdir()
    with pytest.raises(EmbeddingError, match=r"dir\.zarr: not a"):
        read_embeddings(tmp_path / "dir.zarr")


def test_zarr_group_with_a_nan_vector_is_refused(tmp_path):
    import zarr

    path = write_embeddings(tmp_path / "e.zarr", _emb())
    zarr.open_group(path, mode="r+")["vectors"][1, 2] = np.inf
    with pytest.raises(EmbeddingError, match=r"e\.zarr: 1 embedding"):
        read_embeddings(path)


def test_record_checks_and_normalises_its_fields():
    emb = EmbeddingSet(np.eye(2), ["a", "b"], [1, 0], ["-", "A01"])
    assert emb.vectors.dtype == np.float32 and emb.label.dtype == np.int8
    assert emb.meta == {}
    with pytest.raises(ValueError):
        emb.vectors[0, 0] = 5  # read-only
    with pytest.raises(EmbeddingError, match="duplicate utterance id 'a'"):
        EmbeddingSet(np.eye(2), ["a", "a"], [1, 0], ["-", "A01"])
    with pytest.raises(EmbeddingError, match="not JSON-serialisable"):
        EmbeddingSet(np.eye(2), ["a", "b"], [1, 0], ["-", "A01"], {"x": object()})
