"""featstore.atomic_files: one way to replace a file atomically."""

from __future__ import annotations

import json
import os

import pytest

from featstore.atomic_files import (
    atomic_path,
    open_atomic,
    temporary_sibling,
    write_bytes_atomic,
    write_json_atomic,
)


def test_write_bytes_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_failure_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_open_atomic_failure_keeps_old(tmp_path):
    target = tmp_path / "c.pt"
    target.write_bytes(b"good")
    with pytest.raises(OSError), open_atomic(target) as fh:
        fh.write(b"partial")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"good"


def test_temporary_keeps_suffix_and_is_hidden(tmp_path):
    tmp = temporary_sibling(tmp_path / "det.png")
    assert tmp.suffix == ".png" and tmp.name.startswith(".") and tmp.parent == tmp_path
    assert temporary_sibling(tmp_path / "det.png") != tmp


def test_write_json_sorted_and_indented(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]}, indent=2, fsync=False)
    text = target.read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}


def test_fsync_called_for_file_and_directory(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    write_bytes_atomic(tmp_path / "d", b"1")
    assert len(calls) == 2
    calls.clear()
    write_bytes_atomic(tmp_path / "e", b"1", fsync=False)
    assert calls == []
