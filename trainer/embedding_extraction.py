"""Extract utterance embeddings of a trained run on a store split into an embedding file.

``trainer.embed(run, split="eval")`` (``trainer embed --run RUN --split eval``) runs the
model's :meth:`embed` (the model contract: ``model.embed(**features) -> (B, D)``, what the
last linear layer reads, and ``model.embedding_dim = D``) over every utterance of the split
and writes an :class:`trainer.embeddings.EmbeddingSet` (``.npz`` by suffix, else Zarr) that
``trainer backend fit/score`` read.

It goes through the same inference path as ``trainer score`` (:mod:`trainer.scoring`): the
same run resolution (latest run, ``best.pt``), the same store check (the run's fingerprint
unless ``force``), the same normaliser (the checkpoint's statistics), device and precision
rules and the same deterministic :class:`trainer.data.EvalBatches`. Models with
``eval_window = None`` embed whole utterances; windowed models embed each window and an
utterance's embedding is the mean over its windows, so that the last linear layer applied
to it gives the mean of the windows' logits, i.e. the score ``trainer score`` writes.

Utterances come in the store's index order, as in ``trainer score``'s file. Utterances the
store build quarantined are not in the store (counted in a warning, listed in
``meta["quarantined"]``); an utterance without a single frame has no embedding: it is left
out with a warning and listed in ``meta["unembedded"]`` (a made-up vector would be silently
wrong data for a back-end). The GMM baselines (``lfcc-gmm``, ``cqcc-gmm``) have no
embedding: they are refused with an error.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from featstore._version import __version__
from featstore.errors import StoreError
from trainer import inference
from trainer.data import EvalBatches, make_loader, verify_or_refuse
from trainer.embeddings import EmbeddingSet, read_embeddings, write_embeddings
from trainer.errors import EmbeddingError
from trainer.models.registry import ModelError, is_gmm_model
from trainer.scoring import (
    LoadedModel,
    TrainedRun,
    UtteranceProgress,
    check_settings,
    load_model,
    open_matching_store,
    resolve_run,
    store_location,
)

__all__ = ["embed", "extract_embeddings"]


def embed(
    run: str | os.PathLike | None = None,
    *,
    split: str = "eval",
    store: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike = "best",
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = False,
) -> Path:
    """Write the utterance embeddings of a store split by a trained run to one file.

    Parameters
    ----------
    run : str or os.PathLike, optional
        Run directory; default the latest under ``./runs`` (printed), as ``trainer score``.
    split : str, default "eval"
        Store split to embed.
    store : str or os.PathLike, optional
        Feature store; default the one the run was trained on (its fingerprint must equal
        the run's unless ``force``).
    out : str or os.PathLike, optional
        Embedding file: ``.npz`` by suffix, else a Zarr group. Default
        ``<run>/embeddings_<split>.zarr`` (``<run>/embeddings_<storename>_<split>.zarr``
        for a store other than the run's). An existing file is replaced only when it holds
        embeddings of the same run, store and split (or with ``force``); anything else
        (another file, a store) is never replaced.
    checkpoint : {"best", "last"} or path, default "best"
        Which weights.
    batch_size : int, optional
        Segments per forward pass; default the run's ``eval_batch_size`` (or ``batch_size``).
    device : str, default "auto"
        ``auto`` = the run's device type when available here, else the CPU.
    precision : {"fp32", "bf16", "fp16"}, default "fp32"
        Autocast precision of the forward passes (embeddings are stored as float32).
    workers : int, default 0
        DataLoader worker processes.
    force : bool, default False
        Embed a store whose fingerprint differs from the run's; replace an ``out`` file of
        another run, store or split.
    progress : bool, default True
        Print the chosen run and a progress bar on stderr.
    cache_dir : str or os.PathLike, optional
        Local read cache of a store at a URL.
    verify : bool, default False
        Check the store end to end first and refuse it on problems.

    Returns
    -------
    Path
        The embedding file; read it with :func:`trainer.embeddings.read_embeddings`. Its
        ``meta`` holds ``model``, ``run``, ``split``, ``fingerprint``, ``dim`` and the
        provenance (checkpoint, store, normalisation, device, precision, quarantined and
        unembedded utterances).

    Raises
    ------
    ModelError
        The run is a GMM baseline, or a model without an ``embed`` method.
    TrainingError
        No run, no checkpoint, an unusable checkpoint, a bad setting.
    StoreError
        Missing store, unknown split, fingerprint mismatch (without ``force``), a split
        without a single utterance that has frames.
    EmbeddingError
        ``out`` exists and is not an embedding file (never replaced), or holds embeddings of
        another run, store or split (without ``force``).
    ResourceError
        The file cannot be written.

    Examples
    --------
    >>> path = embed(split="train")  # doctest: +SKIP
    >>> read_embeddings(path).dim  # doctest: +SKIP
    960
    """
    check_settings(None, precision, batch_size, workers)

    def log(message: str) -> None:
        if progress:
            tqdm.write(message, file=sys.stderr)

    trained = resolve_run(run, checkpoint, log)
    name = trained.record.model.name
    if is_gmm_model(name):
        raise ModelError(
            f"run {trained.run} is a {name} GMM baseline: it has no utterance embedding (only "
            "the neural models do); score it with 'trainer score'"
        )
    if verify:
        where = os.fspath(store) if store is not None else trained.record.store.path
        log(f"verifying {where} ...")
        verify_or_refuse(where)
    st = open_matching_store(trained, store, force, cache_dir)
    if split not in st.splits:
        raise StoreError(st.path, f"no split {split!r}; the store has {', '.join(st.splits)}")
    out_path = Path(out) if out is not None else default_embedding_path(trained, st, split)
    _refuse_overwrite(out_path, trained, st, split, force)
    loaded = load_model(trained, st, device, batch_size, cache_dir)
    _check_embeds(loaded.net, name)
    model = _EmbeddingModel(loaded, _embedding_batches(loaded, st, split))
    start = time.perf_counter()
    vectors = extract_embeddings(model, split, precision, workers, progress)
    seconds = time.perf_counter() - start
    emb = _embedding_set(trained, st, split, model, vectors, precision, seconds)
    write_embeddings(out_path, emb)
    n = len(emb)
    log(
        f"embedded {n} utterances of {split!r} ({emb.dim} dims) in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} utt/s) on {model.device}"
    )
    return out_path


@dataclass(frozen=True)
class _EmbeddingModel:
    """The scoring model (network, normaliser, device) and the batches to embed."""

    loaded: LoadedModel
    dataset: EvalBatches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loaded, name)


def _embedding_batches(model: LoadedModel, st: Any, split: str) -> EvalBatches:
    """Whole utterances (or the model's eval windows), in the split's index order."""
    net = model.net
    features = {f: int(net.n_bins[f]) for f in net.features}
    return EvalBatches(st, features, split, model.batch_size, net.eval_window, net.eval_hop)


def default_embedding_path(trained: TrainedRun, st: Any, split: str) -> Path:
    """``<run>/embeddings_[<storename>_]<split>.zarr`` (no store name for the run's store)."""
    if store_location(st.path) == store_location(trained.record.store.path):
        return trained.run / f"embeddings_{split}.zarr"
    name = st.path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zarr", ".h5", ".hdf5"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "store"
    return trained.run / f"embeddings_{name}_{split}.zarr"


def _refuse_overwrite(
    out_path: Path, trained: TrainedRun, st: Any, split: str, force: bool
) -> None:
    """Refuse to replace something that is not an embedding file (always), or embeddings of
    another run, store or split (unless ``force``)."""
    if not (out_path.exists() or out_path.is_symlink()):
        return
    try:
        meta = read_embeddings(out_path).meta
    except EmbeddingError:
        raise EmbeddingError(
            out_path,
            "exists and is not an embedding file; not replacing it: choose another --out",
        ) from None
    was = (meta.get("run"), meta.get("store"), meta.get("split"))
    now = (os.path.abspath(trained.run), store_location(st.path), split)
    if was != now and not force:
        raise EmbeddingError(
            out_path,
            f"holds embeddings of split {was[2]!r} of store {was[1]} by run {was[0]}; not "
            f"overwriting them with split {now[2]!r} of store {now[1]} by run {now[0]}: pass "
            "--force, or choose another --out",
        )


def _check_embeds(net: torch.nn.Module, name: str) -> None:
    """Refuse a model that does not implement the embedding part of the contract."""
    if not callable(getattr(net, "embed", None)) or not isinstance(
        getattr(net, "embedding_dim", None), int
    ):
        raise ModelError(
            f"model {name!r} ({type(net).__name__}) has no utterance embedding: it needs an "
            "embed(**features) method returning (batch, embedding_dim) and an embedding_dim "
            "attribute (see docs/interfaces.md)"
        )


@torch.inference_mode()
def extract_embeddings(
    model: LoadedModel,
    split: str,
    precision: str = "fp32",
    workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Per-utterance embeddings of ``model.dataset`` (mean over an utterance's segments).

    The embedding counterpart of :func:`trainer.inference.evaluate`: same loader, same
    normaliser, same autocast.

    Parameters
    ----------
    model : trainer.scoring.LoadedModel
        The network, normaliser, batches and device (``trainer.scoring.load_model``).
    split : str
        Name of the split (for the progress bar).
    precision : str, default "fp32"
        Autocast precision.
    workers : int, default 0
        DataLoader workers.
    progress : bool, default False
        A tqdm bar of utterances on stderr.

    Returns
    -------
    np.ndarray
        float64 ``(n_utterances, embedding_dim)`` in the split's index order; rows of
        utterances without frames are NaN.
    """
    net, dataset, device = model.net, model.dataset, model.device
    n, dim = dataset.n_frames.size, int(net.embedding_dim)
    total = torch.zeros(n, dim, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    features = list(dataset.features)
    loader = make_loader(
        dataset,
        range(len(dataset)),
        workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    bar = tqdm(
        total=n,
        desc=f"embedding {split}",
        unit="utt",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    done = UtteranceProgress(dataset, bar)
    was_training = net.training
    net.eval()
    try:
        for batch in loader:
            x = model.normalizer({f: batch[f].to(device, non_blocking=True) for f in features})
            with inference.autocast(device, precision):
                vectors = net.embed(**{f: x[f] for f in features})
            index = batch["index"].long()
            total.index_add_(0, index, vectors.detach().to("cpu", torch.float64))
            count.index_add_(0, index, torch.ones(index.shape[0], dtype=torch.float64))
            done(None, None, None)
    finally:
        net.train(was_training)
        bar.close()
    out = (total / count.unsqueeze(1)).numpy()  # 0 / 0 = NaN for utterances without frames
    return out


def _embedding_set(
    trained: TrainedRun,
    st: Any,
    split: str,
    model: LoadedModel,
    vectors: np.ndarray,
    precision: str,
    seconds: float,
) -> EmbeddingSet:
    """The embeddings with ids, labels and attacks from the store index, and provenance."""
    index = st.index(split)
    utt_ids = np.asarray([str(u) for u in index["utt_id"]])
    labels = np.asarray(index["label"], dtype=np.int8)
    systems = np.asarray([str(s) or "-" for s in index["system"]])
    attacks = np.where(labels == 0, systems, "-")
    keep = np.all(np.isfinite(vectors), axis=1)
    unembedded = utt_ids[~keep].tolist()
    if unembedded:
        warnings.warn(
            f"{len(unembedded)} utterance(s) of split {split!r} have no frames (shorter than "
            f"one analysis window) and no embedding: left out of the file "
            f"({', '.join(unembedded[:5])}{', ...' if len(unembedded) > 5 else ''})",
            stacklevel=3,
        )
    if not keep.any():
        raise StoreError(st.path, f"no utterance of split {split!r} has frames to embed")
    quarantined = [u for s, u, _ in st.quarantine if s == split]
    if quarantined:
        warnings.warn(
            f"{len(quarantined)} utterance(s) of split {split!r} were quarantined when the "
            f"store was built and have no embedding (e.g. {quarantined[0]}; see featstore info)",
            stacklevel=3,
        )
    net = model.net
    record = trained.record
    meta = {
        "model": record.model.name,
        "run": os.path.abspath(trained.run),
        "split": split,
        "fingerprint": st.fingerprint,
        "dim": int(net.embedding_dim),
        "store": store_location(st.path),
        "checkpoint": {
            "path": os.path.abspath(trained.checkpoint_path),
            "epoch": trained.checkpoint.epoch,
        },
        "model_kwargs": dict(record.model.kwargs),
        "eval_window": net.eval_window,
        "eval_hop": net.eval_hop,
        "embedding": "model.embed(): the input of the last linear layer"
        + ("" if net.eval_window is None else ", mean over the utterance's windows"),
        "normalisation": store_location(model.norm_source),
        "quarantined": quarantined,
        "unembedded": unembedded,
        "device": str(model.device),
        "precision": precision,
        "batch_size": model.batch_size,
        "seconds": round(seconds, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
        "torch": str(torch.__version__),
    }
    return EmbeddingSet(vectors[keep], utt_ids[keep], labels[keep], attacks[keep], meta)
