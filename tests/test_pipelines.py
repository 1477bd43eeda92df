"""The recipes (pipelines/*.sh) and the demo driver (pipelines/demo.py).

The recipes are checked statically: ``bash -n``, usage/exit codes, and every ``featstore`` /
``trainer`` subcommand and option they use exists in the CLI (``--help``). The ASVspoof 2019
recipe also runs end to end on a tiny synthetic corpus in the official layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines import demo
from pipelines import demo_corpus as dc

REPO = Path(__file__).resolve().parents[1]
COMMON = REPO / "pipelines" / "recipe_common.sh"  # sourced by the recipes, not run
RECIPES = sorted(p for p in (REPO / "pipelines").glob("*.sh") if p != COMMON)
BASH = shutil.which("bash")
COMMAND = re.compile(
    r"\b(featstore|trainer) (build|info|verify|features|fit|score|metrics|calibrate|fuse)\b"
)
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
ARRAY = re.compile(r"\b(\w+)\+?=\(([^()]*)\)")
EXPANSION = re.compile(r"\$\{(\w+)\[@\]")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def test_the_three_recipes_exist_and_are_executable() -> None:
    names = {p.name for p in RECIPES}
    assert {"asvspoof2019_la.sh", "asvspoof2021_la_df.sh", "asvspoof2017.sh"} <= names
    for path in RECIPES:
        assert os.access(path, os.X_OK), path
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid_bash(recipe: Path) -> None:
    proc = subprocess.run([BASH, "-n", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_usage_and_missing_data(recipe: Path, tmp_path: Path) -> None:
    ok = subprocess.run([BASH, str(recipe), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "usage:" in ok.stdout
    bad = subprocess.run([BASH, str(recipe)], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stdout
    missing = subprocess.run(
        [BASH, str(recipe), str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "error:" in missing.stderr and "not found" in missing.stderr


def _help(tool: str, command: str) -> str:
    if tool == "featstore":
        from featstore.cli import cli
    else:
        from trainer.cli import cli
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, f"`{tool} {command}` does not exist: {result.output}"
    return result.output


def _logical_lines(text: str) -> list[str]:
    """Lines with continuations joined and comment lines dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [line for line in joined.splitlines() if not line.lstrip().startswith("#")]


def commands_and_options(text: str) -> dict[tuple[str, str], set[str]]:
    """Which ``--options`` the script passes to which ``featstore``/``trainer`` command.

    Options in a bash array (``asv=(--asv-scores F)``, ``fit+=(--resume)``) belong to the
    command the array is expanded in, or to the command the array starts with.
    """
    script = "\n".join(_logical_lines(text))
    arrays: dict[str, set[str]] = {}
    array_command: dict[str, tuple[str, str]] = {}
    for name, body in ARRAY.findall(script):  # arrays may span lines
        arrays.setdefault(name, set()).update(OPTION.findall(body))
        m = COMMAND.search(body)
        if m:
            array_command[name] = (m.group(1), m.group(2))
    used: dict[tuple[str, str], set[str]] = {}
    for name, command in array_command.items():
        used.setdefault(command, set()).update(arrays.get(name, ()))
    for line in ARRAY.sub(" ", script).splitlines():
        m = COMMAND.search(line)
        if not m:
            continue
        options = used.setdefault((m.group(1), m.group(2)), set())
        options.update(OPTION.findall(line[m.end() :]))
        for name in EXPANSION.findall(line):
            if name not in array_command:
                options.update(arrays.get(name, ()))
    return used


def test_recipes_take_augment_views_gmms_and_fuse() -> None:
    """Issue 13/14: augmented views with the field's defaults, GMM baselines, a fusion."""
    defaults = {
        "asvspoof2019_la.sh": ["AUGMENT=${AUGMENT-rawboost-5}"],
        "asvspoof2021_la_df.sh": [
            "AUGMENT=${AUGMENT-rawboost-5}",
            "AUGMENT=${AUGMENT-rawboost-3|codec}",
        ],
    }
    for name, settings in defaults.items():
        text = (REPO / "pipelines" / name).read_text()
        for setting in settings:
            assert setting in text, (name, setting)
        used = commands_and_options(text)
        assert {"--augment", "--views"} <= used[("featstore", "build")], name
        assert ("trainer", "fuse") in used and "GMMS=${GMMS-lfcc-gmm cqcc-gmm}" in text, name
        assert "train " in text and "VIEWS" in text and "COMPONENTS" in text
    common = commands_and_options(COMMON.read_text())
    assert "--components" in common[("trainer", "fit")]
    replay = commands_and_options((REPO / "pipelines" / "asvspoof2017.sh").read_text())
    assert {"--augment", "--views"} <= replay[("featstore", "build")]


def test_recipe_features_of_the_gmm_baselines() -> None:
    script = f"source {COMMON}; features_for lcnn lfcc-gmm cqcc-gmm; is_gmm cqcc-gmm && echo gmm"
    out = subprocess.run([BASH, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["lfcc,cqcc", "gmm"]


def test_2021_recipe_augment_default_follows_the_tracks(tmp_path: Path) -> None:
    recipe = (REPO / "pipelines" / "asvspoof2021_la_df.sh").read_text()
    line = next(x for x in recipe.splitlines() if x.startswith("if [[ $TRACKS == LA ]]"))
    for tracks, want in (
        ("LA", "rawboost-5"),
        ("LA DF", "rawboost-3|codec"),
        ("DF", "rawboost-3|codec"),
    ):
        out = subprocess.run(
            [BASH, "-c", f'{line}\necho "$AUGMENT"'],
            capture_output=True,
            text=True,
            env={"TRACKS": tracks, "PATH": os.environ["PATH"]},
        )
        assert out.stdout.strip() == want, tracks
    out = subprocess.run(
        [BASH, "-c", f'{line}\necho "[$AUGMENT]"'],
        capture_output=True,
        text=True,
        env={"TRACKS": "DF", "AUGMENT": "", "PATH": os.environ["PATH"]},
    )
    assert out.stdout.strip() == "[]"  # an explicit empty AUGMENT: no views


def test_option_extraction_on_a_sample() -> None:
    sample = """
# trainer fit --not-this
x=(--asv-scores F)
fit=(trainer fit S --model m
    --workers 2)
fit+=(--resume)
"${fit[@]}"
trainer metrics a.txt ${x[@]+"${x[@]}"} \\
    --json j
"""
    assert commands_and_options(sample) == {
        ("trainer", "fit"): {"--model", "--workers", "--resume"},
        ("trainer", "metrics"): {"--asv-scores", "--json"},
    }


@pytest.mark.parametrize("recipe", [*RECIPES, COMMON], ids=lambda p: p.name)
def test_recipe_uses_only_existing_commands_and_options(recipe: Path) -> None:
    used = commands_and_options(recipe.read_text())
    if recipe == COMMON:  # the recipes' shared training step
        assert set(used) == {("trainer", "fit")}
    else:  # fit runs through COMMON's fit_model (or train: fit_model or fit_gmm)
        text = recipe.read_text()
        assert ("featstore", "build") in used
        assert "fit_model " in text or re.search(r"^\s*train \S", text, re.M)
        assert ("trainer", "score") in used and ("trainer", "metrics") in used
    for (tool, command), options in used.items():
        text = _help(tool, command)
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}\b", text), (
                f"{recipe.name}: `{tool} {command}` has no option {option}"
            )


@pytest.mark.slow
def test_asvspoof2019_recipe_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    """The 2019 LA recipe end to end (LCNN, one epoch) on the synthetic corpus, which has
    the official layout; ASV scores are absent, so no t-DCF."""
    la = tmp_path / "data" / "LA"
    config = dc.CorpusConfig(seed=2, n_train=8, n_dev=4, n_eval=6, max_duration=1.5)
    dc.generate(la, config)
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "WORK": str(tmp_path / "work"),
        "MODELS": "lcnn",
        "EPOCHS": "1",
        "JOBS": "1",
        "WORKERS": "0",
        "DEVICE": "cpu",
        "FIT_ARGS": "--batch-size 4 --quiet",
        "GMMS": "lfcc-gmm",
        "COMPONENTS": "2",
    }
    if not (Path(bindir) / "featstore").exists():
        pytest.skip("the featstore/trainer console scripts are not installed")
    proc = subprocess.run(
        [BASH, str(REPO / "pipelines" / "asvspoof2019_la.sh"), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "work" / "runs" / "lcnn"
    for split in ("dev", "eval"):
        lines = (run / f"scores_{split}.txt").read_text().splitlines()
        assert len(lines) == config.size(split)
        assert all(len(line.split()) == 6 for line in lines)
    assert (tmp_path / "work" / "results" / "lcnn_eval.json").is_file()
    assert (tmp_path / "work" / "results" / "lcnn_eval_det.png").is_file()
    # the default AUGMENT (RawBoost-5) gave the store a view, the GMM baseline trained and
    # scored, every system was calibrated and the two were fused
    store = tmp_path / "work" / "store.zarr"
    info = subprocess.run(
        [str(Path(bindir) / "featstore"), "info", str(store)], capture_output=True, text=True
    )
    assert "rawboost-5" in info.stdout, info.stdout + info.stderr
    results = tmp_path / "work" / "results"
    assert (tmp_path / "work" / "runs" / "lfcc-gmm" / "scores_eval.txt").is_file()
    for name in ("lcnn", "lfcc-gmm"):
        assert (results / f"{name}_eval_calibrated.txt.json").is_file()
    fused = json.loads((results / "fused_eval.txt.json").read_text())
    assert fused["kind"] == "fusion" and len(fused["systems"]) == 2
    assert (results / "fused_eval.json").is_file()


# --- the demo driver --------------------------------------------------------------------------


def test_demo_shows_commands_as_users_type_them() -> None:
    argv = [sys.executable, "-m", "trainer", "fit", "s.zarr", "--out", "a b"]
    assert demo._display(argv) == "trainer fit s.zarr --out 'a b'"
    argv = [sys.executable, "-m", "pipelines.demo_corpus", "--out", "x"]
    assert demo._display(argv) == "python -m pipelines.demo_corpus --out x"


def test_demo_fails_on_a_broken_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that cannot run (here: a missing module) fails the demo; it never exits 0."""
    calls: list[str] = []

    def ok(cfg: demo.DemoConfig) -> float:
        calls.append("corpus")
        return 0.5

    def broken(cfg: demo.DemoConfig) -> float:
        raise ImportError("No module named 'trainer.fit'")

    def never(cfg: demo.DemoConfig) -> float:
        calls.append("never")
        return 0.0

    stages = (("corpus", ok), ("fit", broken), ("score", never))
    monkeypatch.setattr(demo, "STAGES", stages)
    with pytest.raises(ImportError, match=r"trainer\.fit"):
        demo.run_demo(demo.DemoConfig(out=tmp_path))
    assert calls == ["corpus"]
    assert not hasattr(demo, "StageUnavailable")


def test_demo_reports_a_failed_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(cfg: demo.DemoConfig) -> float:
        return demo.run_command([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(demo, "STAGES", (("fit", failing),))
    assert demo.run_demo(demo.DemoConfig(out=tmp_path)) == 1
    assert "exited with code 3" in capsys.readouterr().err


def test_demo_model_features_come_from_the_registry() -> None:
    assert demo.model_features("grcnn") == ("mgd", "logmel")
    with pytest.raises(demo.StageFailed, match="not registered"):
        demo.model_features("no-such-model")


def test_demo_summary_reads_the_metrics_json(tmp_path: Path) -> None:
    (tmp_path / "metrics_eval.json").write_text(
        '{"eer": 0.125, "per_attack": {"A04": {"eer": 0.1}, "A05": {"eer": 0.2}}}'
    )
    text = demo.summary(demo.DemoConfig(out=tmp_path), {"corpus": 1.0, "fit": 2.0})
    assert "12.50" in text and "20.00" in text and "total" in text
    assert "lcnn-aug" in text  # the main system's column


def _sidecar(path: Path, eval_before: float, eval_after: float) -> None:
    def m(eer: float) -> dict:
        return {"eer": eer, "mindcf": 0.5, "actdcf": 0.75, "cllr": 0.875}

    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"metrics": {"eval": {"before": [m(eval_before)], "after": m(eval_after)}}}
    Path(str(path) + ".json").write_text(json.dumps(record))


def test_demo_summary_shows_clean_beside_augmented_and_the_fusion(tmp_path: Path) -> None:
    cfg = demo.DemoConfig(out=tmp_path)
    assert [s.name for s in cfg.systems] == ["lcnn-clean", "lcnn-aug", "lfcc-gmm"]
    assert [s.name for s in cfg.fused_systems] == ["lcnn-aug", "lfcc-gmm"]
    for system, eer in zip(cfg.systems, (0.4, 0.2, 0.3), strict=True):
        record = {"eer": eer, "per_attack": {"A04": {"eer": eer / 2}}}
        demo.metrics_json(cfg, system).write_text(json.dumps(record))
        _sidecar(cfg.calibrated(system), eer, eer)
    _sidecar(cfg.fused, 0.5, 0.125)
    text = demo.summary(cfg, {"fit": 1.0})
    lines = text.splitlines()
    header = next(line for line in lines if "lcnn-clean" in line and "lcnn-aug" in line)
    assert header.split() == ["attack", "lcnn-clean", "lcnn-aug", "lfcc-gmm"]
    assert next(line for line in lines if line.split()[:1] == ["A04"]).split()[1:] == [
        "20.00",
        "10.00",
        "15.00",
    ]
    assert "unseen in training: codec" in text  # the eval channel is named
    fused = next(line for line in lines if line.strip().startswith("fused"))
    assert fused.split()[-4:] == ["12.50", "0.5000", "0.7500", "0.8750"]
    assert any(line.strip().startswith("lcnn-aug (cal)") for line in lines)


def test_demo_without_augmentation_or_gmm_trains_one_system(tmp_path: Path) -> None:
    cfg = demo.DemoConfig(out=tmp_path, augment="", gmm_components=0)
    assert [s.name for s in cfg.systems] == ["lcnn-clean"]
    assert cfg.fused_systems == () and cfg.main_system.name == "lcnn-clean"
    assert "--augment" not in demo._build_args(cfg)


def test_demo_rebuilds_a_store_of_another_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(demo, "run_command", lambda argv, **kw: seen.append(list(argv)) or 0.0)
    monkeypatch.setattr(demo, "_store_matches", lambda *a: True)
    cfg = demo.DemoConfig(out=tmp_path)
    cfg.store.mkdir(parents=True)
    demo.stage_features(cfg)  # no stamp: rebuilt
    demo.stage_features(cfg)  # same command: reused
    demo.stage_features(demo.DemoConfig(out=tmp_path, views=2))  # other views: rebuilt
    assert ["--overwrite" in argv for argv in seen] == [True, False, True]


def test_demo_bad_eval_channel_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--out", str(tmp_path / "d"), "--eval-channel", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: augmentation recipe 'nope'")
    assert not (tmp_path / "d").exists()


def test_demo_stages_use_existing_commands_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command the demo runs exists with every option it passes (checked against
    ``--help``, without running anything)."""
    seen: list[list[str]] = []
    monkeypatch.setattr(demo, "run_command", lambda argv, **kw: seen.append(list(argv)) or 0.0)
    cfg = demo.DemoConfig(out=tmp_path, threads=1, extra_fit_args=("--balance",))
    for name, stage in demo.STAGES:
        if name != "curves":
            stage(cfg)
    commands = [tuple(str(a) for a in argv[2:4]) for argv in seen]
    assert commands[:2] == [("pipelines.demo_corpus", "--out"), ("featstore", "build")]
    assert commands[2:] == [
        *[("trainer", "fit")] * 3,
        *[("trainer", "score")] * 6,
        *[("trainer", "metrics")] * 3,
        *[("trainer", "calibrate")] * 3,
        ("trainer", "fuse"),
    ]
    build = [str(a) for a in seen[1]]
    assert build[build.index("--augment") + 1] == demo.DEFAULT_AUGMENT
    fits = [[str(a) for a in argv] for argv in seen[2:5]]
    assert [f[f.index("--views") + 1] for f in fits[:2]] == ["clean", "all"]
    assert fits[2][fits[2].index("--components") + 1] == str(demo.GMM_COMPONENTS)
    assert "--epochs" not in fits[2]  # the GMM has no epochs
    for argv in seen[1:]:
        tool, command = str(argv[2]), str(argv[3])
        text = _help(tool, command)
        for option in (str(a) for a in argv[4:] if str(a).startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}\b", text), (tool, command, option)
    corpus_options = {str(a) for a in seen[0] if str(a).startswith("--")}
    known = {o for a in dc.build_parser()._actions for o in a.option_strings}
    assert corpus_options <= known and "--eval-channel" in corpus_options
