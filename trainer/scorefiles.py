"""ASVspoof score files: readers of CM and ASV score files and key (protocol) files, and the
CM score-file writer.

The layouts are described once, in :mod:`featstore.asvspoof_formats` (column names, key
column, attack rule, format ids); this module reads and writes them.

CM score files (format detected from the first line):

- ``2019``: 6 columns ``SPEAKER UTT - SYSTEM KEY SCORE`` (keys inside; SYSTEM ``-`` or A01..).
- ``2019-4col``: ``UTT SYSTEM KEY SCORE`` (the official 2019 CM score file layout).
- ``2021``: ``UTT SCORE``; needs a key file (``--protocol``).
- ``asvspoof5``: tab-separated with a header holding ``filename`` and ``cm-score``; needs a key.

:func:`write_score_file` writes the first, third and fourth, named ``asvspoof2019``,
``asvspoof2021`` and ``asvspoof5`` (:data:`SCORE_FORMATS`).

Key / protocol files (:func:`read_key_file`): ASVspoof 2019 CM protocols
(``SPEAKER UTT ENV SYSTEM KEY``), ASVspoof 2021 ``trial_metadata.txt`` for LA
(``SPEAKER UTT CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``, also with a
placeholder column before ATTACK), DF (``SPEAKER UTT CODEC SOURCE
ATTACK KEY TRIM SUBSET VOCODER TASK TEAM GENDER_PAIR LANGUAGE``) and PA (``SPEAKER UTT
ASV_ROOM ASV_MIC DIS_TO_ASV ATT_ROOM ATT_MIC ATT_D ATT_TO_SPK KEY TRIM SUBSET``), ASVspoof 5
protocols (``SPEAKER UTT GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK KEY TMP``) and the
ASVspoof 5 evaluation package's key tsv (header with ``filename`` and ``cm-label``). Other
layouts work when one column holds ``bonafide``/``spoof``: the speaker is column 1, the
utterance column 2, the attack the column before the key, the rest ``col<N>``. Column names
are lower case (DF's compression column, ``compr`` in the official package, is ``codec``
here); for 2021 PA the attack is ``ATT_TO_SPK + ATT_D`` (e.g. ``c4s4``, as featstore's
protocol reader names it), every PA column stays available to ``--by``.

ASV score files (:func:`read_asv_scores`): 6 columns ``SPEAKER UTT - bonafide|ATTACK
target|nontarget|spoof SCORE`` or the database's 3-column ``bonafide|ATTACK
target|nontarget|spoof SCORE``, or ASVspoof 2021's ``ASV_SPK TRIAL SCORE`` joined by
(speaker, trial) with its ASV key file (:func:`read_asv_key_file`: the CM key layout of LA or
PA with ``target``/``nontarget``/``spoof`` keys). :func:`check_asv_scores` refuses ASV
scores of other trials than the CM scores'.

Every problem raises :class:`trainer.errors.ScoreFileError` naming the file and line.
Files are parsed with one ``str.split`` plus a vectorised column count per line (no
``np.loadtxt``): ~0.1 s for the 71,237-line ASVspoof 2019 LA eval score files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.asvspoof_formats import (
    ASV_KEYS,
    ASV_SCORE_COLUMNS_2021,
    ASVSPOOF5_TSV_NAMES,
    ATTACK,
    BONAFIDE,
    CM_KEYS,
    KEY,
    NO_VALUE,
    SCORE,
    SCORE_FORMATS,
    SCORE_LAYOUTS,
    SPEAKER,
    UTT,
    KeyLayout,
    ScoreLayout,
    attack_ids,
    key_file_layouts,
    score_layout,
)
from featstore.atomic_files import atomic_path
from trainer.errors import MetricsError, ScoreFileError
from trainer.metrics import AsvScores, MetricSet, compute_metrics

__all__ = [
    "SCORE_FORMATS",
    "AsvKeyFile",
    "CmScores",
    "CoverageWarning",
    "KeyFile",
    "ScoreFileResult",
    "check_asv_scores",
    "evaluate_score_files",
    "read_asv_key_file",
    "read_asv_scores",
    "read_cm_scores",
    "read_key_file",
    "results_to_json",
    "write_score_file",
]

# bytes str.split() treats as whitespace in ASCII text (\n is also the line break)
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True

# (number of columns, key column) -> the known key file layout
_KEY_LAYOUTS: dict[tuple[int, int], KeyLayout] = key_file_layouts()


# --- low-level table reading ------------------------------------------------------------------


@dataclass
class _Table:
    """Whitespace-separated rows of a text file (blank lines skipped)."""

    path: str
    tokens: list[str]
    counts: np.ndarray  # tokens per non-blank row
    lines: np.ndarray  # 1-based line number per non-blank row
    starts: np.ndarray = field(init=False)  # index of each row's first token

    def __post_init__(self) -> None:
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)

    def row(self, i: int) -> list[str]:
        s = int(self.starts[i])
        return self.tokens[s : s + int(self.counts[i])]

    def columns(self, first_row: int = 0) -> list[list[str]]:
        """Columns of rows ``first_row..`` once every row has the same number of columns."""
        n = int(self.counts[first_row])
        bad = np.flatnonzero(self.counts[first_row:] != n)
        if bad.size:
            i = first_row + int(bad[0])
            raise ScoreFileError(
                self.path, f"expected {n} columns, got {int(self.counts[i])}", int(self.lines[i])
            )
        body = self.tokens[int(self.starts[first_row]) :] if first_row else self.tokens
        return [body[j::n] for j in range(n)]


def _read_table(path: str | os.PathLike, what: str) -> _Table:
    p = os.fspath(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError:
        raise ScoreFileError(p, f"{what} does not exist") from None
    except IsADirectoryError:
        raise ScoreFileError(p, f"{what} is a directory, not a file") from None
    except OSError as exc:
        raise ScoreFileError(p, f"cannot read {what}: {exc.strerror or exc}") from None
    if data.isascii():
        text = data.decode("ascii")
        tokens = text.split()
        b = np.frombuffer(data, dtype=np.uint8)
        ws = _WHITESPACE[b]
        start = ~ws  # first byte of a token
        start[1:] &= ws[:-1]
        # every line holds at least its own byte (its "\n" or, last, a character): no empty
        # segments, which reduceat would not sum to 0
        line_starts = np.concatenate(([0], np.flatnonzero(b == 10) + 1))
        line_starts = line_starts[line_starts < b.size]
        per_line = np.add.reduceat(start.view(np.uint8), line_starts, dtype=np.int64)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ScoreFileError(p, f"{what} is not UTF-8 text", line) from None
        rows = [ln.split() for ln in text.split("\n")]
        tokens = [t for r in rows for t in r]
        per_line = np.array([len(r) for r in rows], dtype=np.int64)
    nonblank = np.flatnonzero(per_line)
    if nonblank.size == 0:
        raise ScoreFileError(p, f"{what} is empty")
    return _Table(path=p, tokens=tokens, counts=per_line[nonblank], lines=nonblank + 1)


def _parse_scores(path: str, col: list[str], lines: np.ndarray) -> np.ndarray:
    try:
        scores = np.array(col, dtype=np.float64)
    except ValueError:
        for i, tok in enumerate(col):
            try:
                float(tok)
            except ValueError:
                raise ScoreFileError(
                    path, f"score {tok!r} is not a number", int(lines[i])
                ) from None
        raise  # pragma: no cover (numpy and float() disagree)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        raise ScoreFileError(path, f"score {col[i]!r} is not finite", int(lines[i]))
    return scores


def _parse_keys(
    path: str, col: list[str], lines: np.ndarray, allowed: tuple[str, ...]
) -> np.ndarray:
    """Index of each key in ``allowed``; unknown keys raise with their line."""
    lookup = {name: code for code, name in enumerate(allowed)}
    try:
        codes = np.fromiter(map(lookup.__getitem__, col), dtype=np.int8, count=len(col))
    except KeyError:
        i = next(i for i, tok in enumerate(col) if tok not in lookup)
        expected = " or ".join(allowed)
        raise ScoreFileError(
            path, f"unknown key {col[i]!r} (expected {expected})", int(lines[i])
        ) from None
    return codes


def _index_ids(path: str, ids: list[str], lines: np.ndarray, what: str) -> dict[str, int]:
    """``{id: row}``; a repeated id raises naming both lines."""
    index = dict(zip(ids, range(len(ids)), strict=True))
    if len(index) != len(ids):
        seen: dict[str, int] = {}
        repeated: dict[str, int] = {}  # id -> row of its first repeat
        for i, u in enumerate(ids):
            if u in seen:
                repeated.setdefault(u, i)
            else:
                seen[u] = i
        u, i = next(iter(repeated.items()))
        more = ""
        if len(repeated) > 1:
            more = f"; {len(repeated)} {what}s appear more than once: {_few(repeated)}"
        first = int(lines[seen[u]])
        raise ScoreFileError(
            path, f"duplicate {what} {u!r} (first on line {first}){more}", int(lines[i])
        )
    return index


def _few(items: Sequence[str] | dict[str, Any], n: int = 3) -> str:
    """The first ``n`` of ``items``, quoted, and ``...`` when there are more."""
    first = [repr(str(x)) for _, x in zip(range(n), items, strict=False)]
    return ", ".join(first + (["..."] if len(items) > n else []))


class CoverageWarning(UserWarning):
    """A score file and its key file do not hold the same trials (``allow_missing``)."""


# --- key files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFile:
    """A parsed key / protocol file.

    Attributes
    ----------
    path : str
    format : str
        ``2019``, ``2021-LA``, ``2021-DF``, ``2021-PA``, ``asvspoof5``, ``asvspoof5-tsv``
        or ``generic``.
    utt_ids : list of str
    labels : np.ndarray
        int8, 1 bona fide, 0 spoof.
    attacks : np.ndarray
        str, attack id per trial (``-`` for bona fide).
    columns : dict of str to np.ndarray
        Every other column by name (``codec``, ``transmission``, ``subset``, ...).
    lines : np.ndarray
        1-based line of every trial.
    index : dict of str to int
        Row of every utterance id.
    """

    path: str
    format: str
    utt_ids: list[str]
    labels: np.ndarray
    attacks: np.ndarray
    columns: dict[str, np.ndarray]
    lines: np.ndarray
    index: dict[str, int] = field(repr=False)


def read_key_file(path: str | os.PathLike) -> KeyFile:
    """Read an ASVspoof key / protocol file (2019, 2021 LA/DF/PA, ASVspoof 5).

    Parameters
    ----------
    path : str or os.PathLike
        The key file.

    Returns
    -------
    KeyFile

    Raises
    ------
    ScoreFileError
        Unreadable or empty file, ragged columns, no key column, unknown key, duplicate id.

    Examples
    --------
    >>> k = read_key_file("trial_metadata.txt")  # doctest: +SKIP
    >>> k.format, sorted(k.columns)  # doctest: +SKIP
    ('2021-LA', ['codec', 'speaker', 'subset', 'transmission', 'trim'])
    """
    table = _read_table(path, "key file")
    first = table.row(0)
    if "filename" in first and ("cm-label" in first or KEY in first):
        fmt, by_name, lines = _tsv_key_columns(table)
        attack_from: tuple[str, ...] = (ATTACK,)
    else:
        layout, by_name, lines = _whitespace_key_columns(table)
        fmt = layout.key_file_format if layout is not None else "generic"
        attack_from = layout.attack if layout is not None else (ATTACK,)
    utt_col, key_col = by_name.pop(UTT), by_name.pop(KEY)
    # the attack column goes; columns an attack id is made of (2021 PA) stay for --by
    attack_cols = [
        by_name.pop(c) if c == ATTACK else by_name[c] for c in attack_from if c in by_name
    ]
    attacks = _attacks(attack_cols, key_col)
    p = table.path
    if not utt_col:
        raise ScoreFileError(p, "key file has a header but no trials")
    codes = _parse_keys(p, key_col, lines, CM_KEYS)
    labels = (codes == 0).astype(np.int8)
    index = _index_ids(p, utt_col, lines, "utterance")
    return KeyFile(
        path=p,
        format=fmt,
        utt_ids=utt_col,
        labels=labels,
        attacks=attacks,
        columns={k: np.array(v) for k, v in by_name.items()},
        lines=lines,
        index=index,
    )


def _tsv_key_columns(table: _Table) -> tuple[str, dict[str, list[str]], np.ndarray]:
    """An ASVspoof 5 tsv key file's format, columns by name and lines."""
    names = [ASVSPOOF5_TSV_NAMES.get(n, n) for n in table.row(0)]
    cols = table.columns(first_row=1) if table.counts.size > 1 else [[] for _ in names]
    return "asvspoof5-tsv", dict(zip(names, cols, strict=True)), table.lines[1:]


def _whitespace_key_columns(
    table: _Table,
) -> tuple[KeyLayout | None, dict[str, list[str]], np.ndarray]:
    """A header-less key file's layout (``None``: generic), columns by name and lines."""
    cols = table.columns()
    key_at = _find_key_column(cols)
    if key_at is None or key_at < 1:
        raise ScoreFileError(
            table.path,
            "no key column: expected a column with 'bonafide' or 'spoof'",
            int(table.lines[0]),
        )
    layout = _KEY_LAYOUTS.get((len(cols), key_at))
    names = layout.columns if layout is not None else _generic_names(len(cols), key_at)
    return layout, dict(zip(names, cols, strict=True)), table.lines


def _attacks(columns: list[list[str]], keys: list[str]) -> np.ndarray:
    """The attack id of every trial (:func:`featstore.asvspoof_formats.attack_ids`)."""
    if not columns:
        return np.full(len(keys), NO_VALUE)
    return np.array(attack_ids(columns, keys))


def _find_key_column(cols: list[list[str]]) -> int | None:
    """The column holding only ``bonafide``/``spoof`` (the known layout's one on a tie).

    Attack or vocoder columns also say ``bonafide`` on bona fide trials, so the key column
    is the one with nothing else; without such a column (a typo in a key), the column with
    the most key words, so that the typo is reported with its line.
    """
    keys = set(CM_KEYS)
    full = [j for j, col in enumerate(cols) if set(col) <= keys]
    if len(full) > 1:
        known = [j for j in full if (len(cols), j) in _KEY_LAYOUTS]
        return known[0] if known else full[0]
    if full:
        return full[0]
    counts = [sum(tok in keys for tok in col) for col in cols]
    best = int(np.argmax(counts))
    return best if counts[best] else None


def _generic_names(n: int, key_at: int) -> tuple[str, ...]:
    """Column names of an unknown layout with the key in column ``key_at`` (0-based)."""
    names = [f"col{j + 1}" for j in range(n)]
    names[key_at] = "key"
    if key_at == 1:  # UTT KEY ...
        names[0] = "utt"
    elif key_at == 2:  # UTT ATTACK KEY ...
        names[0], names[1] = "utt", "attack"
    else:  # SPEAKER UTT ... ATTACK KEY ...
        names[0], names[1], names[key_at - 1] = "speaker", "utt", "attack"
    return tuple(names)


# --- CM score files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CmScores:
    """CM scores with their keys.

    Attributes
    ----------
    path : str
    format : str
        ``2019``, ``2019-4col``, ``2021`` or ``asvspoof5``.
    utt_ids : list of str
    scores : np.ndarray
        float64, higher = more bona fide.
    labels : np.ndarray
        int8, 1 bona fide, 0 spoof.
    attacks : np.ndarray
        str, ``-`` for bona fide.
    columns : dict of str to np.ndarray
        Extra key-file columns (empty without a key file).
    lines : np.ndarray
        1-based line of every score.
    """

    path: str
    format: str
    utt_ids: list[str]
    scores: np.ndarray
    labels: np.ndarray
    attacks: np.ndarray
    columns: dict[str, np.ndarray]
    lines: np.ndarray

    @property
    def bonafide(self) -> np.ndarray:
        """Scores of the bona fide trials."""
        return self.scores[self.labels == 1]

    @property
    def spoof(self) -> np.ndarray:
        """Scores of the spoofed trials."""
        return self.scores[self.labels == 0]


def read_cm_scores(
    path: str | os.PathLike,
    protocol: str | os.PathLike | KeyFile | None = None,
    *,
    allow_missing: bool = False,
) -> CmScores:
    """Read a CM score file, joined with its key file when one is given or needed.

    Parameters
    ----------
    path : str or os.PathLike
        The score file (2019 6-column, 2019 4-column, 2021 ``UTT SCORE`` or ASVspoof 5 tsv).
    protocol : str, os.PathLike or KeyFile, optional
        The key file. Required for the 2021 and ASVspoof 5 formats; with a 2019 file it adds
        the protocol's columns and must agree with the file's keys. The score file must
        score every trial of the key file and nothing else.
    allow_missing : bool, default False
        Evaluate the trials that are in both files when the score file misses trials of the
        key file or scores utterances that are not in it, with a :class:`CoverageWarning`
        giving the counts (instead of an error). Duplicated utterances stay an error.

    Returns
    -------
    CmScores
        In the order of the score file.

    Raises
    ------
    ScoreFileError
        Unreadable/empty file, ragged or unknown layout, non-numeric or non-finite score,
        unknown key, duplicate utterance, trials of the key file without a score or scores
        of utterances that are not in it (counts and the first ids; unless
        ``allow_missing``), no utterance in common, no bona fide or no spoof trials.

    Warns
    -----
    CoverageWarning
        With ``allow_missing``, when the files do not hold the same utterances.

    Examples
    --------
    >>> cm = read_cm_scores("scores.txt")  # doctest: +SKIP
    >>> cm.bonafide.size, cm.spoof.size  # doctest: +SKIP
    (2548, 22296)
    """
    table = _read_table(path, "score file")
    p = table.path
    layout, by_name, lines = _score_columns(table)
    fmt, utts, score_col = layout.format, by_name[UTT], by_name[SCORE]
    labels = attacks = None
    if layout.has_keys:
        labels = (_parse_keys(p, by_name[KEY], lines, CM_KEYS) == 0).astype(np.int8)
        attacks = _attacks([by_name[ATTACK]], by_name[KEY])
    scores = _parse_scores(p, score_col, lines)
    index = _index_ids(p, utts, lines, "utterance")
    columns: dict[str, np.ndarray] = {}
    if protocol is None and labels is None:
        raise ScoreFileError(
            p, f"scores in the {fmt} format carry no keys: give the key file (--protocol)"
        )
    if protocol is not None:
        key = protocol if isinstance(protocol, KeyFile) else read_key_file(protocol)
        rows = _join(p, utts, lines, index, key, allow_missing)
        keep = np.flatnonzero(rows >= 0)
        if keep.size < len(utts):  # allow_missing: only the trials in both files
            rows = rows[keep]
            utts = [utts[i] for i in keep.tolist()]
            scores, lines = scores[keep], lines[keep]
            if labels is not None:
                labels, attacks = labels[keep], attacks[keep]
        if labels is not None:
            bad = np.flatnonzero(labels != key.labels[rows])
            if bad.size:
                i = int(bad[0])
                raise ScoreFileError(
                    p,
                    f"key of {utts[i]!r} disagrees with {key.path}:{int(key.lines[rows[i]])}",
                    int(lines[i]),
                )
        labels = key.labels[rows]
        attacks = key.attacks[rows]
        columns = {k: v[rows] for k, v in key.columns.items()}
    assert labels is not None and attacks is not None
    n_bona = int(np.count_nonzero(labels))
    if n_bona == 0:
        raise ScoreFileError(p, "no bona fide trials")
    if n_bona == labels.size:
        raise ScoreFileError(p, "no spoof trials")
    return CmScores(
        path=p,
        format=fmt,
        utt_ids=utts,
        scores=scores,
        labels=labels,
        attacks=attacks,
        columns=columns,
        lines=lines,
    )


_TSV_SCORE_LAYOUT = next(x for x in SCORE_LAYOUTS if x.header is not None)
_SCORE_LAYOUT_BY_COUNT = {len(x.columns): x for x in SCORE_LAYOUTS if x.header is None}


def _score_columns(table: _Table) -> tuple[ScoreLayout, dict[str, list[str]], np.ndarray]:
    """A CM score file's layout, its columns by name and the line of every score."""
    first = table.row(0)
    tsv = _TSV_SCORE_LAYOUT
    assert tsv.header is not None
    utt_name, score_name = (tsv.header[tsv.columns.index(c)] for c in (UTT, SCORE))
    if score_name in first:
        names = [ASVSPOOF5_TSV_NAMES.get(n, n) for n in first]
        if UTT not in names:
            raise ScoreFileError(
                table.path, f"header has {score_name!r} but no {utt_name!r} column", 1
            )
        if table.counts.size < 2:
            raise ScoreFileError(table.path, "score file has a header but no scores")
        by_name = dict(zip(names, table.columns(first_row=1), strict=True))
        return tsv, {UTT: by_name[UTT], SCORE: by_name[score_name]}, table.lines[1:]
    cols = table.columns()
    layout = _SCORE_LAYOUT_BY_COUNT.get(len(cols))
    if layout is None:
        expected = ", ".join(f"{n} '{x.heading}'" for n, x in _SCORE_LAYOUT_BY_COUNT.items())
        raise ScoreFileError(
            table.path,
            f"unrecognised score file: {len(cols)} columns (expected {expected} or an "
            "ASVspoof 5 tsv)",
            int(table.lines[0]),
        )
    return layout, dict(zip(layout.columns, cols, strict=True)), table.lines


def _join(
    path: str,
    utts: list[str],
    lines: np.ndarray,
    index: dict[str, int],
    key: KeyFile,
    allow_missing: bool = False,
) -> np.ndarray:
    """Row of every scored utterance in the key file (``-1``: not in it).

    Both files must hold the same utterances; with ``allow_missing`` a difference is a
    :class:`CoverageWarning` instead of an error (the caller keeps the rows ``>= 0``).
    """
    get = key.index.get
    rows = np.fromiter((get(u, -1) for u in utts), dtype=np.int64, count=len(utts))
    extra = np.flatnonzero(rows < 0)
    n_both = len(utts) - extra.size
    n_missing = len(key.index) - n_both  # neither file repeats an utterance
    if not extra.size and not n_missing:
        return rows
    problems = []
    if n_missing:
        unscored = _take((u for u in key.utt_ids if u not in index), 4)
        first = int(key.lines[key.index[unscored[0]]])
        verb = "has" if n_missing == 1 else "have"
        problems.append(
            f"{n_missing} of its {len(key.index)} trials {verb} no score ({_few(unscored)}; "
            f"first on line {first} of the key file)"
        )
    if extra.size:
        verb = "is" if extra.size == 1 else "are"
        problems.append(
            f"{extra.size} of the {len(utts)} scored utterances {verb} not in it "
            f"({_few([utts[i] for i in extra[:4].tolist()])}; first on line "
            f"{int(lines[extra[0]])})"
        )
    what = f"the key file {key.path}: {'; '.join(problems)}"
    if n_both == 0:
        raise ScoreFileError(path, f"no utterance in common with {what}")
    if not allow_missing:
        raise ScoreFileError(
            path,
            f"does not match {what}; give the key file of these scores, or --allow-missing "
            f"to evaluate the {n_both} trials in both",
        )
    warnings.warn(
        f"{path}: evaluating the {n_both} trials it shares with {what}",
        CoverageWarning,
        stacklevel=3,
    )
    return rows


def _take(items, n: int) -> list:
    return [x for _, x in zip(range(n), items, strict=False)]


# --- writing CM score files ------------------------------------------------------------------


def write_score_file(
    path: str | os.PathLike,
    utt_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    *,
    format: str = "asvspoof2019",
    speakers: Sequence[str] | None = None,
    systems: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> Path:
    """Write CM scores in an ASVspoof layout, atomically, with full float precision.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (its directory is created).
    utt_ids : sequence of str
        Utterance ids, in the order to write.
    scores : sequence of float
        Finite scores (higher = bona fide), written with ``repr`` (exact float64).
    format : {"asvspoof2019", "asvspoof2021", "asvspoof5"}, default "asvspoof2019"
        ``SPEAKER UTT - SYSTEM KEY SCORE``, ``UTT SCORE`` or the ASVspoof 5 tsv
        (header ``filename<TAB>cm-score``); see :data:`SCORE_FORMATS`.
    speakers, systems, keys : sequence of str, optional
        Needed by ``asvspoof2019``: speaker (``-`` if none), attack id (``-`` for bona fide)
        and ``bonafide``/``spoof`` per utterance.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        Unknown format, lengths differ, non-finite scores, or a 2019 file without keys.
    ScoreFileError
        The file cannot be written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.txt"
    >>> _ = write_score_file(p, ["LA_E_1", "LA_E_2"], [0.5, -1.25], format="asvspoof2021")
    >>> p.read_text()
    'LA_E_1 0.5\\nLA_E_2 -1.25\\n'
    """
    layout = score_layout(format)
    ids = [str(u) for u in utt_ids]
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (len(ids),):
        raise ValueError(f"{len(ids)} utterance ids but scores of shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    columns = {UTT: ids, SCORE: [repr(float(s)) for s in values]}
    if layout.has_keys:
        columns.update(_key_columns(layout, len(ids), speakers, systems, keys))
    sep = layout.separator
    columns[NO_VALUE] = [NO_VALUE] * len(ids)
    rows = zip(*(columns[c] for c in layout.columns), strict=True)
    lines = [sep.join(layout.header) + "\n"] if layout.header else []
    lines += [sep.join(row) + "\n" for row in rows]
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes("".join(lines).encode("utf-8"))
    except OSError as exc:
        raise ScoreFileError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


def _key_columns(
    layout: ScoreLayout,
    n: int,
    speakers: Sequence[str] | None,
    systems: Sequence[str] | None,
    keys: Sequence[str] | None,
) -> dict[str, list[str]]:
    """The speaker, attack and key columns of a layout with keys, checked."""
    if speakers is None or systems is None or keys is None:
        raise ValueError(f"the {layout.name} layout needs speakers, systems and keys")
    cols = [list(map(str, c)) for c in (speakers, systems, keys)]
    if any(len(c) != n for c in cols):
        raise ValueError("speakers, systems and keys must have one entry per utterance")
    bad = [k for k in cols[2] if k not in CM_KEYS]
    if bad:
        raise ValueError(f"the {layout.name} layout needs bonafide/spoof keys, got {bad[0]!r}")
    return dict(zip((SPEAKER, ATTACK, KEY), cols, strict=True))


# --- ASV score files --------------------------------------------------------------------------


@dataclass(frozen=True)
class AsvKeyFile:
    """A parsed ASV key file (ASVspoof 2021 LA/PA ASV ``trial_metadata.txt``).

    Attributes
    ----------
    path : str
    format : str
        ``2021-LA``, ``2021-PA`` or ``generic`` (the CM key layouts, with ASV keys).
    keys : np.ndarray
        int8, index in :data:`featstore.asvspoof_formats.ASV_KEYS` (target, nontarget, spoof).
    attacks : np.ndarray
        str, attack id per trial (``-`` for target and non-target trials).
    lines : np.ndarray
        1-based line of every trial.
    index : dict of (str, str) to int
        Row of every (claimed speaker, utterance) trial.
    """

    path: str
    format: str
    keys: np.ndarray
    attacks: np.ndarray
    lines: np.ndarray
    index: dict[tuple[str, str], int] = field(repr=False)


def read_asv_key_file(path: str | os.PathLike) -> AsvKeyFile:
    """Read an ASV key file: a CM key layout whose key column says target/nontarget/spoof.

    Parameters
    ----------
    path : str or os.PathLike
        E.g. the ASVspoof 2021 eval package's ``keys/LA/ASV/trial_metadata.txt``
        (``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``).

    Returns
    -------
    AsvKeyFile

    Raises
    ------
    ScoreFileError
        Unreadable or empty file, ragged columns, no key column, unknown key, no speaker
        column, duplicate (speaker, utterance) trial.
    """
    table = _read_table(path, "ASV key file")
    p, cols, lines = table.path, table.columns(), table.lines
    keys = set(ASV_KEYS)
    counts = [sum(tok in keys for tok in col) for col in cols]
    key_at = int(np.argmax(counts))
    if counts[key_at] == 0 or key_at < 2:
        raise ScoreFileError(
            p,
            "no ASV key column: expected 'SPEAKER TRIAL ... target|nontarget|spoof ...'",
            int(lines[0]),
        )
    layout = _KEY_LAYOUTS.get((len(cols), key_at))
    names = layout.columns if layout is not None else _generic_names(len(cols), key_at)
    by_name = dict(zip(names, cols, strict=True))
    if BONAFIDE in by_name[KEY] and not set(by_name[KEY]) & {"target", "nontarget"}:
        raise ScoreFileError(
            p,
            "a CM key file (bonafide/spoof), not an ASV one (target/nontarget/spoof, e.g. "
            "the eval package's keys/LA/ASV/trial_metadata.txt)",
        )
    codes = _parse_keys(p, by_name[KEY], lines, ASV_KEYS)
    attack_from = layout.attack if layout is not None else (ATTACK,)
    attacks = _attacks([by_name[c] for c in attack_from if c in by_name], by_name[KEY])
    pairs = [f"{s} {u}" for s, u in zip(by_name[SPEAKER], by_name[UTT], strict=True)]
    _index_ids(p, pairs, lines, "trial")
    trials = zip(by_name[SPEAKER], by_name[UTT], strict=True)
    index = dict(zip(trials, range(len(pairs)), strict=True))
    return AsvKeyFile(
        path=p,
        format="generic" if layout is None else (layout.key_file_format or layout.name),
        keys=codes,
        attacks=attacks,
        lines=lines,
        index=index,
    )


def read_asv_scores(
    path: str | os.PathLike, key: str | os.PathLike | AsvKeyFile | None = None
) -> AsvScores:
    """Read ASV scores (6-column, the 2019 database's 3-column, or 2021 with a key file).

    Parameters
    ----------
    path : str or os.PathLike
        ``SPEAKER UTT - bonafide|ATTACK target|nontarget|spoof SCORE``,
        ``bonafide|ATTACK target|nontarget|spoof SCORE`` or the ASVspoof 2021
        ``ASV_SPK TRIAL SCORE`` (which needs ``key``).
    key : str, os.PathLike or AsvKeyFile, optional
        The ASV key file of a 2021 score file (:func:`read_asv_key_file`); every trial of it
        must be scored, and nothing else.

    Returns
    -------
    AsvScores
        Target, non-target and spoof scores, with the attack of every spoof trial and
        (6 columns, 2021) the utterance of every trial.

    Raises
    ------
    ScoreFileError
        Bad layout, non-numeric or non-finite score, unknown key, duplicate
        (speaker, utterance) trial, no target, no non-target or no spoof trials; a 2021
        file without ``key`` or not covering it; ``key`` with a file that has its own keys.

    Examples
    --------
    >>> asv = read_asv_scores("asv_official.txt")  # doctest: +SKIP
    >>> asv.target.size, asv.nontarget.size, asv.spoof.size  # doctest: +SKIP
    (1484, 5768, 22296)
    """
    table = _read_table(path, "ASV score file")
    p = table.path
    cols = table.columns()
    lines = table.lines
    utt_ids = None
    if len(cols) == 3 and not any(tok in ASV_KEYS for tok in cols[1]):
        if key is None:
            raise ScoreFileError(
                p,
                "ASV scores in the 2021 layout 'ASV_SPK TRIAL SCORE' carry no keys: give the "
                "ASV key file (--asv-protocol, the eval package's keys/LA/ASV/trial_metadata.txt)",
            )
        asv_key = key if isinstance(key, AsvKeyFile) else read_asv_key_file(key)
        by_name = dict(zip(ASV_SCORE_COLUMNS_2021, cols, strict=True))
        rows = _join_asv(p, by_name[SPEAKER], by_name[UTT], lines, asv_key)
        codes, att = asv_key.keys[rows], asv_key.attacks[rows]
        score_col, utt_ids = by_name[SCORE], np.array(by_name[UTT])
    elif key is not None:
        raise ScoreFileError(
            p,
            "an ASV key file (--asv-protocol) is for 2021 'ASV_SPK TRIAL SCORE' files; "
            "this file holds its own keys",
        )
    elif len(cols) in (6, 3):
        att_col, key_col, score_col = cols[-3:]
        if len(cols) == 6:
            pairs = [f"{s} {u}" for s, u in zip(cols[0], cols[1], strict=True)]
            _index_ids(p, pairs, lines, "trial")
            utt_ids = np.array(cols[1])
        codes, att = _parse_keys(p, key_col, lines, ASV_KEYS), np.array(att_col)
    else:
        raise ScoreFileError(
            p,
            f"unrecognised ASV score file: {len(cols)} columns (expected 6 'SPEAKER UTT - "
            "bonafide|ATTACK target|nontarget|spoof SCORE', 3 'bonafide|ATTACK "
            "target|nontarget|spoof SCORE' or 3 'ASV_SPK TRIAL SCORE' with --asv-protocol)",
            int(lines[0]),
        )
    scores = _parse_scores(p, score_col, lines)
    for code, name in enumerate(ASV_KEYS):
        if not np.any(codes == code):
            why = " (the t-DCF needs them)" if name == "spoof" else ""
            raise ScoreFileError(p, f"no {name} trials{why}")
    is_spoof = codes == 2
    return AsvScores(
        target=scores[codes == 0],
        nontarget=scores[codes == 1],
        spoof=scores[is_spoof],
        spoof_attacks=att[is_spoof],
        utt_ids=utt_ids,
    )


def _join_asv(
    path: str, speakers: list[str], utts: list[str], lines: np.ndarray, key: AsvKeyFile
) -> np.ndarray:
    """Row of every (speaker, utterance) trial in the ASV key file; both hold the same."""
    _index_ids(path, [f"{s} {u}" for s, u in zip(speakers, utts, strict=True)], lines, "trial")
    get = key.index.get
    rows = np.fromiter(
        (get(t, -1) for t in zip(speakers, utts, strict=True)), dtype=np.int64, count=len(utts)
    )
    extra = np.flatnonzero(rows < 0)
    n_missing = len(key.index) - (len(utts) - extra.size)
    if extra.size or n_missing:
        problems = []
        if n_missing:
            scored = set(zip(speakers, utts, strict=True))
            unscored = _take((" ".join(t) for t in key.index if t not in scored), 4)
            problems.append(
                f"{n_missing} of its {len(key.index)} trials have no score ({_few(unscored)})"
            )
        if extra.size:
            first = [f"{speakers[i]} {utts[i]}" for i in extra[:4].tolist()]
            problems.append(
                f"{extra.size} of the {len(utts)} scored trials are not in it ({_few(first)}; "
                f"first on line {int(lines[extra[0]])})"
            )
        raise ScoreFileError(
            path, f"does not match the ASV key file {key.path}: {'; '.join(problems)}"
        )
    return rows


def check_asv_scores(cm: CmScores, asv: AsvScores, asv_path: str | os.PathLike) -> None:
    """Refuse ASV scores that are not of the trials of the CM scores ``cm``.

    The t-DCF combines both systems' errors on the same trials: ASV scores of another
    partition (dev ASV scores with eval CM scores) give a plausible but meaningless value.

    Parameters
    ----------
    cm : CmScores
    asv : AsvScores
        From :func:`read_asv_scores`.
    asv_path : str or os.PathLike
        The ASV score file, for messages.

    Raises
    ------
    ScoreFileError
        The files have no utterance in common (when the ASV file names them), no spoofing
        attack in common, or an attack of the CM scores has no ASV spoof trials.
    """
    where = os.fspath(asv_path)
    hint = "give the ASV scores of the same partition (dev with dev, eval with eval)"
    if asv.utt_ids is not None and not set(cm.utt_ids).intersection(asv.utt_ids.tolist()):
        raise ScoreFileError(
            where,
            f"no utterance in common with the CM scores {cm.path} (ASV {_few(asv.utt_ids)}; "
            f"CM {_few(cm.utt_ids)}): the ASV scores are of other trials; {hint}",
        )
    if asv.spoof_attacks is None:
        return
    cm_attacks = set(np.unique(cm.attacks[cm.labels == 0]).tolist()) - {NO_VALUE}
    asv_attacks = set(np.unique(asv.spoof_attacks).tolist())
    lacking = cm_attacks - asv_attacks
    if not lacking:
        return
    if not cm_attacks & asv_attacks:
        what = (
            f"no spoofing attack in common with the CM scores {cm.path} (ASV "
            f"{_attack_list(asv_attacks)}; CM {_attack_list(cm_attacks)}): the ASV scores "
            "are of another partition or database"
        )
    else:
        what = (
            f"no spoof trials of {_attack_list(lacking)}, which the CM scores {cm.path} hold "
            f"(ASV {_attack_list(asv_attacks)})"
        )
    raise ScoreFileError(where, f"{what}; {hint}")


def _attack_list(attacks: set[str]) -> str:
    """``attacks A07, A08, ...`` in natural order (``A2`` before ``A10``)."""
    names = sorted(attacks, key=lambda a: (len(a), a))
    label = "attack" if len(names) == 1 else "attacks"
    return f"{label} {', '.join(names)}"


# --- score files -> metrics -------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreFileResult:
    """The metrics of one CM score file (see :func:`evaluate_score_files`)."""

    cm: CmScores
    metrics: MetricSet
    by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON record: ``score_file``, ``format``, ``by`` and :meth:`MetricSet.to_dict`."""
        return {
            "score_file": self.cm.path,
            "format": self.cm.format,
            "by": self.by,
            **self.metrics.to_dict(),
        }


def evaluate_score_files(
    paths: Sequence[str | os.PathLike],
    *,
    asv_scores: str | os.PathLike | None = None,
    protocol: str | os.PathLike | None = None,
    by: str = "attack",
    allow_missing: bool = False,
    asv_protocol: str | os.PathLike | None = None,
) -> list[ScoreFileResult]:
    """Read CM score files (and ASV scores, key file) and compute all their metrics.

    Parameters
    ----------
    paths : sequence of path
        One or more CM score files.
    asv_scores : path, optional
        ASV score file; enables min t-DCF (revised and legacy).
    protocol : path, optional
        Key file, read once and joined with every score file.
    by : str
        ``attack`` (per-attack breakdown only) or a key-file column (``codec``, ...), which is
        added as ``per_condition[by]``.
    allow_missing : bool, default False
        Evaluate each score file on the trials it shares with ``protocol`` (see
        :func:`read_cm_scores`) instead of refusing a file that does not cover the key file.
    asv_protocol : path, optional
        ASV key file of ASVspoof 2021 ``ASV_SPK TRIAL SCORE`` ASV scores
        (:func:`read_asv_key_file`).

    Returns
    -------
    list of ScoreFileResult
        In the order of ``paths``.

    Raises
    ------
    ScoreFileError
        A malformed or inconsistent file (named with its line), a score file that does not
        cover the key file, ASV scores of other trials (:func:`check_asv_scores`).
    MetricsError
        ``by`` is not a column of the key file, or a metric cannot be computed.

    Examples
    --------
    >>> [r.metrics.eer for r in evaluate_score_files(["scores.txt"])]  # doctest: +SKIP
    [0.014924536097456288]
    """
    key = read_key_file(protocol) if protocol is not None else None
    if asv_protocol is not None and asv_scores is None:
        raise ScoreFileError(asv_protocol, "an ASV key file needs its ASV scores (--asv-scores)")
    asv = read_asv_scores(asv_scores, asv_protocol) if asv_scores is not None else None
    results = []
    for path in paths:
        cm = read_cm_scores(path, key, allow_missing=allow_missing)
        if asv is not None:
            assert asv_scores is not None
            check_asv_scores(cm, asv, asv_scores)
        conditions = None
        if by != "attack":
            if by not in cm.columns:
                where = f"the key file {key.path}" if key is not None else "a score file alone"
                have = ", ".join(["attack", *sorted(cm.columns)])
                raise MetricsError(f"--by {by!r}: no such column in {where} (columns: {have})")
            conditions = {by: cm.columns[by]}
        try:
            m = compute_metrics(
                cm.scores, cm.labels, attacks=cm.attacks, conditions=conditions, asv=asv
            )
        except MetricsError as exc:
            raise MetricsError(f"{cm.path}: {exc}") from None
        results.append(ScoreFileResult(cm=cm, metrics=m, by=by))
    return results


def results_to_json(results: Sequence[ScoreFileResult]) -> dict[str, Any]:
    """The ``--json`` document: one file's record, or ``{"results": [record, ...]}``.

    Parameters
    ----------
    results : sequence of ScoreFileResult

    Returns
    -------
    dict
        With one result, its :meth:`ScoreFileResult.to_dict`; with several,
        ``{"results": [...]}`` in the order the files were given.
    """
    if len(results) == 1:
        return results[0].to_dict()
    return {"results": [r.to_dict() for r in results]}
