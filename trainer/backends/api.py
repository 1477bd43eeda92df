"""Fit a back-end on embeddings, and score embeddings with one into a score file.

:func:`fit_backend` checks the training (and dev) embeddings, fits ``BACKENDS[kind]`` and
reports dev metrics; :func:`score_embeddings` checks that the embeddings are those the
back-end was trained for (dimension always; model and run unless ``force``), scores them and
writes a consolidated score file (:func:`trainer.scorefiles.write_score_file`) with a
provenance sidecar ``<out>.json``, readable by ``trainer metrics`` unchanged. Every check runs
before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from featstore._version import __version__
from featstore.asvspoof_formats import SCORE_FORMATS
from featstore.atomic_files import write_bytes_atomic
from featstore.errors import ConfigError, ResourceError
from trainer.backends.files import TrainedBackend, load_backend
from trainer.backends.registry import backend_class
from trainer.embeddings import EmbeddingSet, read_embeddings
from trainer.errors import BackendError, ScoreFileError
from trainer.metrics import act_dcf, cllr, compute_eer, min_dcf
from trainer.scorefiles import write_score_file

__all__ = ["check_compatible", "fit_backend", "score_embeddings"]

#: meta fields that must agree between a back-end's training embeddings and those it scores
_SAME_SPACE = ("model", "run")

#: what the score of each kind is (the sidecar's ``score`` field)
_SCORE_MEANING = {
    "plda": "log N(x; bona fide) - log mean_k N(x; attack k) under the PLDA predictive "
    "distributions (natural-log LLR)",
    "gmm": "log p(x | bona fide GMM) - log p(x | spoof GMM) (natural-log LLR)",
    "logreg": "logit - log(n_bonafide / n_spoof) of the training set (natural-log LLR)",
    "cosine": "cos(x, bona fide mean) - cos(x, spoof mean) (a similarity: calibrate it)",
}


def _load(emb: EmbeddingSet | str | os.PathLike) -> tuple[EmbeddingSet, str | None]:
    if isinstance(emb, EmbeddingSet):
        return emb, None
    return read_embeddings(emb), os.fspath(emb)


def _require_both_classes(emb: EmbeddingSet, where: str | None, role: str) -> None:
    unknown = int(np.count_nonzero(emb.label < 0))
    if unknown:
        first = str(emb.utt_id[np.flatnonzero(emb.label < 0)[0]])
        raise BackendError(
            where,
            f"{unknown} {role} embedding(s) have no key (e.g. {first!r}); {role} embeddings "
            "must be labelled bona fide or spoof",
        )
    if emb.n_bonafide == 0 or emb.n_spoof == 0:
        only = "spoof" if emb.n_bonafide == 0 else "bona fide"
        raise BackendError(
            where,
            f"{role} embeddings hold one class only ({len(emb)} {only}); a back-end needs "
            "bona fide and spoof",
        )


def check_compatible(
    trained_meta: dict[str, Any],
    trained_dim: int,
    trained_where: str | None,
    emb: EmbeddingSet,
    emb_where: str | None,
    *,
    force: bool = False,
) -> None:
    """Refuse embeddings of another dimension (always) or model/run (unless ``force``).

    Raises
    ------
    BackendError
        Naming both files and both values.
    """
    theirs = f"back-end {trained_where}" if trained_where else "the back-end"
    if emb.dim != trained_dim:
        raise BackendError(
            emb_where,
            f"embeddings of dimension {emb.dim}, but {theirs} was trained on embeddings of "
            f"dimension {trained_dim}",
        )
    for key in _SAME_SPACE:
        mine, other = emb.meta.get(key), trained_meta.get(key)
        if mine is not None and other is not None and mine != other and not force:
            raise BackendError(
                emb_where,
                f"embeddings of {key} {mine!r}, but {theirs} was trained on embeddings of "
                f"{key} {other!r} (another embedding space; force to apply it anyway)",
            )


def _dev_report(model: Any, dev: EmbeddingSet, where: str | None) -> dict[str, Any]:
    scores = model.score(dev.vectors)
    bona, spoof = scores[dev.label == 1], scores[dev.label == 0]
    return {
        "path": None if where is None else os.path.abspath(where),
        "n": len(dev),
        "n_bonafide": dev.n_bonafide,
        "n_spoof": dev.n_spoof,
        "eer": compute_eer(bona, spoof)[0],
        "min_dcf": min_dcf(bona, spoof),
        "act_dcf": act_dcf(bona, spoof),
        "cllr": cllr(bona, spoof),
    }


def fit_backend(
    train: EmbeddingSet | str | os.PathLike,
    *,
    kind: str,
    dev: EmbeddingSet | str | os.PathLike | None = None,
    **options: Any,
) -> TrainedBackend:
    """Fit a back-end of ``kind`` on labelled embeddings (and report its dev metrics).

    Parameters
    ----------
    train : EmbeddingSet or path
        Training embeddings: every one labelled, both classes present.
    kind : {"plda", "gmm", "logreg", "cosine"}
        See :data:`trainer.backends.BACKENDS`.
    dev : EmbeddingSet or path, optional
        Dev embeddings (same dimension and model, both classes): scored after fitting;
        EER, minDCF, actDCF and Cllr go to ``TrainedBackend.dev``.
    **options
        Keyword options of the kind's ``fit`` (``lda_dim`` for plda, ``components`` for
        gmm, ``c`` for logreg, ...).

    Returns
    -------
    TrainedBackend
        Save it with :func:`trainer.backends.save_backend`.

    Raises
    ------
    ConfigError
        Unknown kind or option.
    EmbeddingError
        A malformed embedding file.
    BackendError
        Unlabelled or one-class embeddings, or dev embeddings of another dimension/model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> emb = EmbeddingSet(rng.normal(size=(40, 4)) + np.repeat([[1], [-1]], 20, 0),
    ...                    [f"u{i}" for i in range(40)], [1] * 20 + [0] * 20,
    ...                    ["-"] * 20 + ["A01"] * 20, {"model": "toy", "dim": 4})
    >>> fit_backend(emb, kind="cosine").kind
    'cosine'
    """
    cls = backend_class(kind, options)
    emb, where = _load(train)
    _require_both_classes(emb, where, "training")
    dev_set = dev_where = None
    if dev is not None:
        dev_set, dev_where = _load(dev)
        check_compatible(emb.meta, emb.dim, where, dev_set, dev_where)
        _require_both_classes(dev_set, dev_where, "dev")
    model = cls.fit(emb.vectors, emb.label, emb.attack, **options)
    report = None if dev_set is None else _dev_report(model, dev_set, dev_where)
    return TrainedBackend(
        model=model,
        dim=emb.dim,
        embedding_meta=dict(emb.meta),
        training={
            "path": None if where is None else os.path.abspath(where),
            "n": len(emb),
            "n_bonafide": emb.n_bonafide,
            "n_spoof": emb.n_spoof,
            "options": options,
        },
        dev=report,
    )


def score_embeddings(
    backend: TrainedBackend | str | os.PathLike,
    embeddings: EmbeddingSet | str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str | None = None,
    force: bool = False,
) -> Path:
    """Score embeddings with a back-end into a score file and its ``<out>.json`` sidecar.

    Parameters
    ----------
    backend : TrainedBackend or path
        A fitted back-end or its file.
    embeddings : EmbeddingSet or path
        Of the back-end's dimension, and of its model and run (unless ``force``).
    out : path
        The score file; provenance goes to ``<out>.json``.
    format : {"asvspoof2019", "asvspoof2021", "asvspoof5"}, optional
        Default ``asvspoof2019`` when every embedding has a key, else ``asvspoof2021``
        (give ``trainer metrics`` the key file with ``--protocol`` then).
    force : bool, default False
        Apply the back-end to embeddings of another model or run (never another dimension).

    Returns
    -------
    Path
        ``out``. Scores in the order of the embeddings, higher = bona fide.

    Raises
    ------
    BackendError
        Dimension/model mismatch, or the asvspoof2019 layout asked for unlabelled embeddings.
    EmbeddingError, ConfigError
        A malformed embedding file; an unknown format.
    ResourceError
        The score file or sidecar cannot be written.
    """
    if format is not None and format not in SCORE_FORMATS:
        raise ConfigError(f"--format {format!r}: expected one of {', '.join(SCORE_FORMATS)}")
    if isinstance(backend, TrainedBackend):
        trained, backend_where = backend, None
    else:
        trained, backend_where = load_backend(backend), os.fspath(backend)
    emb, emb_where = _load(embeddings)
    check_compatible(
        trained.embedding_meta, trained.dim, backend_where, emb, emb_where, force=force
    )
    if format is None:
        format = "asvspoof2019" if emb.has_keys else "asvspoof2021"
    elif format == "asvspoof2019" and not emb.has_keys:
        missing = int(np.count_nonzero(emb.label < 0))
        raise BackendError(
            emb_where,
            f"{missing} embedding(s) have no key; the asvspoof2019 layout needs keys: use "
            "--format asvspoof2021 or asvspoof5 and give 'trainer metrics' the key file",
        )
    start = time.perf_counter()
    scores = np.asarray(trained.model.score(emb.vectors), dtype=np.float64)
    seconds = time.perf_counter() - start
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise BackendError(
            emb_where,
            f"the {trained.kind} back-end gives a non-finite score for {bad.size} embedding(s) "
            f"(e.g. {str(emb.utt_id[bad[0]])!r}): are they of the space it was trained on?",
        )
    out_path = Path(out)
    keys = np.where(emb.label == 1, "bonafide", np.where(emb.label == 0, "spoof", "-"))
    try:
        write_score_file(
            out_path,
            emb.utt_id.tolist(),
            scores,
            format=format,
            speakers=["-"] * len(emb),
            systems=emb.attack.tolist(),
            keys=keys.tolist(),
        )
    except ScoreFileError as exc:  # write_score_file's "cannot write"
        raise ResourceError(str(exc)) from None
    _write_sidecar(out_path, trained, backend_where, emb, emb_where, format, seconds)
    return out_path


def _write_sidecar(
    out_path: Path,
    trained: TrainedBackend,
    backend_where: str | None,
    emb: EmbeddingSet,
    emb_where: str | None,
    format: str,
    seconds: float,
) -> None:
    provenance = {
        "score_file": os.path.abspath(out_path),
        "format": format,
        "sha256": hashlib.sha256(out_path.read_bytes()).hexdigest(),
        "backend": {
            "path": None if backend_where is None else os.path.abspath(backend_where),
            "sha256": None
            if backend_where is None
            else hashlib.sha256(Path(backend_where).read_bytes()).hexdigest(),
            "kind": trained.kind,
            "dim": trained.dim,
            "settings": trained.model.settings(),
            "embedding_meta": trained.embedding_meta,
            "training": trained.training,
            "dev": trained.dev,
        },
        "embeddings": {
            "path": None if emb_where is None else os.path.abspath(emb_where),
            "meta": emb.meta,
        },
        "n_utterances": len(emb),
        "n_bonafide": emb.n_bonafide,
        "n_spoof": emb.n_spoof,
        "score": _SCORE_MEANING.get(trained.kind, "natural-log LLR, bona fide vs spoof"),
        "seconds": round(seconds, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
    }
    sidecar = out_path.with_name(out_path.name + ".json")
    try:
        write_bytes_atomic(sidecar, (json.dumps(provenance, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise ResourceError(f"{sidecar}: cannot write: {exc.strerror or exc}") from None
