"""Protocol parsing (every supported format, every error) and audio-file lookup."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featstore.errors import AudioError, ManifestError
from featstore.manifests import (
    EXTRA_COLUMNS,
    AudioLocator,
    Utterance,
    detect_protocol,
    find_audio,
    list_protocols,
    read_manifest,
    read_protocol,
)

DATA = Path(__file__).parent / "data" / "protocols"
KEYS21 = DATA / "asvspoof2021" / "keys"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ----------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "fmt", "split"),
    [
        ("ASVspoof2019.LA.cm.train.trn.txt", "asvspoof2019-la", "train"),
        ("ASVspoof2019.LA.cm.dev.trl.txt", "asvspoof2019-la", "dev"),
        ("ASVspoof2019.PA.cm.eval.trl.txt", "asvspoof2019-pa", "eval"),
        ("trial_metadata.txt", "asvspoof2021", "eval"),
        ("ASVspoof2021.LA.cm.eval.trl.txt", "asvspoof2021-list", "eval"),
        ("ASVspoof2021.DF.cm.eval.trl.txt", "asvspoof2021-list", "eval"),
        ("ASVspoof2017_V2_train.trn.txt", "asvspoof2017", "train"),
        ("ASVspoof2017_V2_eval.trl.txt", "asvspoof2017", "eval"),
        ("ASVspoof5.train.tsv", "asvspoof5", "train"),
        ("ASVspoof5.dev.track_1.tsv", "asvspoof5", "dev"),
        ("ASVspoof5.eval.track_1.tsv", "asvspoof5", "eval"),
        ("ASVspoof5.dev.metadata.txt", "asvspoof5-metadata", "dev"),
        ("demo.cm.train.trn.txt", "cm", "train"),
        ("my.corpus.cm.holdout.trl.txt", "cm", "holdout"),
        ("eval.txt", "cm", "eval"),
        ("dev.trl.txt", "cm", "dev"),
    ],
)
def test_format_and_split_come_from_the_file_name(name, fmt, split):
    pf = detect_protocol(name)
    assert pf is not None
    assert (pf.format, pf.split) == (fmt, split)


@pytest.mark.parametrize(
    "name",
    [
        "README.txt",
        "notes.txt",
        "ASVspoof2019.LA.asv.dev.gi.trl.txt",
        "ASVspoof5.dev.track_2.trial.tsv",
        "ASVspoof5.eval.track_2.enroll.tsv",
        "ASVspoof5.codec.config.csv",
        "scores.txt",
    ],
)
def test_other_names_are_not_protocols(name):
    assert detect_protocol(name) is None


def test_2021_asv_key_file_is_not_a_cm_protocol():
    assert detect_protocol(KEYS21 / "LA" / "ASV" / "trial_metadata.txt") is None
    assert detect_protocol(KEYS21 / "LA" / "CM" / "trial_metadata.txt").track == "LA"


# ----------------------------------------------------------------------------- formats


def test_asvspoof2019_la():
    utts = read_manifest(DATA / "asvspoof2019" / "ASVspoof2019.LA.cm.train.trn.txt")
    assert [u.utt_id for u in utts[:3]] == ["LA_T_1138215", "LA_T_1271820", "LA_T_1272637"]
    u = utts[2]
    assert (u.split, u.speaker, u.system, u.key, u.label, u.line) == (
        "train",
        "LA_0079",
        "A01",
        "spoof",
        0,
        3,
    )
    assert utts[0].system == "-" and utts[0].label == 1
    assert all(dict(u.extra) == {} for u in utts)
    assert u.source == str(DATA / "asvspoof2019" / "ASVspoof2019.LA.cm.train.trn.txt")


def test_asvspoof2019_pa_keeps_environment_and_maps_attack():
    utts = read_manifest(DATA / "asvspoof2019" / "ASVspoof2019.PA.cm.dev.trl.txt")
    assert [(u.system, u.key, u.extra["environment"]) for u in utts] == [
        ("-", "bonafide", "aaa"),
        ("AA", "spoof", "aaa"),
        ("BC", "spoof", "abc"),
        ("-", "bonafide", "cca"),
        ("CC", "spoof", "bbb"),
    ]
    assert {u.split for u in utts} == {"dev"}


def test_asvspoof2021_la_keys():
    utts = read_manifest(KEYS21 / "LA" / "CM" / "trial_metadata.txt")
    assert len(utts) == 5
    u, bona = utts[0], utts[1]
    assert (u.utt_id, u.speaker, u.system, u.key, u.split) == (
        "LA_E_9332881",
        "LA_0009",
        "A07",
        "spoof",
        "eval",
    )
    assert dict(u.extra) == {
        "codec": "alaw",
        "transmission": "ita_tx",
        "trim": "notrim",
        "subset": "eval",
    }
    assert (bona.system, bona.label) == ("-", 1)  # "bonafide" in the attack column
    # progress and hidden trials: split "eval", the subset kept
    assert [u.extra["subset"] for u in utts] == ["eval", "eval", "progress", "hidden", "hidden"]
    assert {u.split for u in utts} == {"eval"}


def test_asvspoof2021_df_keys():
    utts = read_manifest(KEYS21 / "DF" / "CM" / "trial_metadata.txt")
    assert tuple(utts[0].extra) == EXTRA_COLUMNS["asvspoof2021-df"]
    vcc = utts[3]
    assert (vcc.speaker, vcc.system, vcc.key) == ("VCC2TF1", "N13", "spoof")
    assert vcc.extra["source"] == "vcc2018"
    assert vcc.extra["gender_pair"] == "M-F"
    assert vcc.extra["codec"] == "high_ogg"
    assert (utts[2].system, utts[2].key, utts[2].extra["vocoder"]) == ("-", "bonafide", "bonafide")


def test_asvspoof2021_df_short_keys(tmp_path):
    p = write(
        tmp_path / "DF" / "CM" / "trial_metadata.txt",
        "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress\n"
        "LA_0021 DF_E_2000035 low_m4a asvspoof bonafide bonafide notrim eval\n",
    )
    utts = read_manifest(p)
    assert tuple(utts[0].extra) == EXTRA_COLUMNS["asvspoof2021-df-short"]
    assert [u.label for u in utts] == [0, 1]


def test_asvspoof2021_df_refuses_mixed_column_counts(tmp_path):
    p = write(
        tmp_path / "DF" / "CM" / "trial_metadata.txt",
        "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress\n"
        "LA_0043 DF_E_2000026 mp3m4a asvspoof A09 spoof notrim eval traditional_vocoder - - - -\n",
    )
    with pytest.raises(ManifestError, match="expected 8 columns, got 13 \\(like line 1") as e:
        read_manifest(p)
    assert e.value.line == 2


def test_asvspoof2021_pa_keys():
    utts = read_manifest(KEYS21 / "PA" / "CM" / "trial_metadata.txt")
    spoof, bona = utts[0], utts[1]
    assert spoof.system == "c4s4"  # attacker-to-talker distance + replay device
    assert bona.system == "-" and bona.label == 1
    assert dict(spoof.extra) == {
        "asv_room": "R3",
        "asv_mic": "M3",
        "asv_distance": "d4",
        "attacker_room": "r1",
        "attacker_mic": "m1",
        "replay_device": "s4",
        "attacker_distance": "c4",
        "trim": "notrim",
        "subset": "eval",
    }


def test_asvspoof2021_track_from_trial_id_when_not_under_keys_dir(tmp_path):
    src = (KEYS21 / "PA" / "CM" / "trial_metadata.txt").read_text()
    utts = read_manifest(write(tmp_path / "trial_metadata.txt", src))
    assert utts[0].system == "c4s4"


def test_asvspoof2021_track_unknown(tmp_path):
    p = write(tmp_path / "trial_metadata.txt", "X Y a b c\n")
    with pytest.raises(ManifestError, match="cannot tell the ASVspoof 2021 track"):
        read_manifest(p)


def test_asvspoof2021_keyless_list():
    utts = read_manifest(DATA / "asvspoof2021" / "ASVspoof2021.LA.cm.eval.trl.txt")
    assert [u.utt_id for u in utts] == ["LA_E_9332881", "LA_E_7294490", "LA_E_5851240"]
    assert all(u.key is None and u.label == -1 for u in utts)
    assert all((u.speaker, u.system, u.split) == ("-", "-", "eval") for u in utts)


def test_asvspoof2017():
    utts = read_manifest(DATA / "asvspoof2017")
    assert [u.utt_id for u in utts] == ["T_1000001", "T_1000002", "T_1001509", "T_1001510"]
    assert [u.key for u in utts] == ["bonafide", "bonafide", "spoof", "spoof"]
    g, s = utts[0], utts[2]
    assert (g.speaker, g.system, g.extra["phrase"]) == ("M0001", "-", "S01")
    assert s.system == "E02-P02-R02"
    assert dict(s.extra) == {
        "phrase": "S05",
        "environment": "E02",
        "playback_device": "P02",
        "recording_device": "R02",
    }


def test_asvspoof5_track_1():
    utts = read_manifest(DATA / "asvspoof5" / "ASVspoof5.eval.track_1.tsv")
    u = utts[0]
    assert (u.utt_id, u.speaker, u.system, u.key, u.split) == (
        "E_0000000001",
        "E_0001",
        "A20",
        "spoof",
        "eval",
    )
    assert dict(u.extra) == {
        "gender": "M",
        "codec": "C08",
        "codec_q": "4",
        "codec_seed": "E_0000123456",
        "attack_tag": "AC3",
        "tmp": "-",
    }
    assert (utts[1].system, utts[1].label) == ("-", 1)


def test_asvspoof5_challenge_metadata():
    utts = read_manifest(DATA / "asvspoof5" / "ASVspoof5.train.metadata.txt")
    assert [(u.utt_id, u.system, u.key) for u in utts] == [
        ("T_0000000000", "A05", "spoof"),
        ("T_0000000001", "-", "bonafide"),
        ("T_0000000002", "A03", "spoof"),
    ]
    assert dict(utts[2].extra) == {"gender": "M", "codec": "-"}


def test_generic_cm_protocol(tmp_path):
    p = write(
        tmp_path / "demo.cm.train.trn.txt", "SPK1 utt_001 - - bonafide\nSPK1 utt_002 - A01 spoof\n"
    )
    utts = read_manifest(p)
    assert [(u.utt_id, u.split, u.system, dict(u.extra)) for u in utts] == [
        ("utt_001", "train", "-", {"environment": "-"}),
        ("utt_002", "train", "A01", {"environment": "-"}),
    ]


def test_real_la_mini_protocol(la_mini):
    utts = read_manifest(la_mini / "protocols")
    assert len(utts) == 25
    assert utts[0].utt_id == "LA_D_1000265" and utts[0].system == "A01"
    assert [u.line for u in utts] == list(range(1, 26))
    assert sum(u.label == 1 for u in utts) == 4
    assert {u.split for u in utts} == {"dev"}
    assert {u.system for u in utts} == {"-", "A01", "A02", "A03", "A04", "A05", "A06"}
    # bona fide <=> no attack
    assert all((u.system == "-") == (u.key == "bonafide") for u in utts)


def test_utterances_are_frozen_hashable_and_picklable():
    u = read_manifest(DATA / "asvspoof2019" / "ASVspoof2019.PA.cm.dev.trl.txt")[1]
    assert pickle.loads(pickle.dumps(u)) == u
    hash(u)
    with pytest.raises(AttributeError):
        u.key = "bonafide"  # type: ignore[misc]


@pytest.mark.parametrize(("key", "label"), [("bonafide", 1), ("spoof", 0), (None, -1)])
def test_label(key, label):
    assert Utterance("u", "dev", "-", "-", key, {}, "p", 1).label == label


# ----------------------------------------------------------------------------- directories


def test_directory_skips_non_protocols_and_orders_by_split():
    files = list_protocols(DATA / "asvspoof2019")
    assert [pf.path.name for pf in files] == [
        "ASVspoof2019.LA.cm.train.trn.txt",  # train before dev
        "ASVspoof2019.PA.cm.dev.trl.txt",
    ]  # README.md and the ASV protocol are skipped
    utts = read_manifest(DATA / "asvspoof2019")
    assert [u.split for u in utts] == ["train"] * 8 + ["dev"] * 5


def test_official_asvspoof5_protocol_directory(tmp_path):
    src = DATA / "asvspoof5"
    for name in ("ASVspoof5.dev.track_1.tsv", "ASVspoof5.eval.track_1.tsv"):
        write(tmp_path / name, (src / name).read_text())
    write(tmp_path / "ASVspoof5.train.tsv", "T_4850 T_0000000000 F - - - AC3 A05 spoof -\n")
    for name in (
        "ASVspoof5.dev.track_2.enroll.tsv",
        "ASVspoof5.dev.track_2.trial.tsv",
        "ASVspoof5.eval.track_2.enroll.tsv",
        "ASVspoof5.eval.track_2.trial.tsv",
        "ASVspoof5.dev.trial.txt",
        "ASVspoof5.dev.enroll.txt",
        "ASVspoof5.codec.config.csv",
        "README.txt",
        "LICENSE.txt",
    ):
        write(tmp_path / name, "D_0755 D_0000000022 M A14 spoof\n")
    (tmp_path / "flac_T").mkdir()
    names = [pf.path.name for pf in list_protocols(tmp_path)]
    assert names == [
        "ASVspoof5.train.tsv",
        "ASVspoof5.dev.track_1.tsv",
        "ASVspoof5.eval.track_1.tsv",
    ]
    assert [u.split for u in read_manifest(tmp_path)] == ["train"] + ["dev"] * 4 + ["eval"] * 3


def test_official_asvspoof2021_eval_package_directory(tmp_path):
    write(tmp_path / "ASVspoof2021.LA.cm.eval.trl.txt", "LA_E_9332881\n")
    write(tmp_path / "README.LA.txt", "ASVspoof 2021 Challenge - Logical Access Database\n")
    write(tmp_path / "LICENSE.txt", "ODC-By\n")
    touch(tmp_path / "flac" / "LA_E_9332881.flac")
    (u,) = read_manifest(tmp_path)
    assert (u.utt_id, u.key, u.split) == ("LA_E_9332881", None, "eval")
    assert find_audio(tmp_path, u) == tmp_path / "flac" / "LA_E_9332881.flac"


def test_directory_order_is_split_then_name(tmp_path):
    row = "S {} - - bonafide\n"
    write(tmp_path / "b.cm.eval.trl.txt", row.format("e1"))
    write(tmp_path / "a.cm.eval.trl.txt", row.format("e0"))
    write(tmp_path / "z.cm.dev.trl.txt", row.format("d0"))
    write(tmp_path / "x.cm.train.trn.txt", row.format("t0"))
    write(tmp_path / "x.cm.adapt.trn.txt", row.format("a0"))
    assert [u.utt_id for u in read_manifest(tmp_path)] == ["t0", "d0", "e0", "e1", "a0"]


def test_directory_with_unknown_protocol_like_file_is_an_error(tmp_path):
    write(tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt", "LA_0069 LA_D_1 - - bonafide\n")
    write(tmp_path / "my_protocol.txt", "LA_0069 LA_D_2 - - bonafide\n")
    with pytest.raises(ManifestError, match=r"my_protocol\.txt: file name matches no known"):
        read_manifest(tmp_path)


def test_directory_without_protocols_is_an_error(tmp_path):
    write(tmp_path / "README.md", "hi\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ManifestError, match=r"no protocol files found \(skipped: README\.md, sub/"):
        read_manifest(tmp_path)


def test_a_list_of_paths_and_the_same_file_twice(tmp_path):
    la = DATA / "asvspoof2019" / "ASVspoof2019.LA.cm.train.trn.txt"
    utts = read_manifest([DATA / "asvspoof2019", la, DATA / "asvspoof2017"])
    assert len(utts) == 8 + 5 + 4


# ----------------------------------------------------------------------------- errors


def test_wrong_column_count_names_file_and_line(tmp_path):
    p = write(
        tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt",
        "LA_0069 LA_D_1 - - bonafide\nLA_0069 LA_D_2 - A01 spoof\nLA_0069 LA_D_3 spoof\n",
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert str(e.value).startswith(f"{p}:3: expected 5 columns, got 3 (ASVspoof 2019 LA:")
    assert (e.value.path, e.value.line) == (str(p), 3)


def test_unknown_key(tmp_path):
    p = write(tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt", "\nLA_0069 LA_D_1 - - genuine\n")
    with pytest.raises(ManifestError, match=r":2: unknown key 'genuine'; expected 'bonafide'"):
        read_manifest(p)


def test_unknown_key_2017(tmp_path):
    p = write(tmp_path / "ASVspoof2017_V2_dev.trl.txt", "D_1000001.wav real M1 S01 - - -\n")
    with pytest.raises(ManifestError, match=r":1: unknown key 'real'; expected 'genuine'"):
        read_manifest(p)


def test_duplicate_id_in_a_file_names_both_lines(tmp_path):
    p = write(
        tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt",
        "LA_0069 LA_D_1 - - bonafide\nLA_0069 LA_D_2 - - bonafide\nLA_0069 LA_D_1 - A01 spoof\n",
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    assert str(e.value) == (
        f"{p}:3: duplicate utterance id 'LA_D_1' in split 'dev'; first at {p}:1"
    )


def test_duplicate_id_across_files_of_one_split(tmp_path):
    write(tmp_path / "ASVspoof2019.LA.cm.eval.trl.txt", "LA_0001 LA_E_9332881 - A07 spoof\n")
    list21 = write(tmp_path / "ASVspoof2021.LA.cm.eval.trl.txt", "LA_E_1\nLA_E_9332881\n")
    with pytest.raises(ManifestError, match="duplicate utterance id 'LA_E_9332881'") as e:
        read_manifest(tmp_path)
    assert (e.value.path, e.value.line) == (str(list21), 2)
    assert "ASVspoof2019.LA.cm.eval.trl.txt:1" in str(e.value)


def test_same_id_in_two_splits_is_fine(tmp_path):
    write(tmp_path / "x.cm.train.trn.txt", "S u1 - - bonafide\n")
    write(tmp_path / "x.cm.dev.trl.txt", "S u1 - - bonafide\n")
    assert [u.split for u in read_manifest(tmp_path)] == ["train", "dev"]


@pytest.mark.parametrize(
    "bad_id", ["../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "..", ".", "C:evil"]
)
def test_ids_that_could_escape_the_audio_root_are_refused(tmp_path, bad_id):
    p = write(tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt", f"LA_0069 {bad_id} - - bonafide\n")
    with pytest.raises(ManifestError, match="unsafe utterance id") as e:
        read_manifest(p)
    assert e.value.line == 1 and repr(bad_id) in str(e.value)


def test_la_protocol_with_environment_column_is_refused(tmp_path):
    p = write(tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt", "PA_0069 PA_D_1 aaa AA spoof\n")
    with pytest.raises(ManifestError, match="column 3 of an ASVspoof 2019 LA protocol"):
        read_manifest(p)


def test_blank_lines_trailing_whitespace_crlf_bom_and_tabs_are_fine(tmp_path):
    p = tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt"
    p.write_bytes(
        b"\xef\xbb\xbfLA_0069 LA_D_1 - - bonafide  \r\n\r\n   \n"
        b"LA_0069\tLA_D_2  -\tA01 spoof\t\r\n\n"
    )
    utts = read_manifest(p)
    assert [(u.utt_id, u.line) for u in utts] == [("LA_D_1", 1), ("LA_D_2", 4)]


def test_non_utf8_line(tmp_path):
    p = tmp_path / "ASVspoof2019.LA.cm.dev.trl.txt"
    p.write_bytes(b"LA_0069 LA_D_1 - - bonafide\nLA_0069 LA_D_\xff - - bonafide\n")
    with pytest.raises(ManifestError, match=":2: not UTF-8"):
        read_manifest(p)


def test_missing_path(tmp_path):
    with pytest.raises(ManifestError, match="no such file or directory"):
        read_manifest(tmp_path / "nope")


def test_unknown_file_name_given_directly(tmp_path):
    p = write(tmp_path / "protocol.txt", "LA_0069 LA_D_1 - - bonafide\n")
    with pytest.raises(ManifestError, match=r"protocol\.txt: file name matches no known protocol"):
        read_manifest(p)


def test_asv_protocol_given_directly_is_refused():
    with pytest.raises(ManifestError, match="speaker-verification \\(ASV\\) protocol"):
        read_manifest(KEYS21 / "LA" / "ASV" / "trial_metadata.txt")
    with pytest.raises(ManifestError, match="speaker-verification"):
        read_protocol(DATA / "asvspoof2019" / "ASVspoof2019.LA.asv.dev.gi.trl.txt")


def test_read_protocol_split_override():
    utts = read_protocol(DATA / "asvspoof2017" / "ASVspoof2017_V2_train.trn.txt", split="adapt")
    assert {u.split for u in utts} == {"adapt"}


# ----------------------------------------------------------------------------- properties

_token = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1)
_sep = st.sampled_from([" ", "  ", "\t", " \t "])

# name, columns per line, how to build a line and what record it must give
FORMATS = {
    "ASVspoof2019.LA.cm.train.trn.txt": 5,
    "ASVspoof2019.PA.cm.dev.trl.txt": 5,
    "ASVspoof2017_V2_eval.trl.txt": 7,
    "ASVspoof5.train.tsv": 10,
    "ASVspoof5.dev.metadata.txt": 6,
    "ASVspoof2021.DF.cm.eval.trl.txt": 1,
    "x.cm.eval.trl.txt": 5,
}


@st.composite
def _rows(draw, name: str):
    """Random valid rows for a format, with the records they must parse to."""
    n = draw(st.integers(1, 12))
    ids = draw(st.lists(_token, min_size=n, max_size=n, unique=True))
    rows = []
    for utt in ids:
        key = draw(st.sampled_from(["bonafide", "spoof"]))
        spk, system, a, b, c, d, e = (draw(_token) for _ in range(7))
        if key == "bonafide":
            system = "-"
        if name.startswith("ASVspoof2019.LA"):
            cols = [spk, utt, "-", system, key]
            rec = (utt, spk, system, key, {})
        elif name.startswith("ASVspoof2019.PA") or name.startswith("x.cm"):
            cols = [spk, utt, a, system, key]
            rec = (utt, spk, system, key, {"environment": a})
        elif name.startswith("ASVspoof2017"):
            k17 = "genuine" if key == "bonafide" else "spoof"
            cols = [utt + ".wav", k17, spk, a, b, c, d]
            replay = key == "spoof" and (b, c, d) != ("-", "-", "-")
            sys17 = f"{b}-{c}-{d}" if replay else "-"
            extra = dict(zip(EXTRA_COLUMNS["asvspoof2017"], (a, b, c, d), strict=True))
            rec = (utt, spk, sys17, key, extra)
        elif name == "ASVspoof5.train.tsv":
            attack = "bonafide" if key == "bonafide" else system
            cols = [spk, utt, a, b, c, d, e, attack, key, "-"]
            extra = dict(zip(EXTRA_COLUMNS["asvspoof5"], (a, b, c, d, e, "-"), strict=True))
            rec = (utt, spk, system, key, extra)
        elif name == "ASVspoof5.dev.metadata.txt":
            attack = "bonafide" if key == "bonafide" else system
            cols = [spk, utt, a, b, attack, key]
            rec = (utt, spk, system, key, {"gender": a, "codec": b})
        else:  # key-less list
            cols = [utt]
            rec = (utt, "-", "-", None, {})
        rows.append((cols, rec))
    blank_before = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    seps = draw(st.lists(_sep, min_size=n, max_size=n))
    return rows, blank_before, seps


def _render(rows, blank_before, seps) -> tuple[str, list[int]]:
    lines, numbers = [], []
    for (cols, _), blank, sep in zip(rows, blank_before, seps, strict=True):
        if blank:
            lines.append("  ")
        lines.append(sep.join(cols) + (" " if blank else ""))
        numbers.append(len(lines))
    return "\n".join(lines) + "\n", numbers


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(name, data):
    rows, blank_before, seps = data.draw(_rows(name))
    text, numbers = _render(rows, blank_before, seps)
    with tempfile.TemporaryDirectory() as d:
        utts = read_manifest(write(Path(d) / name, text))
    got = [(u.utt_id, u.speaker, u.system, u.key, dict(u.extra)) for u in utts]
    assert got == [rec for _, rec in rows]
    assert [u.line for u in utts] == numbers


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_column_count_corruption_is_reported_at_its_line(name, data):
    rows, blank_before, seps = data.draw(_rows(name))
    victim = data.draw(st.integers(0, len(rows) - 1))
    cols = rows[victim][0]
    if data.draw(st.booleans()) and len(cols) > 1:
        del cols[data.draw(st.integers(0, len(cols) - 1))]
    else:
        cols.insert(data.draw(st.integers(0, len(cols))), data.draw(_token))
    text, numbers = _render(rows, blank_before, seps)
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(ManifestError, match=f"expected {FORMATS[name]} columns, got") as e:
            read_manifest(write(Path(d) / name, text))
    assert e.value.line == numbers[victim]


# ----------------------------------------------------------------------------- audio lookup


def _utt(utt_id: str, source: str = "ASVspoof2019.LA.cm.train.trn.txt", split: str = "train"):
    return Utterance(utt_id, split, "-", "-", "bonafide", {}, f"/p/{source}", 7)


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize(
    ("rel", "utt"),
    [
        ("ASVspoof2019_LA_train/flac/LA_T_1000137.flac", _utt("LA_T_1000137")),
        (
            "ASVspoof2019_LA_dev/flac/LA_D_1000265.flac",
            _utt("LA_D_1000265", "ASVspoof2019.LA.cm.dev.trl.txt", "dev"),
        ),
        (
            "LA/ASVspoof2019_LA_eval/flac/LA_E_1000147.flac",
            _utt("LA_E_1000147", "ASVspoof2019.LA.cm.eval.trl.txt", "eval"),
        ),
        (
            "ASVspoof2019_PA_eval/flac/PA_E_0000001.flac",
            _utt("PA_E_0000001", "ASVspoof2019.PA.cm.eval.trl.txt", "eval"),
        ),
        (
            "ASVspoof2021_LA_eval/flac/LA_E_9332881.flac",
            _utt("LA_E_9332881", "trial_metadata.txt", "eval"),
        ),
        (
            "ASVspoof2021_DF_eval/flac/DF_E_2000011.flac",
            _utt("DF_E_2000011", "ASVspoof2021.DF.cm.eval.trl.txt", "eval"),
        ),
        (
            "ASVspoof2017_V2_train/T_1000001.wav",
            _utt("T_1000001", "ASVspoof2017_V2_train.trn.txt"),
        ),
        ("flac_T/T_0000000000.flac", _utt("T_0000000000", "ASVspoof5.train.tsv")),
        ("flac_D/D_0000000001.flac", _utt("D_0000000001", "ASVspoof5.dev.track_1.tsv", "dev")),
        (
            "flac_E_eval/E_0000000001.flac",
            _utt("E_0000000001", "ASVspoof5.eval.track_1.tsv", "eval"),
        ),
        ("flac/utt_001.flac", _utt("utt_001", "demo.cm.train.trn.txt")),
        ("wav/utt_001.wav", _utt("utt_001", "demo.cm.train.trn.txt")),
        ("utt_001.wav", _utt("utt_001", "demo.cm.train.trn.txt")),
    ],
)
def test_official_layouts(tmp_path, rel, utt, index):
    want = touch(tmp_path / rel)
    touch(tmp_path / "flac" / "someone_else.flac")
    assert AudioLocator(tmp_path, index=index).find(utt) == want
    assert find_audio(tmp_path, utt) == want


@pytest.mark.parametrize("index", [True, False])
def test_the_protocol_decides_between_same_ids_of_two_corpora(tmp_path, index):
    a19 = touch(tmp_path / "ASVspoof2019_LA_eval" / "flac" / "LA_E_1.flac")
    a21 = touch(tmp_path / "ASVspoof2021_LA_eval" / "flac" / "LA_E_1.flac")
    loc = AudioLocator(tmp_path, index=index)
    assert loc.find(_utt("LA_E_1", "ASVspoof2019.LA.cm.eval.trl.txt", "eval")) == a19
    assert loc.find(_utt("LA_E_1", "ASVspoof2021.LA.cm.eval.trl.txt", "eval")) == a21
    assert loc.find(_utt("LA_E_1", "trial_metadata.txt", "eval")) == a21


@pytest.mark.parametrize("index", [True, False])
def test_flac_is_preferred_to_wav_in_one_directory(tmp_path, index):
    touch(tmp_path / "flac" / "u1.wav")
    want = touch(tmp_path / "flac" / "u1.flac")
    assert AudioLocator(tmp_path, index=index).find(_utt("u1", "x.cm.train.trn.txt")) == want


@pytest.mark.parametrize("index", [True, False])
def test_missing_audio_names_id_protocol_line_and_searched_dirs(tmp_path, index):
    touch(tmp_path / "ASVspoof2019_LA_train" / "flac" / "LA_T_1.flac")
    utt = _utt("LA_T_2")
    with pytest.raises(AudioError) as e:
        AudioLocator(tmp_path, index=index).find(utt)
    msg = str(e.value)
    assert msg.startswith(f"{utt.source}:7: no audio file for utterance 'LA_T_2'")
    assert "searched ASVspoof2019_LA_train/flac/, ./" in msg


def test_missing_audio_root(tmp_path):
    with pytest.raises(AudioError, match="audio root is not a directory"):
        find_audio(tmp_path / "nope", _utt("LA_T_1"))


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "/etc/passwd", "..", "a\\b"])
def test_lookup_refuses_escaping_ids(tmp_path, bad_id):
    touch(tmp_path / "flac" / "x.flac")
    with pytest.raises(ManifestError, match="unsafe utterance id") as e:
        find_audio(tmp_path, _utt(bad_id))
    assert repr(bad_id) in str(e.value)
    with pytest.raises(ManifestError):
        AudioLocator(tmp_path).find(_utt(bad_id))


def test_find_all_counts_missing(tmp_path):
    touch(tmp_path / "flac" / "u1.flac")
    utts = [_utt(u, "x.cm.train.trn.txt") for u in ("u1", "u2", "u3")]
    with pytest.raises(AudioError, match=r"'u2'.*; 2 of 3 utterances have no audio"):
        AudioLocator(tmp_path).find_all(utts)
    assert AudioLocator(tmp_path).find_all(utts[:1]) == [tmp_path / "flac" / "u1.flac"]


def test_real_la_mini_audio(la_mini):
    utts = read_manifest(la_mini / "protocols")
    paths = AudioLocator(la_mini).find_all(utts)
    assert paths == [la_mini / "flac" / f"{u.utt_id}.flac" for u in utts]
    assert find_audio(la_mini, utts[3]) == paths[3]
