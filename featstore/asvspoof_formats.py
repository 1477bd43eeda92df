"""The ASVspoof file formats, described once: protocol/key layouts and score-file layouts.

This module is a table, not a reader. :mod:`featstore.manifests` (protocol files into store
records) and :mod:`trainer.scorefiles` (key files, score files for ``trainer metrics``) both
read it, so a column has one name, an attack id one rule and a layout one id everywhere. It
imports nothing but the standard library, so featstore and trainer can both depend on it.

Key (protocol) layouts, :data:`KEY_LAYOUTS`, one :class:`KeyLayout` each:

- the column names, lower case, in file order. Four names are roles every layout shares:
  ``speaker``, ``utt`` (the utterance / trial id), ``attack`` and ``key``
  (``bonafide``/``spoof``); a column named ``-`` is unused and holds ``-``. Other columns
  keep the name the format's documentation gives them (for ASVspoof 2021 PA the eval
  package's ``config.py``: ``asv_room asv_mic dis_to_asv att_room att_mic att_d
  att_to_spk``);
- the attack rule: the columns the attack id is made of, joined (see :func:`attack_id`). For
  ASVspoof 2021 PA it is ``att_to_spk + att_d`` (``c4s4``: attacker-to-talker distance, then
  replay device quality), the order of ASVspoof 2019 PA's two-letter ids (``AA``: distance
  then device);
- the ids: :attr:`KeyLayout.name` (the protocol format of :mod:`featstore.manifests`) and
  :attr:`KeyLayout.key_file_format` (the format ``trainer metrics`` reports for a key file);
- :attr:`KeyLayout.store_names`: the few columns a feature store's index names differently
  (``env`` is ``environment`` there, 2021 PA's ``att_d`` is ``replay_device``, ...). Stores
  record these names, so they stay.

Score-file layouts, :data:`SCORE_LAYOUTS`, one :class:`ScoreLayout` each: columns (same role
names plus ``score``), the id ``trainer metrics`` reports and the name ``trainer score
--format`` writes (:data:`SCORE_FORMATS`).

Sources: the ASVspoof 2019 LA/PA READMEs; the ASVspoof 2021 eval package (``config.py``
``p_names``, github.com/asvspoof-challenge/2021); the ASVspoof 2017 V2 protocol README; the
ASVspoof 5 database README and the challenge baselines.

Examples
--------
>>> layout = KEY_LAYOUTS["asvspoof2021-pa"]
>>> line = "PA_0010 PA_E_1000001 R3 M3 d4 r1 m1 s4 c4 spoof notrim eval".split()
>>> row = dict(zip(layout.columns, line))
>>> attack_id([row[c] for c in layout.attack], row["key"])
'c4s4'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "ASVSPOOF5_TSV_NAMES",
    "ASV_KEYS",
    "ASV_SCORE_COLUMNS_2021",
    "ATTACK",
    "BONAFIDE",
    "CM_KEYS",
    "KEY",
    "KEY_LAYOUTS",
    "NO_VALUE",
    "SCORE",
    "SCORE_FORMATS",
    "SCORE_LAYOUTS",
    "SPEAKER",
    "SPOOF",
    "UTT",
    "KeyLayout",
    "ScoreLayout",
    "attack_id",
    "attack_ids",
    "key_file_layouts",
    "score_layout",
]

BONAFIDE = "bonafide"
"""The key of a bona fide trial."""

SPOOF = "spoof"
"""The key of a spoofed trial."""

CM_KEYS = (BONAFIDE, SPOOF)
"""The keys of a countermeasure protocol."""

ASV_KEYS = ("target", "nontarget", SPOOF)
"""The keys of an ASV score file."""

ASV_SCORE_COLUMNS_2021 = ("speaker", "utt", "score")
"""The ASVspoof 2021 ASV score file: ``ASV_SPK TRIAL SCORE`` (eval package ``config.py``,
``s_names_asv``), claimed speaker, utterance, score. Its keys are in the ASV
``trial_metadata.txt``, which has the layout of the CM one of its track (LA or PA) with
``target``/``nontarget``/``spoof`` in the key column."""

NO_VALUE = "-"
""""None": the attack of a bona fide trial, a missing speaker, an unused column."""

SPEAKER, UTT, ATTACK, KEY, SCORE = "speaker", "utt", "attack", "key", "score"
"""Names of the columns every layout shares (roles)."""

_ROLES = frozenset({SPEAKER, UTT, ATTACK, KEY, SCORE, NO_VALUE})
_NOT_AN_ATTACK = frozenset({NO_VALUE, BONAFIDE})


# ----------------------------------------------------------------------------- attack rule


def attack_id(parts: Sequence[str], key: str | None, separator: str = "") -> str:
    """The attack id of one trial: its attack columns joined, ``-`` for bona fide.

    Parameters
    ----------
    parts : sequence of str
        The values of the layout's :attr:`KeyLayout.attack` columns, in that order.
    key : str or None
        The trial's key; ``bonafide`` gives ``-`` whatever the attack columns say.
    separator : str, default ""
        Put between the parts (:attr:`KeyLayout.attack_separator`).

    Returns
    -------
    str
        ``-`` for a bona fide trial or when every part is ``-`` or ``bonafide`` (2021 and
        ASVspoof 5 keys say ``bonafide`` in the attack column), else the joined parts.

    Examples
    --------
    >>> attack_id(["A07"], "spoof")
    'A07'
    >>> attack_id(["bonafide"], "bonafide")
    '-'
    >>> attack_id(["c4", "s4"], "spoof")
    'c4s4'
    >>> attack_id(["E01", "P01", "R01"], "spoof", "-")
    'E01-P01-R01'
    """
    if key == BONAFIDE or _NOT_AN_ATTACK.issuperset(parts):
        return NO_VALUE
    return separator.join(parts)


def attack_ids(
    columns: Sequence[Sequence[str]], keys: Sequence[str | None], separator: str = ""
) -> list[str]:
    """:func:`attack_id` of every trial of a table, given its attack columns.

    Parameters
    ----------
    columns : sequence of sequences of str
        The layout's attack columns, each with one value per trial.
    keys : sequence of str or None
        The key of every trial.
    separator : str, default ""
        Put between the parts.

    Returns
    -------
    list of str
        One attack id per trial.

    Examples
    --------
    >>> attack_ids([["-", "A07", "bonafide"]], ["bonafide", "spoof", "spoof"])
    ['-', 'A07', '-']
    >>> attack_ids([["c4", "-"], ["s4", "-"]], ["spoof", "spoof"])
    ['c4s4', '-']
    """
    if len(columns) == 1:
        no = _NOT_AN_ATTACK
        return [
            NO_VALUE if k == BONAFIDE or a in no else a
            for a, k in zip(columns[0], keys, strict=True)
        ]
    rows = zip(*columns, strict=True)
    return [attack_id(parts, k, separator) for parts, k in zip(rows, keys, strict=True)]


# ----------------------------------------------------------------------------- key layouts


@dataclass(frozen=True)
class KeyLayout:
    """One layout of an ASVspoof protocol / key file.

    Attributes
    ----------
    name : str
        Layout id; the protocol format of :mod:`featstore.manifests` (``"asvspoof2021-pa"``).
    title : str
        For messages (``"ASVspoof 2021 PA keys"``).
    heading : str
        The columns as the format's documentation heads them, for messages.
    columns : tuple of str
        Column names in file order (see the module docstring for the role names).
    attack : tuple of str
        The columns the attack id is made of (empty: the layout has no attacks).
    attack_separator : str
        Joins the :attr:`attack` columns.
    bonafide_label : str
        The key column's word for bona fide (``"genuine"`` in ASVspoof 2017).
    utt_suffixes : tuple of str
        File extensions stripped from the utterance column (ASVspoof 2017 names files).
    store_names : Mapping[str, str]
        Column name -> the name a feature store's index gives it, where they differ.
    key_file_format : str or None
        The format id :func:`trainer.scorefiles.read_key_file` gives a file in this layout,
        which it recognises by column count and key column; ``None`` if it does not.
    protocol : bool
        :mod:`featstore.manifests` reads this layout (from a protocol file's name).
    """

    name: str
    title: str
    heading: str
    columns: tuple[str, ...]
    attack: tuple[str, ...] = (ATTACK,)
    attack_separator: str = ""
    bonafide_label: str = BONAFIDE
    utt_suffixes: tuple[str, ...] = ()
    store_names: Mapping[str, str] = field(default_factory=dict, hash=False)
    key_file_format: str | None = None
    protocol: bool = True

    def __post_init__(self) -> None:
        unknown = [c for c in (*self.attack, *self.store_names) if c not in self.columns]
        if unknown or UTT not in self.columns:
            raise ValueError(f"layout {self.name}: no column {(unknown or [UTT])[0]!r}")

    @property
    def n_columns(self) -> int:
        """Number of columns."""
        return len(self.columns)

    @property
    def key_column(self) -> int | None:
        """0-based index of the key column; ``None`` for key-less lists."""
        return self.columns.index(KEY) if KEY in self.columns else None

    @property
    def other_columns(self) -> tuple[str, ...]:
        """The columns that are not roles (codec, subset, ...), in file order."""
        return tuple(c for c in self.columns if c not in _ROLES)

    @property
    def store_columns(self) -> tuple[str, ...]:
        """:attr:`other_columns` as a feature store names them."""
        return tuple(self.store_names.get(c, c) for c in self.other_columns)


def _layout(*args, **kwargs) -> KeyLayout:
    columns = kwargs.pop("columns")
    store_names = kwargs.pop("store_names", {})
    return KeyLayout(
        *args,
        columns=tuple(columns.split()),
        store_names=MappingProxyType(dict(store_names)),
        **kwargs,
    )


_ENV_STORE_NAME = {"env": "environment"}

_LAYOUTS = (
    _layout(
        "asvspoof2019-la",
        "ASVspoof 2019 LA",
        "SPEAKER UTT - SYSTEM KEY",
        columns="speaker utt - attack key",
    ),
    _layout(
        "asvspoof2019-pa",
        "ASVspoof 2019 PA",
        "SPEAKER UTT ENV ATTACK KEY",
        columns="speaker utt env attack key",
        store_names=_ENV_STORE_NAME,
    ),
    _layout(
        "asvspoof2021-la",
        "ASVspoof 2021 LA keys",
        "SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET",
        columns="speaker utt codec transmission attack key trim subset",
        key_file_format="2021-LA",
    ),
    _layout(
        "asvspoof2021-la-placeholder",
        "ASVspoof 2021 LA keys with a placeholder column",
        "SPEAKER TRIAL CODEC TRANSMISSION - ATTACK KEY TRIM SUBSET",
        columns="speaker utt codec transmission col5 attack key trim subset",
        key_file_format="2021-LA",
        protocol=False,
    ),
    _layout(
        "asvspoof2021-df",
        "ASVspoof 2021 DF keys",
        "SPEAKER TRIAL CODEC SOURCE ATTACK KEY TRIM SUBSET VOCODER TASK TEAM GENDER_PAIR LANGUAGE",
        columns="speaker utt codec source attack key trim subset vocoder task team gender_pair "
        "language",
        key_file_format="2021-DF",
    ),
    _layout(
        "asvspoof2021-df-short",
        "ASVspoof 2021 DF keys (first 8 columns)",
        "SPEAKER TRIAL CODEC SOURCE ATTACK KEY TRIM SUBSET",
        columns="speaker utt codec source attack key trim subset",
    ),
    _layout(
        "asvspoof2021-pa",
        "ASVspoof 2021 PA keys",
        "SPEAKER TRIAL ASV_ROOM ASV_MIC DIS_TO_ASV ATT_ROOM ATT_MIC ATT_D ATT_TO_SPK KEY TRIM "
        "SUBSET",
        columns="speaker utt asv_room asv_mic dis_to_asv att_room att_mic att_d att_to_spk key "
        "trim subset",
        attack=("att_to_spk", "att_d"),
        store_names={
            "dis_to_asv": "asv_distance",
            "att_room": "attacker_room",
            "att_mic": "attacker_mic",
            "att_d": "replay_device",
            "att_to_spk": "attacker_distance",
        },
        key_file_format="2021-PA",
    ),
    _layout(
        "asvspoof2021-list",
        "ASVspoof 2021 trial list",
        "TRIAL",
        columns="utt",
        attack=(),
    ),
    _layout(
        "asvspoof2017",
        "ASVspoof 2017 V2",
        "FILE KEY SPEAKER PHRASE ENVIRONMENT PLAYBACK RECORDING",
        columns="utt key speaker phrase environment playback_device recording_device",
        attack=("environment", "playback_device", "recording_device"),
        attack_separator="-",
        bonafide_label="genuine",
        utt_suffixes=(".wav", ".flac"),
    ),
    _layout(
        "asvspoof5",
        "ASVspoof 5",
        "SPEAKER FLAC_FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP",
        columns="speaker utt gender codec codec_q codec_seed attack_tag attack key tmp",
        key_file_format="asvspoof5",
    ),
    _layout(
        "asvspoof5-metadata",
        "ASVspoof 5 (challenge metadata)",
        "SPEAKER FLAC_FILE GENDER CODEC ATTACK KEY",
        columns="speaker utt gender codec attack key",
    ),
    _layout(
        "cm",
        "CM protocol",
        "SPEAKER UTT ENV SYSTEM KEY",
        columns="speaker utt env attack key",
        store_names=_ENV_STORE_NAME,
        key_file_format="2019",
    ),
)

KEY_LAYOUTS: Mapping[str, KeyLayout] = MappingProxyType({x.name: x for x in _LAYOUTS})
"""Every key / protocol layout by :attr:`KeyLayout.name`."""


def key_file_layouts() -> dict[tuple[int, int], KeyLayout]:
    """The layouts a key file is recognised by: ``(n_columns, key_column) -> layout``.

    Examples
    --------
    >>> key_file_layouts()[(12, 9)].key_file_format
    '2021-PA'
    """
    out: dict[tuple[int, int], KeyLayout] = {}
    for layout in _LAYOUTS:
        if layout.key_file_format is not None and layout.key_column is not None:
            out.setdefault((layout.n_columns, layout.key_column), layout)
    return out


ASVSPOOF5_TSV_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "filename": UTT,
        "trial_anon": UTT,
        "cm-label": KEY,
        "attack_anon": ATTACK,
        "tar_spk_anon": SPEAKER,
        "spk": SPEAKER,
    }
)
"""Header names of ASVspoof 5 tsv key and score files -> the column names used here."""


# ----------------------------------------------------------------------------- score layouts


@dataclass(frozen=True)
class ScoreLayout:
    """One layout of a CM score file.

    Attributes
    ----------
    format : str
        The id :func:`trainer.scorefiles.read_cm_scores` reports (``"2019"``).
    name : str or None
        The name :func:`trainer.scorefiles.write_score_file` and ``trainer score --format``
        take (``"asvspoof2019"``); ``None`` for a layout that is read, not written.
    columns : tuple of str
        Column names (roles and ``score``), in file order.
    heading : str
        The columns as the documentation heads them, for messages.
    header : tuple of str or None
        The header line's names (tab-separated file) or ``None`` (no header,
        whitespace-separated).
    """

    format: str
    name: str | None
    columns: tuple[str, ...]
    heading: str
    header: tuple[str, ...] | None = None

    @property
    def separator(self) -> str:
        """Written between columns: a tab with a header, else a space."""
        return "\t" if self.header else " "

    @property
    def has_keys(self) -> bool:
        """The file holds the key of every trial (it is read without a key file)."""
        return KEY in self.columns


SCORE_LAYOUTS: tuple[ScoreLayout, ...] = (
    ScoreLayout(
        "2019",
        "asvspoof2019",
        (SPEAKER, UTT, NO_VALUE, ATTACK, KEY, SCORE),
        "SPEAKER UTT - SYSTEM KEY SCORE",
    ),
    ScoreLayout("2019-4col", None, (UTT, ATTACK, KEY, SCORE), "UTT SYSTEM KEY SCORE"),
    ScoreLayout("2021", "asvspoof2021", (UTT, SCORE), "UTT SCORE"),
    ScoreLayout(
        "asvspoof5", "asvspoof5", (UTT, SCORE), "filename<TAB>cm-score", ("filename", "cm-score")
    ),
)
"""Every CM score-file layout; the header-less ones are told apart by their column count."""

SCORE_FORMATS = tuple(x.name for x in SCORE_LAYOUTS if x.name is not None)
"""Score file layouts :func:`trainer.scorefiles.write_score_file` writes, by name."""


def score_layout(name: str) -> ScoreLayout:
    """The score layout written under ``name`` (one of :data:`SCORE_FORMATS`).

    Raises
    ------
    ValueError
        ``name`` is not one of :data:`SCORE_FORMATS`.

    Examples
    --------
    >>> score_layout("asvspoof2021").columns
    ('utt', 'score')
    """
    for layout in SCORE_LAYOUTS:
        if layout.name == name:
            return layout
    raise ValueError(f"format must be one of {', '.join(SCORE_FORMATS)}, got {name!r}")
