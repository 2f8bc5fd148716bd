"""Safe writes: files written under a temporary name in the same folder, then renamed into place (a reader
sees the old file or the whole new one, never a half-written file, even if the writer dies); folders owned by
one process at a time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fewshot.errors import ConfigError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def link_atomic(source: Path | str, path: Path | str) -> None:
    """Make ``path`` name ``source``'s bytes, atomically: a hard link (no copy), a copy across file systems."""
    with atomic_path(path) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


LOCK_FILE = ".lock"


@contextmanager
def owned(folder: Path | str) -> Iterator[Path]:
    """Hold ``folder`` (created if need be) for this process while the block runs: a second process that asks
    for it meanwhile gets a :class:`~fewshot.errors.ConfigError` naming the holder. The lock is the kernel's
    (``flock``), so a holder that dies releases it; the ``.lock`` file stays, holding the last owner's name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"{folder} is in use by another run ({holder}); wait for it to end or choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fresh_folder(path: Path | str) -> Path:
    """A new folder at ``path``, or at ``path-2``, ``path-3``... when that name is taken: two callers never get
    the same one (creation is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free folder name beside {path}")
