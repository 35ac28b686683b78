"""``python -m stages [--params FILE] [--skip NAME ...]``: every stage of ``dvc.yaml``, in its
order, in one Python process, exactly as ``python -m stages.<name> --params FILE`` would run it.

The quick profile (``make quick``) uses it: TensorFlow, Keras and MLflow start once instead of
once per stage (importing them takes about 4.6 s here). A ``foreach`` group such as ``evaluate@<task>`` runs once,
without ``--task``: every task in turn. DVC is not involved (nothing is cached, locked or skipped):
the real pipeline is ``dvc repro``. The first failing stage stops the run with its exit status
(1, or 130 for Ctrl-C), and its one line; nothing here prints a traceback.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

import yaml

from cnnpipe.errors import crash_report
from cnnpipe.security import redact
from cnnpipe.seeding import one_inter_op_thread

ROOT = Path(__file__).resolve().parents[1]


def stage_names(dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    """The stage (and foreach group) names of ``dvc_yaml``, in the file's order."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def main(argv: list[str] | None = None) -> None:
    names = stage_names()
    parser = argparse.ArgumentParser(prog="python -m stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--skip", action="append", default=[], choices=names, metavar="STAGE",
                        help=f"leave this stage out (repeatable); one of {', '.join(names)}")
    args = parser.parse_args(argv)
    # One process, one TensorFlow runtime: every stage gets one inter-op thread (the U-Net's and
    # transfer's `fit.inter_op_threads`), so the quick profile reproduces under load. Set before
    # any stage starts TensorFlow (already started, e.g. from a test: left as it is).
    one_inter_op_thread(warn=False)
    current = "stages"
    try:
        for name in names:
            if name in args.skip:
                continue
            current = name
            _run_one(name, args.params)
    except KeyboardInterrupt:  # outside a stage's own boundary, e.g. while it imports TensorFlow
        print(f"stage {current} interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001  (an error outside the stage shell: one line, log file)
        print(redact(f"stage {current} failed: {crash_report(err, f'stage-{current}', redact)}"), file=sys.stderr)
        raise SystemExit(1) from None


def _run_one(name: str, params: str) -> None:
    """``python -m stages.<name> --params <params>`` in this process; its failure exits."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    argv_before = sys.argv
    sys.argv = [f"stages.{name}", "--params", params]
    try:
        runpy.run_module(f"stages.{name}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv_before
    print(f"== {name}: {time.perf_counter() - start:.1f} s", flush=True)
    if "keras" in sys.modules:  # each stage builds its models afresh, as in its own process
        sys.modules["keras"].backend.clear_session()


if __name__ == "__main__":
    main()
