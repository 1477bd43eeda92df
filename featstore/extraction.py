"""The worker side of a build: one utterance's audio -> its feature rows, or why not.

:func:`extract_batch` and :func:`extract_views_batch` are what the build's workers run (loky
processes, Dask workers, or the build's own process with ``--jobs 1``): for each utterance of
a batch, decode its audio, compute every feature with the build's parameters, check the rows
(finite, at least one frame), and return them with their sha256 digests and float64 column
moments (:class:`Extracted`), or the reason it is quarantined (:class:`Rejected`); for
augmented views, the rows of each view of the utterance (:class:`ViewsExtracted`). Local
worker processes put the rows in their shared-memory ring (:mod:`featstore.shared_rows`);
:func:`received` gives the build process the arrays back.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.audio import load_audio
from featstore.augment import Recipe, apply_chain, view_rng
from featstore.errors import AudioError, ConfigError, SpoofstoreError
from featstore.features.registry import get_feature
from featstore.shared_rows import ArenaReader, ArenaSpec, SharedRows, worker_arena
from featstore.store.layout import DTYPE

__all__ = [
    "Extracted",
    "Rejected",
    "Task",
    "ViewTask",
    "ViewsExtracted",
    "extract_batch",
    "extract_views_batch",
    "received",
    "view_key",
]


@dataclass(frozen=True)
class Task:
    """One utterance to extract: its position in the split and its audio file (or why none)."""

    index: int
    path: str | None
    error: str | None


@dataclass(frozen=True)
class Extracted:
    """Features of one utterance, ready to commit.

    Attributes
    ----------
    index : int
        Position of the utterance in its split.
    feats : dict[str, np.ndarray]
        Feature name -> C-contiguous float32 rows ``(n_frames, n_bins)``.
    sha256 : dict[str, str]
        Feature name -> hex sha256 of its rows' bytes.
    sums : dict[str, tuple of np.ndarray]
        Feature name -> float64 per-column sums and sums of squares.
    duration : float
        Seconds of the decoded 16 kHz signal.
    sample_rate, channels : int
        Of the original file.
    notes : str
        What loading did (``"resampled 44100->16000; ..."``).
    """

    index: int
    feats: dict[str, np.ndarray]
    sha256: dict[str, str]
    sums: dict[str, tuple[np.ndarray, np.ndarray]]
    duration: float
    sample_rate: int
    channels: int
    notes: str


@dataclass(frozen=True)
class Rejected:
    """An utterance left out of the store (quarantined), with the reason for the user."""

    index: int
    reason: str


class _Unusable(Exception):
    """A feature of an utterance cannot be stored; the message is the reason."""


def _extract_one(task: Task, specs: Sequence[tuple[str, dict[str, Any]]]) -> Extracted | Rejected:
    """Load one utterance and compute every feature, or say why it is quarantined."""
    if task.error is not None:
        return Rejected(task.index, task.error)
    try:
        audio = load_audio(task.path)
    except AudioError as exc:
        return Rejected(task.index, str(exc))
    x = audio.signal
    if not np.any(x):
        return Rejected(task.index, f"{task.path}: silent: all {x.size} samples are zero")
    feats, digests, sums = {}, {}, {}
    for name, params in specs:
        try:
            feats[name], sums[name] = _feature_rows(x, name, params)
        except _Unusable as exc:
            return Rejected(task.index, f"{task.path}: {exc}")
        digests[name] = hashlib.sha256(memoryview(feats[name]).cast("B")).hexdigest()
    return Extracted(
        index=task.index,
        feats=feats,
        sha256=digests,
        sums=sums,
        duration=x.size / 16000.0,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        notes="; ".join(audio.notes),
    )


def _feature_rows(
    x: np.ndarray, name: str, params: dict[str, Any]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Rows of feature ``name`` of signal ``x`` and their column moments.

    Raises
    ------
    _Unusable
        The kernel refused the signal, it is shorter than one frame, or a value is not
        finite.
    """
    from featstore.store.statistics import column_moments  # Numba: compiled on first use

    spec = get_feature(name)
    try:
        y = spec.function(x, **params)
    except ConfigError:
        raise  # bad parameters fail the build; they are not a fault of this utterance
    except ValueError as exc:
        raise _Unusable(f"{name}: {exc}") from None
    n_bins = int(spec.n_bins(params))
    if y.dtype != DTYPE or y.ndim != 2 or y.shape[1] != n_bins:
        raise AssertionError(  # a kernel bug, not bad input
            f"kernel {spec.kernel} returned {y.dtype} {y.shape}, expected (n, {n_bins}) f4"
        )
    if y.shape[0] == 0:
        raise _Unusable(
            f"too short: {x.size} samples ({x.size / 16000.0:.4f} s) is less than one {name} "
            f"frame ({params['win_length']} samples)"
        )
    y = np.ascontiguousarray(y)
    # float64 sums of float32 values cannot overflow: they are finite iff every value is
    moments = column_moments(y)
    if not np.isfinite(moments[1]).all():
        raise _Unusable(f"{name}: {int(np.count_nonzero(~np.isfinite(y)))} non-finite values")
    return y, moments


def extract_batch(
    tasks: Sequence[Task],
    specs: Sequence[tuple[str, dict[str, Any]]],
    build_pid: int | None = None,
    arena: ArenaSpec | None = None,
) -> list[Extracted | Rejected]:
    """Worker entry point: features of a batch of utterances, in order.

    ``build_pid``: the build process's pid when the batches go to worker processes it
    started (loky); such a worker is set up for the build (:func:`_set_up_worker_process`),
    the build process itself is not when joblib runs a batch there. ``arena``: the
    build's shared-memory arenas; rows go back through this process's ring where they fit
    (:func:`_sharer`).
    """
    if build_pid is not None and os.getpid() != build_pid:
        _set_up_worker_process()
    share = _sharer(arena)
    return [share(_extract_one(t, specs)) for t in tasks]


def _sharer(spec: ArenaSpec | None) -> Callable[[Any], Any]:
    """A function moving a result's rows into this worker's arena, for one batch.

    Each array the arena takes is replaced by its :class:`SharedRows`; the others stay in
    the result (pickled back as before). Without an arena results pass unchanged.
    """
    arena = worker_arena(spec)
    if arena is None:
        return lambda result: result
    arena.new_batch()

    def share(result: Any) -> Any:
        if isinstance(result, Rejected):
            return result
        feats = {}
        for key, rows in result.feats.items():
            ref = arena.put(rows)
            feats[key] = rows if ref is None else ref
        return dataclasses.replace(result, feats=feats)

    return share


def received(batches: Iterable[list[Any]], reader: ArenaReader | None) -> Iterator[list[Any]]:
    """Batches of results with every :class:`SharedRows` replaced by its rows.

    The rows are views of the workers' rings, valid while the caller handles their batch:
    the space is released when the caller asks for the next batch (it has copied the rows
    into its shard buffers by then).
    """
    if reader is None:
        yield from batches
        return
    for batch in batches:
        local = [_local_rows(result, reader) for result in batch]
        yield local
        for result in batch:
            if isinstance(result, Rejected):
                continue
            for rows in result.feats.values():
                if isinstance(rows, SharedRows):
                    reader.release(rows)


def _local_rows(result: Any, reader: ArenaReader) -> Any:
    """``result`` with the arrays its :class:`SharedRows` point to."""
    if isinstance(result, Rejected):
        return result
    feats = {
        key: reader.rows(rows) if isinstance(rows, SharedRows) else rows
        for key, rows in result.feats.items()
    }
    return dataclasses.replace(result, feats=feats)


@dataclass(frozen=True)
class ViewTask:
    """One utterance whose augmented views to make.

    Attributes
    ----------
    index : int
        Its row in the split's index (clean view).
    path, error : str or None
        Its audio file, or why there is none.
    utt_id : str
        Its id (seeds each view's generator).
    n_frames : tuple of (str, int)
        Feature -> frames of its clean view (every view has as many).
    """

    index: int
    path: str | None
    error: str | None
    utt_id: str
    n_frames: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ViewsExtracted:
    """The augmented views of one utterance, ready to commit (like :class:`Extracted`).

    Attributes
    ----------
    index : int
        Its row in the split's index.
    feats : dict[str, np.ndarray]
        :func:`view_key` (feature, view) -> rows; a quarantined view holds the clean rows.
    sha256 : dict[str, str]
        The same keys -> hex sha256 of the rows.
    sums : dict
        Empty: statistics are computed on the clean view only.
    views : dict[str, dict]
        View number (as text) -> ``{"ok": True, "chain": "codec+noise"}`` or
        ``{"ok": False, "reason": ...}``.
    duration : float
        Seconds of the utterance.
    """

    index: int
    feats: dict[str, np.ndarray]
    sha256: dict[str, str]
    sums: dict[str, tuple[np.ndarray, np.ndarray]]
    views: dict[str, dict[str, Any]]
    duration: float


def view_key(feature: str, view: int) -> str:
    """Key of one (feature, view) array in the build (``"mgd@2"``; ``@`` is in no name)."""
    return f"{feature}@{view}"


_VIEW_FAULTS = (SpoofstoreError, ValueError, RuntimeError, _Unusable)
"""What quarantines one augmented view: errors of the augmentation (a drawn noise file that
is silent, a codec that fails: soundfile's errors are RuntimeErrors) or of extracting its
features (non-finite values). Bugs (AssertionError, TypeError ...) still stop the build."""


@functools.lru_cache(maxsize=4)
def _recipe_from_json(text: str) -> Recipe:
    """The recipe of a build, parsed once per worker process (recipes do not pickle)."""
    return Recipe.from_json(text)


def extract_views_batch(
    tasks: Sequence[ViewTask],
    specs: Sequence[tuple[str, dict[str, Any]]],
    recipe_json: str,
    seed: int,
    views: Sequence[int],
    build_pid: int | None = None,
    arena: ArenaSpec | None = None,
) -> list[ViewsExtracted | Rejected]:
    """Worker entry point: the augmented views ``views`` of a batch of utterances, in order.

    ``build_pid`` and ``arena`` as for :func:`extract_batch`.
    """
    if build_pid is not None and os.getpid() != build_pid:
        _set_up_worker_process()
    recipe = _recipe_from_json(recipe_json)
    share = _sharer(arena)
    return [share(_views_one(t, specs, recipe, seed, views)) for t in tasks]


def _views_one(
    task: ViewTask,
    specs: Sequence[tuple[str, dict[str, Any]]],
    recipe: Recipe,
    seed: int,
    views: Sequence[int],
) -> ViewsExtracted | Rejected:
    """Load one utterance and make its views, or say why its audio cannot be read.

    View ``k`` uses ``view_rng(seed, utt_id, k)`` alone: it draws the chain and feeds it
    (:func:`featstore.augment.augment`), so its bytes depend on nothing else. A view whose
    augmentation or extraction fails gets the clean rows and the reason.
    """
    if task.error is not None:
        return Rejected(task.index, task.error)
    try:
        x = load_audio(task.path).signal
    except AudioError as exc:
        return Rejected(task.index, str(exc))
    expected = dict(task.n_frames)
    feats: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    status: dict[str, dict[str, Any]] = {}
    clean: dict[str, np.ndarray] | None = None
    for k in views:
        rng = view_rng(seed, task.utt_id, k)
        chain = recipe.draw(rng)
        try:
            rows = _view_rows(apply_chain(x, rng, chain), specs, expected)
            status[str(k)] = {"ok": True, "chain": str(chain)}
        except _VIEW_FAULTS as exc:
            if clean is None:
                clean = {name: _feature_rows(x, name, params)[0] for name, params in specs}
            rows = clean
            reason = str(exc) or type(exc).__name__
            status[str(k)] = {"ok": False, "reason": f"view {k} ({chain}): {reason}"}
        for name, _ in specs:
            key = view_key(name, k)
            feats[key] = rows[name]
            digests[key] = hashlib.sha256(memoryview(rows[name]).cast("B")).hexdigest()
    return ViewsExtracted(task.index, feats, digests, {}, status, x.size / 16000.0)


def _view_rows(
    y: np.ndarray, specs: Sequence[tuple[str, dict[str, Any]]], expected: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Every feature of an augmented signal, each with the clean view's number of frames.

    Raises
    ------
    _Unusable
        A kernel refused the signal, a value is not finite, or the frame count differs.
    """
    rows = {}
    for name, params in specs:
        rows[name] = _feature_rows(y, name, params)[0]
        if len(rows[name]) != expected[name]:
            raise _Unusable(
                f"{name}: {len(rows[name])} frames, the clean view has {expected[name]}"
            )
    return rows


def _set_up_worker_process() -> None:
    """What a worker process the build started does before its first batch (once each)."""
    _keep_freed_memory()
    _exit_with_parent()


@functools.cache
def _exit_with_parent(interval: float = 1.0) -> threading.Thread:
    """Stop this worker process when the process that started it is gone.

    A build killed with ``kill -9`` leaves its loky workers behind, reparented, each holding
    its memory (~200 MB) until loky's idle timeout, or for good when it is blocked writing a
    result nobody reads. A daemon thread checks every ``interval`` seconds whether the
    parent is still the one it started with, and ends the process when it is not (a
    process's parent changes only when the parent dies).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="featstore-parent-watch", daemon=True)
    thread.start()
    return thread


@functools.cache
def _keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory for reuse, once per worker process.

    Every utterance allocates and frees a few MB (signal, spectra, features, pickled
    results). With glibc's defaults many of those blocks are ``mmap``-ed and returned to the
    kernel when freed, so each utterance pays page faults on fresh memory again: measured
    here, ~950k faults and ~4 s of system time in the two workers of a 2-hour build. Fixed
    thresholds (blocks under 32 MiB from the heap, free heap kept up to 512 MiB) let the
    worker reuse its own warm pages. A no-op where ``mallopt`` is unavailable (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    mallopt(m_mmap_threshold, 32 << 20)  # the largest value glibc accepts on 64-bit
    mallopt(m_trim_threshold, 512 << 20)
