"""Files written whole or not at all: a crash leaves the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int, tmp: Path | None = None) -> None:
    """Make ``path`` hold ``data`` so that a crash at any point leaves either what was there
    (or nothing) or the whole new file: write a temporary file beside it, fsync it, rename it
    over ``path``, fsync the directory (the rename is durable when this returns). On an error
    the temporary file is removed and ``path`` is left as it was. A temporary file left by a
    crash (:func:`temporary_of`) is overwritten by the next write, or removed by
    :func:`remove_leftover`. Writers that hold no lock on ``path`` name their own ``tmp``
    (beside it), so that two of them never write one temporary file."""
    tmp = temporary_of(path) if tmp is None else tmp
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def temporary_of(path: Path) -> Path:
    """The temporary file :func:`write_atomic` writes ``path``'s new content to: one name per
    file (its writers hold the file's lock: a home, a node), so a crash leaves at most one."""
    return path.with_name(f".{path.name}.tmp")


def remove_leftover(path: Path) -> bool:
    """Remove the temporary file a crash in :func:`write_atomic` may have left beside
    ``path`` (it may hold what was to be written: a record that an erasure later removes
    must not linger there); True if there was one."""
    try:
        temporary_of(path).unlink()
    except FileNotFoundError:
        return False
    return True
