"""Utterance embedding files: the :class:`EmbeddingSet` record and its two on-disk forms.

``trainer embed`` writes one embedding per utterance of a store split; ``trainer backend``
reads them. A file holds five things:

- ``vectors``: float32 ``(N, D)``, finite;
- ``utt_id``: ``(N,)`` str, unique, no whitespace (they become score-file columns);
- ``label``: ``(N,)`` int8, 1 bona fide, 0 spoof, -1 unknown (a split without keys);
- ``attack``: ``(N,)`` str, the attack id (``-`` for bona fide, and where unknown);
- ``meta``: a JSON object: ``model`` (name), ``run``, ``split``, ``fingerprint`` (of the
  store), ``dim`` (= D) and anything else JSON can hold.

Two forms, chosen by the path's suffix: ``.npz`` (``np.savez``; read with
``allow_pickle=False``, ``meta`` as a JSON string in a 0-d array) or, for any other name, a
Zarr v3 group (the four arrays, ``meta`` in the group's attributes). Both are written
atomically: a temporary sibling renamed over the destination (:mod:`featstore.atomic_files`).
Reading validates everything and raises :class:`trainer.errors.EmbeddingError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.atomic_files import atomic_path, fsync_directory, temporary_sibling
from featstore.errors import ResourceError
from trainer.errors import EmbeddingError

__all__ = ["META_KEYS", "EmbeddingSet", "read_embeddings", "write_embeddings"]

#: the ``meta`` fields ``trainer embed`` records (``dim`` is checked against the vectors)
META_KEYS = ("model", "run", "split", "fingerprint", "dim")

_ARRAYS = ("vectors", "utt_id", "label", "attack")
_NPZ_META = "meta"
_ZARR_META = "spoofstore_embeddings"


@dataclass(frozen=True)
class EmbeddingSet:
    """Utterance embeddings with their ids, keys and attacks (checked on construction).

    Attributes
    ----------
    vectors : np.ndarray
        float32, shape ``(N, D)``, finite.
    utt_id : np.ndarray
        str, shape ``(N,)``: unique utterance ids without whitespace.
    label : np.ndarray
        int8, shape ``(N,)``: 1 bona fide, 0 spoof, -1 unknown.
    attack : np.ndarray
        str, shape ``(N,)``: attack id, ``-`` for bona fide.
    meta : dict
        JSON-serialisable; see :data:`META_KEYS`. ``meta["dim"]``, when given, must be D.

    Raises
    ------
    EmbeddingError
        Any of the above does not hold (the message says which utterance).

    Examples
    --------
    >>> emb = EmbeddingSet(np.zeros((2, 3)), ["a", "b"], [1, 0], ["-", "A01"], {"dim": 3})
    >>> emb.dim, emb.n_bonafide, emb.n_spoof
    (3, 1, 1)
    """

    vectors: np.ndarray
    utt_id: np.ndarray
    label: np.ndarray
    attack: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors, utt_id, label, attack, meta = _checked(
            self.vectors, self.utt_id, self.label, self.attack, self.meta
        )
        for name, value in zip(_ARRAYS, (vectors, utt_id, label, attack), strict=True):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "meta", meta)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """The embedding dimension D."""
        return int(self.vectors.shape[1])

    @property
    def n_bonafide(self) -> int:
        """Number of bona fide utterances."""
        return int(np.count_nonzero(self.label == 1))

    @property
    def n_spoof(self) -> int:
        """Number of spoofed utterances."""
        return int(np.count_nonzero(self.label == 0))

    @property
    def has_keys(self) -> bool:
        """Whether every utterance is labelled (bona fide or spoof)."""
        return bool(np.all(self.label >= 0))


def _checked(
    vectors: Any, utt_id: Any, label: Any, attack: Any, meta: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The five fields as their canonical types, or :class:`EmbeddingError` (no path)."""
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] == 0:
        raise EmbeddingError(None, f"vectors must have shape (N, D), got {v.shape}")
    if v.shape[0] == 0:
        raise EmbeddingError(None, "no embeddings")
    if v.dtype.kind not in "fiu":
        raise EmbeddingError(None, f"vectors must be numbers, got dtype {v.dtype}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    n = v.shape[0]
    ids = _strings(utt_id, n, "utt_id")
    attacks = _strings(attack, n, "attack")
    lab = np.asarray(label)
    if lab.shape != (n,):
        raise EmbeddingError(None, f"label has shape {lab.shape}, expected ({n},)")
    if lab.dtype.kind not in "iu" or not np.all(np.isin(lab, (-1, 0, 1))):
        bad = lab.ravel()[~np.isin(lab, (-1, 0, 1))]
        what = bad[0].item() if bad.size else lab.dtype
        raise EmbeddingError(None, f"label must be 1, 0 or -1 (int8), got {what!r}")
    lab = lab.astype(np.int8)
    bad_rows = np.flatnonzero(~np.all(np.isfinite(v), axis=1))
    if bad_rows.size:
        i = int(bad_rows[0])
        raise EmbeddingError(
            None,
            f"{bad_rows.size} embedding(s) hold NaN or inf, the first of utterance {str(ids[i])!r} "
            f"(row {i})",
        )
    _check_unique(ids)
    wrong = np.flatnonzero((lab == 1) & (attacks != "-"))
    if wrong.size:
        i = int(wrong[0])
        raise EmbeddingError(
            None,
            f"bona fide utterance {str(ids[i])!r} has attack {str(attacks[i])!r} (expected '-')",
        )
    if not isinstance(meta, dict):
        raise EmbeddingError(None, f"meta must be a dict, got {type(meta).__name__}")
    try:
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(None, f"meta is not JSON-serialisable: {exc}") from None
    if meta.get("dim") is not None and meta["dim"] != v.shape[1]:
        raise EmbeddingError(None, f"meta says dim {meta['dim']} but the vectors have {v.shape[1]}")
    return v, ids, lab, attacks, meta


def _strings(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as a ``(n,)`` unicode array of non-empty, whitespace-free tokens."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise EmbeddingError(None, f"{name} has shape {arr.shape}, expected ({n},)")
    if arr.dtype.kind not in "UTO":
        raise EmbeddingError(None, f"{name} must hold strings, got dtype {arr.dtype}")
    arr = np.array([str(x) for x in arr.tolist()], dtype=str)
    bad = [i for i, x in enumerate(arr.tolist()) if not x or len(x.split()) != 1 or x != x.strip()]
    if bad:
        raise EmbeddingError(
            None, f"{name} {str(arr[bad[0]])!r} (row {bad[0]}) is empty or holds whitespace"
        )
    return arr


def _check_unique(ids: np.ndarray) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        j = int(np.flatnonzero(counts > 1)[0])
        u = str(uniq[j])
        rows = np.flatnonzero(ids == u)
        raise EmbeddingError(
            None,
            f"duplicate utterance id {u!r} (rows {int(rows[0])} and {int(rows[1])}); "
            f"{int(np.sum(counts[counts > 1] - 1))} duplicate(s) in all",
        )


def _located(path: str | os.PathLike, exc: EmbeddingError) -> EmbeddingError:
    return EmbeddingError(path, exc.message)


# --- writing ----------------------------------------------------------------------------------


def write_embeddings(path: str | os.PathLike, emb: EmbeddingSet) -> Path:
    """Write ``emb`` to ``path`` atomically: ``.npz`` by suffix, otherwise a Zarr v3 group.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory is created. An existing file (or group) is replaced only
        once the new one is complete.
    emb : EmbeddingSet

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ResourceError
        The file cannot be written (permission, disk full, ...).

    Examples
    --------
    >>> import tempfile
    >>> emb = EmbeddingSet(np.eye(2), ["a", "b"], [1, 0], ["-", "A01"], {"model": "grcnn"})
    >>> p = write_embeddings(Path(tempfile.mkdtemp()) / "e.npz", emb)
    >>> read_embeddings(p).utt_id.tolist()
    ['a', 'b']
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            with atomic_path(path) as tmp:
                np.savez(
                    tmp,
                    **{name: getattr(emb, name) for name in _ARRAYS},
                    **{_NPZ_META: np.array(json.dumps(emb.meta, sort_keys=True))},
                )
        else:
            _write_zarr(path, emb)
    except OSError as exc:
        raise ResourceError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def _write_zarr(path: Path, emb: EmbeddingSet) -> None:
    """The group in a temporary sibling directory, then renamed over ``path``."""
    import zarr

    tmp = temporary_sibling(path)
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        n, d = emb.vectors.shape
        rows = max(1, min(n, (8 << 20) // (4 * d)))  # ~8 MiB chunks of whole rows
        vec = group.create_array("vectors", shape=(n, d), dtype="float32", chunks=(rows, d))
        vec[:] = emb.vectors
        for name in ("utt_id", "attack"):
            group.create_array(name, shape=(n,), dtype=str, chunks=(n,))[:] = getattr(emb, name)
        group.create_array("label", shape=(n,), dtype="int8", chunks=(n,))[:] = emb.label
        group.attrs[_ZARR_META] = {"version": 1, "meta": emb.meta}
        _replace_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_directory(new: Path, final: Path) -> None:
    """Move ``new`` to ``final``; an existing ``final`` is moved aside first, then removed.

    Directories cannot be swapped atomically: between the two renames ``final`` is absent
    for an instant, but never half-written.
    """
    old = None
    if final.exists() or final.is_symlink():
        old = temporary_sibling(final)
        os.replace(final, old)
    os.replace(new, final)
    fsync_directory(final.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# --- reading ----------------------------------------------------------------------------------


def read_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Read and validate an embedding file written by :func:`write_embeddings`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` file or a Zarr v3 group.

    Returns
    -------
    EmbeddingSet

    Raises
    ------
    EmbeddingError
        Missing or malformed file, shapes that disagree, NaN/inf vectors, duplicate ids,
        labels other than 1/0/-1 (the message names the file and the utterance).
    ResourceError
        The file exists but cannot be read (permission, I/O error).
    """
    p = Path(path)
    if not p.exists():
        raise EmbeddingError(p, "embedding file does not exist")
    try:
        fields = _read_npz(p) if p.suffix == ".npz" else _read_zarr(p)
        return EmbeddingSet(**fields)
    except EmbeddingError as exc:
        raise _located(p, exc) from None
    except PermissionError as exc:
        raise ResourceError(f"{p}: cannot read: {exc.strerror or exc}") from None


def _read_npz(path: Path) -> dict[str, Any]:
    import zipfile

    if path.is_dir():
        raise EmbeddingError(None, "is a directory; an .npz embedding file must be a file")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise EmbeddingError(None, "not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (*_ARRAYS, _NPZ_META) if k not in data.files]
            if missing:
                raise EmbeddingError(
                    None, f"not an embedding file: no {', '.join(missing)} array(s)"
                )
            fields = {k: data[k] for k in _ARRAYS}
            meta_text = str(data[_NPZ_META][()])
    except (zipfile.BadZipFile, EOFError) as exc:
        raise EmbeddingError(None, f"not a readable .npz file ({exc})") from None
    except ValueError as exc:  # object arrays (pickles) and other malformed members
        raise EmbeddingError(None, f"not a valid embedding file: {exc}") from None
    try:
        fields["meta"] = json.loads(meta_text)
    except json.JSONDecodeError:
        raise EmbeddingError(None, "its meta is not JSON") from None
    return fields


def _read_zarr(path: Path) -> dict[str, Any]:
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise EmbeddingError(None, f"not a Zarr group ({exc})") from None
    header = group.attrs.asdict().get(_ZARR_META)
    if not isinstance(header, dict) or "meta" not in header:
        raise EmbeddingError(None, f"not an embedding group: no {_ZARR_META!r} attribute")
    members = set(group.array_keys())
    missing = [k for k in _ARRAYS if k not in members]
    if missing:
        raise EmbeddingError(None, f"not an embedding group: no {', '.join(missing)} array(s)")
    fields: dict[str, Any] = {k: group[k][...] for k in _ARRAYS}
    fields["meta"] = header["meta"]
    return fields
