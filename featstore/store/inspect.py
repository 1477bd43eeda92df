"""``featstore info`` and ``featstore verify``: describe a store, and check it end to end."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError
from featstore.store.frame_array import FrameArray
from featstore.store.layout import (
    check_index,
    check_view_index,
    local_path,
    n_frames_column,
    offset_column,
    sha256_column,
    split_checksum,
    view_ok_column,
    view_sha256_column,
)
from featstore.store.reader import Store, open_store

_MAX_LISTED = 10  # problems of one kind listed before "... and N more"


@dataclass
class SplitInfo:
    """Summary of one split.

    ``bonafide``/``spoof``/``unlabelled`` count utterances by label, ``attacks`` the spoofed
    ones by attack id (``system``), ``notes`` the utterances whose loading left a note of
    each kind (``resampled``, ``downmixed``, ``clipped``: the note's first word).
    ``views`` counts the split's views (1: clean only; 1 + K when augmented),
    ``views_quarantined`` its augmented views whose augmentation failed.
    """

    name: str
    utterances: int
    quarantined: int
    hours: float
    frames: dict[str, int]
    disk_bytes: int | None
    bonafide: int = 0
    spoof: int = 0
    unlabelled: int = 0
    attacks: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    views: int = 1
    views_quarantined: int = 0


@dataclass
class StoreInfo:
    """What ``featstore info`` prints."""

    path: str
    format: str
    format_version: int
    fingerprint: str
    created: str
    completed: str
    features: dict[str, dict[str, Any]]
    splits: list[SplitInfo]
    disk_bytes: int | None
    versions: dict[str, str]
    stats: dict[tuple[str, str], tuple[float, float, float, float]] = field(default_factory=dict)
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    augmentation: dict[str, Any] | None = None
    view_quarantine: list[tuple[str, str, int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything in :meth:`lines` as plain JSON types (``featstore info --json``).

        Returns
        -------
        dict
            ``path, format, format_version, fingerprint, created, completed, versions,
            features, disk_bytes``; ``splits``: name -> ``utterances, quarantined, hours,
            frames, disk_bytes, bonafide, spoof, unlabelled, attacks, notes, views,
            views_quarantined, stats`` (stats: feature -> ``mean_min, mean_max, std_min,
            std_max``); ``quarantined``: every left-out utterance as ``{split, utt_id,
            reason}``; ``augmentation``: ``recipe`` (canonical JSON), ``recipe_text``,
            ``seed``, ``views``, ``splits``, or null; ``quarantined_views``: every
            quarantined view as ``{split, utt_id, view, reason}``.
        """
        splits = {}
        for s in self.splits:
            record = asdict(s)
            record.pop("name")
            record["stats"] = {
                f: dict(zip(("mean_min", "mean_max", "std_min", "std_max"), v, strict=True))
                for (split, f), v in sorted(self.stats.items())
                if split == s.name
            }
            splits[s.name] = record
        return {
            "path": self.path,
            "format": self.format,
            "format_version": self.format_version,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "completed": self.completed,
            "versions": self.versions,
            "features": self.features,
            "disk_bytes": self.disk_bytes,
            "splits": splits,
            "quarantined": [
                {"split": split, "utt_id": utt, "reason": reason}
                for split, utt, reason in self.quarantine
            ],
            "augmentation": self.augmentation,
            "quarantined_views": [
                {"split": split, "utt_id": utt, "view": view, "reason": reason}
                for split, utt, view, reason in self.view_quarantine
            ],
        }

    def lines(self, all_quarantined: bool = False) -> list[str]:
        """Human-readable report.

        Parameters
        ----------
        all_quarantined : bool, default False
            List every quarantined utterance (default: the first 10, then a count).
        """
        out = [
            f"{self.path}: {self.format} feature store, format v{self.format_version}, "
            f"fingerprint {self.fingerprint[:16]}",
            f"built {self.created} .. {self.completed}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())),
            "features:",
        ]
        for name, rec in self.features.items():
            params = ", ".join(
                f"{k}={v}" for k, v in rec.items() if k not in ("name", "n_bins", "sample_rate")
            )
            out.append(f"  {name:8s} {rec['n_bins']:4d} bins  {params}")
        names = list(self.features)
        head = f"  {'split':8s} {'utts':>8s} {'quar.':>6s} {'hours':>8s}"
        head += "".join(f" {'frames:' + n:>16s}" for n in names) + f" {'MB on disk':>11s}"
        out += ["splits:", head]
        for s in self.splits:
            row = f"  {s.name:8s} {s.utterances:8d} {s.quarantined:6d} {s.hours:8.3f}"
            row += "".join(f" {s.frames[n]:16d}" for n in names)
            row += f" {s.disk_bytes / 1e6:11.1f}" if s.disk_bytes is not None else f" {'?':>11s}"
            out.append(row)
        for s in self.splits:
            shapes = ", ".join(f"{n} {s.frames[n]}x{self.features[n]['n_bins']}" for n in names)
            out.append(f"  {s.name}: arrays {shapes} float32")
        out += self._view_lines(all_quarantined)
        out.append("labels:")
        for s in self.splits:
            row = f"  {s.name:8s} bona fide {s.bonafide}, spoof {s.spoof}"
            row += f", unlabelled {s.unlabelled}" if s.unlabelled else ""
            if s.attacks:
                row += "; " + ", ".join(f"{a} {n}" for a, n in sorted(s.attacks.items()))
            out.append(row)
        if any(s.notes for s in self.splits):
            out.append("loading notes (utterances):")
            for s in self.splits:
                if s.notes:
                    kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.notes.items()))
                    out.append(f"  {s.name:8s} {kinds}")
        if self.disk_bytes is not None:
            out.append(f"total on disk: {self.disk_bytes / 1e6:.1f} MB")
        out.append("stats of the clean view (per-bin mean: min..max; per-bin std: min..max):")
        for (split, name), (m0, m1, s0, s1) in sorted(self.stats.items()):
            out.append(
                f"  {split:8s} {name:8s} mean {m0:9.3f} .. {m1:9.3f}  std {s0:8.3f} .. {s1:8.3f}"
            )
        out.append(f"quarantined: {len(self.quarantine)}")
        shown = self.quarantine if all_quarantined else self.quarantine[:_MAX_LISTED]
        for split, utt, reason in shown:
            out.append(f"  {split}/{utt}: {reason}")
        if len(self.quarantine) > len(shown):
            out.append(f"  ... and {len(self.quarantine) - len(shown)} more (use --all)")
        return out

    def _view_lines(self, all_quarantined: bool) -> list[str]:
        """The augmented views: recipe, seed, views per split, quarantined views."""
        aug = self.augmentation
        if aug is None:
            return ["views: clean only (no augmented views)"]
        out = [
            f"views: clean view 0 + {aug['views']} augmented by {aug['recipe_text']!r}, "
            f"seed {aug['seed']}, in split(s) {', '.join(aug['splits'])}"
        ]
        for s in self.splits:
            if s.views > 1:
                row = f"  {s.name:8s} {s.views} views, {s.views_quarantined} quarantined"
                if s.views_quarantined:
                    row += " (their rows copy the clean view; Store.view_mask excludes them)"
                out.append(row)
        shown = self.view_quarantine if all_quarantined else self.view_quarantine[:_MAX_LISTED]
        out += [f"  {split}/{utt} view {k}: {reason}" for split, utt, k, reason in shown]
        if len(self.view_quarantine) > len(shown):
            out.append(f"  ... and {len(self.view_quarantine) - len(shown)} more (use --all)")
        return out


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def note_kinds(notes: Iterable[str]) -> dict[str, int]:
    """Utterances per kind of loading note (the first word of each ``; ``-separated note).

    Examples
    --------
    >>> note_kinds(["", "resampled 44100->16000; clipped 3 samples into [-1, 1)", "clipped 1"])
    {'clipped': 2, 'resampled': 1}
    """
    counts: Counter[str] = Counter()
    for text in notes:
        kinds = {note.split()[0] for note in str(text).split(";") if note.strip()}
        counts.update(kinds)
    return dict(sorted(counts.items()))


def store_info(location: str | os.PathLike | Store) -> StoreInfo:
    """Summarise a store: splits, utterances, hours, features, shapes, bytes, stats.

    Parameters
    ----------
    location : str, os.PathLike or Store
        The store.

    Returns
    -------
    StoreInfo
        Print it with ``"\\n".join(info.lines())``.
    """
    st = location if isinstance(location, Store) else open_store(location)
    meta = st.metadata
    local = None if "://" in st.path and not st.path.startswith("file://") else local_path(st.path)
    splits = []
    for name in st.splits:
        rec = meta["splits"][name]
        disk = None
        if local is not None and st.format == "zarr":
            disk = _tree_bytes(local / name)
        elif local is not None:
            disk = sum(
                int(rec["features"][f]["n_frames"]) * int(rec["features"][f]["n_bins"]) * 4
                for f in rec["features"]
            )
        index = st.index(name)
        splits.append(
            SplitInfo(
                name=name,
                utterances=int(rec["n_utterances"]),
                quarantined=int(rec.get("n_quarantined", 0)),
                hours=float(rec.get("audio_seconds", 0.0)) / 3600,
                frames={f: int(r["n_frames"]) for f, r in rec["features"].items()},
                disk_bytes=disk,
                bonafide=int((index["label"] == 1).sum()),
                spoof=int((index["label"] == 0).sum()),
                unlabelled=int((index["label"] == -1).sum()),
                attacks=dict(Counter(index["system"][index["label"] == 0].tolist())),
                notes=note_kinds(index["notes"]),
                views=st.n_views(name),
                views_quarantined=int(rec.get("views", {}).get("n_quarantined", 0)),
            )
        )
    stats = {}
    for name in st.splits:
        for f in st.features:
            mean, std = st.stats(f, split=name)
            stats[(name, f)] = (
                float(mean.min()),
                float(mean.max()),
                float(std.min()),
                float(std.max()),
            )
    total = None
    if local is not None:
        total = _tree_bytes(local) if local.is_dir() else local.stat().st_size
    return StoreInfo(
        path=st.path,
        format=st.format,
        format_version=int(meta["format_version"]),
        fingerprint=st.fingerprint,
        created=str(meta.get("created", "?")),
        completed=str(meta.get("completed", "?")),
        features=st.features,
        splits=splits,
        disk_bytes=total,
        versions=dict(meta.get("versions", {})),
        stats=stats,
        quarantine=st.quarantine,
        augmentation=st.augmentation,
        view_quarantine=[
            (str(q[0]), str(q[1]), int(q[2]), str(q[3])) for q in meta.get("view_quarantine", [])
        ],
    )


def _listed(problems: list[str], kind: str, items: list[str]) -> None:
    for item in items[:_MAX_LISTED]:
        problems.append(f"{kind}: {item}")
    if len(items) > _MAX_LISTED:
        problems.append(f"{kind}: ... and {len(items) - _MAX_LISTED} more")


def verify_store(location: str | os.PathLike, *, strict: bool = False) -> list[str]:
    """Check a store end to end; return its problems (empty when it is sound).

    Checks that the metadata reads and the store is complete; every data file is there with
    its expected size; every index column has one row per utterance and ids are unique;
    per feature, offsets are contiguous from 0, every utterance has frames, totals equal the
    array lengths and the recorded ``n_frames``; every utterance's sha256 and the split
    checksum match the bytes read back (this is what finds flipped bits inside a present
    file); no frame holds NaN or inf; quarantined utterances are not in the index. For each
    augmented view: its columns, its rows' sha256 and split checksum, the NaN/inf scan, and
    that a quarantined view holds the clean rows and is listed in ``view_quarantine``.

    Parameters
    ----------
    location : str or os.PathLike
        The store.
    strict : bool, default False
        Raise instead of returning problems (``trainer fit/score --verify``).

    Returns
    -------
    list of str
        One line per problem, naming split, feature and utterance/rows.

    Raises
    ------
    StoreError
        Only with ``strict``: the store has problems (the first is named, with the count).

    Examples
    --------
    >>> problems = verify_store("store.zarr")  # doctest: +SKIP
    >>> verify_store("store.zarr", strict=True)  # doctest: +SKIP
    Traceback (most recent call last):
    featstore.errors.StoreError: store.zarr: featstore verify found 2 problem(s), the first: ...
    """
    problems = _verify(location)
    if strict and problems:
        raise StoreError(
            location,
            f"featstore verify found {len(problems)} problem(s), the first: {problems[0]} "
            f"(run `featstore verify {os.fspath(location)}` for all)",
        )
    return problems


def _verify(location: str | os.PathLike) -> list[str]:
    problems: list[str] = []
    try:
        st = open_store(location, check_files=False)
        problems.extend(st.data_problems())
    except StoreError as exc:
        return [str(exc)]
    meta = st.metadata
    for split in st.splits:
        rec = meta["splits"][split]
        n = int(rec["n_utterances"])
        try:
            cols = st.raw_index_columns(split)
        except StoreError as exc:
            problems.append(f"{split}: index unreadable: {exc.message}")
            continue
        bad_len = [f"{c} has {len(v)} rows" for c, v in cols.items() if len(v) != n]
        _listed(problems, f"{split}: index expects {n} rows but", bad_len)
        if bad_len:
            continue
        try:
            check_index(cols, rec, st.path, split)
        except StoreError as exc:
            problems.append(f"{split}: {exc.message}")
        ids = cols["utt_id"]
        if len(set(ids.tolist())) != len(ids):
            problems.append(f"{split}: duplicate utterance ids in the index")
        id_set = set(ids.tolist())
        clean_ok: set[str] = set()
        for q_split, utt, _ in st.quarantine:
            if q_split == split and utt in id_set:
                problems.append(f"{split}: quarantined utterance {utt} is in the index")
        for feature, frec in rec["features"].items():
            where = f"{split}/{feature}"
            try:
                fa = st.array(split, feature)
            except StoreError as exc:  # any failure to map the array is a finding
                problems.append(f"{where}: frame array unreadable: {exc.message}")
                continue
            offsets = cols[offset_column(feature)].astype(np.int64)
            n_frames = cols[n_frames_column(feature)].astype(np.int64)
            expected = (int(frec["n_frames"]), int(frec["n_bins"]))
            if fa.shape != expected:
                problems.append(f"{where}: array shape {fa.shape}, metadata says {expected}")
            if n and int(offsets[0]) != 0:
                problems.append(f"{where}: first offset is {int(offsets[0])}, not 0")
            gaps = np.flatnonzero(offsets[1:] != offsets[:-1] + n_frames[:-1])
            _listed(
                problems,
                f"{where}: offsets not contiguous",
                [f"{ids[i + 1]} starts at {offsets[i + 1]}" for i in gaps],
            )
            empty = np.flatnonzero(n_frames <= 0)
            _listed(problems, f"{where}: no frames", [str(ids[i]) for i in empty])
            total = int(n_frames.sum())
            if total != fa.shape[0]:
                problems.append(f"{where}: index totals {total} frames, array has {fa.shape[0]}")
            if gaps.size or empty.size or total != fa.shape[0]:
                continue
            digests = cols[sha256_column(feature)]
            _verify_frames(problems, where, fa, ids, offsets, n_frames, digests)
            if split_checksum(digests.tolist()) != frec["sha256"]:
                problems.append(f"{where}: split checksum differs from the metadata")
            else:
                clean_ok.add(feature)
        if st.n_views(split) > 1:
            _verify_views(problems, st, split, cols, clean_ok)
    st.close()
    return problems


def _verify_views(
    problems: list[str], st: Store, split: str, cols: dict[str, np.ndarray], clean_ok: set[str]
) -> None:
    """The augmented views of one split: columns, shapes, checksums, NaN/inf, quarantine.

    Each view's rows of each utterance must match its ``sha256.<k>.<feature>`` and the
    view's split checksum; a quarantined view (``ok.<k>`` 0) must hold exactly the clean
    rows, and the metadata's ``view_quarantine`` must list exactly those views. The index
    (offsets, frame counts) is the clean view's, checked before (``clean_ok``: the
    features whose clean view passed).
    """
    rec = st.metadata["splits"][split]
    try:
        vcols = st.raw_view_columns(split)
    except StoreError as exc:
        problems.append(f"{split}: view index unreadable: {exc.message}")
        return
    try:
        check_view_index(vcols, rec, st.path, split)
    except StoreError as exc:
        problems.append(f"{split}: {exc.message}")
        return
    ids = cols["utt_id"]
    listed = {
        (str(q[1]), int(q[2])) for q in st.metadata.get("view_quarantine", []) if q[0] == split
    }
    masked = set()
    for k in range(1, st.n_views(split)):
        ok = vcols[view_ok_column(k)]
        masked |= {(str(ids[i]), k) for i in np.flatnonzero(ok == 0)}
        for feature in rec["features"]:
            where = f"{split}/{feature} view {k}"
            if feature not in clean_ok:
                problems.append(f"{where}: not checked (its clean view has problems)")
                continue
            try:
                fa = st.array(split, feature, k)
            except StoreError as exc:
                problems.append(f"{where}: frame array unreadable: {exc.message}")
                continue
            offsets = cols[offset_column(feature)].astype(np.int64)
            n_frames = cols[n_frames_column(feature)].astype(np.int64)
            digests = vcols[view_sha256_column(k, feature)]
            _verify_frames(problems, where, fa, ids, offsets, n_frames, digests)
            expected = rec["views"]["sha256"][feature][k - 1]
            if split_checksum(digests.tolist()) != expected:
                problems.append(f"{where}: split checksum differs from the metadata")
            clean = cols[sha256_column(feature)]
            copies = np.flatnonzero((ok == 0) & (digests != clean))
            _listed(
                problems,
                f"{where}: quarantined view does not hold the clean rows",
                [str(ids[i]) for i in copies],
            )
    unlisted = sorted(masked - listed)
    _listed(
        problems,
        f"{split}: quarantined view missing from the metadata's view_quarantine",
        [f"{u} view {k}" for u, k in unlisted],
    )
    extra = sorted(listed - masked)
    _listed(
        problems,
        f"{split}: view_quarantine lists a view the index marks as augmented",
        [f"{u} view {k}" for u, k in extra],
    )


def _verify_frames(
    problems: list[str],
    where: str,
    fa: FrameArray,
    ids: np.ndarray,
    offsets: np.ndarray,
    n_frames: np.ndarray,
    digests: np.ndarray,
) -> None:
    """Per-utterance checksums, rows that are not stored, and the NaN/inf scan."""
    mismatched, absent = [], []
    bad_rows: list[int] = []
    for i in range(len(ids)):
        a, b = int(offsets[i]), int(offsets[i] + n_frames[i])
        try:
            rows = fa[a:b]
        except StoreError:
            absent.append(f"{ids[i]} (rows {a}..{b})")
            continue
        if hashlib.sha256(memoryview(rows).cast("B")).hexdigest() != digests[i]:
            mismatched.append(f"{ids[i]} (rows {a}..{b})")
        bad_rows.extend(int(r) + a for r in np.flatnonzero(~np.isfinite(rows).all(axis=1)))
    _listed(problems, f"{where}: rows not stored", absent)
    _listed(problems, f"{where}: checksum mismatch", mismatched)
    if bad_rows:
        starts = offsets.tolist()
        utts = sorted({str(ids[np.searchsorted(starts, r, side="right") - 1]) for r in bad_rows})
        problems.append(
            f"{where}: {len(bad_rows)} row(s) hold NaN/inf, in utterance(s) "
            + ", ".join(utts[:_MAX_LISTED])
            + (" ..." if len(utts) > _MAX_LISTED else "")
        )
