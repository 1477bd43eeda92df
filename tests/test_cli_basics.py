import subprocess
import sys

import pytest


@pytest.mark.parametrize("tool", ["featstore", "trainer"])
def test_version_and_help(tool):
    version = subprocess.run(
        [sys.executable, "-m", tool, "--version"], capture_output=True, text=True, check=True
    )
    assert "0." in version.stdout
    help_ = subprocess.run(
        [sys.executable, "-m", tool, "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage:" in help_.stdout


def test_unknown_command_exits_nonzero():
    out = subprocess.run(
        [sys.executable, "-m", "featstore", "nope"], capture_output=True, text=True
    )
    assert out.returncode == 2


def test_segment_option_defaults_are_the_library_ones():
    from trainer.cli import cli
    from trainer.score_batches import DEFAULT_MAX_FRAMES, EVAL_MODES

    for name in ("score", "predict"):
        params = {p.name: p for p in cli.commands[name].params}
        assert params["max_frames"].default == DEFAULT_MAX_FRAMES
        assert tuple(params["eval_mode"].type.choices) == EVAL_MODES
