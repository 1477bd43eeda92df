"""featstore.asvspoof_formats: the one table of ASVspoof layouts, and both readers following it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featstore.asvspoof_formats import (
    ASV_KEYS,
    BONAFIDE,
    CM_KEYS,
    KEY,
    KEY_LAYOUTS,
    NO_VALUE,
    SCORE,
    SCORE_FORMATS,
    SCORE_LAYOUTS,
    SPEAKER,
    UTT,
    attack_id,
    attack_ids,
    key_file_layouts,
    score_layout,
)
from featstore.manifests import EXTRA_COLUMNS, read_manifest
from trainer.scorefiles import read_key_file

# the official 2021 eval package's example line (config.py, ConfigPA)
PA_LINE = "PA_0010 PA_E_1000001 R3 M3 d4 r1 m1 s4 c4 spoof notrim eval"

# a protocol file name for every layout featstore reads
FILE_NAMES = {
    "asvspoof2019-la": "ASVspoof2019.LA.cm.train.trn.txt",
    "asvspoof2019-pa": "ASVspoof2019.PA.cm.dev.trl.txt",
    "asvspoof2021-la": "LA/CM/trial_metadata.txt",
    "asvspoof2021-df": "DF/CM/trial_metadata.txt",
    "asvspoof2021-df-short": "DF/CM/trial_metadata.txt",
    "asvspoof2021-pa": "PA/CM/trial_metadata.txt",
    "asvspoof2021-list": "ASVspoof2021.PA.cm.eval.trl.txt",
    "asvspoof2017": "ASVspoof2017_V2_train.trn.txt",
    "asvspoof5": "ASVspoof5.train.tsv",
    "asvspoof5-metadata": "ASVspoof5.train.metadata.txt",
    "cm": "x.cm.train.trn.txt",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the table


def test_constants():
    assert CM_KEYS == ("bonafide", "spoof")
    assert ASV_KEYS == ("target", "nontarget", "spoof")
    assert SCORE_FORMATS == ("asvspoof2019", "asvspoof2021", "asvspoof5")


@pytest.mark.parametrize("name", sorted(KEY_LAYOUTS))
def test_every_key_layout_is_consistent(name):
    layout = KEY_LAYOUTS[name]
    assert layout.name == name
    named = [c for c in layout.columns if c != NO_VALUE]
    assert len(set(named)) == len(named), "a column name twice"
    assert all(c == c.lower() and " " not in c for c in layout.columns)
    assert UTT in layout.columns
    assert set(layout.attack) <= set(layout.columns)
    assert set(layout.store_names) <= set(layout.other_columns)
    assert layout.key_column is None or layout.columns[layout.key_column] == KEY
    assert len(layout.heading.split()) == layout.n_columns
    if layout.key_file_format is not None:
        assert layout.key_column is not None


def test_key_file_signatures_are_unique_and_name_the_formats():
    by_signature = key_file_layouts()
    formats = [x.key_file_format for x in KEY_LAYOUTS.values() if x.key_file_format]
    assert len(by_signature) == len(formats)
    assert {(n, k): x.key_file_format for (n, k), x in by_signature.items()} == {
        (5, 4): "2019",
        (8, 5): "2021-LA",
        (9, 6): "2021-LA",
        (13, 5): "2021-DF",
        (12, 9): "2021-PA",
        (10, 8): "asvspoof5",
    }


def test_extra_columns_come_from_the_table():
    protocol_layouts = {x.name: x for x in KEY_LAYOUTS.values() if x.protocol}
    assert set(EXTRA_COLUMNS) == set(protocol_layouts)
    for name, layout in protocol_layouts.items():
        assert EXTRA_COLUMNS[name] == layout.store_columns


def test_2021_pa_uses_the_eval_package_names():
    layout = KEY_LAYOUTS["asvspoof2021-pa"]
    official = "spk trial asv_room asv_mic dis_to_asv att_room att_mic att_d att_to_spk label "
    official += "trim subset"
    roles = {"spk": SPEAKER, "trial": UTT, "label": KEY}
    assert layout.columns == tuple(roles.get(c, c) for c in official.split())
    assert layout.attack == ("att_to_spk", "att_d")


def test_score_layouts():
    assert [x.format for x in SCORE_LAYOUTS] == ["2019", "2019-4col", "2021", "asvspoof5"]
    assert score_layout("asvspoof2019").columns == (SPEAKER, UTT, NO_VALUE, "attack", KEY, SCORE)
    assert score_layout("asvspoof2019").has_keys and not score_layout("asvspoof2021").has_keys
    assert score_layout("asvspoof5").header == ("filename", "cm-score")
    assert score_layout("asvspoof5").separator == "\t"
    with pytest.raises(ValueError, match=r"format must be one of asvspoof2019, .*got 'x'"):
        score_layout("x")


# ----------------------------------------------------------------------------- attack rule


def test_attack_id_examples():
    assert attack_id(["A07"], "spoof") == "A07"
    assert attack_id(["A07"], "bonafide") == "-"
    assert attack_id(["bonafide"], "spoof") == "-"
    assert attack_id(["c4", "s4"], "spoof") == "c4s4"
    assert attack_id(["-", "-"], "spoof") == "-"
    assert attack_id(["c4", "-"], "spoof") == "c4-"
    assert attack_id(["E01", "P01", "R01"], "spoof", "-") == "E01-P01-R01"
    assert attack_id(["A01"], None) == "A01"


_value = st.one_of(
    st.sampled_from([NO_VALUE, BONAFIDE]), st.text("abcdefgsABC0123456789_", min_size=1)
)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(1, 3).flatmap(
        lambda k: st.lists(
            st.tuples(st.lists(_value, min_size=k, max_size=k), st.sampled_from(CM_KEYS)),
            max_size=20,
        )
    ),
    separator=st.sampled_from(["", "-"]),
)
def test_attack_ids_is_attack_id_per_row(rows, separator):
    if not rows:
        return
    parts = [p for p, _ in rows]
    keys = [k for _, k in rows]
    columns = [list(c) for c in zip(*parts, strict=True)]
    got = attack_ids(columns, keys, separator)
    assert got == [attack_id(p, k, separator) for p, k in rows]
    for (p, k), a in zip(rows, got, strict=True):
        if k == BONAFIDE or set(p) <= {NO_VALUE, BONAFIDE}:
            assert a == NO_VALUE
        else:
            assert a == separator.join(p)


# ----------------------------------------------------------------------------- both readers


def test_2021_pa_attack_is_the_same_in_both_readers(tmp_path):
    path = write(tmp_path / "PA" / "CM" / "trial_metadata.txt", PA_LINE + "\n")
    (utt,) = read_manifest(path)
    key = read_key_file(path)
    assert utt.system == "c4s4"
    assert key.attacks.tolist() == ["c4s4"]
    assert key.columns["att_to_spk"].tolist() == [utt.extra["attacker_distance"]] == ["c4"]
    assert key.columns["att_d"].tolist() == [utt.extra["replay_device"]] == ["s4"]


_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def _lines(draw, layout):
    """Random valid lines of ``layout``: a list of column lists."""
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(_token.map(lambda t: "u" + t), min_size=n, max_size=n, unique=True))
    lines = []
    for utt in ids:
        cols = []
        for name in layout.columns:
            if name == UTT:
                cols.append(utt)
            elif name == KEY:
                key = draw(st.sampled_from(CM_KEYS))
                cols.append(layout.bonafide_label if key == BONAFIDE else key)
            elif name == NO_VALUE:
                cols.append(NO_VALUE)
            elif name in layout.attack:
                cols.append(draw(st.one_of(st.sampled_from([NO_VALUE, BONAFIDE]), _token)))
            else:
                cols.append(draw(_token))
        lines.append(cols)
    return lines


def _expected(layout, cols):
    """What the table says a line means: (utt, speaker, attack, key, other columns)."""
    row = dict(zip(layout.columns, cols, strict=True))
    key = row.get(KEY)
    if key == layout.bonafide_label:
        key = BONAFIDE
    attack = attack_id([row[c] for c in layout.attack], key, layout.attack_separator)
    others = {c: row[c] for c in layout.other_columns}
    return row[UTT], row.get(SPEAKER, NO_VALUE), attack if layout.attack else NO_VALUE, key, others


@pytest.mark.parametrize("name", sorted(FILE_NAMES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_protocol_reader_follows_the_table(name, data):
    layout = KEY_LAYOUTS[name]
    lines = data.draw(_lines(layout))
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / FILE_NAMES[name], "".join(" ".join(c) + "\n" for c in lines))
        utts = read_manifest(path)
    for u, cols in zip(utts, lines, strict=True):
        utt, speaker, attack, key, others = _expected(layout, cols)
        assert (u.utt_id, u.speaker, u.system, u.key) == (utt, speaker, attack, key)
        assert dict(u.extra) == {layout.store_names.get(c, c): v for c, v in others.items()}


@pytest.mark.parametrize(
    "name", sorted(x.name for x in KEY_LAYOUTS.values() if x.key_file_format is not None)
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_key_file_reader_follows_the_table(name, data):
    layout = KEY_LAYOUTS[name]
    lines = data.draw(_lines(layout))
    with tempfile.TemporaryDirectory() as d:
        k = read_key_file(write(Path(d) / "key.txt", "".join(" ".join(c) + "\n" for c in lines)))
    assert k.format == layout.key_file_format
    for i, cols in enumerate(lines):
        utt, speaker, attack, key, others = _expected(layout, cols)
        assert (k.utt_ids[i], k.attacks[i], k.labels[i]) == (utt, attack, int(key == BONAFIDE))
        assert k.columns[SPEAKER][i] == speaker
        assert all(k.columns[c][i] == v for c, v in others.items())


@pytest.mark.parametrize(
    "name",
    sorted(x.name for x in KEY_LAYOUTS.values() if x.key_file_format is not None and x.protocol),
)
def test_both_readers_give_the_same_attacks(tmp_path, name):
    layout = KEY_LAYOUTS[name]
    lines = [
        [
            {UTT: f"u{i}", KEY: key}.get(c, "-" if c in layout.attack and i == 2 else f"{c}{i}")
            for c in layout.columns
        ]
        for i, key in enumerate(["bonafide", "spoof", "spoof"])
    ]
    path = write(tmp_path / FILE_NAMES[name], "".join(" ".join(c) + "\n" for c in lines))
    assert [u.system for u in read_manifest(path)] == read_key_file(path).attacks.tolist()
