"""trainer fit's settings: the TOML file, its documentation and examples, flags, precedence."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

import trainer.training
from trainer.cli import cli, fit_cmd
from trainer.config import FitConfig, load_config_file
from trainer.errors import TrainingError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "config.md"
EXAMPLES = sorted((REPO / "pipelines" / "conf").glob("*.fit.toml"))


class _Planned(Exception):
    """Raised instead of training: carries the resolved run plan."""


@pytest.fixture
def planned(monkeypatch):
    """Run ``trainer fit`` up to the resolved FitConfig (nothing is trained)."""

    def capture(plan, dist):
        raise _Planned(plan)

    monkeypatch.setattr(trainer.training, "_train", capture)

    def run(args: list[str], cwd: Path) -> FitConfig:
        with pytest.raises(_Planned) as info:
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(cwd)
                CliRunner().invoke(cli, ["fit", *args], catch_exceptions=False)
        return info.value.args[0].cfg

    return run


# --- the TOML file ---------------------------------------------------------------------------


def test_top_level_and_fit_table_parse_alike(tmp_path):
    top, table = tmp_path / "top.toml", tmp_path / "table.toml"
    top.write_text("epochs = 3\nbatch-size = 8\ngrad_clip = 0\nmodel-kwargs = { dropout = 0.5 }\n")
    table.write_text("[fit]\n" + top.read_text())
    expected = {"epochs": 3, "batch_size": 8, "grad_clip": 0, "model_kwargs": {"dropout": 0.5}}
    assert load_config_file(top) == load_config_file(table) == expected


def test_keys_outside_the_fit_table_are_an_error_not_ignored(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("epochs = 3\n[fit]\nbatch-size = 8\n")
    with pytest.raises(TrainingError, match=r"t\.toml: key\(s\) epochs outside the \[fit\] table"):
        load_config_file(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('epochs = "3"', "epochs must be an integer, got '3'"),
        ("epochs = true", "epochs must be an integer, got True"),
        ('lr = "3e-4"', "lr must be a number, got '3e-4'"),
        ("balance = 1", "balance must be true or false, got 1"),
        ("model-kwargs = 3", r"model-kwargs must be a table \(\{ name = value, ... \}\)"),
        ("patience = 2.5", "patience must be an integer, got 2.5"),
        ("batch-size = 8\nbatch_size = 9", "'batch_size' is given twice"),
    ],
)
def test_values_of_the_wrong_type_name_the_file_and_key(tmp_path, line, message):
    path = tmp_path / "t.toml"
    path.write_text(line + "\n")
    with pytest.raises(TrainingError, match=r"t\.toml: " + message):
        load_config_file(path)


def test_floats_take_integers(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("lr = 1\nwarmup = 0\n")
    assert FitConfig(store="s", **load_config_file(path)).validate().lr == 1


# --- documentation and examples ----------------------------------------------------------------


def test_documented_example_parses_to_the_expected_config(tmp_path):
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S).group(1)
    path = tmp_path / "train.toml"
    path.write_text(block)
    cfg = FitConfig(**load_config_file(path)).validate()
    assert cfg == FitConfig(
        store="work/store.zarr",
        model="lcnn",
        out="runs/lcnn-long",
        epochs=30,
        batch_size=16,
        crop_frames=200,
        lr=1e-3,
        weight_decay=0.05,
        warmup=0.1,
        grad_clip=0,
        balance=True,
        patience=5,
        train_split="train",
        dev_split="dev",
        eval_batch_size=64,
        model_kwargs={"dropout": 0.5},
    )
    trainer.build_model(cfg.model, **cfg.model_kwargs)  # real model parameters


def test_every_field_is_documented_with_a_flag():
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)` \|[^|]*\|[^|]*\| ([^|]*) \|", DOCS.read_text(), re.M)
    }
    assert set(table) == {f.name for f in fields(FitConfig)}
    options = {opt for p in fit_cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for name, flag in table.items():
        for option in re.findall(r"--[\w-]+", flag):
            assert option in options, (name, option)
        if name != "store":
            assert re.search(r"--[\w-]+", flag), f"{name} has no command-line flag"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_recipe_examples_parse_and_validate(path):
    cfg = FitConfig(store="store.zarr", **load_config_file(path)).validate()
    assert cfg.epochs >= 1 and cfg.train_split == "train"


def test_there_is_an_example_per_recipe_and_the_demo_one_matches_the_demo():
    recipes = {p.stem for p in (REPO / "pipelines").glob("*.sh")} - {"recipe_common"}
    assert {p.name.removesuffix(".fit.toml") for p in EXAMPLES} == recipes | {"demo"}
    from pipelines.demo import DemoConfig

    demo = load_config_file(REPO / "pipelines" / "conf" / "demo.fit.toml")
    d = DemoConfig(out=Path("x"))
    assert demo == {
        "model": d.model,
        "epochs": d.epochs,
        "batch_size": d.batch_size,
        "crop_frames": d.crop_frames,
        "seed": d.seed,
        "workers": d.workers,
    }


def test_recipe_examples_set_no_model():
    # the recipes train every model of MODELS with one file: a model there would override none
    for path in EXAMPLES:
        if path.name != "demo.fit.toml":
            assert "model" not in tomllib.loads(path.read_text())["fit"], path


# --- flags and precedence ---------------------------------------------------------------------


def test_flags_override_the_file_which_overrides_the_defaults(planned, tmp_path):
    (tmp_path / "train.toml").write_text(
        "[fit]\nepochs = 3\nweight-decay = 0.5\nwarmup = 0.2\ngrad-clip = 1.0\n"
        'dev-split = "val"\ncompile = true\nprogress = false\n'
        "model-kwargs = { dropout = 0.3, n_bins = 40 }\n"
    )
    args = ["s.zarr", "--config", "train.toml", "--out", "run", "--model", "lcnn"]
    cfg = planned([*args, "--warmup", "0.01", "--grad-clip", "0", "--train-split", "tr",
                   "--no-compile", "--no-quiet", "--model-arg", "dropout=0.1",
                   "--eval-batch-size", "7", "--deterministic", "--no-channels-last",
                   "--tensorboard", "--checkpoint-windows"], tmp_path)  # fmt: skip
    assert cfg.epochs == 3 and cfg.weight_decay == 0.5 and cfg.dev_split == "val"  # file
    assert cfg.warmup == 0.01 and cfg.grad_clip == 0 and cfg.train_split == "tr"  # flags
    assert cfg.compile is False and cfg.progress is True and cfg.eval_batch_size == 7
    assert cfg.deterministic is True and cfg.channels_last is False and cfg.tensorboard is True
    assert cfg.checkpoint_windows is True
    assert cfg.model_kwargs == {"dropout": 0.1, "n_bins": 40}  # merged key by key
    assert cfg.lr == FitConfig.lr and cfg.batch_size == FitConfig.batch_size  # defaults
    only_file = planned(["s.zarr", "--config", "train.toml", "--out", "run2"], tmp_path)
    assert only_file.warmup == 0.2 and only_file.compile is True and only_file.progress is False
    assert only_file.tensorboard is None and only_file.model == "grcnn"
    assert only_file.checkpoint_windows is False


def test_store_may_come_from_the_file(planned, tmp_path):
    (tmp_path / "train.toml").write_text('store = "from-file.zarr"\nout = "run"\n')
    assert planned(["--config", "train.toml"], tmp_path).store == "from-file.zarr"
    assert planned(["given.zarr", "--config", "train.toml"], tmp_path).store == "given.zarr"


def test_no_store_at_all_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["fit"])
    assert result.exit_code == 2 and "Missing argument 'STORE'" in result.output
    (tmp_path / "t.toml").write_text("epochs = 1\n")
    from trainer.cli import main

    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(tmp_path / "t.toml"), "--out", str(tmp_path / "r")])
    assert info.value.code == 2


def test_model_arg_values_are_toml_literals(planned, tmp_path):
    cfg = planned(
        ["s.zarr", "--out", "r", "--model-arg", "dropout=0.25", "--model-arg", "n-bins=40",
         "--model-arg", "streams=[\"mgd\"]", "--model-arg", "name=word"],
        tmp_path,
    )  # fmt: skip
    assert cfg.model_kwargs == {"dropout": 0.25, "n_bins": 40, "streams": ["mgd"], "name": "word"}
    result = CliRunner().invoke(cli, ["fit", "s.zarr", "--model-arg", "nokey"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output


# --- models in the help -----------------------------------------------------------------------


def test_fit_help_lists_the_models_with_their_features():
    result = CliRunner().invoke(cli, ["fit", "--help"])
    assert result.exit_code == 0
    text = result.output.split("Models (--model) and the store features each needs:")[1]
    for name, spec in trainer.MODELS.items():
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name + " "))
        assert ", ".join(spec.features) in line
    assert "docs/config.md" in result.output and "train.log" in result.output


def test_models_command_lists_the_registry():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(trainer.MODELS)
    assert any(re.match(r"grcnn\s+mgd,logmel\s+dual-stream", ln) for ln in lines)
    assert any(re.match(r"lcnn\s+lfcc\s+", ln) for ln in lines)
