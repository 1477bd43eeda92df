"""The build pipeline: manifest + audio -> feature store (plan, parallel map, ordered commit).

Plan
    Read the manifest, group utterances by split (splits in sorted order, utterances in
    manifest order), locate every audio file once (one directory listing).
Map
    joblib (loky) workers extract features for *batches* of utterances (start-up paid once
    per worker); results come back in order (``return_as="generator"``), at most
    ``2 * jobs`` batches in flight, so memory does not grow with the corpus.
Commit
    Frames are appended to a per-feature in-memory buffer and written in whole, aligned
    shards; the split's journal (one line per utterance) and progress record (committed
    count, frame ends, float64 statistics accumulators) are updated atomically *after* the
    data they cover is written. A re-run of the same command resumes from the last commit
    and ends byte-identical to an uninterrupted build; any ``--jobs`` gives the same bytes.
Quarantine
    A bad utterance (missing/corrupt/empty/NaN audio, silent, shorter than one frame,
    non-finite features) is left out and recorded with its reason; ``strict`` stops the
    build at the first one instead.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import AudioError, LocatedError, SpoofstoreError, StoreError
from featstore.features.registry import get_feature
from featstore.store.backends import BACKENDS, StoreWriter
from featstore.store.direct_io import aligned_empty
from featstore.store.journal import SplitJournal, read_json, write_json_atomic
from featstore.store.layout import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_SHARD_FRAMES,
    DTYPE,
    EXTRA_PREFIX,
    FIXED_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    detect_format,
    is_remote,
    local_path,
    n_frames_column,
    offset_column,
    sha256_column,
)

__all__ = ["BuildConfig", "BuildSummary", "build"]

_FORMATS = ("zarr", "hdf5")


# ============================================================================================
# configuration


@dataclass(frozen=True)
class BuildConfig:
    """How to build a store. Its :meth:`fingerprint_record` is hashed into the store.

    Attributes
    ----------
    features : tuple of str
        Registry names of the features to extract, in store order.
    feature_params : Mapping[str, Mapping[str, Any]]
        Per-feature parameter overrides (``{"mgd": {"rho": 0.2}}``).
    format : {"zarr", "hdf5"} or None
        Store format; None picks it from the output suffix (``.h5``/``.hdf5`` -> HDF5).
    jobs : int
        Worker processes (1: extract in this process; -1: one per core).
    batch_size : int
        Utterances per worker task (amortises inter-process overhead).
    chunk_frames : int
        Rows per chunk (a crop touches at most ``ceil(crop / chunk) + 1`` chunks).
    shard_frames : int
        Rows per shard file (Zarr) and per write; a multiple of ``chunk_frames``.
    strict : bool
        Fail on the first bad utterance instead of quarantining it.
    fsync : bool
        ``fsync`` data before each commit (survive power loss, not only a killed process).

    Only ``features`` (with resolved parameters), ``chunk_frames``, ``shard_frames`` and the
    format decide the bytes of a store; those make up the fingerprint. ``jobs``,
    ``batch_size``, ``strict`` and ``fsync`` do not.
    """

    features: tuple[str, ...] = ("mgd", "logmel")
    feature_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    format: str | None = None
    jobs: int = 2
    batch_size: int = 8
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    shard_frames: int = DEFAULT_SHARD_FRAMES
    strict: bool = False
    fsync: bool = True

    def __post_init__(self) -> None:
        from featstore.errors import FeatureError

        features = tuple(self.features)
        object.__setattr__(self, "features", features)
        params = {k: dict(v) for k, v in dict(self.feature_params).items()}
        object.__setattr__(self, "feature_params", params)
        if not features:
            raise FeatureError("no features selected")
        if len(set(features)) != len(features):
            raise FeatureError(f"feature listed twice: {', '.join(features)}")
        for name in features:
            get_feature(name).resolve(**params.get(name, {}))
        for name in params:
            get_feature(name)  # unknown names in overrides are errors too
        if self.format not in (None, *_FORMATS):
            raise FeatureError(f"format must be one of {', '.join(_FORMATS)}, got {self.format!r}")
        if self.jobs == 0 or self.jobs < -1:
            raise FeatureError(f"jobs must be >= 1 (or -1 for every core), got {self.jobs}")
        if self.batch_size < 1:
            raise FeatureError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.chunk_frames < 1 or self.shard_frames < 1:
            raise FeatureError("chunk_frames and shard_frames must be >= 1")
        if self.shard_frames % self.chunk_frames:
            raise FeatureError(
                f"shard_frames ({self.shard_frames}) must be a multiple of chunk_frames "
                f"({self.chunk_frames})"
            )

    def feature_records(self) -> dict[str, dict[str, Any]]:
        """``describe()`` of each feature with its overrides, in store order."""
        return {
            name: get_feature(name).describe(**self.feature_params.get(name, {}))
            for name in self.features
        }

    def fingerprint_record(self, fmt: str) -> dict[str, Any]:
        """The part of the configuration that decides the store's bytes (JSON-ready)."""
        return {
            "format_version": FORMAT_VERSION,
            "format": fmt,
            "features": self.feature_records(),
            "feature_order": list(self.features),
            "chunk_frames": self.chunk_frames,
            "shard_frames": self.shard_frames,
        }

    def fingerprint(self, fmt: str) -> str:
        """Hex sha256 of the canonical JSON of :meth:`fingerprint_record`."""
        return _sha256_json(self.fingerprint_record(fmt))

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> BuildConfig:
        """Read a ``featstore.toml``.

        The file sets the same fields as the dataclass, at the top level. ``features`` is
        either a list of names or a table of per-feature parameter tables::

            jobs = 2
            shard_frames = 65536

            [features.mgd]
            rho = 0.2

            [features.logmel]   # default parameters

        Raises
        ------
        LocatedError
            Unreadable TOML or unknown keys.
        FeatureError
            Unknown feature or parameter.
        """
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise LocatedError(path, "no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise LocatedError(path, f"invalid TOML: {exc}") from None
        doc = dict(doc.get("build", doc))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise LocatedError(
                path, f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        features = doc.pop("features", None)
        kwargs: dict[str, Any] = dict(doc)
        if isinstance(features, dict):
            kwargs["features"] = tuple(features)
            params = {k: dict(v) for k, v in features.items() if isinstance(v, dict)}
            params.update({k: dict(v) for k, v in kwargs.get("feature_params", {}).items()})
            kwargs["feature_params"] = params
        elif isinstance(features, list | tuple | str):
            kwargs["features"] = _feature_list(features)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise LocatedError(path, str(exc)) from None


def _feature_list(features: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(features, str):
        return tuple(f.strip() for f in features.split(",") if f.strip())
    return tuple(features)


def _sha256_json(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ============================================================================================
# summary


@dataclass
class BuildSummary:
    """What a :func:`build` call did.

    Attributes
    ----------
    out : str
        The store.
    format : str
        ``"zarr"`` or ``"hdf5"``.
    written : dict[str, int]
        Utterances written by this call, per split.
    quarantined : dict[str, int]
        Utterances quarantined by this call, per split.
    skipped : dict[str, int]
        Utterances already done by an earlier (interrupted or finished) run, per split.
    wall_seconds : float
        Wall time of this call.
    audio_seconds : float
        Seconds of audio decoded by this call.
    noop : bool
        True when the store was already complete.
    quarantine : list of (str, str, str)
        Every quarantined utterance of the store: ``(split, utt_id, reason)``.
    """

    out: str
    format: str
    written: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0
    noop: bool = False
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Audio seconds processed per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __str__(self) -> str:
        if self.noop:
            return (
                f"{self.out} is already complete ({sum(self.skipped.values())} utterances, "
                f"{len(self.quarantine)} quarantined); nothing to do"
            )
        lines = []
        for split in sorted(set(self.written) | set(self.skipped) | set(self.quarantined)):
            line = f"  {split}: {self.written.get(split, 0)} written"
            if self.quarantined.get(split):
                line += f", {self.quarantined[split]} quarantined"
            if self.skipped.get(split):
                line += f", {self.skipped[split]} already done"
            lines.append(line)
        head = (
            f"built {self.out} ({self.format}) in {self.wall_seconds:.1f} s: "
            f"{self.audio_seconds / 3600:.3f} h of audio, {self.realtime_factor:.0f}x real time"
        )
        tail = []
        if self.quarantine:
            tail.append(f"{len(self.quarantine)} utterance(s) quarantined:")
            for split, utt, reason in self.quarantine[:20]:
                tail.append(f"  {split}/{utt}: {reason}")
            if len(self.quarantine) > 20:
                tail.append(f"  ... and {len(self.quarantine) - 20} more (featstore info)")
        return "\n".join([head, *lines, *tail])


# ============================================================================================
# worker side


@dataclass(frozen=True)
class _Task:
    index: int
    utt_id: str
    path: str | None
    error: str | None


def _extract_one(task: _Task, specs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    from featstore.audio import load_audio
    from featstore.store.statistics import column_moments

    if task.error is not None:
        return {"index": task.index, "status": "quarantined", "reason": task.error}
    try:
        audio = load_audio(task.path)
    except AudioError as exc:
        return {"index": task.index, "status": "quarantined", "reason": str(exc)}
    x = audio.signal
    seconds = x.size / 16000.0

    def bad(reason: str) -> dict[str, Any]:
        return {"index": task.index, "status": "quarantined", "reason": f"{task.path}: {reason}"}

    if not np.any(x):
        return bad(f"silent: all {x.size} samples are zero")
    feats, digests, sums = {}, {}, {}
    for name, params in specs:
        spec = get_feature(name)
        try:
            y = spec.function(x, **params)
        except ValueError as exc:
            return bad(f"{name}: {exc}")
        n_bins = int(spec.n_bins(params))
        if y.dtype != DTYPE or y.ndim != 2 or y.shape[1] != n_bins:
            raise AssertionError(  # a kernel bug, not bad input
                f"kernel {spec.kernel} returned {y.dtype} {y.shape}, expected (n, {n_bins}) f4"
            )
        if y.shape[0] == 0:
            return bad(
                f"too short: {x.size} samples ({seconds:.4f} s) is less than one {name} frame "
                f"({params['win_length']} samples)"
            )
        y = np.ascontiguousarray(y)
        # float64 sums of float32 values cannot overflow: they are finite iff every value is
        moments = column_moments(y)
        if not np.isfinite(moments[1]).all():
            return bad(f"{name}: {int(np.count_nonzero(~np.isfinite(y)))} non-finite values")
        feats[name] = y
        digests[name] = hashlib.sha256(memoryview(y).cast("B")).hexdigest()
        sums[name] = moments
    return {
        "index": task.index,
        "status": "ok",
        "feats": feats,
        "sha256": digests,
        "sums": sums,
        "duration": seconds,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "notes": "; ".join(audio.notes),
    }


def _extract_batch(
    tasks: Sequence[_Task], specs: Sequence[tuple[str, dict[str, Any]]], own_process: bool = False
) -> list[dict[str, Any]]:
    """Worker entry point: features of a batch of utterances, in order.

    ``own_process``: this runs in a worker process the build started (loky), whose memory
    allocator may be tuned for the build (:func:`_keep_freed_memory`).
    """
    if own_process:
        _keep_freed_memory()
    return [_extract_one(t, specs) for t in tasks]


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
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    mallopt(m_mmap_threshold, 32 << 20)  # the largest value glibc accepts on 64-bit
    mallopt(m_trim_threshold, 512 << 20)


# ============================================================================================
# main side


class _ShardBuffer:
    """The current, partly filled shard of one feature (rows from ``start``, a shard boundary).

    Rows are copied once into one of two preallocated shard-sized buffers. A full buffer is
    handed to :meth:`add`'s ``write`` callback, which may write it in the background and
    returns a future; filling continues in the other buffer, and a buffer is refilled only
    after the write that holds it has completed (so disk writes and ``fsync`` overlap with
    receiving the next results, and no shard-sized array is allocated per shard).
    """

    def __init__(
        self, start: int, prefix: np.ndarray, n_bins: int, size: int, spare: list[np.ndarray]
    ):
        self.start = start
        self.size = size
        self.shape = (size, n_bins)
        self.spare = spare  # free buffers of this shape, shared by the splits of a build
        self.bufs = [self._take(), None]
        self.busy: list[Any] = [None, None]  # the write future holding each buffer
        self.current = 0
        self.fill = len(prefix)
        self.buf[: self.fill] = prefix

    def _take(self) -> np.ndarray:
        # reusing buffers matters: first-touching a fresh 67 MB buffer cost ~0.2 s here
        return self.spare.pop() if self.spare else aligned_empty(self.shape, DTYPE)

    def release(self) -> None:
        """Give both buffers back for the next split (call once no write holds them)."""
        self.spare.extend(b for b in self.bufs if b is not None)
        self.bufs = [None, None]

    @property
    def buf(self) -> np.ndarray:
        return self.bufs[self.current]

    def add(self, rows: np.ndarray, write: Any) -> None:
        """Append ``rows``; call ``write(start_row, shard)`` (-> future) per shard completed."""
        pos = 0
        while pos < len(rows):
            take = min(self.size - self.fill, len(rows) - pos)
            self.buf[self.fill : self.fill + take] = rows[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.size:
                self.busy[self.current] = write(self.start, self.buf)
                self.start += self.size
                self.fill = 0
                self._switch()

    def _switch(self) -> None:
        self.current ^= 1
        pending = self.busy[self.current]
        if pending is not None:
            pending.result()  # the buffer is free again once its write is done
            self.busy[self.current] = None
        if self.bufs[self.current] is None:
            self.bufs[self.current] = self._take()

    def rest(self) -> tuple[int, np.ndarray]:
        """The rows of the split's last, partial shard."""
        return self.start, self.buf[: self.fill]


class _ShardWrites:
    """Shard writes of one split, run in order by one background thread.

    ``durable[f]`` is the number of rows of feature ``f`` known to be written; :meth:`poll`
    advances it as writes complete (and re-raises a failed write's error).
    """

    def __init__(self, sinks: Mapping[str, Any], durable: dict[str, int]):
        from concurrent.futures import ThreadPoolExecutor

        self.sinks = sinks
        self.durable = durable
        self.pending: deque = deque()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featstore-writer")

    def submitter(self, feature: str) -> Any:
        """The ``write`` callback for :meth:`_ShardBuffer.add` of ``feature``."""

        def write(start: int, shard: np.ndarray) -> Any:
            future = self.pool.submit(self.sinks[feature].write, start, shard)
            self.pending.append((future, feature, start + len(shard)))
            return future

        return write

    def poll(self, wait: bool = False) -> None:
        """Record completed writes in ``durable`` (all of them with ``wait``)."""
        while self.pending and (wait or self.pending[0][0].done()):
            future, feature, end = self.pending.popleft()
            future.result()
            self.durable[feature] = end

    def close(self) -> None:
        """Wait for every write still running; stop the thread."""
        try:
            self.poll(wait=True)
        finally:
            self.pool.shutdown(wait=True)


def _versions(fmt: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["spoofstore", "numpy", "numba", "zarr" if fmt == "zarr" else "h5py"]
    names += ["soundfile", "soxr", "librosa", "joblib"]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _manifest_digest(plan: Mapping[str, Sequence[Any]]) -> str:
    rows = []
    for split in sorted(plan):
        for u in plan[split]:
            rows.append(
                [split, u.utt_id, u.speaker, u.system, u.key, sorted(dict(u.extra).items())]
            )
    return _sha256_json(rows)


def _make_writer(out: Path, fmt: str, fsync: bool) -> StoreWriter:
    return BACKENDS[fmt].writer(out, fsync=fsync)


def _resolve_config(
    config: BuildConfig | str | os.PathLike | None, overrides: dict[str, Any]
) -> BuildConfig:
    if config is None:
        base = BuildConfig()
    elif isinstance(config, BuildConfig):
        base = config
    else:
        base = BuildConfig.from_toml(config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "features" in changes:
        changes["features"] = _feature_list(changes["features"])
    if "feature_params" in changes:
        merged = {k: dict(v) for k, v in base.feature_params.items()}
        for name, params in changes["feature_params"].items():
            merged.setdefault(name, {}).update(params)
        changes["feature_params"] = merged
    return dataclasses.replace(base, **changes) if changes else base


class _Builder:
    """One build run (state shared by the per-split loop)."""

    def __init__(
        self, cfg: BuildConfig, writer: Any, fmt: str, quiet: bool, own_workers: bool = False
    ):
        self.cfg = cfg
        self.own_workers = own_workers
        self.writer = writer
        self.fmt = fmt
        self.quiet = quiet
        self.features = cfg.feature_records()
        self.specs = tuple(
            (name, get_feature(name).resolve(**cfg.feature_params.get(name, {})))
            for name in cfg.features
        )
        self.audio_seconds = 0.0
        self.t0 = time.perf_counter()
        self.spare: dict[str, list[np.ndarray]] = {}  # shard buffers free for reuse

    # -- one split -------------------------------------------------------------------------
    def split(
        self, split: str, utts: Sequence[Any], locate: Any, parallel: Any, bar: Any, summary: Any
    ) -> tuple[dict[str, Any], list[list[str]]]:
        cfg, writer = self.cfg, self.writer
        size = cfg.shard_frames
        journal = SplitJournal(writer.state_dir, split, fsync=cfg.fsync)
        writes: _ShardWrites | None = None
        try:
            progress, records = journal.load()
            if progress and progress.get("done"):
                summary.skipped[split] = len(utts)
                bar.update(len(utts))
                return progress["record"], progress["quarantine"]
            for rec, utt in zip(records, utts, strict=False):
                if rec["utt_id"] != utt.utt_id:
                    raise StoreError(
                        journal.journal_path,
                        f"journal holds {rec['utt_id']!r} where the manifest has "
                        f"{utt.utt_id!r}; rebuild with --overwrite",
                    )
            done = len(records)
            summary.skipped[split] = done
            summary.written[split] = 0
            summary.quarantined[split] = 0
            bar.update(done)
            ends = {f: int(progress["frames"][f]) for f in self.features} if progress else {}
            ends = {f: ends.get(f, 0) for f in self.features}
            acc = {
                f: (
                    np.asarray(progress["acc"][f][0], dtype=np.float64),
                    np.asarray(progress["acc"][f][1], dtype=np.float64),
                )
                if progress
                else (np.zeros(rec["n_bins"]), np.zeros(rec["n_bins"]))
                for f, rec in self.features.items()
            }
            sinks, buffers = {}, {}
            for f, rec in self.features.items():
                sink = writer.sink(split, f, rec["n_bins"], cfg.chunk_frames, size)
                base = ends[f] // size * size
                prefix = sink.read(base, ends[f])
                sink.truncate(ends[f])
                sinks[f], buffers[f] = (
                    sink,
                    _ShardBuffer(base, prefix, rec["n_bins"], size, self.spare.setdefault(f, [])),
                )
            durable = dict(ends)
            writes = _ShardWrites(sinks, durable)
            state = {
                "committed": done,
                "journal_bytes": progress["journal_bytes"] if progress else 0,
                "frames": dict(ends),
            }
            pending: deque = deque()

            def commit() -> None:
                writes.poll()
                advanced = False
                while pending and all(pending[0][1][f] <= durable[f] for f in durable):
                    pos, frame_ends, sums = pending.popleft()
                    if sums is not None:
                        for f, (s, q) in sums.items():
                            np.add(acc[f][0], s, out=acc[f][0])
                            np.add(acc[f][1], q, out=acc[f][1])
                    state["committed"] += 1
                    state["journal_bytes"] = pos
                    state["frames"] = frame_ends
                    advanced = True
                if advanced:
                    journal.commit(
                        {
                            **state,
                            "acc": {f: [a[0].tolist(), a[1].tolist()] for f, a in acc.items()},
                            "done": False,
                        }
                    )

            tasks = []
            for j in range(done, len(utts)):
                path, error = locate(utts[j])
                tasks.append(_Task(j, utts[j].utt_id, path, error))
            batches = [tasks[i : i + cfg.batch_size] for i in range(0, len(tasks), cfg.batch_size)]
            from joblib import delayed

            for batch in parallel(
                delayed(_extract_batch)(b, self.specs, self.own_workers) for b in batches
            ):
                for res in batch:
                    utt = utts[res["index"]]
                    if res["status"] != "ok":
                        if cfg.strict:
                            raise AudioError(
                                None,
                                f"{split}/{utt.utt_id}: {res['reason']} "
                                "(--strict: stopping at the first bad utterance)",
                            )
                        rec = {"utt_id": utt.utt_id, "status": "quarantined"}
                        rec["reason"] = res["reason"]
                        sums = None
                        summary.quarantined[split] += 1
                    else:
                        rec = {
                            "utt_id": utt.utt_id,
                            "status": "ok",
                            "n_frames": {f: len(res["feats"][f]) for f in self.features},
                            "sha256": res["sha256"],
                            "duration": res["duration"],
                            "sample_rate": res["sample_rate"],
                            "channels": res["channels"],
                            "notes": res["notes"],
                        }
                        for f in self.features:
                            rows = res["feats"][f]
                            ends[f] += len(rows)
                            buffers[f].add(rows, writes.submitter(f))
                        sums = res["sums"]
                        summary.written[split] += 1
                        self.audio_seconds += res["duration"]
                    records.append(rec)
                    pending.append((journal.append(rec), dict(ends), sums))
                    commit()
                    bar.update(1)
                elapsed = max(time.perf_counter() - self.t0, 1e-9)
                bar.set_postfix_str(
                    f"{self.audio_seconds / 3600 / elapsed:.3f} audio-h/s, "
                    f"{self.audio_seconds / elapsed:.0f}x real time",
                    refresh=False,
                )
            writes.close()
            for f in self.features:
                start, rows = buffers[f].rest()
                if len(rows):
                    sinks[f].write(start, rows)
                sinks[f].finish(ends[f])
                durable[f] = ends[f]
                buffers[f].release()
            commit()
            if state["committed"] != len(utts):  # pragma: no cover - a bug
                raise RuntimeError(f"{split}: committed {state['committed']} of {len(utts)}")
            record, quarantine = self._finish_split(split, utts, records, acc, ends)
            journal.commit({**state, "done": True, "record": record, "quarantine": quarantine})
            return record, quarantine
        finally:
            if writes is not None:  # on errors too: no write may outlive the build call
                writes.pool.shutdown(wait=True, cancel_futures=True)
            journal.close()

    def _finish_split(
        self,
        split: str,
        utts: Sequence[Any],
        records: list[dict[str, Any]],
        acc: dict[str, tuple[np.ndarray, np.ndarray]],
        ends: dict[str, int],
    ) -> tuple[dict[str, Any], list[list[str]]]:
        ok = [(r, u) for r, u in zip(records, utts, strict=True) if r["status"] == "ok"]
        quarantine = [[split, r["utt_id"], r["reason"]] for r in records if r["status"] != "ok"]
        columns: dict[str, np.ndarray] = {
            "utt_id": _str_column([u.utt_id for _, u in ok]),
            "speaker": _str_column([u.speaker for _, u in ok]),
            "system": _str_column([u.system for _, u in ok]),
            "key": _str_column([u.key or "" for _, u in ok]),
            "label": np.array([u.label for _, u in ok], dtype=np.int8),
            "duration": np.array([r["duration"] for r, _ in ok], dtype=np.float64),
            "sample_rate": np.array([r["sample_rate"] for r, _ in ok], dtype=np.int32),
            "channels": np.array([r["channels"] for r, _ in ok], dtype=np.int16),
            "notes": _str_column([r["notes"] for r, _ in ok]),
        }
        extra_keys: list[str] = []
        for _, u in ok:
            for k in u.extra:
                if k not in extra_keys:
                    extra_keys.append(k)
        extra_columns = {}
        for k in extra_keys:
            column = EXTRA_PREFIX + k
            columns[column] = _str_column([str(u.extra.get(k, "")) for _, u in ok])
            extra_columns[k if k not in FIXED_COLUMNS else f"extra_{k}"] = column
        feature_records = {}
        for f, desc in self.features.items():
            n = np.array([r["n_frames"][f] for r, _ in ok], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
            columns[offset_column(f)] = offsets
            columns[n_frames_column(f)] = n
            digests = [r["sha256"][f] for r, _ in ok]
            columns[sha256_column(f)] = _str_column(digests)
            total = int(n.sum())
            if total != ends[f]:  # pragma: no cover - a bug
                raise RuntimeError(f"{split}/{f}: index has {total} frames, array {ends[f]}")
            if total:
                mean = acc[f][0] / total
                std = np.sqrt(np.maximum(acc[f][1] / total - mean * mean, 0.0))
            else:
                mean, std = np.zeros(desc["n_bins"]), np.ones(desc["n_bins"])
            feature_records[f] = {
                "n_frames": total,
                "n_bins": desc["n_bins"],
                "sha256": split_checksum(digests),
                "mean": mean.tolist(),
                "std": std.tolist(),
            }
        self.writer.write_index(split, columns)
        record = {
            "n_utterances": len(ok),
            "n_quarantined": len(quarantine),
            "audio_seconds": float(sum(r["duration"] for r, _ in ok)),
            "columns": list(columns),
            "extra_columns": extra_columns,
            "features": feature_records,
        }
        return record, quarantine


def _str_column(values: Sequence[str]) -> np.ndarray:
    return np.array(values, dtype=str) if len(values) else np.empty(0, dtype="<U1")


def split_checksum(digests: Iterable[str]) -> str:
    """Checksum of a split's feature array: sha256 of its utterances' sha256 digests.

    Parameters
    ----------
    digests : iterable of str
        Hex sha256 of each utterance's float32 rows (C order, little endian), in index order.

    Returns
    -------
    str
        Hex sha256 of the concatenated raw digests.

    Examples
    --------
    >>> split_checksum([])[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    for d in digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def _lock_build(state_dir: Path, out: Path) -> Any:
    """Refuse to run two builds of one store at once (a POSIX lock, freed when we exit).

    ``lockf`` locks belong to the process: a build re-run in the same process after an
    exception re-acquires it, another process gets a clear error, and a killed build
    leaves no stale lock behind.
    """
    import fcntl

    fh = open(state_dir / "lock", "a+")
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StoreError(
            out, "another featstore build is writing this store right now; wait for it to end"
        ) from None
    return fh


def _locator(audio_root: str | os.PathLike) -> Any:
    from featstore.manifests import AudioLocator

    locator = AudioLocator(audio_root)

    def locate(utt: Any) -> tuple[str | None, str | None]:
        try:
            return os.fspath(locator.find(utt)), None
        except SpoofstoreError as exc:
            return None, str(exc)

    return locate


def build(
    manifest: str | os.PathLike | Sequence[str | os.PathLike],
    audio_root: str | os.PathLike,
    out: str | os.PathLike,
    features: str | Sequence[str] | None = None,
    jobs: int | None = None,
    *,
    format: str | None = None,
    config: BuildConfig | str | os.PathLike | None = None,
    feature_params: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    chunk_frames: int | None = None,
    shard_frames: int | None = None,
    strict: bool | None = None,
    fsync: bool | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    backend: str = "loky",
    scheduler: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> BuildSummary:
    """Extract features of every utterance of a manifest into a feature store.

    Parameters
    ----------
    manifest : str or os.PathLike or sequence
        A protocol file, a directory of protocol files, or a list of either.
    audio_root : str or os.PathLike
        Directory holding the audio in an official layout (``flac/``, ...).
    out : str or os.PathLike
        The store: a ``.zarr`` directory (Zarr v3) or a ``.h5``/``.hdf5`` file.
    features : str or sequence of str, optional
        Feature names (``"mgd,logmel"`` or a list); default ``("mgd", "logmel")``.
    jobs : int, optional
        Worker processes; default 2.
    format : {"zarr", "hdf5"}, optional
        Default: from the suffix of ``out``.
    config : BuildConfig or path to a TOML file, optional
        Base configuration; the other arguments override its fields when given.
    feature_params : mapping, optional
        Per-feature parameter overrides, ``{"mgd": {"rho": 0.2}}``.
    batch_size, chunk_frames, shard_frames, strict, fsync : optional
        See :class:`BuildConfig`.
    overwrite : bool, default False
        Replace an existing store built with another configuration or manifest.
    quiet : bool, default False
        No progress bar.
    backend : {"loky", "dask"}, default "loky"
        Where extraction runs (:func:`featstore.parallel.parallel_backend`): local worker
        processes, or Dask (``scheduler``, else a ``LocalCluster`` of ``jobs`` workers).
    scheduler : str, optional
        Dask scheduler address, ``tcp://HOST:PORT``.
    cache_dir : str or os.PathLike, optional
        With an ``out`` URL: where the store is staged before the upload
        (:func:`featstore.remote.build_to_url`).

    Returns
    -------
    BuildSummary
        Utterances written/quarantined/already done per split, wall time, audio seconds.

    Raises
    ------
    ManifestError
        A malformed protocol (``FILE:LINE: ...``), duplicate or unsafe utterance ids.
    StoreError
        ``out`` holds a store of another configuration (without ``overwrite``), or
        something that is not a feature store.
    AudioError
        With ``strict``, the first bad utterance.

    Examples
    --------
    >>> summary = build("LA/protocols", "LA", "la.zarr", features="mgd,logmel", jobs=2)
    ... # doctest: +SKIP
    >>> summary.written  # doctest: +SKIP
    {'dev': 24844, 'eval': 71237, 'train': 25380}
    """
    from featstore.manifests import read_manifest

    if is_remote(out):  # stage locally, then upload (featstore.remote)
        from featstore.remote import build_to_url

        if format == "hdf5" or detect_format(out) == "hdf5":
            raise StoreError(out, "stores at URLs are Zarr only; use a .zarr URL")

        def build_local(path: Path, overwrite_local: bool) -> BuildSummary:
            return build(
                manifest, audio_root, path, features, jobs, format=format, config=config,
                feature_params=feature_params, batch_size=batch_size,
                chunk_frames=chunk_frames, shard_frames=shard_frames, strict=strict,
                fsync=fsync, overwrite=overwrite_local, quiet=quiet, backend=backend,
                scheduler=scheduler,
            )  # fmt: skip

        return build_to_url(os.fspath(out), build_local, cache_dir=cache_dir, overwrite=overwrite)
    t0 = time.perf_counter()
    cfg = _resolve_config(
        config,
        {
            "features": features,
            "jobs": jobs,
            "format": format,
            "feature_params": feature_params,
            "batch_size": batch_size,
            "chunk_frames": chunk_frames,
            "shard_frames": shard_frames,
            "strict": strict,
            "fsync": fsync,
        },
    )
    out_path = local_path(out)  # file:// URLs too
    fmt = cfg.format or detect_format(out_path)
    utterances = read_manifest(manifest)
    plan: dict[str, list[Any]] = {}
    for u in utterances:
        plan.setdefault(u.split, []).append(u)
    plan = {split: plan[split] for split in sorted(plan)}
    digest = _manifest_digest(plan)
    fingerprint = cfg.fingerprint(fmt)
    writer = _make_writer(out_path, fmt, cfg.fsync)
    summary = BuildSummary(out=os.fspath(out_path), format=fmt)

    existing = writer.complete_metadata()
    build_json = writer.state_dir / "build.json"
    previous = read_json(build_json) if writer.state_dir.is_dir() else None
    if existing is None and previous is None and writer.state_dir.is_dir():
        import shutil  # killed before build.json was written: nothing was committed

        shutil.rmtree(writer.state_dir)
    if overwrite and (existing or previous or writer.is_store()):
        writer.remove()
        existing = previous = None
    if existing is not None:
        if existing.get("fingerprint") != fingerprint:
            raise StoreError(
                out_path,
                "exists and was built with a different configuration (fingerprint "
                f"{str(existing.get('fingerprint'))[:12]}, this build {fingerprint[:12]}); "
                "use --overwrite to replace it",
            )
        if existing.get("manifest_digest") != digest:
            raise StoreError(
                out_path,
                "exists and was built from a different manifest; use --overwrite to replace it",
            )
        if writer.state_dir.is_dir():  # left over from a run killed after its last step
            import shutil

            shutil.rmtree(writer.state_dir)
        summary.noop = True
        summary.skipped = {s: int(r["n_utterances"]) for s, r in existing["splits"].items()}
        summary.quarantine = [tuple(q) for q in existing.get("quarantine", [])]
        summary.wall_seconds = time.perf_counter() - t0
        return summary
    if previous is not None:
        if previous.get("fingerprint") != fingerprint or previous.get("manifest_digest") != digest:
            what = "configuration" if previous.get("fingerprint") != fingerprint else "manifest"
            raise StoreError(
                out_path,
                f"holds an unfinished build with a different {what}; re-run that build to "
                "finish it, or use --overwrite to start over",
            )
    elif writer.exists():
        if writer.is_store():
            raise StoreError(
                out_path, "holds an unfinished store without its build state; use --overwrite"
            )
        raise StoreError(
            out_path,
            "exists and is not a spoofstore feature store; refusing to touch it "
            "(choose another --out or remove it yourself)",
        )

    base_meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "fingerprint": fingerprint,
        "manifest_digest": digest,
    }
    if previous is None:
        writer.state_dir.mkdir(parents=True, exist_ok=True)
        previous = {
            **base_meta,
            "config": cfg.fingerprint_record(fmt),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(build_json, previous, fsync=cfg.fsync)
    lock = _lock_build(writer.state_dir, out_path)
    try:  # released on errors too, not whenever a traceback holding it is collected
        writer.open(base_meta)

        # loky with several jobs runs batches in worker processes this build starts; with
        # one job they run here, in the caller's process, and Dask workers are the user's
        own_workers = backend == "loky" and cfg.jobs != 1
        builder = _Builder(cfg, writer, fmt, quiet, own_workers)
        # workers of a remote Dask cluster do not share our working directory
        locate = _locator(os.path.abspath(audio_root) if scheduler else audio_root)
        split_records: dict[str, Any] = {}
        quarantine: list[list[str]] = []
        from joblib import Parallel
        from tqdm import tqdm

        total = sum(len(v) for v in plan.values())
        from featstore.parallel import parallel_backend

        with (
            parallel_backend(backend, cfg.jobs, scheduler),
            tqdm(
                total=total,
                unit="utt",
                desc="featstore build",
                disable=quiet,
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
            ) as bar,
            Parallel(
                n_jobs=cfg.jobs, return_as="generator", pre_dispatch="2*n_jobs", batch_size=1
            ) as parallel,
        ):
            for split, utts in plan.items():
                record, q = builder.split(split, utts, locate, parallel, bar, summary)
                split_records[split] = record
                quarantine.extend(q)

        metadata = {
            **base_meta,
            "complete": True,
            "config": cfg.fingerprint_record(fmt),
            "features": builder.features,
            "chunk_frames": cfg.chunk_frames,
            "shard_frames": cfg.shard_frames,
            "versions": _versions(fmt),
            "created": previous["created"],
            "completed": datetime.now(UTC).isoformat(timespec="seconds"),
            "splits": split_records,
            "quarantine": quarantine,
        }
        writer.finish(metadata)
        if writer.state_dir.is_dir():
            import shutil

            shutil.rmtree(writer.state_dir)
    finally:
        lock.close()
    summary.quarantine = [tuple(q) for q in quarantine]
    summary.audio_seconds = builder.audio_seconds
    summary.wall_seconds = time.perf_counter() - t0
    return summary
