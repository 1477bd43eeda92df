"""Helpers for tests that kill processes and check what is left running."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, and not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def loky_children(pid: int) -> list[int]:
    """The loky worker processes that ``pid`` started."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"popen_loky" in cmdline:
            found.append(int(entry))
    return found
