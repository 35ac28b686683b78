"""One thin module per DVC stage: ``python -m stages.<name>``.

Run that way, Ctrl-C while Python is still importing (TensorFlow and MLflow take seconds, before
the stage shell can answer it) ends the stage with the shell's one line and exit status 130,
not a page of import machinery. Imported any other way (tests, ``python -m stages``'s own
runner) nothing changes.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Inside the stage shell (or `python -m stages`, which runs them all), Ctrl-C is the
    # KeyboardInterrupt they answer: they clean up and say so.
    while frame is not None:
        code = Path(frame.f_code.co_filename)
        if code.name == "stage_shell.py" or (code.name == "__main__.py" and code.parent.name == "stages"):
            raise KeyboardInterrupt
        frame = frame.f_back
    name = Path(sys.argv[0]).stem if sys.argv[0].endswith(".py") else "stage"
    print(f"stage {name} interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130)


if sys.argv and sys.argv[0] == "-m" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted)  # `python -m stages.<name>`: argv[0] is "-m" until it runs
