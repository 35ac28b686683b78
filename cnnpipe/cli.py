"""cnnpipe: the command line for people (the model registry, pipeline runs and the MLflow UI).

Registry: promote, rollback, lineage, predict. Pipeline runs: run, schedule (the Prefect flows
of the project's ``pipelines/``, found from any directory inside the project), server (the
project's Prefect server). The UI: ui.

Heavy imports (Keras, Prefect) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnpipe.config import Params, load_params
from cnnpipe.errors import CnnpipeError, crash_report

DEFAULT_PARAMS = "params.yaml"
log = logging.getLogger("cnnpipe")


# --------------------------------------------------------------------------------------
# Shared set-up
# --------------------------------------------------------------------------------------


def _params_file(args: argparse.Namespace) -> Path:
    """``--params``; by default params.yaml here, else the one at the project root above."""
    from cnnpipe.tracking.lineage import project_root

    given = Path(args.params).resolve()
    if args.params != DEFAULT_PARAMS or given.is_file():
        return given
    return project_root(given.parent) / DEFAULT_PARAMS


def _params(args: argparse.Namespace) -> Params:
    # params.yaml is the one source of every value (no defaults in code): outside a project,
    # this fails with one line naming the file it looked for (pass --params FILE).
    return load_params(_params_file(args))


def _registry(args: argparse.Namespace) -> tuple[Params, Any, Any]:
    """Params, the MLflow connection and its client."""
    from cnnpipe.tracking.connection import connect

    params = _params(args)
    # create=False: a registry command never creates an empty store (e.g. run outside the project).
    conn = connect(params.tracking, _params_file(args).parent, create=False)
    return params, conn, conn.client()


def _project(args: argparse.Namespace) -> tuple[Path, str]:
    """The project root and the params file relative to it; the root goes first on sys.path,
    because the Prefect flows (``pipelines/``) live in the project, not in the installed package."""
    from cnnpipe.tracking.lineage import project_root

    params = _params_file(args)
    root = project_root(params.parent)
    if not (root / "pipelines" / "__init__.py").is_file():
        raise CnnpipeError(f"{params.parent} is not inside a cnnpipe project (no dvc.yaml with a pipelines/ "
                           "folder beside it, here or above); run it from the project or give --params")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root, params.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------
# Registry commands
# --------------------------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace) -> int:
    from cnnpipe.registry.gates import gate_for
    from cnnpipe.registry.lock import lock_path
    from cnnpipe.registry.promotion import promote
    from cnnpipe.registry.versions import CHAMPION, alias_version, experiment_version

    params, conn, client = _registry(args)
    gate = gate_for(params.register, args.name)
    version = experiment_version(client, args.name, args.experiment).version if args.experiment else args.version
    decision = promote(client, gate, version, force=args.force, lock=lock_path(conn.uri))
    champion = alias_version(client, args.name, CHAMPION)
    if decision.promote:
        print(f"{args.name}: version {champion.version} is @champion: {decision.reason}")
        return 0
    print(f"{args.name}: not promoted: {decision.reason}", file=sys.stderr)
    return 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from cnnpipe.registry.lock import lock_path
    from cnnpipe.registry.promotion import rollback

    _, conn, client = _registry(args)
    now, replaced = rollback(client, args.name, lock=lock_path(conn.uri))  # both read under the lock
    print(f"{args.name}: version {now} is @champion again (was version {replaced or '-'})")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from cnnpipe.registry.versions import describe

    _, _, client = _registry(args)
    info = describe(client, args.ref)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    aliases = " ".join(f"@{a}" for a in info["aliases"]) or "(no alias)"
    print(f"{info['name']} version {info['version']} {aliases}")
    print(f"  MLflow run:       {info['run_id']} (parent run: {info['parent_run_id'] or '-'})")
    print(f"  Prefect flow run: {info['prefect_flow_run_id'] or '- (not run under Prefect)'}")
    print(f"  git commit:       {info['git_commit']} (dirty: {info['git_dirty']})")
    if info["experiment"] or info["origin"] == "dirty":
        print(f"  from:             {info['experiment'] or 'uncommitted changes'}, params changed: "
              + (", ".join(f"{k} {old} -> {new}" for k, (old, new) in info["params_changed"].items()) or "none"))
    print("  DVC data hashes:")
    for name, value in info["dvc"].items():
        print(f"    {name:<12} {value}")
    print(f"  test set:         {info['test_set']}")
    print("  metrics:          " + ", ".join(f"{k}={v:.4g}" for k, v in info["metrics"].items()))
    print("  params:")
    for key, value in info["params"].items():
        print(f"    {key} = {value}")
    print("  history:")
    for event in info["history"]:
        print(f"    {event['time']} {event['event']} by {event.get('actor', '?')}: {event.get('reason', '')}")
    return 0


# --------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnpipe.serving.predict import predict_files

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr: what predict did
    _, _, client = _registry(args)
    for prediction in predict_files(client, args.ref, args.images, args.backend, force=args.force):
        print(prediction)
    return 0


# --------------------------------------------------------------------------------------
# Pipeline runs and the UI
# --------------------------------------------------------------------------------------


def _quiet_prefect() -> None:
    # The ephemeral Prefect server would send telemetry (and contend for its SQLite file doing it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def cmd_run(args: argparse.Namespace) -> int:
    _quiet_prefect()
    root, params_file = _project(args)
    from cnnpipe.flows.lock import run_lock
    from cnnpipe.flows.server import check_configured

    check_configured(root)  # the server in the active profile is down: one line, not a traceback

    # Taken before Prefect starts, so a second run fails fast with one line naming the lock and
    # its holder; the flow takes it again (re-entrant here), which covers scheduled runs too.
    with run_lock(root):
        from pipelines.training import training_flow

        statuses = training_flow(project_dir=str(root), params_file=params_file)
    for stage, status in statuses.items():
        print(f"{stage}: {status}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    _quiet_prefect()
    if args.dry_run:
        from cnnpipe.flows.schedule import next_run_times

        for when in next_run_times(args.cron, args.count, timezone=args.timezone):
            print(when.isoformat())
        return 0
    root, params_file = _project(args)
    from cnnpipe.flows.schedule import check_cron
    from cnnpipe.flows.server import api_for_schedule

    check_cron(args.cron, args.timezone)  # before a server is started for it
    api_url, line = api_for_schedule(root)  # never Prefect's temporary server: it has no scheduler
    print(line, flush=True)
    from pipelines import schedules

    schedules.serve(args.cron, api_url=api_url, project_dir=str(root), params_file=params_file, timezone=args.timezone)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    _quiet_prefect()
    from cnnpipe.flows.server import command
    from cnnpipe.tracking.lineage import project_root

    print(command(project_root(_params_file(args).parent), args.action, args.port))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from cnnpipe.security import redact
    from cnnpipe.tracking.connection import (
        STORE_ARTIFACTS,
        check_store,
        embedded_uri,
        resolve_uri,
        sqlite_file,
    )
    from cnnpipe.tracking.lineage import project_root, store_root

    params = _params(args)
    root = store_root(project_root(_params_file(args).parent))
    uri = resolve_uri(params.tracking, root)
    if uri != embedded_uri(root):
        print(f"runs are tracked at {redact(uri)}: open that server's UI instead")
        return 0
    check_store(uri, create=True)  # `mlflow ui` would replace a deleted store with an empty one
    db = sqlite_file(uri)
    fresh = "; none here yet: creating an empty one" if db is not None and not db.is_file() else ""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--default-artifact-root", (root / STORE_ARTIFACTS).as_uri(),
               "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}{fresh})", flush=True)
    os.execv(sys.executable, command)  # replaces this process: Ctrl-C stops the UI directly
    return 0  # not reached


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("promote", help="promote a version (default: @challenger) through the gates")
    p.add_argument("name", help="registered model name, e.g. cnnpipe-classifier")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="version number (default: the @challenger)")
    which.add_argument("--experiment", help="the version registered by this DVC experiment (`dvc exp show`)")
    p.add_argument("--force", action="store_true", help="promote even if the gates refuse (recorded)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="make @previous the @champion again")
    p.add_argument("name")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("lineage", help="what produced a version: commit, data hashes, params, runs, history")
    p.add_argument("ref", help="NAME, NAME@ALIAS or NAME/VERSION (NAME alone: @champion)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("predict", help="predict image files with a registered model")
    p.add_argument("ref", help="NAME, NAME@ALIAS or NAME/VERSION (NAME alone: @champion)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, TIFF, ...), decoded like the training data")
    p.add_argument("--backend", choices=("auto", "tflite", "keras"), default="auto",
                   help="auto (default): the fastest that matches Keras (TFLite, else Keras)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing masks (<image>.mask.png); without it predict refuses and writes nothing")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="run the pipeline as a Prefect flow (stages through DVC)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schedule", help="run the pipeline on a cron schedule (Prefect serve)")
    p.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * *"')
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron (default: UTC)")
    p.add_argument("--dry-run", action="store_true", help="print the next run times and exit")
    p.add_argument("--count", type=int, default=5, help="run times printed by --dry-run")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("server", help="the project's persistent Prefect server: start, stop, status")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--port", type=int, default=None, help="port (default: PREFECT_SERVER_API_PORT, 4200)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("ui", help="the MLflow UI on the embedded store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnpipe`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cnnpipe").setLevel(logging.INFO)  # our progress lines; libraries stay quiet
    # The command's one error boundary: every failure is one line; Ctrl-C exits 130.
    from cnnpipe.io import WRITE_ERRNOS
    from cnnpipe.security import redact

    try:
        return args.func(args)
    except CnnpipeError as err:
        line = str(err)
    except KeyboardInterrupt:
        print(f"cnnpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (the boundary: a traceback goes to a log file, not the user)
        full_disk_or_denied = isinstance(err, OSError) and err.errno in WRITE_ERRNOS  # e.g. a mask file
        line = str(err) if full_disk_or_denied else crash_report(err, f"cnnpipe-{args.command}", redact)
    print(redact(f"cnnpipe {args.command}: {line}"), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
