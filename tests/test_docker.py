"""The Dockerfiles, checked without a Docker engine: a small instruction parser, then the
properties the images rely on (base image, torch source, entry points, non-root user,
volumes, COPY sources present and not excluded by .dockerignore)."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile", "cuda": REPO / "docker" / "Dockerfile.cuda"}
KNOWN = set(
    "FROM ARG ENV RUN WORKDIR COPY ADD USER VOLUME CMD ENTRYPOINT LABEL EXPOSE SHELL "
    "HEALTHCHECK STOPSIGNAL ONBUILD".split()
)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs: comments dropped, ``\\`` continuations joined.

    Examples
    --------
    >>> parse_dockerfile("FROM a\\n# c\\nRUN x \\\\\\n  && y\\n")
    [('FROM', 'a'), ('RUN', 'x  && y')]
    """
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def _instructions(kind: str) -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILES[kind].read_text())


def _exec_form(args: str) -> list[str]:
    """JSON exec form (``["a", "b"]``) or shell form split like a shell would."""
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def _scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["scripts"]


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    for pattern in patterns:
        pat = pattern.rstrip("/").removeprefix("**/")
        if fnmatch.fnmatch(rel, pat) or any(fnmatch.fnmatch(p, pat) for p in parts):
            return True
    return False


def test_parser_handles_continuations_and_comments() -> None:
    text = "# top\nFROM x:1\nENV A=1 \\\n    # note\n    B=2\nRUN echo hi\n"
    assert parse_dockerfile(text) == [("FROM", "x:1"), ("ENV", "A=1  B=2"), ("RUN", "echo hi")]


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_is_well_formed(kind: str) -> None:
    ins = _instructions(kind)
    assert ins[0][0] in ("FROM", "ARG")
    assert all(name in KNOWN for name, _ in ins), [n for n, _ in ins if n not in KNOWN]
    assert sum(name == "FROM" for name, _ in ins) == 1


def test_base_images() -> None:
    cpu = dict(_instructions("cpu"))["FROM"]
    assert cpu == "python:3.11-slim"
    cuda = dict(_instructions("cuda"))["FROM"]
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", cuda), cuda


def test_cpu_image_installs_the_cpu_torch_wheel_before_the_package() -> None:
    runs = [args for name, args in _instructions("cpu") if name == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch==" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch_at]
    package_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < package_at


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_entry_points_exist(kind: str) -> None:
    """Both console scripts are declared in pyproject, importable, and smoke-run at build."""
    scripts = _scripts()
    assert {"featstore", "trainer"} <= set(scripts)
    for target in scripts.values():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
    ins = _instructions(kind)
    install = next(args for name, args in ins if name == "RUN" and "pip install ." in args)
    for script in ("featstore", "trainer"):
        assert f"{script} --version" in install
    named = [_exec_form(args)[0] for name, args in ins if name in ("CMD", "ENTRYPOINT")]
    assert named and all(word in scripts for word in named), named


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runs_as_a_non_root_user(kind: str) -> None:
    ins = _instructions(kind)
    users = [i for i, (name, _) in enumerate(ins) if name == "USER"]
    assert users, "no USER instruction"
    user = ins[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    created = any(name == "RUN" and re.search(rf"useradd\b.*\b{user}\b", a) for name, a in ins)
    assert created, f"user {user} is never created"
    # Nothing after the last USER switches back or installs as root.
    assert not any(name == "RUN" and "apt-get" in a for name, a in ins[users[-1] :])


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_data_and_runs_are_volumes(kind: str) -> None:
    volumes: set[str] = set()
    for name, args in _instructions(kind):
        if name == "VOLUME":
            volumes.update(_exec_form(args))
    assert {"/data", "/runs"} <= volumes


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_copied_files_exist_and_are_not_ignored(kind: str) -> None:
    patterns = _dockerignore()
    sources: list[str] = []
    for name, args in _instructions(kind):
        if name in ("COPY", "ADD"):
            words = [w for w in _exec_form(args) if not w.startswith("--")]
            sources += words[:-1]
    assert "pyproject.toml" in sources
    for package in ("featstore", "trainer", "pipelines"):
        assert package in sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY source {src} is missing"
        assert not _ignored(src, patterns), f"COPY source {src} is excluded by .dockerignore"
    # pyproject's readme must be in the image for `pip install .`
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    if readme:
        assert readme in sources


def test_dockerignore_excludes_local_state() -> None:
    patterns = _dockerignore()
    for rel in (".venv", "demo_out", "runs", "stores", "x.zarr", "a/__pycache__", ".git"):
        assert _ignored(rel, patterns), rel
    for rel in ("featstore", "trainer/training.py", "pyproject.toml", "README.md"):
        assert not _ignored(rel, patterns), rel
