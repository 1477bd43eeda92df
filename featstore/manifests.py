"""ASVspoof protocol files → one typed :class:`Utterance` record per line.

``featstore build --manifest PATH`` takes a protocol file or a directory of them. The format
and the split come from the **file name**; every line is then checked against that format's
column layout, so a malformed line fails with ``FILE:LINE: expected 5 columns, got 3``
instead of being dropped.

Supported formats (columns are whitespace-separated; blank lines and trailing whitespace are
ignored; ``-`` means "none"). The split is the one in the file name unless said otherwise.

- ``ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt``, 5 columns
  ``SPEAKER UTT - SYSTEM KEY``; column 3 must be ``-``; SYSTEM ``A01``-``A19`` or ``-``.
- ``ASVspoof2019.PA.cm.*.txt``, 5 columns ``SPEAKER UTT ENV ATTACK KEY``; ENV (``aaa``...)
  goes to ``extra["environment"]``, ATTACK (``AA``...``CC`` or ``-``) to ``system``.
- ``trial_metadata.txt``: ASVspoof 2021 keys (``keys/{LA,PA,DF}/CM/``), split ``"eval"``.
  The track comes from the first trial id (``LA_E_``, ``PA_E_``, ``DF_E_``), else the parent
  directories, else the column count:

  - LA, 8 columns ``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``;
  - DF, 13 columns ``SPEAKER TRIAL CODEC SOURCE ATTACK KEY TRIM SUBSET VOCODER TASK TEAM
    GENDER_PAIR LANGUAGE`` (the first 8 alone also accepted, as in the stage-1 keys; one
    file uses one layout);
  - PA, 12 columns ``SPEAKER TRIAL ASV_ROOM ASV_MIC DIS_TO_ASV ATT_ROOM ATT_MIC ATT_D
    ATT_TO_SPK KEY TRIM SUBSET`` (the eval package's names).
- ``ASVspoof2021.{LA,DF,PA}.cm.eval.trl.txt``: trial ids only, 1 column; key ``None``.
- ``ASVspoof2017_V2_{train.trn,dev.trl,eval.trl}.txt``, 7 columns
  ``FILE KEY SPEAKER PHRASE ENVIRONMENT PLAYBACK RECORDING``; ``T_1000001.wav`` becomes
  ``T_1000001``, KEY ``genuine`` becomes ``bonafide``.
- ``ASVspoof5.{train,dev,eval}[.track_1].tsv``, 10 columns ``SPEAKER FLAC_FILE GENDER CODEC
  CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP`` (space-separated despite ``.tsv``).
- ``ASVspoof5.{train,dev}.metadata.txt`` (challenge phases 1/2), 6 columns
  ``SPEAKER FLAC_FILE GENDER CODEC ATTACK KEY``.
- Generic CM protocols in the 2019 layout, 5 columns ``SPEAKER UTT ENV SYSTEM KEY`` (ENV to
  ``extra["environment"]``): ``NAME.cm.SPLIT.{trn,trl}.txt`` for any split name, and
  ``{train,dev,eval,test}[.trn|.trl].txt``.

The layouts (columns, key column, attack rule) are described once, in
:mod:`featstore.asvspoof_formats`, which also says where they come from; this module adds
the file names, the checks and the records.

Mapping to :class:`Utterance`:

- ``system`` is the attack id (:func:`featstore.asvspoof_formats.attack_id`), ``-`` for bona
  fide (``bonafide`` in an attack column becomes ``-``). ASVspoof 2021 PA has no attack id;
  like 2019 PA's two-letter ``AA`` (attacker-to-talker distance, replay device) it is built
  as ``ATT_TO_SPK + ATT_D`` (``c4s4``). ASVspoof 2017 uses the replay configuration
  ``ENVIRONMENT-PLAYBACK-RECORDING`` (``E01-P01-R01``).
- Every other column is kept in ``extra`` under a lower-case name, listed in
  :data:`EXTRA_COLUMNS`: the layout's column name, except where feature stores have always
  named it otherwise (:attr:`~featstore.asvspoof_formats.KeyLayout.store_names`: 2019's
  ``env`` is ``environment``; 2021 PA's ``dis_to_asv``, ``att_room``, ``att_mic``, ``att_d``
  and ``att_to_spk`` are ``asv_distance``, ``attacker_room``, ``attacker_mic``,
  ``replay_device`` and ``attacker_distance``). Within one format every record has the same
  ``extra`` keys.
- ASVspoof 2021 keys hold eval, progress and hidden trials in one file: all get split
  ``"eval"`` (they are one set of audio, ``ASVspoof2021_*_eval``); the original subset is kept
  in ``extra["subset"]``, so downstream code can select it.

Directories are read non-recursively, files ordered by split (train, dev, eval, then other
names alphabetically) then name. Files that are clearly not protocols are skipped: hidden
files, ``README*``/``LICENSE*``, anything not ``.txt``/``.tsv``/``.lst``/``.trn``/``.trl``
(``.md``, ``.pdf``, audio, ...), and protocols of the *speaker verification* task
(``ASVspoof2019.*.asv.*``, ``ASVspoof5.*.trial.*``/``*.enroll.*``, ``ASVspoof5.codec.config.csv``,
2021 ``ASV/trial_metadata.txt``), which hold no countermeasure labels. Any other ``.txt``/
``.tsv``/... file whose name matches no format is an error: it might be a renamed protocol,
and dropping it silently would drop data. Passing such a file directly is an error too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType

from featstore.asvspoof_formats import (
    BONAFIDE,
    CM_KEYS,
    KEY_LAYOUTS,
    NO_VALUE,
    SPEAKER,
    SPOOF,
    UTT,
    KeyLayout,
    attack_id,
)
from featstore.errors import AudioError, ManifestError

__all__ = [
    "AUDIO_EXTENSIONS",
    "EXTRA_COLUMNS",
    "KEYS",
    "SPLIT_ORDER",
    "AudioLocator",
    "ProtocolFile",
    "Utterance",
    "check_utterance_id",
    "detect_protocol",
    "find_audio",
    "list_protocols",
    "read_manifest",
    "read_protocol",
]

KEYS = CM_KEYS
"""The key values of a record (``None`` when a protocol has no key)."""

SPLIT_ORDER = ("train", "dev", "eval")
"""Splits in this order first; any other split name follows alphabetically."""

EXTRA_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {layout.name: layout.store_columns for layout in KEY_LAYOUTS.values() if layout.protocol}
)
"""``extra`` keys of each format, in column order."""

_UNSAFE_ID = re.compile(r"[/\\:\x00]")


@dataclass(frozen=True, slots=True)
class Utterance:
    """One protocol line: an utterance, its labels and where it was read.

    Attributes
    ----------
    utt_id : str
        Utterance id, the audio file name without extension (``"LA_D_1000265"``; 2017:
        ``"T_1000001"``, no ``.wav``).
    split : str
        ``"train"``, ``"dev"``, ``"eval"`` or another name taken from the file name.
    speaker : str
        Speaker id, ``"-"`` when the format has none.
    system : str
        Attack id (``"A01"``, ...), ``"-"`` for bona fide or unknown.
    key : str or None
        ``"bonafide"``, ``"spoof"``, or ``None`` for key-less lists.
    extra : Mapping[str, str]
        Every other column, by name (codec, transmission, gender, environment, ...).
    source : str
        The protocol file it was read from.
    line : int
        1-based line number in ``source``.

    Examples
    --------
    >>> u = Utterance("LA_D_1", "dev", "LA_0070", "-", "bonafide", {}, "p.txt", 3)
    >>> u.label
    1
    """

    utt_id: str
    split: str
    speaker: str
    system: str
    key: str | None
    extra: Mapping[str, str] = field(hash=False)
    source: str
    line: int

    @property
    def label(self) -> int:
        """1 for bona fide, 0 for spoof, -1 when unknown (no key)."""
        if self.key == BONAFIDE:
            return 1
        if self.key == SPOOF:
            return 0
        return -1


# ----------------------------------------------------------------------------- formats


Row = tuple[str, str, str, str | None, tuple[str, ...]]
"""A parsed line: (utt_id, speaker, system, key, extra values in EXTRA_COLUMNS order)."""


@dataclass(frozen=True)
class _Format:
    """A protocol format: its layouts by column count, and how to parse a line of each."""

    layout: KeyLayout  # the canonical layout; its title and heading go into messages
    n_columns: tuple[int, ...]  # accepted column counts (first is the canonical one)
    parsers: Mapping[int, Callable[[list[str], str, int], Row]]  # column count -> parser
    extra: Mapping[int, tuple[str, ...]]  # column count -> names of the extra values


_PLACEHOLDER_HINTS = {"asvspoof2019-la": " (a PA protocol? name it ASVspoof2019.PA.cm.*.txt)"}


def _parse_key(value: str, layout: KeyLayout, path: str, line: int) -> str:
    if value in KEYS:
        return value
    if value == layout.bonafide_label:
        return BONAFIDE
    expected = f"{layout.bonafide_label!r} or {SPOOF!r}"
    raise ManifestError(path, f"unknown key {value!r}; expected {expected}", line=line)


def _check_placeholders(
    layout: KeyLayout, c: list[str], at: tuple[int, ...], path: str, line: int
) -> None:
    for i in at:
        if c[i] != NO_VALUE:
            raise ManifestError(
                path,
                f"column {i + 1} of an {layout.title} protocol must be '-', got {c[i]!r}"
                + _PLACEHOLDER_HINTS.get(layout.name, ""),
                line=line,
            )


def _strip_suffix(utt: str, suffixes: tuple[str, ...]) -> str:
    for ext in suffixes:
        if utt.lower().endswith(ext):
            return utt[: -len(ext)]
    return utt


def _getter(indices: tuple[int, ...]) -> Callable[[list[str]], tuple[str, ...]]:
    """``c -> tuple(c[i] for i in indices)``, fast."""
    if len(indices) > 1:
        return itemgetter(*indices)
    if indices:
        (i,) = indices
        return lambda c: (c[i],)
    return lambda c: ()


def _row_parser(layout: KeyLayout) -> Callable[[list[str], str, int], Row]:
    """A function turning one line's columns into a :data:`Row`, as ``layout`` says."""
    at = layout.columns.index
    utt_at = at(UTT)
    speaker_at = at(SPEAKER) if SPEAKER in layout.columns else None
    key_at = layout.key_column
    attack_parts = _getter(tuple(map(at, layout.attack))) if layout.attack else None
    others = _getter(tuple(map(at, layout.other_columns)))
    placeholders = tuple(i for i, name in enumerate(layout.columns) if name == NO_VALUE)
    suffixes, separator = layout.utt_suffixes, layout.attack_separator

    def parse(c: list[str], path: str, line: int) -> Row:
        if placeholders:
            _check_placeholders(layout, c, placeholders, path, line)
        utt = _strip_suffix(c[utt_at], suffixes) if suffixes else c[utt_at]
        key = None if key_at is None else c[key_at]
        if key is not None and key not in KEYS:
            key = _parse_key(key, layout, path, line)
        system = NO_VALUE if attack_parts is None else attack_id(attack_parts(c), key, separator)
        speaker = NO_VALUE if speaker_at is None else c[speaker_at]
        return utt, speaker, system, key, others(c)

    return parse


def _fmt(name: str, *variants: str) -> _Format:
    layouts = [KEY_LAYOUTS[n] for n in (name, *variants)]
    return _Format(
        layouts[0],
        tuple(x.n_columns for x in layouts),
        {x.n_columns: _row_parser(x) for x in layouts},
        {x.n_columns: x.store_columns for x in layouts},
    )


# formats that accept a second layout (every line of a file like its first)
_VARIANTS = {"asvspoof2021-df": ("asvspoof2021-df-short",)}
_FORMATS: dict[str, _Format] = {
    name: _fmt(name, *_VARIANTS.get(name, ()))
    for name in EXTRA_COLUMNS
    if not any(name in variants for variants in _VARIANTS.values())
}

# File-name rules: (regex, format name or a resolver, split group or fixed split).
_RULES: tuple[tuple[re.Pattern[str], str, str | None], ...] = (
    (
        re.compile(r"ASVspoof2019\.(?P<track>LA|PA)\.cm\.(?P<split>\w+)\.(trn|trl)\.txt", re.I),
        "asvspoof2019",
        None,
    ),
    (
        re.compile(r"ASVspoof2021\.(?P<track>LA|DF|PA)\.cm\.(?P<split>\w+)\.trl\.txt", re.I),
        "asvspoof2021-list",
        None,
    ),
    (re.compile(r"trial_metadata\.txt", re.I), "asvspoof2021", "eval"),
    (
        re.compile(r"ASVspoof2017_V2_(?P<split>\w+?)\.(trn|trl)\.txt", re.I),
        "asvspoof2017",
        None,
    ),
    (
        re.compile(r"ASVspoof5\.(?P<split>\w+)(\.track_?1)?\.tsv", re.I),
        "asvspoof5",
        None,
    ),
    (
        re.compile(r"ASVspoof5\.(?P<split>\w+)\.metadata\.txt", re.I),
        "asvspoof5-metadata",
        None,
    ),
    (re.compile(r"(?:[\w.-]+\.)?cm\.(?P<split>\w+)\.(trn|trl)\.txt", re.I), "cm", None),
    (re.compile(r"(?P<split>train|dev|eval|test)(\.(trn|trl))?\.txt", re.I), "cm", None),
)

# Protocols of the speaker-verification (ASV) task: no CM labels, skipped in directories.
_ASV_RULES = (
    re.compile(r"ASVspoof20\d\d\.(LA|PA|DF)\.asv\..*", re.I),
    re.compile(r"ASVspoof5\..*\.(trial|enroll)\.(tsv|txt)", re.I),
    re.compile(r"ASVspoof5\.codec\.config\.csv", re.I),
)
_PROTOCOL_SUFFIXES = {".txt", ".tsv", ".lst", ".trn", ".trl", ".ndx"}
_NOT_PROTOCOL_PREFIXES = ("readme", "license", "licence", "copying", "md5sum", "changelog")


@dataclass(frozen=True)
class ProtocolFile:
    """A protocol file recognised by its name.

    Attributes
    ----------
    path : Path
        The file.
    format : str
        Format name (a key of :data:`EXTRA_COLUMNS`); for ASVspoof 2021 keys
        ``"asvspoof2021"`` until the track is known from the content.
    split : str
        Split of every record in it.
    track : str or None
        ``"LA"``/``"PA"``/``"DF"`` where the name or the directory says it.
    """

    path: Path
    format: str
    split: str
    track: str | None = None


def _is_asv_protocol(path: Path) -> bool:
    if any(r.fullmatch(path.name) for r in _ASV_RULES):
        return True
    return path.name.lower() == "trial_metadata.txt" and path.parent.name.upper() == "ASV"


def detect_protocol(path: str | os.PathLike) -> ProtocolFile | None:
    """Recognise a protocol file by its name.

    Parameters
    ----------
    path : str or os.PathLike
        A file path (it need not exist).

    Returns
    -------
    ProtocolFile or None
        The format and split, or ``None`` when the name matches no supported format.

    Examples
    --------
    >>> detect_protocol("ASVspoof2019.LA.cm.dev.trl.txt").split
    'dev'
    >>> detect_protocol("ASVspoof5.dev.track_1.tsv").format
    'asvspoof5'
    >>> detect_protocol("notes.txt") is None
    True
    """
    p = Path(path)
    if _is_asv_protocol(p):
        return None
    for regex, fmt, fixed_split in _RULES:
        m = regex.fullmatch(p.name)
        if m is None:
            continue
        groups = m.groupdict()
        split = fixed_split or groups["split"].lower()
        track = groups.get("track")
        track = track.upper() if track else None
        if fmt == "asvspoof2019":
            fmt = f"asvspoof2019-{track.lower()}"
        elif fmt == "asvspoof2021":
            track = _track_from_dirs(p)
        return ProtocolFile(p, fmt, split, track)
    return None


def _track_from_dirs(path: Path) -> str | None:
    # keys/LA/CM/trial_metadata.txt
    for part in reversed(path.parent.parts[-3:]):
        if part.upper() in ("LA", "PA", "DF"):
            return part.upper()
    return None


def _is_clearly_not_protocol(path: Path) -> bool:
    name = path.name.lower()
    return (
        name.startswith(".")
        or name.startswith(_NOT_PROTOCOL_PREFIXES)
        or path.suffix.lower() not in _PROTOCOL_SUFFIXES
    )


def _split_rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def list_protocols(directory: str | os.PathLike) -> list[ProtocolFile]:
    """The protocol files of a directory (not recursive), in reading order.

    Parameters
    ----------
    directory : str or os.PathLike
        A directory of protocol files.

    Returns
    -------
    list of ProtocolFile
        Sorted by split (train, dev, eval, others alphabetically) then file name.

    Raises
    ------
    ManifestError
        A ``.txt``/``.tsv``/... file matches no format, or no protocol file is found.
    """
    d = Path(directory)
    found: list[ProtocolFile] = []
    skipped: list[str] = []
    for entry in sorted(os.scandir(d), key=lambda e: e.name):
        p = Path(entry.path)
        if not entry.is_file():
            skipped.append(entry.name + "/")
            continue
        pf = detect_protocol(p)
        if pf is not None:
            found.append(pf)
        elif _is_clearly_not_protocol(p) or _is_asv_protocol(p):
            skipped.append(entry.name)
        else:
            raise ManifestError(
                p,
                "file name matches no known protocol format; expected e.g. "
                f"{_EXPECTED_NAMES} (move other files out of {d}, or rename it)",
            )
    if not found:
        what = f" (skipped: {', '.join(skipped[:8])}{', ...' if len(skipped) > 8 else ''})"
        raise ManifestError(
            d, f"no protocol files found{what if skipped else ''}; expected {_EXPECTED_NAMES}"
        )
    found.sort(key=lambda pf: (_split_rank(pf.split), pf.path.name))
    return found


_EXPECTED_NAMES = (
    "ASVspoof2019.LA.cm.train.trn.txt, trial_metadata.txt, ASVspoof2021.LA.cm.eval.trl.txt, "
    "ASVspoof2017_V2_train.trn.txt, ASVspoof5.train.tsv, NAME.cm.train.trn.txt or train.txt"
)


# ----------------------------------------------------------------------------- reading


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a UTF-8 file, read as a stream."""
    try:
        f = open(path, "rb")  # closed by the with below
    except FileNotFoundError:
        raise ManifestError(path, "no such file") from None
    except IsADirectoryError:
        raise ManifestError(path, "is a directory") from None
    except OSError as exc:
        raise ManifestError(path, f"cannot read: {exc.strerror or exc}") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ManifestError(
                    path, f"not UTF-8 text (byte {exc.start + 1} of the line)", line=number
                ) from None
            if not text.isspace():
                yield number, text


def _resolve_2021_track(pf: ProtocolFile, first_id: str, n_columns: int) -> str:
    prefix = first_id[:5].upper()
    by_prefix = {"LA_E_": "la", "DF_E_": "df", "PA_E_": "pa"}
    if prefix in by_prefix:
        return f"asvspoof2021-{by_prefix[prefix]}"
    if pf.track is not None:
        return f"asvspoof2021-{pf.track.lower()}"
    by_columns = {8: "la", 12: "pa", 13: "df"}
    if n_columns in by_columns:
        return f"asvspoof2021-{by_columns[n_columns]}"
    raise ManifestError(
        pf.path,
        "cannot tell the ASVspoof 2021 track (LA/PA/DF) of this key file: put it under "
        "keys/<TRACK>/CM/ as distributed",
    )


def _detect_or_refuse(p: Path) -> ProtocolFile:
    """The protocol a file given by name is, or the :class:`ManifestError` why it is none."""
    if _is_asv_protocol(p):
        raise ManifestError(
            p,
            "this is a speaker-verification (ASV) protocol, not a countermeasure protocol; "
            "pass the CM protocol (e.g. ASVspoof2019.LA.cm.*.txt, keys/LA/CM/trial_metadata.txt)",
        )
    pf = detect_protocol(p)
    if pf is None:
        raise ManifestError(
            p, f"file name matches no known protocol format; expected e.g. {_EXPECTED_NAMES}"
        )
    return pf


def read_protocol(path: str | os.PathLike, *, split: str | None = None) -> list[Utterance]:
    """Read one protocol file, its format and split detected from its name.

    Parameters
    ----------
    path : str or os.PathLike
        A protocol file (see the module docstring for the supported names).
    split : str, optional
        Override the split taken from the file name.

    Returns
    -------
    list of Utterance
        In file order.

    Raises
    ------
    ManifestError
        Unknown file name, wrong column count, unknown key, an unsafe utterance id, or a
        duplicate utterance id within the file.

    Examples
    --------
    >>> utts = read_protocol("protocols/ASVspoof2019.LA.cm.dev.trl.txt")  # doctest: +SKIP
    >>> utts[0].utt_id, utts[0].system, utts[0].label  # doctest: +SKIP
    ('LA_D_1000265', 'A01', 0)
    """
    pf = _detect_or_refuse(Path(path))
    out: list[Utterance] = []
    _read_into(pf, split or pf.split, out, {})
    return out


def _read_into(
    pf: ProtocolFile,
    split: str,
    out: list[Utterance],
    seen: dict[str, dict[str, Utterance]],
) -> None:
    """Append the records of ``pf`` to ``out``; ``seen`` maps split -> id -> first record."""
    source = str(pf.path)
    fmt: _Format | None = _FORMATS.get(pf.format)
    intern = sys.intern
    split = intern(split)
    seen_split = seen.setdefault(split, {})
    unsafe = _UNSAFE_ID.search
    allowed: tuple[int, ...] = () if fmt is None else fmt.n_columns
    names: tuple[str, ...] = ()
    parse: Callable[[list[str], str, int], Row] | None = None
    first_line = 0
    for number, text in _lines(pf.path):
        cols = text.split()
        n = len(cols)
        if n not in allowed or first_line == 0:  # first line, or a bad one
            if fmt is None:  # ASVspoof 2021 keys: the track decides the layout
                fmt = _FORMATS[_resolve_2021_track(pf, cols[min(1, n - 1)], n)]
                allowed = fmt.n_columns
            if n not in allowed:
                like = f"like line {first_line}, " if len(allowed) < len(fmt.n_columns) else ""
                raise ManifestError(
                    source,
                    f"expected {allowed[0]} columns, got {n} "
                    f"({like}{fmt.layout.title}: {fmt.layout.heading})",
                    line=number,
                )
            # a format with variants (2021 DF): every line like the first one
            allowed, names, first_line = (n,), fmt.extra[n], number
            parse = fmt.parsers[n]
        utt_id, speaker, system, key, values = parse(cols, source, number)
        if unsafe(utt_id) or utt_id in (".", ".."):
            check_utterance_id(utt_id, source, number)
        first = seen_split.get(utt_id)
        if first is not None:
            raise ManifestError(
                source,
                f"duplicate utterance id {utt_id!r} in split {split!r}; "
                f"first at {first.source}:{first.line}",
                line=number,
            )
        utt = Utterance(
            utt_id,
            split,
            intern(speaker),
            intern(system),
            key,
            dict(zip(names, map(intern, values), strict=True)),
            source,
            number,
        )
        seen_split[utt_id] = utt
        out.append(utt)


def check_utterance_id(utt_id: str, source: str | os.PathLike | None = None, line=None) -> None:
    """Refuse an utterance id that is not a plain file name (it names an audio file).

    Parameters
    ----------
    utt_id : str
        The id.
    source, line : optional
        Where it was read, for the error message.

    Raises
    ------
    ManifestError
        The id is empty, ``.``/``..``, or holds ``/``, ``\\``, ``:`` or NUL, so it could
        point outside the audio root.

    Examples
    --------
    >>> check_utterance_id("LA_T_1000137")
    """
    if not utt_id or utt_id in (".", "..") or _UNSAFE_ID.search(utt_id):
        raise ManifestError(
            source,
            f"unsafe utterance id {utt_id!r}: ids name audio files and may not hold path "
            "separators, ':' or be '.'/'..'",
            line=line,
        )


def read_manifest(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Utterance]:
    """Read a protocol file, a directory of protocol files, or a list of either.

    Parameters
    ----------
    path : str or os.PathLike or sequence of them
        Protocol file(s) and/or directories (read non-recursively).

    Returns
    -------
    list of Utterance
        Files in order (a directory: by split then name), each in protocol order.

    Raises
    ------
    ManifestError
        Missing path, unknown protocol file name, a malformed line (``FILE:LINE: ...``), or
        an utterance id twice in the same split (naming both lines).

    Examples
    --------
    >>> utts = read_manifest("LA/ASVspoof2019_LA_cm_protocols")  # doctest: +SKIP
    >>> sorted({u.split for u in utts})  # doctest: +SKIP
    ['dev', 'eval', 'train']
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    files: list[ProtocolFile] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files.extend(list_protocols(p))
        elif p.exists():
            files.append(_detect_or_refuse(p))
        else:
            raise ManifestError(p, "no such file or directory")
    out: list[Utterance] = []
    seen: dict[str, dict[str, Utterance]] = {}
    done: set[Path] = set()
    for pf in files:
        resolved = pf.path.resolve()
        if resolved in done:
            continue  # the same file named twice (dir + file): read once
        done.add(resolved)
        _read_into(pf, pf.split, out, seen)
    return out


# ----------------------------------------------------------------------------- audio files

AUDIO_EXTENSIONS = (".flac", ".wav")
"""Audio file extensions looked for, in order of preference within one directory."""

_SPLIT_OF_LETTER = {"T": "train", "D": "dev", "E": "eval"}


def _official_dirs() -> list[str]:
    dirs = []
    for track in ("LA", "PA"):
        for split in SPLIT_ORDER:
            dirs.append(f"ASVspoof2019_{track}_{split}/flac")
            dirs.append(f"{track}/ASVspoof2019_{track}_{split}/flac")
    dirs += [f"ASVspoof2021_{track}_eval/flac" for track in ("LA", "DF", "PA")]
    dirs += [f"ASVspoof2017_V2_{split}" for split in SPLIT_ORDER]
    dirs += ["flac_T", "flac_D"]
    return dirs


_GENERIC_DIRS = (".", "flac", "wav")
_OFFICIAL_DIRS = tuple(_official_dirs())


def _hinted_dirs(utt: Utterance) -> list[str]:
    """Layout directories where ``utt`` should be, most likely first."""
    name = Path(utt.source).name.lower()
    uid = utt.utt_id
    prefix = uid[:5].upper()
    letter = prefix[3] if len(prefix) == 5 and prefix[2] == "_" and prefix[4] == "_" else ""
    split = _SPLIT_OF_LETTER.get(letter, utt.split)
    dirs: list[str] = []
    track = prefix[:2] if prefix[:2] in ("LA", "PA", "DF") else ""
    if name.startswith("asvspoof2021") or name == "trial_metadata.txt":
        if track:
            dirs.append(f"ASVspoof2021_{track}_eval/flac")
    elif track in ("LA", "PA") and letter:
        dirs += [f"ASVspoof2019_{track}_{split}/flac", f"{track}/ASVspoof2019_{track}_{split}/flac"]
        if letter == "E":
            dirs.append(f"ASVspoof2021_{track}_eval/flac")
    elif track == "DF":
        dirs.append("ASVspoof2021_DF_eval/flac")
    elif uid[:2] in ("T_", "D_", "E_"):
        first = _SPLIT_OF_LETTER[uid[0]]
        year2017 = [f"ASVspoof2017_V2_{first}"]
        year5 = ["flac_E_*"] if uid[0] == "E" else [f"flac_{uid[0]}"]
        dirs += year2017 + year5 if name.startswith("asvspoof2017") else year5 + year2017
    return dirs


class AudioLocator:
    """Find the audio file of each utterance under one audio root.

    Looks in the official layouts, in this order: the directories the utterance's protocol
    and id point to (``ASVspoof2019_LA_train/flac/`` for ``LA_T_*`` of a 2019 protocol,
    ``ASVspoof2021_DF_eval/flac/`` for ``DF_E_*``, ``flac_T/`` for ASVspoof 5 ``T_*``,
    ``ASVspoof2017_V2_train/`` for 2017 ``T_*``, ...), then ``./``, ``flac/``, ``wav/``, then
    every other known layout (``ASVspoof2019_{LA,PA}_{train,dev,eval}/flac``, the same under
    ``LA/``/``PA/``, ``ASVspoof2021_{LA,DF,PA}_eval/flac``, ``ASVspoof2017_V2_*``, ``flac_T``,
    ``flac_D``, ``flac_E_*``). The first directory holding ``ID.flac`` or ``ID.wav`` wins
    (``.flac`` first within a directory).

    With ``index=True`` (default) the candidate directories are listed once
    (``os.scandir``) on the first lookup, and every later lookup is a dictionary access:
    use one locator for a whole manifest (100k+ utterances). With ``index=False`` each lookup
    stats a few paths, which suits a handful of lookups. Both give the same answer.

    Parameters
    ----------
    audio_root : str or os.PathLike
        The directory the layouts are under.
    index : bool, default True
        List directories once instead of probing paths per lookup.

    Examples
    --------
    >>> loc = AudioLocator("/data/LA")  # doctest: +SKIP
    >>> utts = read_manifest("/data/LA/ASVspoof2019_LA_cm_protocols")  # doctest: +SKIP
    >>> paths = loc.find_all(utts)  # doctest: +SKIP
    """

    def __init__(self, audio_root: str | os.PathLike, *, index: bool = True):
        self.root = Path(audio_root)
        self.use_index = index
        self._index: dict[str, list[str]] | None = None  # stem -> ["dir/ID.flac", ...]
        self._globbed: list[str] | None = None

    def _glob_dirs(self) -> list[str]:
        """``flac_E_*`` directories of the root (ASVspoof 5 eval), sorted."""
        if self._globbed is None:
            try:
                names = sorted(e.name for e in os.scandir(self.root) if e.name.startswith("flac_E"))
            except OSError:
                names = []
            self._globbed = [n for n in names if (self.root / n).is_dir()]
        return self._globbed

    def _expand(self, dirs: Iterable[str]) -> list[str]:
        out: list[str] = []
        for d in dirs:
            for e in self._glob_dirs() if d == "flac_E_*" else (d,):
                if e not in out:
                    out.append(e)
        return out

    def candidate_dirs(self, utt: Utterance) -> list[str]:
        """Directories (relative to the root) searched for ``utt``, in order."""
        return self._expand([*_hinted_dirs(utt), *_GENERIC_DIRS, *_OFFICIAL_DIRS, "flac_E_*"])

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for d in self._expand([*_GENERIC_DIRS, *_OFFICIAL_DIRS, "flac_E_*"]):
            try:
                entries = list(os.scandir(self.root / d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext in AUDIO_EXTENSIONS and entry.is_file():
                    index.setdefault(stem, []).append(f"{d}/{entry.name}")
        return index

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise AudioError(self.root, "audio root is not a directory")

    def find(self, utt: Utterance) -> Path:
        """The audio file of ``utt``.

        Raises
        ------
        ManifestError
            The utterance id is not a plain file name (it could escape the audio root).
        AudioError
            No ``.flac``/``.wav`` file for it in any searched directory.
        """
        check_utterance_id(utt.utt_id, utt.source, utt.line)
        found = self._lookup(utt)
        if found is None:
            raise self._missing(utt)
        return found

    def _lookup(self, utt: Utterance) -> Path | None:
        if self.use_index:
            if self._index is None:
                self._check_root()
                self._index = self._build_index()
            hits = self._index.get(utt.utt_id)
            if not hits:
                return None
            if len(hits) == 1:
                return self.root / hits[0]
            for d in self.candidate_dirs(utt):
                for ext in AUDIO_EXTENSIONS:
                    rel = f"{d}/{utt.utt_id}{ext}"
                    if rel in hits:
                        return self.root / rel
            return self.root / hits[0]  # pragma: no cover - every indexed dir is a candidate
        self._check_root()
        root, tried = os.fspath(self.root), set()
        for pattern in (*_hinted_dirs(utt), *_GENERIC_DIRS, *_OFFICIAL_DIRS, "flac_E_*"):
            # expand the flac_E_* glob only when reached: most ids hit a hinted dir first
            for d in self._glob_dirs() if pattern == "flac_E_*" else (pattern,):
                if d in tried:
                    continue
                tried.add(d)
                for ext in AUDIO_EXTENSIONS:
                    p = os.path.join(root, d, utt.utt_id + ext)
                    if os.path.isfile(p):
                        return self.root / d / (utt.utt_id + ext)
        return None

    def _missing(self, utt: Utterance) -> AudioError:
        existing = [d for d in self.candidate_dirs(utt) if (self.root / d).is_dir()]
        searched = ", ".join(f"{d}/" for d in existing) if existing else "no known layout exists"
        return AudioError(
            utt.source,
            f"no audio file for utterance {utt.utt_id!r} ({'/'.join(AUDIO_EXTENSIONS)}) under "
            f"{self.root}; searched {searched}",
            line=utt.line,
        )

    def find_all(self, utts: Sequence[Utterance]) -> list[Path]:
        """The audio file of every utterance, in order.

        Raises
        ------
        AudioError
            Naming the first utterance without audio and how many have none.
        """
        paths: list[Path] = []
        missing: list[Utterance] = []
        for u in utts:
            check_utterance_id(u.utt_id, u.source, u.line)
            p = self._lookup(u)
            if p is None:
                missing.append(u)
            else:
                paths.append(p)
        if missing:
            first = self._missing(missing[0])
            raise AudioError(
                missing[0].source,
                f"{first.message}; {len(missing)} of {len(utts)} utterances have no audio",
                line=missing[0].line,
            )
        return paths


def find_audio(audio_root: str | os.PathLike, utt: Utterance) -> Path:
    """The audio file of one utterance under ``audio_root`` (official layouts, .flac/.wav).

    A convenience wrapper that probes a few paths per call; for a whole manifest use one
    :class:`AudioLocator` (lists each directory once).

    Parameters
    ----------
    audio_root : str or os.PathLike
        Directory the layouts are under (see :class:`AudioLocator`).
    utt : Utterance
        The utterance.

    Returns
    -------
    Path
        ``audio_root/<layout dir>/<utt_id>.flac`` (or ``.wav``).

    Raises
    ------
    ManifestError
        The id holds a path separator, ``:``, or is ``.``/``..`` (it could escape the root).
    AudioError
        No audio file for the id; the message names the id and the directories searched.

    Examples
    --------
    >>> find_audio("/data/LA", utt)  # doctest: +SKIP
    PosixPath('/data/LA/ASVspoof2019_LA_train/flac/LA_T_1000137.flac')
    """
    return AudioLocator(audio_root, index=False).find(utt)
