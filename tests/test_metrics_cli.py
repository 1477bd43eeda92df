"""``trainer metrics``: tables, --json, --det, several files, and bad input (exit 2, no output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A small 2019 score file, a 2021 score file with its LA key, and ASV scores."""
    rng = np.random.default_rng(0)
    attacks = ["-"] * 20 + ["A07"] * 15 + ["A08"] * 15
    codecs = ["none", "alaw"] * 25
    scores = np.concatenate([rng.normal(2, 1, 20), rng.normal(0, 1, 15), rng.normal(-1, 1, 15)])
    cm19, key, cm21 = [], [], []
    for i, (att, codec, s) in enumerate(zip(attacks, codecs, scores, strict=True)):
        k = "bonafide" if att == "-" else "spoof"
        cm19.append(f"SPK LA_E_{i} - {att} {k} {float(s)!r}")
        key.append(f"SPK LA_E_{i} {codec} tx {att} {k} notrim eval")
        cm21.append(f"LA_E_{i} {float(s)!r}")
    asv = ["bonafide target 3", "bonafide target 4", "bonafide target 2.2"]
    asv += ["bonafide nontarget 1", "bonafide nontarget 2", "A07 spoof 2.5", "A08 spoof 0.5"]
    out = {
        "cm19": tmp_path / "cm19.txt",
        "key": tmp_path / "trial_metadata.txt",
        "cm21": tmp_path / "cm21.txt",
        "asv": tmp_path / "asv.txt",
    }
    out["cm19"].write_text("\n".join(cm19) + "\n")
    out["key"].write_text("\n".join(key) + "\n")
    out["cm21"].write_text("\n".join(cm21) + "\n")
    out["asv"].write_text("\n".join(asv) + "\n")
    return out


def test_single_file_table_json_det(files, tmp_path, capsys):
    j, det = tmp_path / "out.json", tmp_path / "det.png"
    rc, out, err = run(
        ["metrics", str(files["cm19"]), "--asv-scores", str(files["asv"]), "--json", str(j),
         "--det", str(det)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    doc = json.loads(j.read_text())
    for key in ("n_bonafide", "n_spoof", "eer", "eer_threshold", "min_tdcf", "min_tdcf_legacy",
                "mindcf", "actdcf", "cllr", "per_attack"):  # fmt: skip
        assert key in doc
    assert (doc["n_bonafide"], doc["n_spoof"]) == (20, 30)
    assert set(doc["per_attack"]) == {"A07", "A08"}
    assert set(doc["per_attack"]["A07"]) >= {"eer", "mindcf", "actdcf", "cllr", "min_tdcf"}
    assert isinstance(doc["min_tdcf"], float) and isinstance(doc["min_tdcf_legacy"], float)
    assert f"{100 * doc['eer']:.4f} %" in out
    assert "A07" in out and "A08" in out and "min t-DCF" in out
    assert det.read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*tmp*"))  # temporaries cleaned up


def test_json_nulls_without_asv_and_legacy_flag(files, tmp_path, capsys):
    j = tmp_path / "o.json"
    rc, out, _ = run(["metrics", str(files["cm19"]), "--json", str(j)], capsys)
    assert rc == 0
    doc = json.loads(j.read_text())
    assert doc["min_tdcf"] is None and doc["min_tdcf_legacy"] is None
    assert "needs --asv-scores" in out
    rc, out, _ = run(["metrics", str(files["cm19"]), "--asv-scores", str(files["asv"]),
                      "--legacy-tdcf"], capsys)  # fmt: skip
    assert rc == 0 and "(legacy 2019; revised" in out


def test_several_files_json_list_and_overlaid_det(files, tmp_path, capsys):
    j, det = tmp_path / "all.json", tmp_path / "all.png"
    rc, out, err = run(
        ["metrics", str(files["cm19"]), str(files["cm21"]), "--protocol", str(files["key"]),
         "--json", str(j), "--det", str(det), "--by", "codec"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    doc = json.loads(j.read_text())
    assert [r["score_file"] for r in doc["results"]] == [str(files["cm19"]), str(files["cm21"])]
    assert [r["format"] for r in doc["results"]] == ["2019", "2021"]
    # same scores, same keys: identical metrics
    assert doc["results"][0]["eer"] == doc["results"][1]["eer"]
    assert set(doc["results"][1]["per_condition"]["codec"]) == {"alaw", "none"}
    assert "codec" in out and "alaw" in out and out.rstrip().splitlines()[-1].startswith("cm21")
    assert det.read_bytes()[:8] == PNG_MAGIC


BAD_CASES = {
    "duplicate utterance": (lambda t: t + t.splitlines()[0] + "\n", r"cm19.txt:51: duplicate"),
    "nan score": (lambda t: t.replace(t.split()[5], "nan", 1), r"cm19.txt:1: score 'nan' is not"),
    "inf score": (lambda t: t.replace(t.split()[5], "inf", 1), r"cm19.txt:1: score 'inf' is not"),
    "text score": (lambda t: t.replace(t.split()[5], "abc", 1), r"cm19.txt:1: score 'abc' is not"),
    "unknown key": (lambda t: t.replace("bonafide", "genuine", 1), r"cm19.txt:1: unknown key"),
    "no bona fide": (lambda t: t.replace("bonafide", "spoof"), r"cm19.txt: no bona fide"),
    "no spoof": (lambda t: t.replace(" spoof ", " bonafide "), r"cm19.txt: no spoof"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_score_file_exit_2_and_no_output(files, tmp_path, capsys, case):
    edit, match = BAD_CASES[case]
    bad = files["cm19"]
    bad.write_text(edit(bad.read_text()))
    j, det = tmp_path / "x.json", tmp_path / "x.png"
    # the bad file comes second: nothing may be written for the first one either
    good = tmp_path / "good.txt"
    good.write_text("S U1 - - bonafide 1\nS U2 - A01 spoof 0\n")
    rc, out, err = run(
        ["metrics", str(good), str(bad), "--json", str(j), "--det", str(det)], capsys
    )
    assert rc == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err), err
    assert out == ""
    assert not j.exists() and not det.exists() and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("asv_text", "match"),
    [
        ("bonafide nontarget 1\nA07 spoof 2\n", "asv.txt: no target trials"),
        ("bonafide target 1\nA07 spoof 2\n", "asv.txt: no nontarget trials"),
        ("bonafide target 1\nbonafide nontarget 0\n", "asv.txt: no spoof trials"),
    ],
)
def test_bad_asv_file_exit_2(files, tmp_path, capsys, asv_text, match):
    files["asv"].write_text(asv_text)
    j = tmp_path / "x.json"
    rc, _, err = run(
        ["metrics", str(files["cm19"]), "--asv-scores", str(files["asv"]), "--json", str(j)],
        capsys,
    )
    assert rc == 2 and match in err and not j.exists()


def test_protocol_mismatch_and_bad_by_exit_2(files, tmp_path, capsys):
    lines = files["cm21"].read_text().splitlines()
    files["cm21"].write_text("\n".join(lines[:-1]) + "\n")  # LA_E_49 has no score
    j = tmp_path / "x.json"
    rc, _, err = run(
        ["metrics", str(files["cm21"]), "--protocol", str(files["key"]), "--json", str(j)], capsys
    )
    assert rc == 2 and "1 of its 50 trials has no score ('LA_E_49'; first on line 50" in err
    assert "--allow-missing to evaluate the 49 trials in both" in err and not j.exists()
    files["cm21"].write_text("\n".join([*lines, "LA_E_99 0.5"]) + "\n")
    rc, _, err = run(["metrics", str(files["cm21"]), "--protocol", str(files["key"])], capsys)
    assert rc == 2 and "1 of the 51 scored utterances is not in it ('LA_E_99'; first on" in err
    rc, _, err = run(["metrics", str(files["cm19"]), "--by", "codec", "--json", str(j)], capsys)
    assert rc == 2 and "--by 'codec': no such column" in err and not j.exists()
    rc, _, err = run(["metrics", str(files["cm21"])], capsys)
    assert rc == 2 and "carry no keys" in err


def test_usage_errors(capsys):
    rc, _, err = run(["metrics"], capsys)
    assert rc == 2 and "Missing argument" in err


def test_subprocess_entry_point(files, tmp_path):
    j = tmp_path / "s.json"
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "metrics", str(files["cm19"]), "--json", str(j)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(j.read_text())["n_spoof"] == 30
    bad = tmp_path / "bad.txt"
    bad.write_text("S U1 - - bonafide 1\nS U1 - A01 spoof 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "metrics", str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {bad}:2: duplicate utterance 'U1' (first on line 1)")


def test_allow_missing_warns_and_evaluates_the_shared_trials(files, tmp_path, capsys):
    lines = files["cm21"].read_text().splitlines()
    # LA_E_0 (bona fide) and LA_E_49 (spoof) have no score; LA_E_99 is not in the key file
    files["cm21"].write_text("\n".join([*lines[1:-1], "LA_E_99 0.5"]) + "\n")
    j = tmp_path / "x.json"
    argv = ["metrics", str(files["cm21"]), "--protocol", str(files["key"]), "--json", str(j)]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "2 of its 50 trials have no score ('LA_E_0', 'LA_E_49'" in err
    rc, out, err = run([*argv, "--allow-missing"], capsys)
    assert rc == 0 and "cm21.txt" in out, err
    (warning,) = err.strip().splitlines()
    assert warning.startswith("warning: ") and "cm21.txt: evaluating the 48 trials it shares" in err
    assert "2 of its 50 trials have no score" in warning
    assert "1 of the 49 scored utterances is not in it ('LA_E_99'" in warning
    doc = json.loads(j.read_text())
    assert (doc["n_bonafide"], doc["n_spoof"]) == (19, 29)
    # duplicated utterances stay an error
    files["cm21"].write_text("\n".join([*lines, lines[0]]) + "\n")
    rc, _, err = run([*argv, "--allow-missing"], capsys)
    assert rc == 2 and "cm21.txt:51: duplicate utterance 'LA_E_0'" in err


def test_asv_scores_of_other_trials_exit_2(files, tmp_path, capsys):
    j = tmp_path / "x.json"
    argv = ["metrics", str(files["cm19"]), "--json", str(j), "--asv-scores", str(files["asv"])]
    files["asv"].write_text("bonafide target 3\nbonafide nontarget 1\nA07 spoof 2.5\n")
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == "" and not j.exists()
    assert "asv.txt: no spoof trials of attack A08, which the CM scores" in err
    files["asv"].write_text("bonafide target 3\nbonafide nontarget 1\nA01 spoof 2.5\n")
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "no spoofing attack in common" in err and "(ASV attack A01; CM " in err


def test_asv_2021_layout_with_asv_protocol(files, tmp_path, capsys):
    meta = ["SPK LA_E_0 none tx bonafide target notrim eval"]
    meta += ["SPK LA_E_1 none tx bonafide nontarget notrim eval"]
    meta += [f"SPK LA_E_{i} none tx {a} spoof notrim eval" for i, a in ((20, "A07"), (40, "A08"))]
    asv_key = tmp_path / "asv_meta.txt"
    asv_key.write_text("\n".join(meta) + "\n")
    files["asv"].write_text("SPK LA_E_0 3\nSPK LA_E_1 1\nSPK LA_E_20 2.5\nSPK LA_E_40 0.5\n")
    argv = ["metrics", str(files["cm21"]), "--protocol", str(files["key"]), "--asv-scores",
            str(files["asv"])]  # fmt: skip
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "asv.txt: ASV scores in the 2021 layout" in err
    rc, out, err = run([*argv, "--asv-protocol", str(asv_key)], capsys)
    assert rc == 0, err
    assert "min t-DCF" in out and "needs --asv-scores" not in out


def test_real_eval_cm_with_dev_asv_exit_2(shared_data, tmp_path, capsys):
    d = shared_data / "asvspoof2019_la_scores"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    rc, out, err = run(
        ["metrics", str(d / "eval" / "cm_B01_cqcc_gmm.txt"), "--asv-scores",
         str(d / "dev" / "asv_official.txt")],
        capsys,
    )  # fmt: skip
    assert rc == 2 and out == ""
    assert "dev/asv_official.txt: no utterance in common with the CM scores" in err
    assert "give the ASV scores of the same partition" in err


def test_labels_name_the_curves_and_are_counted(files, tmp_path, capsys, monkeypatch):
    from trainer import plots

    drawn = {}
    real = plots.plot_det

    def spy(curves, path, **kwargs):
        drawn["names"] = [n for n, _ in curves]
        return real(curves, path, **kwargs)

    monkeypatch.setattr(plots, "plot_det", spy)
    det = tmp_path / "d.png"
    argv = ["metrics", str(files["cm19"]), str(files["cm21"]), "--protocol", str(files["key"]),
            "--det", str(det)]  # fmt: skip
    rc, out, err = run([*argv, "--label", "LFCC", "--label", "GRCNN"], capsys)
    assert rc == 0, err
    assert drawn["names"] == ["LFCC", "GRCNN"] and det.read_bytes()[:8] == PNG_MAGIC
    assert out.startswith(f"LFCC  ({files['cm19']}, 2019 format)")
    assert out.rstrip().splitlines()[-1].startswith("GRCNN")
    det.unlink()
    rc, out, err = run([*argv, "--label", "LFCC"], capsys)
    assert rc == 2 and out == "" and not det.exists()
    assert err == "error: 1 --label for 2 score files: give one per score file\n"


def test_det_path_is_checked_before_the_metrics(files, tmp_path, capsys, monkeypatch):
    from featstore.errors import ConfigError
    from trainer import plots, scorefiles

    def refuse(path):
        raise ConfigError(f"--det {path}: refused")

    def never(*args, **kwargs):
        raise AssertionError("metrics computed before the DET path was checked")

    monkeypatch.setattr(plots, "check_plot_path", refuse, raising=False)
    monkeypatch.setattr(scorefiles, "evaluate_score_files", never)
    rc, out, err = run(["metrics", str(files["cm19"]), "--det", str(tmp_path / "d.xyz")], capsys)
    assert rc == 2 and out == "" and err.strip().endswith("d.xyz: refused")


def test_real_dev_files(shared_data, tmp_path, capsys):
    d = shared_data / "asvspoof2019_la_scores"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    j = tmp_path / "dev.json"
    rc, out, err = run(
        ["metrics", str(d / "dev" / "cm_grcnn_seed.txt"), "--asv-scores",
         str(d / "dev" / "asv_official.txt"), "--json", str(j)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    doc = json.loads(j.read_text())
    assert doc["eer"] == pytest.approx(1.4924536097456288 / 100, abs=1e-12)
    assert doc["min_tdcf"] == pytest.approx(0.10022192844773287, abs=1e-12)
    assert doc["min_tdcf_legacy"] == pytest.approx(0.04072125679470328, abs=1e-12)
    assert "1.4925 %" in out


# --- plots ------------------------------------------------------------------------------------


def test_plot_det_and_training_curves(tmp_path):
    from trainer.errors import ScoreFileError
    from trainer.metrics import det_curve
    from trainer.plots import plot_det, plot_training_curves

    curves = {"a": det_curve([0.9, 0.4, 0.8], [0.1, 0.5, 0.2]), "b": det_curve([1.0], [0.0])}
    assert plot_det(curves, tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_det(list(curves.items()), tmp_path / "d.svg").read_text().lstrip().startswith("<")
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train_loss,dev_eer,lr\n1,10,0.6,0.2,1e-3\n2,20,0.4,,1e-3\n3,30,0.3,nan,1e-3\n"
    )
    assert plot_training_curves(csv, tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    csv.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ScoreFileError, match=r"metrics.csv:1: metrics CSV has no 'train_loss'"):
        plot_training_curves(csv, tmp_path / "c.png")
    csv.write_text("epoch,train_loss\n1,0.5\n2,oops\n")
    with pytest.raises(ScoreFileError, match=r"metrics.csv:3: train_loss 'oops' is not a number"):
        plot_training_curves(csv, tmp_path / "c.png")
    with pytest.raises(ScoreFileError, match="cannot read"):
        plot_training_curves(tmp_path / "none.csv", tmp_path / "c.png")
