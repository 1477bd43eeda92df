"""The build pipeline: manifest + audio -> feature store, in named phases.

Resolve
    The configuration: a :class:`BuildConfig` (or TOML file) with the call's overrides
    (:func:`_resolve_config`).
Plan
    The output path and format; the manifest's utterances grouped by split (splits in sorted
    order, utterances in manifest order), its digest and the configuration's fingerprint
    (:func:`_plan`, :class:`_Plan`).
Reconcile
    Compare what ``out`` already holds with the plan: nothing (fresh), an unfinished build of
    the same plan (resume), a finished store of the same plan (nothing to do), or something
    else (refused, saying why) (:func:`_reconcile`, :class:`_StoreState`).
Extract
    joblib (loky) or Dask workers extract features for *batches* of utterances (start-up paid
    once per worker), locating every audio file once (one directory listing); results come
    back in order (``return_as="generator"``), at most ``2 * jobs`` batches in flight, so
    memory does not grow with the corpus. What a worker does with an utterance is
    :mod:`featstore.extraction`. Local worker processes hand their rows over
    through shared-memory rings (:mod:`featstore.shared_rows`), not through the result
    pipe. Frames are appended to a per-feature in-memory buffer and written in whole,
    aligned shards; the split's journal (one line per
    utterance) and progress record (committed count, frame ends, float64 statistics
    accumulators) are updated atomically *after* the data they cover is written. A re-run of
    the same command resumes from the last commit and ends byte-identical to an
    uninterrupted build; any ``--jobs`` gives the same bytes (:func:`_extract`).
Finalise
    Write the store metadata (marking the store complete) and remove the build state
    (:func:`_finalise`).

A bad utterance (missing/corrupt/empty/NaN audio, silent, shorter than one frame,
non-finite features) is quarantined: left out and recorded with its reason; ``strict``
stops the build at the first one instead.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import numbers
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import numpy as np

from featstore.atomic_files import write_json_atomic
from featstore.audio import CLIPPED_FRACTION, CLIPPED_NOTE
from featstore.augment import Recipe, parse_recipe
from featstore.build_config import BuildConfig, check_features, name_list, sha256_json
from featstore.build_summary import BuildSummary
from featstore.errors import (
    AudioError,
    ConfigError,
    ManifestError,
    ResourceError,
    SpoofstoreError,
    StoreError,
)
from featstore.extraction import (
    Extracted,
    Rejected,
    Task,
    ViewTask,
    extract_batch,
    extract_views_batch,
    received,
    view_key,
)
from featstore.features.registry import get_feature
from featstore.manifests import AudioLocator, Utterance, list_protocols, read_manifest
from featstore.parallel import parallel_backend
from featstore.remote import build_to_url
from featstore.shared_rows import arenas
from featstore.split_writes import ShardBuffer, SplitCommitter, SplitStart, check_journal
from featstore.store.backends import BACKENDS, StoreWriter
from featstore.store.journal import SplitJournal, read_json
from featstore.store.layout import (
    EXTRA_PREFIX,
    FIXED_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    NAME_PATTERN,
    VIEW_INDEX_GROUP,
    detect_format,
    is_remote,
    local_path,
    n_frames_column,
    offset_column,
    sha256_column,
    split_checksum,
    view_chain_column,
    view_ok_column,
    view_sha256_column,
)

__all__ = ["BuildConfig", "BuildSummary", "build"]


# ============================================================================================
# augmented views

MAX_VIEWS = 64
"""The most augmented copies per utterance a build makes (``--views``)."""


@dataclass(frozen=True)
class _Augment:
    """The augmented views a build makes: ``views`` copies of every utterance of ``splits``.

    Copy ``k`` (1..views) of utterance ``u`` is ``augment(signal, view_rng(seed, u, k),
    recipe)``, then extracted with the clean view's features.
    """

    recipe: Recipe
    seed: int
    views: int
    splits: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """What the store records (metadata ``augmentation``; JSON-ready)."""
        return {
            "recipe": self.recipe.to_json(),
            "recipe_text": str(self.recipe),
            "seed": self.seed,
            "views": self.views,
            "splits": list(self.splits),
        }


def _describe_augmentation(record: Mapping[str, Any]) -> str:
    """``3 views of train by 'rawboost-5|codec', seed 0`` (of an :meth:`_Augment.record`)."""
    splits = record.get("splits") or []
    return (
        f"{record.get('views')} view(s) of {', '.join(map(str, splits))} by "
        f"{record.get('recipe_text')!r}, seed {record.get('seed')}"
    )


def _resolve_augment(
    augment: str | None,
    views: int | None,
    seed: int | None,
    splits: str | Sequence[str] | None,
    noise_dir: str | os.PathLike | None,
    rir_dir: str | os.PathLike | None,
) -> _Augment | None:
    """Check the augmentation options and parse the recipe (before any audio is read).

    Returns
    -------
    _Augment or None
        None without ``augment``, or with ``views`` 0 (no views; the recipe is checked).

    Raises
    ------
    ConfigError
        ``--views`` (or another augmentation option) without ``--augment``; a bad count,
        seed or split name; an unknown augmentation or parameter, a bad value, a missing,
        empty or unreadable noise/RIR directory (:func:`featstore.augment.parse_recipe`);
        ``--noise-dir``/``--rir-dir`` for a recipe without a noise/reverb step.
    """
    options = {
        "--views": views,
        "--augment-seed": seed,
        "--augment-splits": splits,
        "--noise-dir": noise_dir,
        "--rir-dir": rir_dir,
    }
    if augment is None:
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} needs --augment RECIPE (the augmentations that make the "
                "views), e.g. --augment 'rawboost-5|codec' --views 3"
            )
        return None
    views = 1 if views is None else views
    if isinstance(views, bool) or not isinstance(views, numbers.Integral):
        raise ConfigError(f"--views must be an integer, got {views!r}")
    if not 0 <= views <= MAX_VIEWS:
        raise ConfigError(f"--views must be from 0 to {MAX_VIEWS}, got {views}")
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"--augment-seed must be a non-negative integer, got {seed!r}")
    names = _split_names(("train",) if splits is None else splits)
    defaults: dict[str, dict[str, Any]] = {}
    dirs = (
        ("--noise-dir", "noise", "noise_dir", noise_dir),
        ("--rir-dir", "reverb", "rir_dir", rir_dir),
    )
    for _, step, param, value in dirs:
        if value is not None:  # absolute: the store records it, workers may run elsewhere
            defaults[step] = {param: os.path.abspath(os.fspath(value))}
    recipe = parse_recipe(augment, defaults=defaults)
    used = {step.name for chain in recipe.chains for step in chain.steps}
    for flag, step, _, value in dirs:
        if value is not None and step not in used:
            raise ConfigError(f"{flag} is given but the recipe {augment!r} has no {step} step")
    if views == 0:
        return None
    return _Augment(recipe, int(seed), int(views), names)


def _split_names(splits: str | Sequence[str]) -> tuple[str, ...]:
    """``"train,dev"`` or a list -> checked, distinct split names, sorted (canonical: the
    order does not change the views, so ``dev,train`` is the same build)."""
    names = tuple(name_list(splits))
    if not names:
        raise ConfigError("--augment-splits names no split")
    for name in names:
        if not NAME_PATTERN.fullmatch(name) or ".." in name:
            raise ConfigError(f"--augment-splits: {name!r} is not a split name")
    if len(set(names)) != len(names):
        raise ConfigError(f"--augment-splits lists a split twice: {', '.join(names)}")
    return tuple(sorted(names))


def _resolve_config(
    config: BuildConfig | str | os.PathLike | None, overrides: Mapping[str, Any]
) -> BuildConfig:
    """The configuration of a call: ``config`` (or the defaults) with non-None ``overrides``."""
    if config is None:
        base = BuildConfig()
    elif isinstance(config, BuildConfig):
        base = config
    else:
        base = BuildConfig.from_toml(config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "features" in changes:
        changes["features"] = name_list(changes["features"])
    if "feature_params" in changes:
        merged = {k: dict(v) for k, v in base.feature_params.items()}
        for name, params in changes["feature_params"].items():
            merged.setdefault(name, {}).update(params)
        changes["feature_params"] = merged
    return dataclasses.replace(base, **changes) if changes else base


# ============================================================================================
# plan


@dataclass(frozen=True)
class _Plan:
    """What one build call makes: configuration, destination and the utterances by split.

    Attributes
    ----------
    cfg : BuildConfig
        The resolved configuration.
    out : Path
        The local store path (``file://`` stripped).
    fmt : str
        ``"zarr"`` or ``"hdf5"``.
    splits : Mapping[str, tuple of Utterance]
        Split name -> its utterances in manifest order; splits in sorted order.
    manifest_digest : str
        Hex sha256 of the manifest content that decides the store (:func:`_manifest_digest`).
    fingerprint : str
        :meth:`BuildConfig.fingerprint` for ``fmt``.
    warnings : tuple of str
        What the manifest holds that is legal but probably a mistake (an utterance id in
        two splits).
    augment : _Augment or None
        The augmented views to make (None: the clean view only).
    """

    cfg: BuildConfig
    out: Path
    fmt: str
    splits: Mapping[str, tuple[Utterance, ...]]
    manifest_digest: str
    fingerprint: str
    warnings: tuple[str, ...] = ()
    augment: _Augment | None = None

    def augmentation_record(self) -> dict[str, Any] | None:
        """The metadata ``augmentation`` of this build (None: no views)."""
        return None if self.augment is None else self.augment.record()

    @property
    def n_utterances(self) -> int:
        """Utterances of every split."""
        return sum(len(utts) for utts in self.splits.values())

    def base_metadata(self) -> dict[str, Any]:
        """The metadata keys every state of the store carries (build record, open, finished)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "fingerprint": self.fingerprint,
            "manifest_digest": self.manifest_digest,
        }


def _plan(
    manifest: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    cfg: BuildConfig,
    augment: _Augment | None = None,
) -> _Plan:
    """Read the manifest and decide the destination, format and split order.

    Raises
    ------
    ManifestError
        A malformed protocol, duplicate or unsafe utterance ids.
    ConfigError
        ``augment`` names a split the manifest does not have.
    """
    out_path = local_path(out)  # file:// URLs too
    fmt = cfg.format or detect_format(out_path)
    utterances = read_manifest(manifest)
    _check_protocols_not_empty(manifest, utterances)
    splits = _group_by_split(utterances)
    for split in augment.splits if augment else ():
        if split not in splits:
            raise ConfigError(
                f"--augment-splits: the manifest has no split {split!r}; it has {', '.join(splits)}"
            )
    return _Plan(
        augment=augment,
        cfg=cfg,
        out=out_path,
        fmt=fmt,
        splits=splits,
        manifest_digest=_manifest_digest(splits),
        fingerprint=cfg.fingerprint(fmt),
        warnings=tuple(_shared_id_warnings(splits)),
    )


def _check_protocols_not_empty(
    manifest: str | os.PathLike | Sequence[str | os.PathLike], utterances: Sequence[Utterance]
) -> None:
    """Every protocol file read holds at least one trial.

    Raises
    ------
    ManifestError
        Naming the (first) protocol file without a trial, or the manifest when none was found.
    """
    items = [manifest] if isinstance(manifest, str | os.PathLike) else list(manifest)
    if not utterances:
        where = items[0] if len(items) == 1 else ", ".join(os.fspath(i) for i in items)
        raise ManifestError(where, "no trials: the protocol is empty (nothing to build)")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files.extend(pf.path for pf in list_protocols(p))
        else:
            files.append(p)
    used = {Path(u.source).resolve() for u in utterances}
    for f in files:
        if f.resolve() not in used:
            raise ManifestError(f, "no trials: the protocol is empty; remove it or fill it")


def _shared_id_warnings(splits: Mapping[str, Sequence[Utterance]], shown: int = 5) -> list[str]:
    """A warning per pair of splits that share utterance ids (listing a few of them)."""
    ids = {split: {u.utt_id for u in utts} for split, utts in splits.items()}
    names = sorted(ids)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = [u.utt_id for u in splits[a] if u.utt_id in ids[b]]
            if both:
                more = f", ... ({len(both)} in all)" if len(both) > shown else ""
                out.append(
                    f"{len(both)} utterance id(s) are in both split {a} and split {b} "
                    f"(the same recording in two splits?): {', '.join(both[:shown])}{more}"
                )
    return out


def _group_by_split(utterances: Iterable[Utterance]) -> dict[str, tuple[Utterance, ...]]:
    """Utterances by split, splits sorted by name, utterances in manifest order."""
    groups: dict[str, list[Utterance]] = {}
    for u in utterances:
        groups.setdefault(u.split, []).append(u)
    return {split: tuple(groups[split]) for split in sorted(groups)}


def _manifest_digest(splits: Mapping[str, Sequence[Utterance]]) -> str:
    rows = []
    for split in sorted(splits):
        for u in splits[split]:
            rows.append(
                [split, u.utt_id, u.speaker, u.system, u.key, sorted(dict(u.extra).items())]
            )
    return sha256_json(rows)


def _make_writer(out: Path, fmt: str, fsync: bool) -> StoreWriter:
    return BACKENDS[fmt].writer(out, fsync=fsync)


# ============================================================================================
# reconcile with what the destination already holds


class _StoreStatus(Enum):
    """What the destination holds, compared with the plan."""

    FRESH = "fresh"
    """Nothing (or a store just removed by ``overwrite``): start a new build."""
    RESUME = "resume"
    """An unfinished build of the same configuration and manifest: continue it."""
    COMPLETE = "complete"
    """A finished store of the same configuration and manifest: nothing to do."""
    EXTEND = "extend"
    """A finished store of the same configuration and manifest without the augmented views
    the build asks for: add them, keeping its clean view (or continue adding them)."""
    CONFLICT = "conflict"
    """Anything else: refuse to touch it."""


@dataclass(frozen=True)
class _StoreState:
    """Outcome of :func:`_reconcile`.

    Attributes
    ----------
    status : _StoreStatus
        See :class:`_StoreStatus`.
    metadata : Mapping or None
        The finished store's metadata (``COMPLETE``, ``EXTEND``).
    build_record : Mapping or None
        The unfinished build's ``build.json`` (``RESUME``; ``EXTEND`` when continuing an
        addition of views).
    conflict : str
        Why the destination is refused, for the user (``CONFLICT``).
    """

    status: _StoreStatus
    metadata: Mapping[str, Any] | None = None
    build_record: Mapping[str, Any] | None = None
    conflict: str = ""


def _build_record_path(writer: Any) -> Path:
    """``build.json``: the plan's fingerprint and digest, written before anything else."""
    return writer.state_dir / "build.json"


def _reconcile(writer: Any, plan: _Plan, overwrite: bool) -> _StoreState:
    """Compare the destination with the plan; clear what is stale or to be overwritten.

    Parameters
    ----------
    writer : ZarrWriter or Hdf5Writer
        The destination's writer (:func:`_make_writer`).
    plan : _Plan
        This build.
    overwrite : bool
        Remove a store (finished or not) of another plan instead of refusing it.

    Returns
    -------
    _StoreState
        Fresh, resume, complete or conflict (with the reason).
    """
    existing = writer.complete_metadata()
    previous = read_json(_build_record_path(writer)) if writer.state_dir.is_dir() else None
    if existing is None and previous is None and writer.state_dir.is_dir():
        shutil.rmtree(writer.state_dir)  # killed before build.json was written: nothing committed
    if overwrite and (existing or previous or writer.is_store()):
        writer.remove()
        existing = previous = None
    if existing is not None:
        conflict = _finished_store_conflict(existing, plan)
        if conflict:
            return _StoreState(_StoreStatus.CONFLICT, conflict=conflict)
        if previous is not None and previous.get("extends"):  # views being added to it
            wanted = plan.augmentation_record()
            if wanted == previous.get("augmentation"):
                return _StoreState(_StoreStatus.EXTEND, metadata=existing, build_record=previous)
            if wanted is not None:
                return _StoreState(
                    _StoreStatus.CONFLICT,
                    conflict="holds an unfinished addition of augmented views made another "
                    f"way ({_describe_augmentation(previous.get('augmentation') or {})}); "
                    "re-run that command to finish it, or run the build without --augment to "
                    "drop it",
                )
            for split in (previous.get("augmentation") or {}).get("splits", []):
                writer.remove_views(split)  # abandoned by a plain re-run: the store is as it was
        if writer.state_dir.is_dir():  # left over from a run killed after its last step
            shutil.rmtree(writer.state_dir)
        conflict = _views_conflict(existing, plan)
        if conflict:
            return _StoreState(_StoreStatus.CONFLICT, conflict=conflict)
        if plan.augment is not None and existing.get("augmentation") is None:
            return _StoreState(_StoreStatus.EXTEND, metadata=existing)
        return _StoreState(_StoreStatus.COMPLETE, metadata=existing)
    if previous is not None:
        conflict = _unfinished_build_conflict(previous, plan)
        if conflict:
            return _StoreState(_StoreStatus.CONFLICT, conflict=conflict)
        return _StoreState(_StoreStatus.RESUME, build_record=previous)
    if writer.exists():
        return _StoreState(_StoreStatus.CONFLICT, conflict=_foreign_conflict(writer))
    return _StoreState(_StoreStatus.FRESH)


def _finished_store_conflict(metadata: Mapping[str, Any], plan: _Plan) -> str:
    """Why a finished store cannot be taken as this build's result ("" when it can)."""
    if metadata.get("fingerprint") != plan.fingerprint:
        return (
            "exists and was built with a different configuration (fingerprint "
            f"{str(metadata.get('fingerprint'))[:12]}, this build {plan.fingerprint[:12]}); "
            "use --overwrite to replace it"
        )
    if metadata.get("manifest_digest") != plan.manifest_digest:
        return "exists and was built from a different manifest; use --overwrite to replace it"
    return ""


def _views_conflict(metadata: Mapping[str, Any], plan: _Plan) -> str:
    """Why a finished store cannot get (or already has other) augmented views ("" if fine).

    A build without ``--augment`` accepts any finished store of its configuration; one
    with views accepts a store without views (they are added) or with the same ones.
    """
    have, wanted = metadata.get("augmentation"), plan.augmentation_record()
    if wanted is None or have is None or have == wanted:
        return ""
    return (
        f"already holds augmented views made another way ({_describe_augmentation(have)}; "
        f"this build: {_describe_augmentation(wanted)}); use --overwrite to rebuild it, "
        "clean view included"
    )


def _unfinished_build_conflict(record: Mapping[str, Any], plan: _Plan) -> str:
    """Why an unfinished build cannot be resumed by this one ("" when it can)."""
    same_config = record.get("fingerprint") == plan.fingerprint
    same_manifest = record.get("manifest_digest") == plan.manifest_digest
    same_views = record.get("augmentation") == plan.augmentation_record()
    if same_config and same_manifest and same_views:
        return ""
    what = (
        "configuration"
        if not same_config
        else "manifest"
        if not same_manifest
        else (
            "augmentation (--augment, --views, --augment-seed, --augment-splits, --noise-dir, "
            "--rir-dir)"
        )
    )
    return (
        f"holds an unfinished build with a different {what}; re-run that build to "
        "finish it, or use --overwrite to start over"
    )


def _foreign_conflict(writer: Any) -> str:
    """Why a destination with neither a finished store nor build state is refused."""
    if writer.is_store():
        return "holds an unfinished store without its build state; use --overwrite"
    return (
        "exists and is not a spoofstore feature store; refusing to touch it "
        "(choose another --out or remove it yourself)"
    )


def _start_build_record(writer: Any, plan: _Plan, state: _StoreState) -> Mapping[str, Any]:
    """The build record to continue, or a new one written before anything else (fresh)."""
    if state.build_record is not None:
        return state.build_record
    writer.state_dir.mkdir(parents=True, exist_ok=True)
    record = {
        **plan.base_metadata(),
        "config": plan.cfg.fingerprint_record(plan.fmt),
        "augmentation": plan.augmentation_record(),
        "extends": state.status is _StoreStatus.EXTEND,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(_build_record_path(writer), record, fsync=plan.cfg.fsync)
    return record


def _lock_path(out: Path) -> Path:
    """The lock file of a build of ``out``: a hidden sibling, ``.<name>.lock``.

    Beside the store, not inside it, so that it exists before anything of the store does
    (two fresh builds of one new ``out`` race on it, not on the build state) and survives
    ``--overwrite`` removing the store.
    """
    return out.with_name(f".{out.name}.lock")


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold the lock of ``out`` for the whole build (a POSIX ``lockf`` lock, freed when we exit).

    Taken before the destination is inspected, so that of two builds started at once into
    the same ``out`` exactly one runs and the other gets a clear error. ``lockf`` locks belong
    to the process: a build re-run in the same process after an exception re-acquires it,
    another process gets the error, and a killed build leaves no stale lock behind (the
    file may remain; it is reused). The file is removed when the block exits; a build that
    locked a file just removed by another one notices (its inode is gone) and locks again.

    Raises
    ------
    ResourceError
        Another process holds the lock.
    """
    path = _lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh: IO[str] = open(path, "a+")
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise ResourceError(
                f"another featstore build holds the lock on {out} ({path}); wait for it to "
                "end, then re-run this command (it resumes or finds the store complete)"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()  # removed by the build that held it before us: lock the new file
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: nobody else is inside
        fh.close()


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_NO_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _environment_fault(exc: OSError, out: Path) -> ResourceError | None:
    """The :class:`ResourceError` an ``OSError`` of a build stands for (None: not one).

    A full disk or quota (``ENOSPC``/``EDQUOT``, also as h5py's message text) and permission
    errors are faults of the environment: the build stops with one line naming the path, and
    a re-run of the same command after the cause is fixed resumes from the last commit.
    """
    where = exc.filename or out
    text = str(exc)
    if exc.errno in _NO_SPACE or "No space left" in text or "Disk quota" in text:
        return ResourceError(
            f"{where}: no space left on device while building {out}; free space (or choose "
            "another --out), then re-run the same command to resume"
        )
    if exc.errno in _NO_ACCESS or isinstance(exc, PermissionError):
        return ResourceError(
            f"{where}: permission denied ({exc.strerror or exc}) while building {out}"
        )
    return None


@contextmanager
def _environment_faults(out: Path) -> Iterator[None]:
    """Turn disk-full and permission ``OSError``s of a build into :class:`ResourceError`."""
    try:
        yield
    except OSError as exc:
        fault = _environment_fault(exc, out)
        if fault is None:
            raise
        raise fault from exc


# ============================================================================================
# extract, main side: one split


@dataclass(frozen=True)
class _SplitResult:
    """What extracting one split produced.

    Attributes
    ----------
    record : dict
        The split's entry of the store metadata (``splits``).
    quarantine : list of [split, utt_id, reason]
        Its quarantined utterances.
    skipped : int
        Utterances committed by an earlier run.
    written, quarantined : int or None
        Utterances written/quarantined by this call; None when the split was already done.
    clipped : list of str
        Written utterances with many samples at full scale (:data:`CLIPPED_NOTE`).
    ok_records : tuple of dict
        Journal records of the utterances in the store, in index order (``utt_id``,
        ``n_frames``, ``sha256`` per feature): what its augmented views are made for.
    """

    record: dict[str, Any]
    quarantine: list[list[str]]
    skipped: int
    written: int | None = None
    quarantined: int | None = None
    clipped: list[str] = field(default_factory=list)
    ok_records: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class _ViewsResult:
    """What making the augmented views of one split produced.

    Attributes
    ----------
    record : dict
        The split's ``views`` entry of the store metadata.
    quarantine : list of [split, utt_id, view, reason]
        Its quarantined views.
    skipped : int
        Utterances whose views an earlier run committed.
    written : int or None
        Utterances whose views this call made; None when the split's views were done.
    """

    record: dict[str, Any]
    quarantine: list[list[Any]]
    skipped: int
    written: int | None = None


def _holds_quarantine(progress: Mapping[str, Any] | None, records: Sequence[Mapping]) -> bool:
    """Whether the committed part of a split holds quarantined utterances."""
    if progress and progress.get("done"):
        return bool(progress.get("quarantine"))
    return any(r["status"] != "ok" for r in records)


def _forget_split(journal: SplitJournal) -> None:
    """Drop a split's build state: the next run extracts it from its first utterance.

    The progress record goes first: a journal without one counts as empty, so a kill
    between the two removals is harmless. The frame arrays are cut back when reopened.
    """
    journal.progress_path.unlink(missing_ok=True)
    journal.journal_path.unlink(missing_ok=True)


def _quarantine_failure(
    split: str, records: Sequence[Mapping[str, Any]], max_fraction: float
) -> str | None:
    """Why a finished split fails the build for its quarantined utterances (None: it passes).

    A split fails when none of its utterances was written, or when more than
    ``max_fraction`` of them were quarantined; the message counts the commonest reasons.
    """
    bad = [r for r in records if r["status"] != "ok"]
    n, n_bad = len(records), len(bad)
    if n_bad == 0:
        return None
    if n_bad == n:
        head = f"all {n} utterances of split {split} were quarantined"
    elif n_bad > max_fraction * n:
        head = (
            f"{n_bad} of {n} utterances of split {split} were quarantined, more than "
            f"--max-quarantine {max_fraction:g} of them"
        )
    else:
        return None
    kinds = _common_reasons(bad)
    if "no audio file" in kinds[0][1] or "audio root" in kinds[0][1]:
        hint = "check --audio-root"
    else:
        hint = "check the audio, or allow more with --max-quarantine"
    reasons = "; ".join(f"{count} x {kind}" for count, kind in kinds[:3])
    return f"{head} ({reasons}); {hint}; the store is not complete, a re-run retries them"


def _common_reasons(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """(count, reason) of quarantined records, commonest first, ids and file names generalised.

    ``protocols/x.txt:3: no audio file for utterance 'LA_D_1' ...`` and the same for
    ``LA_D_2`` count as one reason, ``no audio file for utterance '*' ...``.
    """
    counts: dict[str, int] = {}
    for r in records:
        kind = str(r["reason"]).replace(str(r["utt_id"]), "*")
        head, sep, rest = kind.partition(": ")
        if sep and ("/" in head or "*" in head or os.sep in head):
            kind = rest  # the file (protocol:line or audio path) the reason is about
        counts[kind] = counts.get(kind, 0) + 1
    return sorted(((c, k) for k, c in counts.items()), key=lambda ck: (-ck[0], ck[1]))


_Result = Extracted | Rejected
_Dispatch = Callable[[list[list[Task]]], Iterable[list[_Result]]]
"""Runs batches of tasks on the workers; yields each batch's results, batches in order."""
_Locate = Callable[[Utterance], tuple[str | None, str | None]]
"""Utterance -> (audio path, None) or (None, why there is none)."""


@dataclass
class _Progress:
    """The progress bar and the throughput it shows (audio of the whole call so far)."""

    bar: Any
    t0: float
    audio_seconds: float = 0.0

    def show_rate(self) -> None:
        """Show audio hours per second and the real-time factor since ``t0``."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(
            f"{self.audio_seconds / 3600 / elapsed:.3f} audio-h/s, "
            f"{self.audio_seconds / elapsed:.0f}x real time",
            refresh=False,
        )


def _open_arrays(
    writer: Any,
    cfg: BuildConfig,
    split: str,
    arrays: Mapping[str, tuple[str, int, int]],
    ends: Mapping[str, int],
    spare: dict[str, list[np.ndarray]],
) -> tuple[dict[str, Any], dict[str, ShardBuffer]]:
    """Frame arrays cut back to ``ends``, and the buffers of their current shards.

    Parameters
    ----------
    writer : StoreWriter
        The open destination.
    cfg : BuildConfig
        Chunk and shard sizes.
    split : str
        The split.
    arrays : Mapping[str, (str, int, int)]
        Key -> (feature, view, n_bins) of each array.
    ends : Mapping[str, int]
        Key -> committed rows.
    spare : dict[str, list of np.ndarray]
        Feature -> shard buffers free for reuse (every view of a feature has its shape).
    """
    size = cfg.shard_frames
    sinks, buffers = {}, {}
    for key, (feature, view, n_bins) in arrays.items():
        sink = writer.sink(split, feature, n_bins, cfg.chunk_frames, size, view=view)
        base = ends[key] // size * size
        prefix = sink.read(base, ends[key])
        sink.truncate(ends[key])
        sinks[key] = sink
        buffers[key] = ShardBuffer(base, prefix, n_bins, size, spare.setdefault(feature, []))
    return sinks, buffers


class _SplitExtractor:
    """Extracts the splits of one build, one after another.

    Parameters
    ----------
    plan : _Plan
        The build.
    writer : ZarrWriter or Hdf5Writer
        The open destination.
    locate : callable
        Finds each utterance's audio file (:func:`_locator`).
    dispatch : callable
        Runs batches of tasks on the workers, results in order.
    progress : _Progress
        Progress bar and throughput, shared by the splits.
    retry : bool
        Extract again the splits whose committed part holds quarantined utterances.
    """

    def __init__(
        self,
        plan: _Plan,
        writer: Any,
        locate: _Locate,
        dispatch: _Dispatch,
        progress: _Progress,
        retry: bool = False,
    ):
        self.cfg = plan.cfg
        self.retry = retry
        self.writer = writer
        self.features = plan.cfg.feature_records()
        self.locate = locate
        self.dispatch = dispatch
        self.progress = progress
        self.spare: dict[str, list[np.ndarray]] = {}  # shard buffers free for reuse

    def split(self, split: str, utts: Sequence[Utterance]) -> _SplitResult:
        """Extract (or resume, or skip when done) one split; commit it as done."""
        journal = SplitJournal(self.writer.state_dir, split, fsync=self.cfg.fsync)
        committer: SplitCommitter | None = None
        try:
            progress, records = journal.load()
            if self.retry and _holds_quarantine(progress, records):
                _forget_split(journal)
                progress, records = None, []
            if progress and progress.get("done"):
                self.progress.bar.update(len(utts))
                return _SplitResult(
                    progress["record"],
                    progress["quarantine"],
                    len(utts),
                    clipped=progress.get("clipped", []),
                    ok_records=tuple(r for r in records if r["status"] == "ok"),
                )
            check_journal(journal, records, [u.utt_id for u in utts])
            start = SplitStart.from_progress(progress, records, self.features)
            self.progress.bar.update(start.done)
            sinks, buffers = self._open_arrays(split, start.ends)
            committer = SplitCommitter(journal, sinks, buffers, start)
            written, quarantined = self._extract_into(committer, split, utts, start.done)
            committer.flush()
            if committer.committed != len(utts):  # pragma: no cover - a bug
                raise RuntimeError(f"{split}: committed {committer.committed} of {len(utts)}")
            failure = _quarantine_failure(split, committer.records, self.cfg.max_quarantine)
            if failure:
                _forget_split(journal)  # a re-run extracts the whole split again
                raise AudioError(None, failure)
            record, quarantine = self._write_index(split, utts, committer)
            clipped = [
                r["utt_id"]
                for r in committer.records
                if r["status"] == "ok" and CLIPPED_NOTE in r["notes"]
            ]
            committer.mark_done(record, quarantine, clipped)
            ok = tuple(r for r in committer.records if r["status"] == "ok")
            return _SplitResult(record, quarantine, start.done, written, quarantined, clipped, ok)
        finally:
            if committer is not None:
                committer.abort()
            journal.close()

    def _open_arrays(
        self, split: str, ends: Mapping[str, int]
    ) -> tuple[dict[str, Any], dict[str, ShardBuffer]]:
        """Each feature's frame array cut back to ``ends``, and its current shard's buffer."""
        arrays = {f: (f, 0, desc["n_bins"]) for f, desc in self.features.items()}
        return _open_arrays(self.writer, self.cfg, split, arrays, ends, self.spare)

    def _extract_into(
        self, committer: SplitCommitter, split: str, utts: Sequence[Utterance], first: int
    ) -> tuple[int, int]:
        """Extract ``utts[first:]`` into ``committer``; return (written, quarantined).

        Raises
        ------
        AudioError
            With ``strict``, the first bad utterance.
        """
        tasks = [Task(j, *self.locate(utts[j])) for j in range(first, len(utts))]
        size = self.cfg.batch_size
        written = quarantined = 0
        for batch in self.dispatch([tasks[i : i + size] for i in range(0, len(tasks), size)]):
            for result in batch:
                utt = utts[result.index]
                if isinstance(result, Rejected):
                    if self.cfg.strict:
                        raise AudioError(
                            None,
                            f"{split}/{utt.utt_id}: {result.reason} "
                            "(--strict: stopping at the first bad utterance)",
                        )
                    record = {"utt_id": utt.utt_id, "status": "quarantined"}
                    record["reason"] = result.reason
                    committer.add(record, None)
                    quarantined += 1
                else:
                    committer.add(_journal_record(utt, result, self.features), result)
                    written += 1
                    self.progress.audio_seconds += result.duration
                self.progress.bar.update(1)
            self.progress.show_rate()
        return written, quarantined

    def _write_index(
        self, split: str, utts: Sequence[Utterance], committer: SplitCommitter
    ) -> tuple[dict[str, Any], list[list[str]]]:
        """Write the split's index; return its metadata record and quarantine rows."""
        records = committer.records
        ok = [(r, u) for r, u in zip(records, utts, strict=True) if r["status"] == "ok"]
        quarantine = [[split, r["utt_id"], r["reason"]] for r in records if r["status"] != "ok"]
        columns = _fixed_columns(ok)
        extra_columns = _add_extra_columns(columns, [u for _, u in ok])
        feature_records = {
            f: _add_feature_columns(
                columns, split, f, desc, ok, committer.acc[f], committer.ends[f]
            )
            for f, desc in self.features.items()
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


def _journal_record(
    utt: Utterance, result: Extracted, features: Mapping[str, Any]
) -> dict[str, Any]:
    """The journal line of a written utterance (what its index row is made from)."""
    return {
        "utt_id": utt.utt_id,
        "status": "ok",
        "n_frames": {f: len(result.feats[f]) for f in features},
        "sha256": result.sha256,
        "duration": result.duration,
        "sample_rate": result.sample_rate,
        "channels": result.channels,
        "notes": result.notes,
    }


_Written = Sequence[tuple[Mapping[str, Any], Utterance]]
"""(journal record, utterance) of each written utterance of a split, in index order."""


def _fixed_columns(ok: _Written) -> dict[str, np.ndarray]:
    """The index columns every split has (:data:`FIXED_COLUMNS`), in that order."""
    return {
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


def _add_extra_columns(columns: dict[str, np.ndarray], utts: Sequence[Utterance]) -> dict[str, str]:
    """Add a string column per other protocol field; return field -> column name.

    Fields are in order of first appearance; a field named like a fixed column is listed as
    ``extra_<name>``.
    """
    keys: list[str] = []
    for u in utts:
        for k in u.extra:
            if k not in keys:
                keys.append(k)
    names = {}
    for k in keys:
        column = EXTRA_PREFIX + k
        columns[column] = _str_column([str(u.extra.get(k, "")) for u in utts])
        names[k if k not in FIXED_COLUMNS else f"extra_{k}"] = column
    return names


def _add_feature_columns(
    columns: dict[str, np.ndarray],
    split: str,
    feature: str,
    desc: Mapping[str, Any],
    ok: _Written,
    acc: tuple[np.ndarray, np.ndarray],
    n_rows: int,
) -> dict[str, Any]:
    """Add the offset, n_frames and sha256 columns of ``feature``; return its split record.

    The record holds the frame count, bins, split checksum and the feature's mean and
    standard deviation per bin (from the float64 accumulators ``acc``).
    """
    n = np.array([r["n_frames"][feature] for r, _ in ok], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
    columns[offset_column(feature)] = offsets
    columns[n_frames_column(feature)] = n
    digests = [r["sha256"][feature] for r, _ in ok]
    columns[sha256_column(feature)] = _str_column(digests)
    total = int(n.sum())
    if total != n_rows:  # pragma: no cover - a bug
        raise RuntimeError(f"{split}/{feature}: index has {total} frames, array {n_rows}")
    if total:
        mean = acc[0] / total
        std = np.sqrt(np.maximum(acc[1] / total - mean * mean, 0.0))
    else:
        mean, std = np.zeros(desc["n_bins"]), np.ones(desc["n_bins"])
    return {
        "n_frames": total,
        "n_bins": desc["n_bins"],
        "sha256": split_checksum(digests),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }


def _str_column(values: Sequence[str]) -> np.ndarray:
    return np.array(values, dtype=str) if len(values) else np.empty(0, dtype="<U1")


# ============================================================================================
# extract, main side: the augmented views of one split


def _views_journal_name(split: str) -> str:
    """Name of the journal of a split's views (``views@train``: no split has an ``@``)."""
    return f"views@{split}"


class _ViewExtractor:
    """Makes the augmented views of the augmented splits, after their clean view is done.

    Each split's views are a build of their own over the split's index (its utterances in
    the store, in order): a journal (``views@<split>.journal.jsonl``), a progress record,
    and one frame array per (feature, view) written in whole shards, all committed and
    resumed exactly like the clean view (:class:`SplitCommitter`).

    Parameters
    ----------
    plan : _Plan
        The build (with ``plan.augment``).
    writer : StoreWriter
        The open destination.
    locate : callable
        Finds each utterance's audio file.
    dispatch : callable
        Runs batches of :class:`ViewTask` on the workers, results in order.
    progress : _Progress
        Progress bar and throughput.
    spare : dict
        Shard buffers free for reuse, shared with the clean extraction.
    """

    def __init__(
        self,
        plan: _Plan,
        writer: Any,
        locate: _Locate,
        dispatch: _Dispatch,
        progress: _Progress,
        spare: dict[str, list[np.ndarray]],
    ):
        assert plan.augment is not None
        self.cfg = plan.cfg
        self.writer = writer
        self.features = plan.cfg.feature_records()
        self.views = tuple(range(1, plan.augment.views + 1))
        self.locate = locate
        self.dispatch = dispatch
        self.progress = progress
        self.spare = spare
        self.arrays = {
            view_key(f, k): (f, k, int(desc["n_bins"]))
            for k in self.views
            for f, desc in self.features.items()
        }

    def split(
        self, split: str, utts: Sequence[Utterance], clean: Sequence[Mapping[str, Any]]
    ) -> _ViewsResult:
        """Make (or resume, or skip when done) the views of one split; commit them as done.

        Parameters
        ----------
        split : str
            The split.
        utts : sequence of Utterance
            Its utterances (manifest order; those in ``clean`` are made views of).
        clean : sequence of dict
            Its clean view's records, in index order (``utt_id``, ``n_frames``).
        """
        journal = SplitJournal(self.writer.state_dir, _views_journal_name(split), self.cfg.fsync)
        committer: SplitCommitter | None = None
        try:
            progress, records = journal.load()
            if progress and progress.get("done"):
                self.progress.bar.update(len(utts))
                return _ViewsResult(progress["record"], progress["quarantine"], len(clean))
            check_journal(journal, records, [r["utt_id"] for r in clean])
            keys = {key: {"n_bins": n_bins} for key, (_, _, n_bins) in self.arrays.items()}
            start = SplitStart.from_progress(progress, records, keys)
            self.progress.bar.update(len(utts) - len(clean) + start.done)
            sinks, buffers = _open_arrays(
                self.writer, self.cfg, split, self.arrays, start.ends, self.spare
            )
            committer = SplitCommitter(journal, sinks, buffers, start)
            written = self._extract_into(committer, split, utts, clean, start.done)
            committer.flush()
            for key, (feature, _, _) in self.arrays.items():
                total = sum(int(r["n_frames"][feature]) for r in clean)
                if committer.ends[key] != total:  # pragma: no cover - a bug
                    raise RuntimeError(f"{split}/{key}: {committer.ends[key]} rows, clean {total}")
            failure = _view_quarantine_failure(
                split, committer.records, len(self.views), self.cfg.max_quarantine
            )
            if failure:
                _forget_split(journal)  # a re-run makes the split's views again
                raise AudioError(None, failure)
            record, quarantine = self._write_index(split, committer.records)
            committer.mark_done(record, quarantine, [])
            return _ViewsResult(record, quarantine, start.done, written)
        finally:
            if committer is not None:
                committer.abort()
            journal.close()

    def _extract_into(
        self,
        committer: SplitCommitter,
        split: str,
        utts: Sequence[Utterance],
        clean: Sequence[Mapping[str, Any]],
        first: int,
    ) -> int:
        """Make the views of ``clean[first:]`` into ``committer``; return how many utterances.

        Raises
        ------
        AudioError
            An utterance's audio cannot be read any more (its clean view was made from it).
        """
        by_id = {u.utt_id: u for u in utts}
        tasks = []
        for j in range(first, len(clean)):
            rec = clean[j]
            n_frames = tuple((f, int(rec["n_frames"][f])) for f in self.features)
            tasks.append(ViewTask(j, *self.locate(by_id[rec["utt_id"]]), rec["utt_id"], n_frames))
        size = max(1, self.cfg.batch_size // len(self.views))
        written = 0
        for batch in self.dispatch([tasks[i : i + size] for i in range(0, len(tasks), size)]):
            for result in batch:
                utt_id = clean[result.index]["utt_id"]
                if isinstance(result, Rejected):
                    raise AudioError(
                        None,
                        f"{split}/{utt_id}: cannot make its augmented views: {result.reason}; "
                        "its clean view in the store was made from this audio: restore it "
                        "(check --audio-root), then re-run the same command to resume",
                    )
                failed = [v["reason"] for v in result.views.values() if not v["ok"]]
                if failed and self.cfg.strict:
                    raise AudioError(
                        None,
                        f"{split}/{utt_id}: {failed[0]} (--strict: stopping at the first bad view)",
                    )
                record = {
                    "utt_id": utt_id,
                    "status": "ok",
                    "views": result.views,
                    "sha256": result.sha256,
                }
                committer.add(record, result)
                written += 1
                self.progress.audio_seconds += result.duration * len(self.views)
                self.progress.bar.update(1)
            self.progress.show_rate()
        return written

    def _write_index(
        self, split: str, records: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, Any], list[list[Any]]]:
        """Write the split's view columns; return its ``views`` record and quarantined views."""
        columns: dict[str, np.ndarray] = {}
        checksums: dict[str, list[str]] = {f: [] for f in self.features}
        quarantine: list[list[Any]] = []
        for k in self.views:
            states = [r["views"][str(k)] for r in records]
            columns[view_ok_column(k)] = np.array([s["ok"] for s in states], dtype=np.int8)
            columns[view_chain_column(k)] = _str_column([s.get("chain", "") for s in states])
            for f in self.features:
                digests = [r["sha256"][view_key(f, k)] for r in records]
                columns[view_sha256_column(k, f)] = _str_column(digests)
                checksums[f].append(split_checksum(digests))
        for r in records:
            for k in self.views:
                state = r["views"][str(k)]
                if not state["ok"]:
                    quarantine.append([split, r["utt_id"], k, state["reason"]])
        self.writer.write_index(split, columns, VIEW_INDEX_GROUP)
        record = {
            "n_views": 1 + len(self.views),
            "n_quarantined": len(quarantine),
            "columns": list(columns),
            "sha256": checksums,
        }
        return record, quarantine


def _view_quarantine_failure(
    split: str, records: Sequence[Mapping[str, Any]], n_views: int, max_fraction: float
) -> str | None:
    """Why a split's views fail the build (None: they pass), as :func:`_quarantine_failure`.

    Quarantined views hold clean copies: when all, or more than ``max_fraction``, of a
    split's views are, the augmentation does not work here (a codec or a noise directory
    the workers cannot use), and a store of clean copies labelled as views would be
    silently wrong.
    """
    bad = [
        {"utt_id": r["utt_id"], "reason": state["reason"]}
        for r in records
        for state in r["views"].values()
        if not state["ok"]
    ]
    total = len(records) * n_views
    if not bad:
        return None
    if len(bad) == total:
        head = f"all {total} augmented views of split {split} failed"
    elif len(bad) > max_fraction * total:
        head = (
            f"{len(bad)} of {total} augmented views of split {split} failed, more than "
            f"--max-quarantine {max_fraction:g} of them"
        )
    else:
        return None
    reasons = "; ".join(f"{count} x {kind}" for count, kind in _common_reasons(bad)[:3])
    return (
        f"{head} ({reasons}); check the recipe and its noise/RIR files, or allow more with "
        "--max-quarantine; the store is not changed, a re-run makes them again"
    )


def _stored_clean_records(out: Path, split: str, features: Sequence[str]) -> tuple[dict, ...]:
    """The clean records of a finished store's split, from its index (to add views to it).

    Raises
    ------
    StoreError
        The store's data is not all there (e.g. only the metadata of a store at a URL).
    """
    from featstore.store.reader import Store

    with Store(out, check_files=False) as st:
        problems = st.data_problems()
        if problems:
            raise StoreError(
                out,
                f"cannot add augmented views: the store's data is not all here ({problems[0]}); "
                "for a store at a URL, rebuild it with the views and --overwrite",
            )
        ids = st.index(split)["utt_id"].tolist()  # the index is checked against the arrays
        n_frames = {f: st.frames(split, f)[1].tolist() for f in features}
    return tuple(
        {"utt_id": utt_id, "n_frames": {f: int(n_frames[f][i]) for f in features}}
        for i, utt_id in enumerate(ids)
    )


# ============================================================================================
# extract: the whole build


@dataclass(frozen=True)
class _Extraction:
    """Every split's result, its views' results, and the seconds of audio this call made."""

    splits: dict[str, _SplitResult]
    audio_seconds: float
    views: dict[str, _ViewsResult] = field(default_factory=dict)


def _locator(audio_root: str | os.PathLike) -> _Locate:
    locator = AudioLocator(audio_root)

    def locate(utt: Utterance) -> tuple[str | None, str | None]:
        try:
            return os.fspath(locator.find(utt)), None
        except SpoofstoreError as exc:
            return None, str(exc)

    return locate


def _extract(
    plan: _Plan,
    writer: Any,
    audio_root: str | os.PathLike,
    *,
    quiet: bool,
    backend: str,
    scheduler: str | None,
    retry: bool = False,
    base: Mapping[str, Any] | None = None,
) -> _Extraction:
    """Extract every split of the plan into the open ``writer``, in order, then its views.

    ``retry``: extract again the splits whose committed part holds quarantined utterances.
    ``base``: the metadata of the finished store whose clean view is kept (views are added
    to it): no clean extraction.
    """
    from joblib import Parallel, delayed  # heavy: loaded when a build runs, not on import
    from tqdm import tqdm

    cfg = plan.cfg
    # loky with several jobs runs batches in worker processes this build starts; with one
    # job they run here, in the caller's process, and Dask workers are the user's
    build_pid = os.getpid() if backend == "loky" and cfg.jobs != 1 else None
    specs = tuple(
        (name, get_feature(name).resolve(**cfg.feature_params.get(name, {})))
        for name in cfg.features
    )
    t0 = time.perf_counter()
    # workers of a remote Dask cluster do not share our working directory
    locate = _locator(os.path.abspath(audio_root) if scheduler else audio_root)
    splits: dict[str, _SplitResult] = {}
    views: dict[str, _ViewsResult] = {}
    augmented = plan.augment.splits if plan.augment else ()
    total = (0 if base else plan.n_utterances) + sum(len(plan.splits[s]) for s in augmented)
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
        # inside Parallel: closed first on errors, which wakes workers waiting for ring space
        arenas(enabled=build_pid is not None) as reader,
        _quiet_abandoned_tasks(),
    ):
        arena = None if reader is None else reader.spec

        def dispatch(batches: list[list[Task]]) -> Iterable[list[_Result]]:
            calls = (delayed(extract_batch)(b, specs, build_pid, arena) for b in batches)
            return received(parallel(calls), reader)

        progress = _Progress(bar, t0)
        extractor = _SplitExtractor(plan, writer, locate, dispatch, progress, retry)
        for split, utts in plan.splits.items():
            if base is None:
                splits[split] = extractor.split(split, utts)
            else:
                splits[split] = _kept_split(base, split, len(utts))
        if plan.augment is not None:
            aug = plan.augment
            recipe_json = aug.recipe.to_json()
            numbers_ = tuple(range(1, aug.views + 1))

            def dispatch_views(batches: list[list[ViewTask]]) -> Iterable[list[Any]]:
                calls = (
                    delayed(extract_views_batch)(
                        b, specs, recipe_json, aug.seed, numbers_, build_pid, arena
                    )
                    for b in batches
                )
                return received(parallel(calls), reader)

            viewer = _ViewExtractor(plan, writer, locate, dispatch_views, progress, extractor.spare)
            for split in aug.splits:
                clean = splits[split].ok_records
                if base is not None:
                    clean = _stored_clean_records(plan.out, split, list(cfg.features))
                views[split] = viewer.split(split, plan.splits[split], clean)
    return _Extraction(splits, progress.audio_seconds, views)


@contextmanager
def _quiet_abandoned_tasks() -> Iterator[None]:
    """Silence joblib's warning about tasks left running when a build stops early.

    A build that stops (``--strict``, a failed split, an error) abandons the batches in
    flight on purpose; the user gets the ``error:`` line, not advice about task iterators.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*adjusting the input task iterator",
            category=UserWarning,
            module=r"joblib\.",
        )
        yield


def _kept_split(base: Mapping[str, Any], split: str, n_utts: int) -> _SplitResult:
    """The clean view of a split of a finished store, kept as it is (views are added)."""
    quarantine = [list(q) for q in base.get("quarantine", []) if q[0] == split]
    return _SplitResult(dict(base["splits"][split]), quarantine, n_utts)


# ============================================================================================
# finalise


def _finalise(
    writer: Any,
    plan: _Plan,
    build_record: Mapping[str, Any],
    extraction: _Extraction,
    base: Mapping[str, Any] | None = None,
) -> None:
    """Write the complete store's metadata, then remove the build state.

    ``base``: the finished store views were added to; its metadata is kept (its clean
    view's records, statistics, fingerprint, creation time) and gains the views.
    """
    cfg = plan.cfg
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if base is None:
        metadata = {
            **plan.base_metadata(),
            "complete": True,
            "config": cfg.fingerprint_record(plan.fmt),
            "features": cfg.feature_records(),
            "chunk_frames": cfg.chunk_frames,
            "shard_frames": cfg.shard_frames,
            "versions": _versions(plan.fmt),
            "created": build_record["created"],
            "completed": now,
            "splits": {split: r.record for split, r in extraction.splits.items()},
            "quarantine": _quarantine(extraction),
        }
    else:  # a new completion time: read caches of the old store are not taken for this one
        metadata = {**base, "format_version": FORMAT_VERSION, "completed": now}
        metadata["splits"] = {split: dict(r) for split, r in base["splits"].items()}
        metadata["versions"] = {**base.get("versions", {}), **_versions(plan.fmt)}
    metadata["augmentation"] = plan.augmentation_record()
    metadata["view_quarantine"] = []
    for split, r in extraction.views.items():
        metadata["splits"][split]["views"] = r.record
        metadata["view_quarantine"] += r.quarantine
    writer.finish(metadata)
    if writer.state_dir.is_dir():
        shutil.rmtree(writer.state_dir)


def _quarantine(extraction: _Extraction) -> list[list[str]]:
    return [q for r in extraction.splits.values() for q in r.quarantine]


def _versions(fmt: str) -> dict[str, str]:
    names = ["spoofstore", "numpy", "numba", "zarr" if fmt == "zarr" else "h5py"]
    names += ["soundfile", "soxr", "librosa", "joblib"]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _summary(plan: _Plan, extraction: _Extraction, t0: float) -> BuildSummary:
    summary = BuildSummary(out=os.fspath(plan.out), format=plan.fmt)
    for split, r in extraction.splits.items():
        summary.skipped[split] = r.skipped
        if r.written is not None and r.quarantined is not None:
            summary.written[split] = r.written
            summary.quarantined[split] = r.quarantined
    summary.quarantine = [tuple(q) for q in _quarantine(extraction)]
    summary.labels = _label_counts(plan, summary.quarantine)
    summary.warnings = [*plan.warnings, *_clipped_warnings(extraction)]
    summary.audio_seconds = extraction.audio_seconds
    if plan.augment is not None:
        summary.augmentation = _describe_augmentation(plan.augment.record())
    for split, v in extraction.views.items():
        summary.views_skipped[split] = v.skipped
        if v.written is not None:
            summary.views_written[split] = v.written
        summary.view_quarantine += [(q[0], q[1], int(q[2]), q[3]) for q in v.quarantine]
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _noop_summary(plan: _Plan, metadata: Mapping[str, Any], t0: float) -> BuildSummary:
    quarantine = [tuple(q) for q in metadata.get("quarantine", [])]
    aug = metadata.get("augmentation")
    return BuildSummary(
        out=os.fspath(plan.out),
        format=plan.fmt,
        skipped={s: int(r["n_utterances"]) for s, r in metadata["splits"].items()},
        noop=True,
        quarantine=quarantine,
        labels=_label_counts(plan, quarantine),
        wall_seconds=time.perf_counter() - t0,
        augmentation=_describe_augmentation(aug) if aug else "",
        view_quarantine=[
            (q[0], q[1], int(q[2]), q[3]) for q in metadata.get("view_quarantine", [])
        ],
    )


_LABEL_NAMES = {1: "bonafide", 0: "spoof", -1: "unknown"}


def _label_counts(plan: _Plan, quarantine: Sequence[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Per split, the utterances in the store (not quarantined) by key."""
    left_out = {(q[0], q[1]) for q in quarantine}
    counts: dict[str, dict[str, int]] = {}
    for split, utts in plan.splits.items():
        c = counts.setdefault(split, {"bonafide": 0, "spoof": 0})
        for u in utts:
            if (split, u.utt_id) not in left_out:
                name = _LABEL_NAMES[u.label]
                c[name] = c.get(name, 0) + 1
    return counts


def _clipped_warnings(extraction: _Extraction, shown: int = 5) -> list[str]:
    """A warning per split with clipped utterances (:data:`CLIPPED_NOTE`), naming a few."""
    out = []
    for split, r in extraction.splits.items():
        if r.clipped:
            more = f", ... ({len(r.clipped)} in all)" if len(r.clipped) > shown else ""
            out.append(
                f"{len(r.clipped)} utterance(s) of split {split} are clipped (more than "
                f"{CLIPPED_FRACTION:.0%} of their samples at full scale; noted in the index "
                f"column notes): {', '.join(r.clipped[:shown])}{more}"
            )
    return out


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
    max_quarantine: float | None = None,
    overwrite: bool = False,
    retry_quarantined: bool = False,
    quiet: bool = False,
    backend: str = "loky",
    scheduler: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    augment: str | None = None,
    views: int | None = None,
    augment_seed: int | None = None,
    augment_splits: str | Sequence[str] | None = None,
    noise_dir: str | os.PathLike | None = None,
    rir_dir: str | os.PathLike | None = None,
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
    batch_size, chunk_frames, shard_frames, strict, fsync, max_quarantine : optional
        See :class:`BuildConfig`.
    overwrite : bool, default False
        Replace an existing store built with another configuration or manifest.
    retry_quarantined : bool, default False
        Extract again every split holding quarantined utterances: of an unfinished build
        (resumed), or of a complete store (rebuilt; local stores only). A split that failed
        the build (:attr:`BuildConfig.max_quarantine`) is retried on a re-run without it.
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
    augment : str, optional
        Augmentation recipe (``"rawboost-5|codec|noise+reverb"``, see ``docs/augment.md``):
        also store ``views`` augmented copies of every utterance of ``augment_splits``,
        extracted with the same features (``docs/store-format.md``, "Augmented views").
        Copy ``k`` of utterance ``u`` is made with ``view_rng(augment_seed, u, k)`` only, so
        its bytes do not depend on ``jobs``, the backend or interruptions. On a finished
        store of the same configuration without views, the views are added and its clean
        view is kept.
    views : int, optional
        Augmented copies per utterance (default 1; 0: none). Needs ``augment``.
    augment_seed : int, optional
        Seed of the views (default 0). Needs ``augment``.
    augment_splits : str or sequence of str, optional
        Splits to augment (``"train"``, the default, or ``"train,dev"``). Needs ``augment``.
    noise_dir, rir_dir : str or os.PathLike, optional
        Directories of noise files / room impulse responses for the recipe's ``noise`` /
        ``reverb`` steps (their ``noise_dir`` / ``rir_dir``). Need ``augment``.

    Returns
    -------
    BuildSummary
        Utterances written/quarantined/already done per split, bona fide/spoof counts, wall
        time, audio seconds, warnings.

    Raises
    ------
    ManifestError
        A malformed or empty protocol (``FILE:LINE: ...``), duplicate or unsafe utterance ids.
    ConfigError
        An invalid configuration value or feature parameter, an unknown augmentation or
        parameter, an empty or unreadable noise/RIR directory, ``views`` without ``augment``
        (all checked before extraction).
    StoreError
        ``out`` holds a store of another configuration (without ``overwrite``), or
        something that is not a feature store.
    AudioError
        ``audio_root`` is not a directory; a split ends with every utterance, or more than
        ``max_quarantine`` of them, quarantined (the store is left unfinished); with
        ``strict``, the first bad utterance.
    ResourceError
        No space left on the device, permission denied, another build holds the lock on
        ``out``, or (URLs) the storage cannot be reached or there are no credentials.

    Examples
    --------
    >>> summary = build("LA/protocols", "LA", "la.zarr", features="mgd,logmel", jobs=2)
    ... # doctest: +SKIP
    >>> summary.written  # doctest: +SKIP
    {'dev': 24844, 'eval': 71237, 'train': 25380}
    """
    if is_remote(out):  # stage locally, then upload (featstore.remote)
        if retry_quarantined:
            raise ConfigError(
                "--retry-quarantined works on local stores only; for a URL, rebuild with "
                "--overwrite"
            )
        local_build = functools.partial(
            build, manifest, audio_root, features=features, jobs=jobs, format=format,
            config=config, feature_params=feature_params, batch_size=batch_size,
            chunk_frames=chunk_frames, shard_frames=shard_frames, strict=strict, fsync=fsync,
            max_quarantine=max_quarantine, quiet=quiet, backend=backend, scheduler=scheduler,
            augment=augment, views=views, augment_seed=augment_seed,
            augment_splits=augment_splits, noise_dir=noise_dir, rir_dir=rir_dir,
        )  # fmt: skip
        return _build_at_url(out, format, local_build, cache_dir=cache_dir, overwrite=overwrite)
    t0 = time.perf_counter()
    aug = _resolve_augment(augment, views, augment_seed, augment_splits, noise_dir, rir_dir)
    overrides = {
        "features": features,
        "jobs": jobs,
        "format": format,
        "feature_params": feature_params,
        "batch_size": batch_size,
        "chunk_frames": chunk_frames,
        "shard_frames": shard_frames,
        "strict": strict,
        "fsync": fsync,
        "max_quarantine": max_quarantine,
    }
    plan = _plan(manifest, out, _resolve_config(config, overrides), aug)
    check_features(plan.cfg)
    _check_audio_root(audio_root)
    with _environment_faults(plan.out), _build_lock(plan.out):
        writer = _make_writer(plan.out, plan.fmt, plan.cfg.fsync)
        state = _reconcile(writer, plan, overwrite)
        if state.status is _StoreStatus.CONFLICT:
            raise StoreError(plan.out, state.conflict)
        done = state.status in (_StoreStatus.COMPLETE, _StoreStatus.EXTEND)
        if done and retry_quarantined and state.metadata.get("quarantine"):
            writer.remove()  # the same plan: rebuilt whole, quarantined utterances retried
            state = _StoreState(_StoreStatus.FRESH)
        elif state.status is _StoreStatus.COMPLETE:
            return _noop_summary(plan, state.metadata, t0)
        base = state.metadata if state.status is _StoreStatus.EXTEND else None
        build_record = _start_build_record(writer, plan, state)
        writer.open(plan.base_metadata() if base is None else None)
        extraction = _extract(
            plan,
            writer,
            audio_root,
            quiet=quiet,
            backend=backend,
            scheduler=scheduler,
            retry=retry_quarantined,
            base=base,
        )
        _finalise(writer, plan, build_record, extraction, base)
    return _summary(plan, extraction, t0)


def _check_audio_root(audio_root: str | os.PathLike) -> None:
    """Refuse an audio root that is not a directory (else every utterance is quarantined).

    Raises
    ------
    AudioError
        ``audio_root`` is missing or not a directory.
    """
    if not Path(audio_root).is_dir():
        what = "does not exist" if not Path(audio_root).exists() else "is not a directory"
        raise AudioError(audio_root, f"audio root {what}; check --audio-root")


def _build_at_url(
    url: str | os.PathLike,
    format: str | None,
    local_build: Callable[..., BuildSummary],
    *,
    cache_dir: str | os.PathLike | None,
    overwrite: bool,
) -> BuildSummary:
    """Build into a local staging store with ``local_build(out=..., overwrite=...)``, upload it.

    Raises
    ------
    StoreError
        ``url`` names an HDF5 store (stores at URLs are Zarr only).
    ResourceError
        The storage cannot be reached: no credentials, connection refused, access denied.
    """
    if format == "hdf5" or detect_format(url) == "hdf5":
        raise StoreError(url, "stores at URLs are Zarr only; use a .zarr URL")

    def run(path: Path, overwrite_local: bool) -> BuildSummary:
        return local_build(out=path, overwrite=overwrite_local)

    try:
        return build_to_url(os.fspath(url), run, cache_dir=cache_dir, overwrite=overwrite)
    except SpoofstoreError:
        raise
    except Exception as exc:
        fault = _remote_fault(exc, os.fspath(url))
        if fault is None:
            raise
        raise fault from exc


_NO_CREDENTIALS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
)
_UNREACHABLE = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ProxyConnectionError"}
)


def _remote_fault(exc: BaseException, url: str) -> ResourceError | None:
    """The :class:`ResourceError` an exception of the object-storage client stands for.

    botocore's exceptions are matched by class name (botocore is an optional dependency),
    along the exception's chain (s3fs re-raises some of them as ``OSError``).
    """
    seen: BaseException | None = exc
    while seen is not None:
        names = {c.__name__ for c in type(seen).__mro__}
        if names & _NO_CREDENTIALS:
            return ResourceError(
                f"cannot reach {url}: no credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        if names & _UNREACHABLE or isinstance(seen, ConnectionError | TimeoutError):
            return ResourceError(f"cannot reach {url}: {seen}")
        if isinstance(seen, PermissionError):
            return ResourceError(f"cannot reach {url}: access denied ({seen})")
        seen = seen.__cause__ or seen.__context__
    return None
