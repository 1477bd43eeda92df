"""Atomic file replacement: write a temporary sibling, flush, then :func:`os.replace` it.

Readers of a path written through this module see either the old file or the new one, never
a half-written file, whatever the writer's fate (exception, ``kill -9``, disk full). With
``fsync=True`` (the default) the data and the rename are also made durable: the file is
``fsync``-ed before the rename and its directory after it.

Every writer of the package that replaces a file in place goes through :func:`atomic_path`
(or the two small wrappers below), so there is one temporary-name rule and one fsync rule.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "atomic_path",
    "fsync_directory",
    "open_atomic",
    "temporary_sibling",
    "write_bytes_atomic",
    "write_json_atomic",
]


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path``, keeping its suffix (some writers need it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; its directory must exist.
    fsync : bool, default True
        Flush the written file and, after the rename, its directory to disk.

    Yields
    ------
    Path
        A hidden sibling of ``path`` with the same suffix. Write it completely (by name: h5py,
        ``np.savez``, matplotlib); when the block exits normally it is moved over ``path``.
        On an exception it is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    final = Path(path)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_directory(final.parent)


@contextmanager
def open_atomic(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a binary file object whose contents replace ``path`` when the block succeeds.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "b.bin"
    >>> with open_atomic(target) as fh:
    ...     _ = fh.write(b"xyz")
    >>> target.read_bytes()
    b'xyz'
    """
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        yield fh
        fh.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically; returns ``path`` as a :class:`Path`."""
    with open_atomic(path, fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike, obj: Any, *, fsync: bool = True, indent: int | None = None
) -> Path:
    """Replace ``path`` with ``obj`` as JSON (sorted keys, UTF-8, trailing newline if indented)."""
    text = json.dumps(obj, sort_keys=True, indent=indent)
    if indent is not None:
        text += "\n"
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)
