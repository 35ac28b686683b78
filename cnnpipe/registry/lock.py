"""The promotion lock: one exclusive lock file per registry, so two promotions on one machine
serialize (beside the SQLite store; for a server, under ``~/.cache/cnnpipe/locks``)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
