"""Crash-safe file writes: a reader sees a file whole or not at all, never half-written.

Every writer here first writes a complete, fsynced file under a hidden temporary name in the
target's folder (so the final step is a rename within one file system), then puts it in place:
`replace` overwrites, `create_once` never does (first writer wins).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE = 0o600  # keys, tokens: the owner only
SHARED = 0o644  # published material anyone on the machine may read


def write_temp(directory: Path, content: bytes, *, prefix: str, mode: int = PRIVATE) -> Path:
    """A complete, fsynced file with `mode` in `directory`, named `prefix` plus a unique tail.

    It is created 0600, so it is never readable by others before `mode` is applied. A missing
    `directory` is an error (`FileNotFoundError`), not created.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if mode != PRIVATE:
            path.chmod(mode)
    except BaseException:
        path.unlink()
        raise
    return path


def replace(path: Path, content: bytes, *, mode: int = PRIVATE) -> Path:
    """Write `content` to `path` atomically (its folder made if need be), overwriting it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = write_temp(path.parent, content, prefix=f".{path.name}.", mode=mode)
    temp.replace(path)
    return path


def replace_if_changed(path: Path, content: bytes, *, mode: int = PRIVATE) -> None:
    """`replace`, skipped when `path` already holds `content`: an unchanged file keeps its
    mtime, so readers that watch it are spared a re-read."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == content:
            return
    replace(path, content, mode=mode)


def create_once(path: Path, content: bytes, *, mode: int = PRIVATE) -> bool:
    """Create `path` with `content` unless it exists; False when another writer got there first.

    The complete file is hard-linked into place: linking never overwrites, so concurrent
    creators agree on the first one's content. The folder is made if need be.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = write_temp(path.parent, content, prefix=f".{path.name}.", mode=mode)
    try:
        path.hardlink_to(temp)
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    return True


def fsync_directory(path: Path) -> None:
    """Make a rename into `path` durable (the folder's entry, not just the file's bytes)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
