"""Crash-safe build state of one split: an append-only journal plus an atomic progress record.

``<split>.journal.jsonl`` gets one JSON line per processed utterance (written or
quarantined) in build order. ``<split>.progress.json`` says how much of it (and of the frame
arrays) is *committed*: it is replaced atomically (:func:`featstore.atomic_files.write_json_atomic`)
only after the journal lines and frame rows it covers are on disk. On resume the journal is
cut back to the committed length, so lines written after the last commit are forgotten and
their utterances are processed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from featstore.atomic_files import write_json_atomic


def read_json(path: Path) -> Any:
    """Parse a JSON file, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


class SplitJournal:
    """Journal + progress record of one split under ``state_dir``.

    Parameters
    ----------
    state_dir : Path
        The build's state directory.
    split : str
        Split name.
    fsync : bool
        ``fsync`` the journal before each commit (survive power loss, not just a kill).
    """

    def __init__(self, state_dir: Path, split: str, fsync: bool = True):
        self.journal_path = state_dir / f"{split}.journal.jsonl"
        self.progress_path = state_dir / f"{split}.progress.json"
        self.fsync = fsync
        self._fh: Any = None

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The committed progress record and journal records (uncommitted lines dropped)."""
        progress = read_json(self.progress_path)
        committed = int(progress["journal_bytes"]) if progress else 0
        records: list[dict[str, Any]] = []
        if self.journal_path.exists():
            with open(self.journal_path, "r+b") as fh:
                fh.truncate(committed)
                data = fh.read(committed) if committed else b""
            for line in data.splitlines():
                records.append(json.loads(line))
        if progress and len(records) != int(progress["committed"]):
            raise RuntimeError(  # a bug, never bad input
                f"{self.journal_path}: {len(records)} records, progress says "
                f"{progress['committed']}"
            )
        return progress, records

    def append(self, record: dict[str, Any]) -> int:
        """Append one record; return the journal length in bytes after it."""
        if self._fh is None:
            self._fh = open(self.journal_path, "ab")
        self._fh.write(json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
        return self._fh.tell()

    def commit(self, progress: dict[str, Any]) -> None:
        """Make the journal durable, then atomically record ``progress``."""
        if self._fh is not None:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        write_json_atomic(self.progress_path, progress, fsync=self.fsync)

    def close(self) -> None:
        """Close the journal file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
