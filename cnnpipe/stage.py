"""The shared shell of every ``stages/<name>.py``: argument parsing, params, error exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from cnnpipe.config import Params, load_params
from cnnpipe.errors import CnnpipeError

log = logging.getLogger("cnnpipe")


def run_stage(name: str, body: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """Parse ``--params``, load and validate them, run ``body``; a user error exits 1 with one line."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"DVC stage {name!r}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    try:
        body(load_params(args.params))
    except CnnpipeError as err:
        print(f"stage {name} failed: {err}", file=sys.stderr)
        raise SystemExit(1) from None
