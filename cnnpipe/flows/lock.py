"""One pipeline run per checkout: an exclusive ``fcntl`` lock on ``.cnnpipe/run.lock`` for the
whole flow, taken by ``cnnpipe run`` and by the training flow itself (so a scheduled run and one
started by hand exclude each other). The kernel drops it when its process dies: no stale lock.
Re-entrant within one process (``cnnpipe run`` takes it, then the flow it runs)."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnpipe.errors import CnnpipeError

LOCK_FILE = ".cnnpipe/run.lock"
_held: dict[str, int] = {}  # lock path -> nesting depth, in this process


class RunLocked(CnnpipeError):
    """Another process holds the project's run lock."""


def lock_path(root: str | Path) -> Path:
    return Path(root).resolve() / LOCK_FILE


@contextmanager
def run_lock(root: str | Path) -> Iterator[Path]:
    """Hold the run lock of the project at ``root``; :class:`RunLocked` (one line naming the
    lock file and the running process) if another process holds it."""
    path = lock_path(root)
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process still starting"
            raise RunLocked(f"another pipeline run holds {path} ({holder}); wait for it to finish") from None
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}, since {started}\n".encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
