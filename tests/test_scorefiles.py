"""trainer.scorefiles: every score/key/ASV format, every bad-input error, a parser property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.errors import MetricsError, ScoreFileError
from trainer.scorefiles import (
    SCORE_FORMATS,
    evaluate_score_files,
    read_asv_scores,
    read_cm_scores,
    read_key_file,
    results_to_json,
    write_score_file,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


CM_2019 = """\
LA_0069 LA_D_1 - - bonafide 1.5
LA_0069 LA_D_2 - - bonafide 0.5
LA_0070 LA_D_3 - A01 spoof -1.25
LA_0070 LA_D_4 - A02 spoof 0.75
"""

# ASVspoof 2021 LA trial_metadata.txt: SPEAKER UTT CODEC TRANSMISSION ATTACK KEY TRIM SUBSET
KEY_2021_LA = """\
LA_0009 LA_E_1 alaw ita_tx - bonafide notrim eval
LA_0009 LA_E_2 none loc_tx - bonafide notrim progress
LA_0009 LA_E_3 alaw ita_tx A07 spoof notrim eval
LA_0010 LA_E_4 none loc_tx A08 spoof trim hidden
"""
SCORES_2021 = "LA_E_3 -2.0\nLA_E_1 3.5\nLA_E_4 0.25\nLA_E_2 1.0\n"


# --- formats ----------------------------------------------------------------------------------


def test_2019_six_columns(tmp_path):
    cm = read_cm_scores(write(tmp_path, "s.txt", CM_2019))
    assert cm.format == "2019"
    assert cm.utt_ids == ["LA_D_1", "LA_D_2", "LA_D_3", "LA_D_4"]
    assert cm.scores.tolist() == [1.5, 0.5, -1.25, 0.75]
    assert cm.labels.tolist() == [1, 1, 0, 0]
    assert cm.attacks.tolist() == ["-", "-", "A01", "A02"]
    assert cm.bonafide.tolist() == [1.5, 0.5] and cm.spoof.tolist() == [-1.25, 0.75]
    assert cm.lines.tolist() == [1, 2, 3, 4]


def test_2019_four_columns_tabs_crlf_and_blank_lines(tmp_path):
    text = "LA_E_1\t-\tbonafide\t2\r\n\n  LA_E_2 A07  spoof -1e-3\r\n\nLA_E_3 A08 spoof 4\n"
    cm = read_cm_scores(write(tmp_path, "s.txt", text))
    assert cm.format == "2019-4col"
    assert cm.scores.tolist() == [2.0, -0.001, 4.0]
    assert cm.attacks.tolist() == ["-", "A07", "A08"]
    assert cm.lines.tolist() == [1, 3, 5]  # blank lines keep the numbering


def test_2021_scores_with_la_key(tmp_path):
    key = write(tmp_path, "trial_metadata.txt", KEY_2021_LA)
    k = read_key_file(key)
    assert k.format == "2021-LA"
    assert sorted(k.columns) == ["codec", "speaker", "subset", "transmission", "trim"]
    cm = read_cm_scores(write(tmp_path, "s.txt", SCORES_2021), key)
    assert cm.format == "2021"
    assert cm.utt_ids == ["LA_E_3", "LA_E_1", "LA_E_4", "LA_E_2"]  # score file order
    assert cm.labels.tolist() == [0, 1, 0, 1]
    assert cm.attacks.tolist() == ["A07", "-", "A08", "-"]
    assert cm.columns["codec"].tolist() == ["alaw", "alaw", "none", "none"]
    assert cm.columns["subset"].tolist() == ["eval", "eval", "hidden", "progress"]


def test_2021_df_and_pa_keys(tmp_path):
    df = write(
        tmp_path,
        "df.txt",
        "LA_0043 DF_E_1 mp3m4a asvspoof - bonafide notrim eval bonafide - - - -\n"
        "LA_0043 DF_E_2 low_m4a vcc2018 A09 spoof notrim progress traditional_vocoder "
        "vcc2018 T01 F-F English\n",
    )
    k = read_key_file(df)
    assert k.format == "2021-DF" and k.attacks.tolist() == ["-", "A09"]
    assert k.columns["vocoder"].tolist() == ["bonafide", "traditional_vocoder"]
    pa = write(
        tmp_path,
        "pa.txt",
        "PA_0010 PA_E_1 R3 M3 D4 - - - - bonafide notrim eval\n"
        "PA_0010 PA_E_2 R3 M3 d4 r1 m1 s4 c4 spoof notrim eval\n",
    )
    k = read_key_file(pa)
    assert k.format == "2021-PA" and k.attacks.tolist() == ["-", "c4s4"]  # ATT_TO_SPK + ATT_D
    assert k.columns["asv_room"].tolist() == ["R3", "R3"]


def test_asvspoof5_tsv_with_protocol_and_with_key_tsv(tmp_path):
    scores = write(tmp_path, "s.tsv", "filename\tcm-score\nE_2\t-3.5\nE_1\t2.25\nE_3\t0.5\n")
    # ASVspoof 5 protocol: SPEAKER UTT GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK KEY TMP
    proto = write(
        tmp_path,
        "ASVspoof5.eval.track_1.tsv",
        "E_0001 E_1 F - - - bonafide bonafide bonafide -\n"
        "E_0002 E_2 M C01 1 42 AC1 A17 spoof -\n"
        "E_0002 E_3 M C02 2 42 AC2 A18 spoof -\n",
    )
    cm = read_cm_scores(scores, proto)
    assert cm.format == "asvspoof5"
    assert cm.labels.tolist() == [0, 1, 0] and cm.attacks.tolist() == ["A17", "-", "A18"]
    assert cm.columns["codec"].tolist() == ["C01", "-", "C02"]
    assert read_key_file(proto).format == "asvspoof5"
    key_tsv = write(
        tmp_path,
        "keys.tsv",
        "filename\tcm-label\tattack_anon\tcodec\nE_1\tbonafide\t-\t-\n"
        "E_2\tspoof\tA17\tC01\nE_3\tspoof\tA18\tC02\n",
    )
    k = read_key_file(key_tsv)
    assert k.format == "asvspoof5-tsv" and list(k.columns) == ["codec"]
    cm2 = read_cm_scores(scores, k)
    assert cm2.attacks.tolist() == cm.attacks.tolist()
    assert cm2.scores.tolist() == [-3.5, 2.25, 0.5]


def test_generic_key_layouts(tmp_path):
    k = read_key_file(write(tmp_path, "k.txt", "U1 bonafide x\nU2 spoof y\n"))
    assert k.format == "generic" and k.utt_ids == ["U1", "U2"] and list(k.columns) == ["col3"]
    k = read_key_file(write(tmp_path, "k2.txt", "U1 - bonafide\nU2 A05 spoof\n"))
    assert k.attacks.tolist() == ["-", "A05"]
    # ASVspoof 2021 LA with a placeholder column before the attack
    k = read_key_file(
        write(
            tmp_path,
            "k3.txt",
            "S U1 alaw ita_tx - - bonafide notrim eval\nS U2 alaw ita_tx - A07 spoof notrim eval\n",
        )
    )
    assert k.format == "2021-LA" and k.attacks.tolist() == ["-", "A07"]
    assert k.columns["codec"].tolist() == ["alaw", "alaw"]


def test_2019_protocol_columns_and_key_agreement(tmp_path):
    proto = write(
        tmp_path,
        "p.txt",
        "LA_0069 LA_D_1 - - bonafide\nLA_0069 LA_D_2 - - bonafide\n"
        "LA_0070 LA_D_3 - A01 spoof\nLA_0070 LA_D_4 - A02 spoof\n",
    )
    cm = read_cm_scores(write(tmp_path, "s.txt", CM_2019), proto)
    assert cm.columns["speaker"].tolist() == ["LA_0069", "LA_0069", "LA_0070", "LA_0070"]
    bad = write(tmp_path, "bad.txt", CM_2019.replace("A01 spoof", "A01 bonafide"))
    with pytest.raises(
        ScoreFileError, match=r"bad.txt:3: key of 'LA_D_3' disagrees with .*p.txt:3"
    ):
        read_cm_scores(bad, proto)


def test_asv_six_and_three_columns(tmp_path):
    six = write(
        tmp_path,
        "asv6.txt",
        "LA_0073 LA_D_1 - bonafide target 18.2\nLA_0073 LA_D_2 - bonafide nontarget -3\n"
        "LA_0074 LA_D_1 - bonafide nontarget -4\nLA_0073 LA_D_3 - A01 spoof 5\n",
    )
    a = read_asv_scores(six)
    assert a.target.tolist() == [18.2] and a.nontarget.tolist() == [-3.0, -4.0]
    assert a.spoof.tolist() == [5.0] and a.spoof_attacks.tolist() == ["A01"]
    three = write(tmp_path, "asv3.txt", "bonafide target 1\nbonafide nontarget 0\nA07 spoof 0.5\n")
    a = read_asv_scores(three)
    assert (a.target.tolist(), a.nontarget.tolist(), a.spoof.tolist()) == ([1.0], [0.0], [0.5])


def test_asv_scores_of_other_trials_are_refused(tmp_path):
    cm = write(tmp_path, "cm.txt", CM_2019)  # LA_D_1..4, attacks A01, A02
    same = write(
        tmp_path,
        "asv_same.txt",
        "LA_0069 LA_D_1 - bonafide target 5\nLA_0070 LA_D_2 - bonafide nontarget -3\n"
        "LA_0069 LA_D_3 - A01 spoof 1\nLA_0069 LA_D_4 - A02 spoof 2\n",
    )
    (r,) = evaluate_score_files([cm], asv_scores=same)
    assert r.metrics.min_tdcf is not None
    # eval ASV scores (other utterances, other attacks) with dev CM scores
    other = write(tmp_path, "asv_other.txt", same.read_text().replace("_D_", "_E_"))
    with pytest.raises(
        ScoreFileError,
        match=r"asv_other.txt: no utterance in common with the CM scores .*cm.txt \(ASV "
        r"'LA_E_1', 'LA_E_2', 'LA_E_3', ...; CM 'LA_D_1', 'LA_D_2', 'LA_D_3', ...\): .*same "
        r"partition",
    ):
        evaluate_score_files([cm], asv_scores=other)
    # the 3-column format names no utterances: the attack sets tell
    three = write(
        tmp_path,
        "asv3.txt",
        "bonafide target 5\nbonafide nontarget -3\nA07 spoof 1\nA08 spoof 2\nA10 spoof 0\n",
    )
    with pytest.raises(
        ScoreFileError,
        match=r"asv3.txt: no spoofing attack in common with the CM scores .*cm.txt \(ASV "
        r"attacks A07, A08, A10; CM attacks A01, A02\): the ASV scores are of another partition",
    ):
        evaluate_score_files([cm], asv_scores=three)
    asv_a01 = "bonafide target 5\nbonafide nontarget -3\nA01 spoof 1\n"
    partial = write(tmp_path, "asv_a01.txt", asv_a01)
    with pytest.raises(
        ScoreFileError,
        match=r"asv_a01.txt: no spoof trials of attack A02, which the CM scores .*cm.txt hold "
        r"\(ASV attack A01\); give the ASV scores of the same partition",
    ):
        evaluate_score_files([cm], asv_scores=partial)
    # more attacks in the ASV file than in the CM scores (a subset of the trials) is fine
    more = write(tmp_path, "asv_more.txt", partial.read_text() + "A02 spoof 0\nA03 spoof 2\n")
    (r,) = evaluate_score_files([cm], asv_scores=more)
    assert set(r.metrics.per_attack) == {"A01", "A02"}


# ASVspoof 2021 LA ASV trial_metadata.txt (the CM layout, ASV keys) and ASV_SPK TRIAL SCORE
ASV_KEY_2021_LA = """\
LA_0009 LA_E_1 alaw ita_tx bonafide target notrim eval
LA_0010 LA_E_1 alaw ita_tx bonafide nontarget notrim eval
LA_0009 LA_E_3 alaw ita_tx A07 spoof notrim eval
LA_0010 LA_E_4 none loc_tx A08 spoof trim hidden
"""
ASV_SCORES_2021 = "LA_0010 LA_E_4 -1.5\nLA_0009 LA_E_1 7.25\nLA_0009 LA_E_3 2\nLA_0010 LA_E_1 -3\n"


def test_asv_2021_scores_with_their_key_file(tmp_path):
    from trainer.scorefiles import read_asv_key_file

    key = write(tmp_path, "asv_meta.txt", ASV_KEY_2021_LA)
    k = read_asv_key_file(key)
    assert k.format == "2021-LA" and k.keys.tolist() == [0, 1, 2, 2]
    assert k.attacks.tolist() == ["-", "-", "A07", "A08"]
    scores = write(tmp_path, "asv.txt", ASV_SCORES_2021)
    for key_arg in (key, k):  # a path or a parsed key file; joined by (speaker, trial)
        a = read_asv_scores(scores, key_arg)
        assert (a.target.tolist(), a.nontarget.tolist()) == ([7.25], [-3.0])
        assert a.spoof.tolist() == [-1.5, 2.0] and a.spoof_attacks.tolist() == ["A08", "A07"]
        assert a.utt_ids.tolist() == ["LA_E_4", "LA_E_1", "LA_E_3", "LA_E_1"]
    pa = ASV_KEY_2021_LA.replace("alaw ita_tx bonafide", "R1 M1 d1 - - - -").replace(
        "alaw ita_tx A07", "R1 M1 d1 r1 m1 s4 c4"
    )
    pa = pa.replace("none loc_tx A08", "R1 M1 d1 r1 m1 s2 c3")
    k = read_asv_key_file(write(tmp_path, "pa.txt", pa))
    assert k.format == "2021-PA" and k.attacks.tolist() == ["-", "-", "c4s4", "c3s2"]


def test_asv_2021_scores_errors(tmp_path):
    key = write(tmp_path, "asv_meta.txt", ASV_KEY_2021_LA)
    scores = write(tmp_path, "asv.txt", ASV_SCORES_2021)
    with pytest.raises(ScoreFileError, match=r"asv.txt: ASV scores in the 2021 layout .*--asv-"):
        read_asv_scores(scores)
    short = write(tmp_path, "short.txt", "\n".join(ASV_SCORES_2021.splitlines()[:3]) + "\n")
    with pytest.raises(
        ScoreFileError,
        match=r"short.txt: does not match the ASV key file .*asv_meta.txt: 1 of its 4 trials "
        r"have no score \('LA_0010 LA_E_1'\)",
    ):
        read_asv_scores(short, key)
    other = write(tmp_path, "o.txt", ASV_SCORES_2021.replace("LA_0010 LA_E_1", "LA_0011 LA_E_1"))
    with pytest.raises(ScoreFileError, match=r"1 of the 4 scored trials are not in it .*line 4"):
        read_asv_scores(other, key)
    with pytest.raises(ScoreFileError, match=r"asv6.txt: an ASV key file .* holds its own keys"):
        read_asv_scores(write(tmp_path, "asv6.txt", "S U - bonafide target 1\n"), key)
    bad = write(tmp_path, "bad.txt", ASV_KEY_2021_LA.replace("nontarget", "impostor"))
    with pytest.raises(ScoreFileError, match=r"bad.txt:2: unknown key 'impostor'"):
        read_asv_scores(scores, bad)
    cm_key = write(tmp_path, "cm_meta.txt", KEY_2021_LA)
    with pytest.raises(
        ScoreFileError, match=r"cm_meta.txt: a CM key file \(bonafide/spoof\), not an ASV one"
    ):
        read_asv_scores(scores, cm_key)
    with pytest.raises(ScoreFileError, match=r"none.txt:1: no ASV key column"):
        read_asv_scores(scores, write(tmp_path, "none.txt", "S U x y\nS V x y\n"))
    cm = write(tmp_path, "cm.txt", SCORES_2021)
    (r,) = evaluate_score_files(
        [cm], protocol=write(tmp_path, "k.txt", KEY_2021_LA), asv_scores=scores, asv_protocol=key
    )
    assert r.metrics.min_tdcf is not None and set(r.metrics.per_attack) == {"A07", "A08"}
    with pytest.raises(ScoreFileError, match=r"asv_meta.txt: an ASV key file needs its ASV"):
        evaluate_score_files([cm], protocol=cm_key, asv_protocol=key)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            CM_2019.replace("LA_D_3", "LA_D_1"),
            r"s.txt:3: duplicate utterance 'LA_D_1' \(first on line 1\)",
        ),
        (CM_2019.replace("-1.25", "nan"), r"s.txt:3: score 'nan' is not finite"),
        (CM_2019.replace("-1.25", "-inf"), r"s.txt:3: score '-inf' is not finite"),
        (CM_2019.replace("0.75", "high"), r"s.txt:4: score 'high' is not a number"),
        (CM_2019.replace("A01 spoof", "A01 fake"), r"s.txt:3: unknown key 'fake'"),
        (CM_2019.replace("A02 spoof", "A02 spoof extra"), r"s.txt:4: expected 6 columns, got 7"),
        (CM_2019.replace("spoof", "bonafide"), r"s.txt: no spoof trials"),
        (CM_2019.replace("bonafide", "spoof"), r"s.txt: no bona fide trials"),
        ("", r"s.txt: score file is empty"),
        ("\n  \n", r"s.txt: score file is empty"),
        ("a b c\n", r"s.txt:1: unrecognised score file: 3 columns"),
        ("LA_E_1 0.5\n", r"s.txt: scores in the 2021 format carry no keys"),
        ("filename\tcm-score\n", r"s.txt: score file has a header but no scores"),
        (b"U1 - bonafide \xff\n", r"s.txt:1: score file is not UTF-8 text"),
    ],
)
def test_bad_cm_score_files(tmp_path, text, match):
    p = tmp_path / "s.txt"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ScoreFileError, match=match):
        read_cm_scores(p)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(ScoreFileError, match=r"nope.txt: score file does not exist"):
        read_cm_scores(tmp_path / "nope.txt")
    with pytest.raises(ScoreFileError, match="is a directory"):
        read_cm_scores(tmp_path)


def test_score_file_vs_protocol_mismatch(tmp_path):
    key = write(tmp_path, "trial_metadata.txt", KEY_2021_LA)
    missing = write(tmp_path, "s.txt", "LA_E_3 -2.0\nLA_E_1 3.5\nLA_E_4 0.25\n")
    with pytest.raises(
        ScoreFileError,
        match=r"s.txt: does not match the key file .*trial_metadata.txt: 1 of its 4 trials has "
        r"no score \('LA_E_2'; first on line 2 of the key file\); give the key file of these "
        r"scores, or --allow-missing to evaluate the 3 trials in both$",
    ):
        read_cm_scores(missing, key)
    extra = write(tmp_path, "e.txt", SCORES_2021 + "LA_E_9 1.0\n")
    with pytest.raises(
        ScoreFileError,
        match=r"e.txt: does not match the key file .*: 1 of the 5 scored utterances is not in "
        r"it \('LA_E_9'; first on line 5\)",
    ):
        read_cm_scores(extra, key)
    dup = write(tmp_path, "d.txt", SCORES_2021 + "LA_E_1 1.0\n")
    with pytest.raises(ScoreFileError, match=r"d.txt:5: duplicate utterance 'LA_E_1'"):
        read_cm_scores(dup, key)


def big_key(n: int) -> str:
    """An ASVspoof 2021 LA key of ``n`` trials, LA_E_0.. (even: bona fide, odd: A07 spoof)."""
    rows = []
    for i in range(n):
        att, k = ("-", "bonafide") if i % 2 == 0 else ("A07", "spoof")
        rows.append(f"LA_0009 LA_E_{i} alaw ita_tx {att} {k} notrim eval")
    return "\n".join(rows) + "\n"


def test_protocol_coverage_counts_and_first_ids(tmp_path):
    key = write(tmp_path, "k.txt", big_key(20))
    # scores of 0..11 and 30..34: 8 trials of the key file without a score, 5 unknown ones
    ids = [*range(12), *range(30, 35)]
    s = write(tmp_path, "s.txt", "".join(f"LA_E_{i} {i / 10}\n" for i in ids))
    with pytest.raises(ScoreFileError) as err:
        read_cm_scores(s, key)
    msg = str(err.value)
    assert "8 of its 20 trials have no score ('LA_E_12', 'LA_E_13', 'LA_E_14', ...; " in msg
    assert "first on line 13 of the key file)" in msg
    assert "5 of the 17 scored utterances are not in it ('LA_E_30', 'LA_E_31', 'LA_E_32', " in msg
    assert "...; first on line 13)" in msg
    assert msg.endswith("--allow-missing to evaluate the 12 trials in both")


def test_allow_missing_evaluates_the_intersection_with_a_warning(tmp_path):
    from trainer.scorefiles import CoverageWarning

    key = write(tmp_path, "k.txt", big_key(20))
    ids = [*range(12), *range(30, 35)]
    s = write(tmp_path, "s.txt", "".join(f"LA_E_{i} {i / 10}\n" for i in ids))
    with pytest.warns(CoverageWarning, match=r"s.txt: evaluating the 12 trials it shares with "):
        cm = read_cm_scores(s, key, allow_missing=True)
    assert cm.utt_ids == [f"LA_E_{i}" for i in range(12)]
    assert cm.scores.tolist() == [i / 10 for i in range(12)]
    assert cm.labels.tolist() == [1, 0] * 6 and cm.lines.tolist() == list(range(1, 13))
    assert cm.attacks.tolist() == ["-", "A07"] * 6
    assert cm.columns["codec"].tolist() == ["alaw"] * 12
    with pytest.warns(CoverageWarning):
        (r,) = evaluate_score_files([s], protocol=key, allow_missing=True)
    assert (r.metrics.n_bonafide, r.metrics.n_spoof) == (6, 6)
    # a 2019 file with its own keys: the extra trials are dropped too
    cm19 = "".join(
        f"LA_0009 LA_E_{i} - {'-' if i % 2 == 0 else 'A07'} "
        f"{'bonafide' if i % 2 == 0 else 'spoof'} {i}\n"
        for i in [*range(4), 40]
    )
    with pytest.warns(CoverageWarning, match="16 of its 20 trials have no score"):
        cm = read_cm_scores(write(tmp_path, "c19.txt", cm19), key, allow_missing=True)
    assert cm.utt_ids == ["LA_E_0", "LA_E_1", "LA_E_2", "LA_E_3"]
    assert cm.labels.tolist() == [1, 0, 1, 0]


def test_allow_missing_still_refuses_duplicates_and_disjoint_files(tmp_path):
    key = write(tmp_path, "k.txt", big_key(4))
    dup = write(tmp_path, "d.txt", "LA_E_0 1\nLA_E_1 0\nLA_E_0 2\n")
    with pytest.raises(ScoreFileError, match=r"d.txt:3: duplicate utterance 'LA_E_0'"):
        read_cm_scores(dup, key, allow_missing=True)
    other = write(tmp_path, "o.txt", "LA_D_0 1\nLA_D_1 0\n")
    with pytest.raises(
        ScoreFileError, match=r"o.txt: no utterance in common with the key file .*k.txt: 4 of"
    ):
        read_cm_scores(other, key, allow_missing=True)


def test_duplicates_are_counted(tmp_path):
    text = "".join(f"U{i} {i}\n" for i in range(6)) + "U4 1\nU1 2\nU1 3\nU5 0\n"
    with pytest.raises(
        ScoreFileError,
        match=r"s.txt:7: duplicate utterance 'U4' \(first on line 5\); 3 utterances appear more "
        r"than once: 'U4', 'U1', 'U5'$",
    ):
        read_cm_scores(write(tmp_path, "s.txt", text), write(tmp_path, "k.txt", big_key(2)))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("S U1 x y bogus\n", r"k.txt:1: no key column"),
        ("S U1 - - bonafide\nS U2 - - maybe\n", r"k.txt:2: unknown key 'maybe'"),
        (
            "S U1 - - bonafide\nS U1 - A01 spoof\n",
            r"k.txt:2: duplicate utterance 'U1' \(first on line 1\)",
        ),
        ("S U1 - - bonafide\nS U2 - spoof\n", r"k.txt:2: expected 5 columns, got 4"),
        ("filename\tcm-label\n", r"k.txt: key file has a header but no trials"),
    ],
)
def test_bad_key_files(tmp_path, text, match):
    with pytest.raises(ScoreFileError, match=match):
        read_key_file(write(tmp_path, "k.txt", text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bonafide nontarget 1\nA01 spoof 2\n", r"a.txt: no target trials"),
        ("bonafide target 1\nA01 spoof 2\n", r"a.txt: no nontarget trials"),
        ("bonafide target 1\nbonafide nontarget 2\n", r"a.txt: no spoof trials"),
        ("bonafide target 1\nbonafide impostor 2\n", r"a.txt:2: unknown key 'impostor'"),
        ("bonafide target x\n", r"a.txt:1: score 'x' is not a number"),
        ("bonafide target nan\n", r"a.txt:1: score 'nan' is not finite"),
        ("S U - bonafide target 1\nS U - A01 spoof 2\n", r"a.txt:2: duplicate trial 'S U'"),
        ("a b c d\n", r"a.txt:1: unrecognised ASV score file: 4 columns"),
    ],
)
def test_bad_asv_files(tmp_path, text, match):
    with pytest.raises(ScoreFileError, match=match):
        read_asv_scores(write(tmp_path, "a.txt", text))


def test_evaluate_score_files_by_column_and_json(tmp_path):
    key = write(tmp_path, "trial_metadata.txt", KEY_2021_LA)
    s1 = write(tmp_path, "s1.txt", SCORES_2021)
    s2 = write(tmp_path, "s2.txt", "LA_E_1 1\nLA_E_2 2\nLA_E_3 3\nLA_E_4 4\n")
    res = evaluate_score_files([s1, s2], protocol=key, by="codec")
    assert [r.metrics.eer for r in res] == [0.0, 1.0]  # s2 ranks every spoof above
    assert set(res[0].metrics.per_condition["codec"]) == {"alaw", "none"}
    doc = results_to_json(res)
    assert [r["score_file"] for r in doc["results"]] == [str(s1), str(s2)]
    assert doc["results"][0]["by"] == "codec" and "per_condition" in doc["results"][0]
    one = results_to_json(res[:1])
    assert one["score_file"] == str(s1) and "per_attack" in one
    with pytest.raises(MetricsError, match=r"--by 'vocoder': no such column .*codec"):
        evaluate_score_files([s1], protocol=key, by="vocoder")


# --- property: what is written is read back ---------------------------------------------------

ids = st.text("ABCDEFGHIJ_0123456789", min_size=1, max_size=10)
seps = st.sampled_from([" ", "\t", "  ", " \t "])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(ids, st.tuples(st.booleans(), st.floats(-1e6, 1e6)), min_size=2, max_size=30),
    seps,
    st.booleans(),
)
def test_round_trip(tmp_path, trials, sep, blank_lines):
    items = list(trials.items())
    if all(b for _, (b, _) in items) or not any(b for _, (b, _) in items):
        items[0] = (items[0][0], (not items[0][1][0], items[0][1][1]))
    lines = []
    for utt, (bona, score) in items:
        key, att = ("bonafide", "-") if bona else ("spoof", "A01")
        lines.append(sep.join(["SPK", utt, "-", att, key, repr(score)]))
        if blank_lines:
            lines.append("")
    p = tmp_path / "rt.txt"
    p.write_text("\n".join(lines) + "\n")
    cm = read_cm_scores(p)
    assert cm.utt_ids == [u for u, _ in items]
    np.testing.assert_array_equal(cm.scores, [s for _, (_, s) in items])
    assert cm.labels.tolist() == [int(b) for _, (b, _) in items]
    step = 2 if blank_lines else 1
    assert cm.lines.tolist() == list(range(1, step * len(items) + 1, step))


@pytest.mark.parametrize("fmt", SCORE_FORMATS)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    trials=st.dictionaries(
        ids,
        st.tuples(st.booleans(), st.floats(allow_nan=False, allow_infinity=False)),
        min_size=2,
        max_size=20,
    )
)
def test_every_written_layout_is_read_back(tmp_path, fmt, trials):
    items = list(trials.items())
    bona = [True] + [False] * (len(items) - 1)
    utts = [u for u, _ in items]
    scores = [s for _, (_, s) in items]
    keys = ["bonafide" if b else "spoof" for b in bona]
    systems = ["-" if b else "A05" for b in bona]
    path = write_score_file(
        tmp_path / fmt / "s.txt",
        utts,
        scores,
        format=fmt,
        speakers=["S"] * len(utts),
        systems=systems,
        keys=keys,
    )
    proto = write(
        tmp_path,
        "p.txt",
        "".join(f"S {u} - {a} {k}\n" for u, a, k in zip(utts, systems, keys, strict=True)),
    )
    cm = read_cm_scores(path, proto)
    assert cm.format == {"asvspoof2019": "2019", "asvspoof2021": "2021"}.get(fmt, fmt)
    assert cm.utt_ids == utts and cm.scores.tolist() == scores
    assert cm.labels.tolist() == [int(b) for b in bona] and cm.attacks.tolist() == systems


def test_writer_layouts_byte_for_byte(tmp_path):
    args = (["LA_E_1", "LA_E_2"], [0.5, -1.25])
    keyed = {"speakers": ["LA_0001", "LA_0002"], "systems": ["-", "A07"]}
    keyed["keys"] = ["bonafide", "spoof"]
    expected = {
        "asvspoof2019": "LA_0001 LA_E_1 - - bonafide 0.5\nLA_0002 LA_E_2 - A07 spoof -1.25\n",
        "asvspoof2021": "LA_E_1 0.5\nLA_E_2 -1.25\n",
        "asvspoof5": "filename\tcm-score\nLA_E_1\t0.5\nLA_E_2\t-1.25\n",
    }
    for fmt, text in expected.items():
        path = write_score_file(tmp_path / "new" / f"{fmt}.txt", *args, format=fmt, **keyed)
        assert path.read_text() == text
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(
        f"{f}.txt" for f in expected
    )  # no temporary file left behind


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="format must be one of asvspoof2019"):
        write_score_file(tmp_path / "s", ["a"], [1.0], format="csv")
    with pytest.raises(ValueError, match="1 utterance ids but scores of shape"):
        write_score_file(tmp_path / "s", ["a"], [1.0, 2.0], format="asvspoof2021")
    keyed = {"speakers": ["S"], "systems": ["-"]}
    with pytest.raises(ValueError, match="needs bonafide/spoof keys, got 'genuine'"):
        write_score_file(tmp_path / "s", ["a"], [1.0], keys=["genuine"], **keyed)
    with pytest.raises(ValueError, match="one entry per utterance"):
        write_score_file(tmp_path / "s", ["a"], [1.0], keys=["spoof", "spoof"], **keyed)
    blocker = write(tmp_path, "file", "")
    with pytest.raises(ScoreFileError, match="cannot write"):
        write_score_file(blocker / "s.txt", ["a"], [1.0], format="asvspoof2021")


# --- real files (../shared/data) --------------------------------------------------------------


@pytest.fixture(scope="module")
def la_scores(shared_data: Path) -> Path:
    path = shared_data / "asvspoof2019_la_scores"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def test_all_real_files_run(la_scores):
    dev = sorted((la_scores / "dev").glob("cm_*.txt"))
    ev = sorted((la_scores / "eval").glob("cm_*.txt"))
    assert len(dev) == 4 and len(ev) == 4
    for split, files, n in (("dev", dev, (2548, 22296)), ("eval", ev, (7355, 63882))):
        res = evaluate_score_files(files, asv_scores=la_scores / split / "asv_official.txt")
        for r in res:
            m = r.metrics
            assert (m.n_bonafide, m.n_spoof) == n
            assert 0 <= m.eer < 0.5 and 0 <= m.min_tdcf_legacy <= m.min_tdcf <= 1
            assert 0 <= m.mindcf <= 1 and m.cllr > 0
    eval_asv = read_asv_scores(la_scores / "eval" / "asv_official.txt")  # the 3-column format
    assert (eval_asv.target.size, eval_asv.nontarget.size, eval_asv.spoof.size) == (
        5370,
        33327,
        63882,
    )
    assert sorted(set(eval_asv.spoof_attacks.tolist())) == [f"A{i:02d}" for i in range(7, 20)]


def test_real_asv_scores_of_the_other_partition_are_refused(la_scores):
    dev_cm, eval_cm = la_scores / "dev" / "cm_gmm_baseline.txt", la_scores / "eval" / "cm_oct.txt"
    # dev ASV scores name their utterances (LA_D_...): none is in the eval CM scores
    with pytest.raises(ScoreFileError, match=r"dev/asv_official.txt: no utterance in common"):
        evaluate_score_files([eval_cm], asv_scores=la_scores / "dev" / "asv_official.txt")
    # eval ASV scores (3 columns, no ids) hold A07-A19, the dev CM scores A01-A06
    with pytest.raises(
        ScoreFileError,
        match=r"eval/asv_official.txt: no spoofing attack in common with the CM scores "
        r".*cm_gmm_baseline.txt \(ASV attacks A07, .*, A19; CM attacks A01, A02, A03, A04, "
        r"A05, A06\)",
    ):
        evaluate_score_files([dev_cm], asv_scores=la_scores / "eval" / "asv_official.txt")
