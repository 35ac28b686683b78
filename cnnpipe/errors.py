"""The errors a user can cause; each message names the file, key or check at fault. And the
one line for any other error (:func:`crash_report`), so a user never sees a traceback."""

from __future__ import annotations

import os
import re
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_MESSAGE = 300  # characters of the error's own message kept in the line


class CnnpipeError(Exception):
    """Base class: stages print these as one clear line and exit non-zero."""


class DataError(CnnpipeError):
    """A dataset file is missing, malformed or fails verification."""


class ValidationFailed(CnnpipeError):
    """One or more Great Expectations checks failed; the message lists each one."""


class ModelError(CnnpipeError):
    """A model file cannot be used (not a model, unsafe, wrong shape)."""


class OutputError(CnnpipeError):
    """An output cannot be written (permission denied, read-only or full disk); the previous
    output at that path is left as it was."""


class RegistryError(CnnpipeError):
    """A registry request that cannot be honoured (unknown model, no @previous, ...)."""


class ConcurrentPromotion(RegistryError):
    """Another promotion moved @champion while this one ran."""


def crash_report(err: BaseException, where: str, scrub: Callable[[str], str] = str) -> str:
    """The one-line account of an error nobody foresaw (a bug, or an input no check knew):
    ``unexpected <Type>: <message> (traceback in <log file>)``.

    The error boundaries (the stage shell and the ``cnnpipe`` command) print it after naming
    the stage or command; the full traceback goes to a new file under
    ``<system temp dir>/cnnpipe-logs/``, readable by its owner only, never to the terminal.
    ``scrub`` is applied to both (the callers pass the credential redaction)."""
    text = " ".join(_ANSI.sub("", str(err)).split())  # Keras messages span lines and carry colours
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    head = f"unexpected {type(err).__name__}" + (f": {text}" if text else "")
    report = "".join(traceback.format_exception(err))
    try:
        logs = Path(tempfile.gettempdir()) / "cnnpipe-logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", where)
        fd, name = tempfile.mkstemp(prefix=f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log", dir=logs)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as out:  # mode 0600
            out.write(scrub(f"{where} failed at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n{report}"))
    except OSError as log_err:  # a full disk or a foreign cnnpipe-logs: the line still says what failed
        return scrub(f"{head} (no traceback log: {log_err.strerror or log_err})")
    return scrub(f"{head} (traceback in {name})")
