"""No silently wrong training or scoring result: bins, run locks, score files of
two stores, I/O faults, corrupt checkpoints, config ranges, one-class splits, crop lengths,
resume without a checkpoint, ``--verify``."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_fixture import make_corpus, protocol_path

import featstore
import trainer
from featstore.errors import ResourceError, StoreError
from trainer import checkpoint
from trainer.cli import main
from trainer.config import load_config_file
from trainer.errors import TrainingError
from trainer.runs import lock_run

FAST = dict(epochs=1, batch_size=4, workers=0, threads=1, progress=False, warmup=0.0)
LCNN = dict(model="lcnn", model_kwargs={"train_frames": 24}, **FAST)
# lfcc: 30 coefficients (+ deltas) = 90 bins; fbank: 70 bands (VGG10 needs a multiple of 8)
WIDE = {"lfcc": {"n_ceps": 30, "n_filters": 30}, "fbank": {"n_mels": 70}}


def _build(root: Path, name: str, corpus: Path, features: list[str], params=None) -> Path:
    out = root / name
    featstore.build(
        corpus / "protocols",
        corpus,
        out,
        features=features,
        feature_params=params,
        jobs=1,
        quiet=True,
        fsync=False,
    )
    return out


def _corpus(root: Path, *, one_class: str | None = None) -> Path:
    corpus = make_corpus(root, {"train": 9, "dev": 6, "eval": 4}, (0.3, 0.6))
    if one_class is not None:  # every utterance of that split becomes spoof
        path = protocol_path(corpus, one_class)
        path.write_text(path.read_text().replace(" - bonafide", " A01 spoof"))
    return corpus


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checks")
    corpus = _corpus(root / "corpus")
    return {
        "wide": _build(root, "wide.zarr", corpus, ["lfcc", "fbank"], WIDE),
        "lfcc60": _build(root, "lfcc60.zarr", corpus, ["lfcc"]),
        "root": root,
        "corpus": corpus,
    }


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# --- 1. a model is built for the store's bins -------------------------------------------------


def test_lcnn_is_built_for_a_90_bin_lfcc_store_and_scored_as_built(stores, tmp_path):
    run = trainer.fit(str(stores["wide"]), out=tmp_path / "run", **LCNN).out
    record = json.loads((run / "config.json").read_text())
    assert record["model"]["n_bins"] == {"lfcc": 90}  # not the default 60
    assert record["model"]["kwargs"]["n_bins"] == 90  # scoring rebuilds the same model
    assert record["store"]["n_bins"] == {"lfcc": 90}
    assert record["fit"]["model_kwargs"] == {"train_frames": 24}  # the user's, unchanged
    weights = checkpoint.load_checkpoint(run / "best.pt")["model"]
    assert weights["classifier.weight"].shape[1] == 32 * (90 // 16)
    scores = trainer.score(run=run, split="eval", progress=False)
    assert scores == run / "scores_eval.txt" and len(scores.read_text().splitlines()) == 4


def test_model_that_cannot_take_the_stores_bins_is_refused_naming_both(stores, tmp_path):
    with pytest.raises(TrainingError, match=r"cannot take the store's 70 fbank bins.*64"):
        trainer.fit(str(stores["wide"]), model="vgg10", out=tmp_path / "v", **FAST)
    assert not (tmp_path / "v").exists()  # nothing written, not even the run directory


def test_explicit_n_bins_more_than_the_store_is_refused_fewer_is_said(stores, tmp_path):
    wide = str(stores["wide"])
    kwargs = {**LCNN, "model_kwargs": {"train_frames": 24, "n_bins": 96}}
    with pytest.raises(TrainingError, match=r"takes 96 bins of 'lfcc', the store has 90"):
        trainer.fit(wide, out=tmp_path / "a", **kwargs)
    kwargs["model_kwargs"]["n_bins"] = 60
    with pytest.warns(UserWarning, match=r"first 60 of the store's 90 lfcc bins"):
        trainer.fit(wide, out=tmp_path / "b", **kwargs)


def test_scoring_a_store_whose_bins_differ_is_refused_even_forced(stores, tmp_path):
    run = trainer.fit(str(stores["wide"]), out=tmp_path / "run", **LCNN).out
    with pytest.raises(StoreError, match=r"lfcc has 60 bins, run .* was trained on 90"):
        trainer.score(run=run, store=stores["lfcc60"], force=True, progress=False)


# --- 2. one writer per run directory ----------------------------------------------------------

HOLD = """
import sys
from trainer.runs import lock_run
with lock_run(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_second_writer_of_a_run_directory_gets_one_error_line_exit_1(stores, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["fit", str(stores["lfcc60"]), "--model", "lcnn", "--out", str(out)]
        rc, _, err = _cli([*argv, "--epochs", "1", "--workers", "0", "--quiet"], capsys)
        assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1
        assert "another 'trainer fit' is writing this run directory" in err
        assert not (out / "config.json").exists()
    finally:
        holder.communicate("", timeout=60)
    with lock_run(out):  # released with its holder
        pass


@pytest.fixture(scope="module")
def lcnn_run(stores, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lcnn") / "run"
    return trainer.fit(str(stores["lfcc60"]), out=out, **LCNN).out


def test_scoring_another_store_does_not_overwrite_the_first(stores, lcnn_run, tmp_path, capsys):
    import shutil

    second = tmp_path / "second.zarr"
    shutil.copytree(stores["lfcc60"], second)  # same features, another store
    rc, out, err = _cli(["score", "--run", str(lcnn_run), "--split", "eval", "--quiet"], capsys)
    assert rc == 0, err
    own = lcnn_run / "scores_eval.txt"  # the README's command keeps its file name
    assert f"wrote {own} " in out
    first = own.read_bytes()
    args = ["score", "--run", str(lcnn_run), "--store", str(second), "--quiet"]
    rc, out, err = _cli(args, capsys)
    assert rc == 0, err
    other = lcnn_run / "scores_second_eval.txt"
    assert f"wrote {other} " in out and other.is_file()
    assert own.read_bytes() == first
    info = json.loads((lcnn_run / "scores_second_eval.txt.json").read_text())
    assert info["store"]["path"] == str(second.resolve())


def test_score_out_of_another_store_or_run_needs_force(stores, lcnn_run, tmp_path, capsys):
    import shutil

    second = tmp_path / "second.zarr"
    shutil.copytree(stores["lfcc60"], second)
    out = tmp_path / "s.txt"
    base = ["score", "--run", str(lcnn_run), "--out", str(out), "--quiet"]
    assert _cli(base, capsys)[0] == 0
    assert _cli(base, capsys)[0] == 0  # the same run, store and split again: replaced
    written = out.read_bytes()
    rc, _, err = _cli([*base, "--store", str(second)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--force" in err
    assert f"holds scores of split 'eval' of store {stores['lfcc60'].resolve()}" in err
    assert out.read_bytes() == written
    rc, _, err = _cli([*base, "--split", "dev"], capsys)
    assert rc == 2 and "holds scores of split 'eval'" in err
    rc, _, err = _cli([*base, "--store", str(second), "--force"], capsys)
    assert rc == 0, err
    assert json.loads(out.with_name("s.txt.json").read_text())["store"]["path"] == str(
        second.resolve()
    )
    foreign = tmp_path / "mine.txt"
    foreign.write_text("my own notes\n")  # no sidecar: not ours to replace
    rc, _, err = _cli(["score", "--run", str(lcnn_run), "--out", str(foreign)], capsys)
    assert rc == 2 and "no readable provenance sidecar" in err
    assert foreign.read_text() == "my own notes\n"


# --- 3. faults and bad values: one error line --------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"),
    ],
)
def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, fault):
    path = checkpoint.save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise fault

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ResourceError, match=r"cannot write checkpoint .*last\.pt: .*(space|full)"):
        checkpoint.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_disk_full_during_fit_is_one_line_exit_1(stores, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    argv = ["fit", str(stores["lfcc60"]), "--model", "lcnn", "--out", str(tmp_path / "r")]
    rc, _, err = _cli(
        [*argv, "--epochs", "1", "--workers", "0", "--crop-frames", "24", "--quiet"], capsys
    )
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith("error: cannot write checkpoint ") and "no space left" in err


def _numpy_pickle(path: Path) -> None:
    torch.save({"model": np.ones(3)}, path)  # loads only with weights_only=False


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a checkpoint"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(b""),
        _numpy_pickle,
    ],
    ids=["garbage", "truncated", "empty", "pickled-objects"],
)
def test_corrupt_checkpoint_is_one_line_without_torchs_advice(tmp_path, damage):
    path = checkpoint.save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "w": torch.ones(9)})
    damage(path)
    with pytest.raises(TrainingError) as info:
        checkpoint.load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} is corrupt or not a spoofstore checkpoint: ")
    assert "weights_only" not in message and "\n" not in message and len(message) < 300


def test_resuming_a_corrupt_last_pt_is_exit_2(stores, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"\x80\x02garbage")
    rc, _, err = _cli(["fit", str(stores["lfcc60"]), "--out", str(run), "--resume"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "is corrupt or not a spoofstore checkpoint" in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("epochs = -1", "epochs must be a positive integer, got -1"),
        ("epochs = 0", "epochs must be a positive integer, got 0"),
        ("epochs = '3'", "epochs must be an integer, got '3'"),
        ("batch-size = -4", "batch-size must be a positive integer, got -4"),
        ("crop_frames = -5", "crop_frames must be a positive integer, got -5"),
        ("eval_batch_size = 0", "eval_batch_size must be a positive integer, got 0"),
        ("lr = -0.1", "lr must be a positive number, got -0.1"),
        ("lr = 0", "lr must be a positive number, got 0"),
        ("weight_decay = -1e-2", "weight_decay must be a number >= 0, got -0.01"),
        ("warmup = 1.5", "warmup must be a fraction in [0, 1), got 1.5"),
        ("grad_clip = -1", "grad_clip must be a number >= 0 (0: no clipping), got -1"),
        ("workers = -1", "workers must be an integer >= 0, got -1"),
        ("seed = -3", "seed must be an integer >= 0, got -3"),
        ("threads = 0", "threads must be a positive integer, got 0"),
        ("patience = 0", "patience must be a positive integer, got 0"),
        ("balance = 1", "balance must be true or false, got 1"),
        ("model_kwargs = 3", "model_kwargs must be a table ({ name = value, ... }), got 3"),
    ],
)
def test_out_of_range_config_values_name_file_and_field(tmp_path, line, message):
    path = tmp_path / "train.toml"
    path.write_text(line + "\n")
    with pytest.raises(TrainingError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: {message}"


def test_negative_config_value_on_the_command_line_is_exit_2(stores, tmp_path, capsys):
    (tmp_path / "train.toml").write_text("[fit]\nepochs = -2\n")
    argv = ["fit", str(stores["lfcc60"]), "--config", str(tmp_path / "train.toml")]
    rc, _, err = _cli([*argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'train.toml'}: epochs must be a positive " + (
        "integer, got -2\n"
    )
    with pytest.raises(TrainingError, match="seed must be an integer >= 0, got -1"):
        trainer.fit(str(stores["lfcc60"]), out=tmp_path / "s", seed=-1, **LCNN)


# --- 4. accepted without a word: now a warning or an error ------------------------------------


@pytest.fixture(scope="module")
def one_class_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("one-class")
    return {
        split: _build(root, f"{split}.zarr", _corpus(root / split, one_class=split), ["lfcc"])
        for split in ("train", "dev")
    }


def test_one_class_train_split_is_refused(one_class_stores, tmp_path):
    with pytest.raises(TrainingError, match=r"split 'train' has only spoof utterances \(9\)"):
        trainer.fit(str(one_class_stores["train"]), out=tmp_path / "r", **LCNN)


def test_one_class_dev_split_warns_dev_eer_undefined(one_class_stores, tmp_path, capsys):
    argv = ["fit", str(one_class_stores["dev"]), "--model", "lcnn", "--out", str(tmp_path / "r")]
    (tmp_path / "t.toml").write_text("model_kwargs = { train_frames = 24 }\n")
    rc, _, err = _cli([*argv, "--epochs", "1", "--workers", "0", "--quiet", "--config",
                       str(tmp_path / "t.toml")], capsys)  # fmt: skip
    assert rc == 0, err
    assert "warning: " in err and "split 'dev' has 0 bona fide and 6 spoof" in err
    assert "dev EER is undefined" in err


def test_crop_longer_than_every_utterance_warns_what_the_sampler_does(stores, tmp_path):
    with pytest.warns(UserWarning, match=r"crop_frames 500 is longer than every utterance.*wrap"):
        trainer.fit(str(stores["lfcc60"]), out=tmp_path / "r", crop_frames=500, **LCNN)


def test_crop_shorter_than_the_models_minimum_is_refused(stores, tmp_path):
    with pytest.raises(TrainingError, match=r"crop_frames 8 .* 'lcnn''s minimum of 16 frames"):
        trainer.fit(str(stores["lfcc60"]), out=tmp_path / "r", crop_frames=8, **LCNN)


def test_resume_without_a_checkpoint_is_refused(stores, tmp_path, monkeypatch):
    store = str(stores["lfcc60"])
    empty = tmp_path / "started"
    empty.mkdir()
    with pytest.raises(TrainingError, match=rf"nothing to resume in {empty}: no last\.pt"):
        trainer.fit(store, out=empty, resume=True, **LCNN)
    with pytest.raises(TrainingError, match=r"nothing to resume in .*missing: no last\.pt"):
        trainer.fit(store, out=tmp_path / "missing", resume=True, **LCNN)
    assert not (tmp_path / "missing").exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match=r"nothing to resume: no lcnn run with a last\.pt"):
        trainer.fit(store, resume=True, **LCNN)
    assert not (tmp_path / "runs").exists()


# --- 5. --verify ------------------------------------------------------------------------------


def test_fit_and_score_verify_refuse_a_damaged_store(stores, lcnn_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "damaged.zarr"
    shutil.copytree(stores["lfcc60"], copy)
    with open(copy / "train" / "lfcc" / "c" / "0" / "0", "r+b") as fh:
        fh.seek(60 * 4 * 3)
        fh.write(np.array([123.0], dtype="<f4").tobytes())  # finite: only the checksum knows
    argv = ["fit", str(copy), "--model", "lcnn", "--out", str(tmp_path / "r"), "--verify"]
    rc, _, err = _cli([*argv, "--epochs", "1", "--workers", "0", "--quiet"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "fails verification: train/lfcc: checksum mismatch" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(StoreError, match="fails verification"):
        trainer.score(run=lcnn_run, store=copy, verify=True, progress=False)
    rc, _, err = _cli(["score", "--run", str(lcnn_run), "--verify", "--quiet"], capsys)
    assert rc == 0, err  # the run's own store is sound
