"""The shared shell of every ``stages/<name>.py``: argument parsing, params, error exit, and the
one step every training stage ends with (its summary JSON, also logged to its MLflow run)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cnnpipe.config import Params, load_params
from cnnpipe.errors import CnnpipeError, crash_report
from cnnpipe.io import WRITE_ERRNOS, write_json
from cnnpipe.security import redact
from cnnpipe.taskspec import DISTRIBUTED_STAGES
from cnnpipe.training.distribute import get_strategy, is_chief

if TYPE_CHECKING:
    from cnnpipe.tracking.runs import StageRun

log = logging.getLogger("cnnpipe")


def run_stage(name: str, body: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """Parse ``--params``, load and validate them, run ``body``; a user error exits 1 with one line."""
    args = _parser(name).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", force=True)
    _run(name, args.params, body)


def run_task_stage(
    name: str, body: Callable[[Params, str], None], tasks: Sequence[str], argv: list[str] | None = None
) -> None:
    """A stage DVC runs once per task (``<name>@<task>``, a ``foreach`` group): ``--task`` picks
    one; without it ``body(params, task)`` runs for every task in turn (the quick profile).
    Errors name the task's stage, ``<name>@<task>``."""
    parser = _parser(name)
    parser.add_argument("--task", choices=tasks, help="run this task only (default: every task)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[{name}@{args.task or '*'}] %(message)s", force=True)
    for task in [args.task] if args.task else tasks:
        _run(f"{name}@{task}", args.params, lambda params, task=task: body(params, task))


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"DVC stage {name!r}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def _run(name: str, params_file: str, body: Callable[[Params], None]) -> None:
    """Load and validate the params, run ``body``: the stages' one error boundary.

    A user error exits 1 with one line naming ``name``; so does any other exception, whose
    traceback goes to a log file the line names (:func:`crash_report`); Ctrl-C exits 130."""
    try:
        params = load_params(params_file)
        if name in DISTRIBUTED_STAGES and params.train.strategy != "default":
            get_strategy(params.train.strategy)  # before any TF op: multi-worker needs that
        body(params)
    except CnnpipeError as err:
        _fail(f"stage {name} failed: {err}", 1)
    except KeyboardInterrupt:
        _fail(f"stage {name} interrupted", 130)
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            _fail(f"stage {name} failed: {crash_report(err, f'stage-{name}', redact)}", 1)
        # Permission denied, read-only or full disk outside the atomic writers: still one line.
        _fail(f"stage {name} failed: {err}", 1)
    except Exception as err:  # noqa: BLE001  (the boundary: anything else is one line and a log)
        _fail(f"stage {name} failed: {crash_report(err, f'stage-{name}', redact)}", 1)


def _fail(line: str, code: int) -> NoReturn:
    print(redact(line), file=sys.stderr, flush=True)
    raise SystemExit(code) from None


def publish_summary(run: StageRun, path: Path, summary: Mapping[str, Any], *curves: Path) -> None:
    """Write a training stage's ``summary`` to ``path`` (a DVC metrics file) and log its numbers,
    the file and the training ``curves`` (history CSVs) to the stage's MLflow run.

    Under ``train.strategy: multi_worker`` only the chief writes (the others' copy is the same)."""
    if not is_chief():
        log.info("%s: not the chief worker; the chief writes %s", run.stage, path)
        return
    write_json(path, summary)
    log.info("%s: %s", run.stage, summary)
    run.log_metrics_file(path)
    for curve in curves:
        run.log_artifacts(curve, "history")


def publish_timings(run: StageRun, reports_dir: str | Path, task: str, timings: Mapping[str, Any]) -> None:
    """Write what varies run to run for the same result (epoch times, the epoch resumed at) to
    ``<reports_dir>/timings/<task>.json`` and the stage's MLflow run: not a DVC output, so
    ``dvc.lock`` stays a function of the commit and seed."""
    if not is_chief():
        return
    path = Path(reports_dir) / "timings" / f"{task}.json"
    write_json(path, timings)
    log.info("%s: timings %s (in %s)", run.stage, timings, path)
    run.log_metrics(timings)
    run.log_artifacts(path, "timings")
