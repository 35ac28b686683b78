"""The promotion lock: one exclusive lock file per registry, so two promotions on one machine
serialize (beside the SQLite store; for a server, under ``~/.cache/cnnpipe/locks``); and
:func:`uninterrupted`, which holds Ctrl-C until a registry change is complete."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cnnpipe.errors import RegistryError


def lock_path(tracking_uri: str) -> Path:
    """The promotion lock of a registry: beside a local store, else per server in the user cache."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):] + ".promote.lock")
    if parts.scheme in ("", "file"):
        return Path(parts.path) / ".promote.lock"
    digest = hashlib.sha256(f"{parts.hostname}:{parts.port}{parts.path}".encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "cnnpipe" / "locks" / f"{digest}.lock"


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(f"another promotion holds {path} for over {timeout_s:.0f}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the body runs, then deliver them: a registry change (a new
    version with its alias and first event, an alias move with its record) is made whole or
    not at all, and an SQLite transaction is never cut in the middle.

    Only the main thread receives signals; elsewhere the body just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)  # the previous handler: KeyboardInterrupt for Ctrl-C
