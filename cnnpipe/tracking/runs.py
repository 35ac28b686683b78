"""MLflow at the stage edge: one run per stage run, with the params, metrics, artifacts and
datasets of that stage, and the lineage tags that answer "what produced this?".

A stage shell uses it like this (Keras models and per-epoch metrics: :mod:`cnnpipe.tracking.keras`)::

    with stage_run("train_classifier", params, param_sections=["seed", "augment", "train_classifier"],
                   inputs={"classification": data_dir}) as run:
        model = train(..., callbacks=[epoch_logger(run)])
        run.log_metrics(summary)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params, to_dict
from cnnpipe.io import read_json
from cnnpipe.security import redact
from cnnpipe.tracking import lineage
from cnnpipe.tracking.connection import Connection, connect

log = logging.getLogger("cnnpipe")

# Set by the Prefect training flow for the stage processes it starts through DVC.
ENV_PARENT_RUN = "CNNPIPE_PARENT_RUN_ID"
ENV_FLOW_RUN = "CNNPIPE_PREFECT_FLOW_RUN_ID"


# --------------------------------------------------------------------------------------
# Lineage tags and params
# --------------------------------------------------------------------------------------


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def section_params(params: Params, sections: Sequence[str]) -> dict[str, str]:
    """The named top-level params sections, flattened to ``section.key`` strings (redacted)."""
    out: dict[str, Any] = {}
    for name in sections:
        value = getattr(params, name)
        plain = value is None or isinstance(value, (str, int, float, bool, list, tuple))
        out.update({name: value} if plain else flatten({name: to_dict(value)}))  # a section: its keys
    return {k: redact(json.dumps(v) if isinstance(v, list) else str(v)) for k, v in out.items()}


def prefect_flow_run_id() -> str | None:
    """The Prefect flow run this process belongs to: set by the flow, or the one running here."""
    if os.environ.get(ENV_FLOW_RUN):
        return os.environ[ENV_FLOW_RUN]
    if "prefect" not in sys.modules:
        return None  # not running inside a flow; importing Prefect to find out costs ~1 s
    with contextlib.suppress(Exception):  # prefect absent or no run context: not under Prefect
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    return None


def lineage_tags(stage: str, work_root: Path, inputs: Mapping[str, str | Path]) -> dict[str, str]:
    """``cnnpipe.stage``, ``git.commit``, ``git.dirty``, ``dvc.<input>``, ``prefect.flow_run_id``."""
    git = lineage.git_state(work_root)
    tags = {"cnnpipe.stage": stage, "git.commit": git.commit, "git.dirty": str(git.dirty).lower()}
    tags.update({f"dvc.{name}": h for name, h in lineage.input_hashes(inputs, work_root).items()})
    if flow_run := prefect_flow_run_id():
        tags["prefect.flow_run_id"] = flow_run
    return tags


def lineage_tags_only(tags: Mapping[str, str]) -> dict[str, str]:
    """The lineage subset of a run's tags (git, dvc, prefect)."""
    return {k: v for k, v in tags.items() if k.split(".", 1)[0] in ("git", "dvc", "prefect")}


def _redacted_context_tags() -> dict[str, str]:
    """MLflow's automatic tags (e.g. the git remote URL) that carry credentials, redacted.

    Passed as explicit tags, they override the automatic values before anything is sent.
    """
    from mlflow.tracking.context.registry import resolve_tags

    return {k: redact(v) for k, v in resolve_tags({}).items() if isinstance(v, str) and redact(v) != v}


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def numeric_metrics(data: Mapping[str, Any]) -> dict[str, float]:
    """Flatten a metrics mapping (e.g. a metrics JSON) and keep its numbers (not bools)."""
    return {
        k: float(v) for k, v in flatten(data).items()
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    }


@dataclass
class StageRun:
    """The MLflow run of one stage run; methods log to it (and only it)."""

    run_id: str
    stage: str
    connection: Connection
    experiment_id: str
    tags: dict[str, str]  # the lineage tags set on the run (copied onto registered versions)

    @property
    def url(self) -> str:
        return self.connection.run_url(self.experiment_id, self.run_id)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the numbers of a (nested) mapping, e.g. a stage's metrics JSON."""
        import mlflow

        mlflow.log_metrics(numeric_metrics(metrics), step=step, run_id=self.run_id)

    def log_metrics_file(self, path: str | Path) -> None:
        """Log a metrics JSON's numbers and the file itself."""
        self.log_metrics(read_json(path))
        self.log_artifacts(path, "metrics")

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or a whole directory (plots, GX Data Docs, reports); a missing path is skipped."""
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path or path.name, run_id=self.run_id)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path, run_id=self.run_id)
        else:
            log.warning("not logging %s to MLflow: no such file or directory", path)

    def log_dataset(
        self,
        data: np.ndarray | Mapping[str, np.ndarray] | Any,
        name: str,
        digest: str,
        *,
        source: str | Path | None = None,
        context: str = "training",
        targets: np.ndarray | None = None,
    ) -> None:
        """Record a dataset input (numpy array(s) or a pandas DataFrame) with its content hash.

        ``digest`` is the data's hash (e.g. from :func:`cnnpipe.tracking.lineage.input_hashes`); MLflow
        keeps 36 characters of it, so the full value also goes into the input's tags.
        """
        import mlflow
        import mlflow.data

        short = digest.split(":", 1)[-1][:36]
        src = str(source) if source is not None else None
        if isinstance(data, (np.ndarray, Mapping)):
            dataset = mlflow.data.from_numpy(data, source=src, targets=targets, name=name, digest=short)
        else:
            dataset = mlflow.data.from_pandas(data, source=src, name=name, digest=short)
        with activated(self.run_id):
            mlflow.log_input(dataset, context=context, tags={"cnnpipe.hash": digest})


@contextlib.contextmanager
def activated(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run for the fluent API, unless it already is."""
    import mlflow

    current = mlflow.active_run()
    if current is not None and current.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=current is not None):
        yield


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Params,
    *,
    param_sections: Sequence[str],
    inputs: Mapping[str, str | Path],
    root: str | Path | None = None,
) -> Iterator[StageRun]:
    """Run the body inside an MLflow run for ``stage`` (nested under the Prefect flow's run
    when ``CNNPIPE_PARENT_RUN_ID`` is set, or under the active run).

    Logs the params of ``param_sections`` and tags the run with the stage, git commit and dirty
    flag, the hashes of ``inputs`` (name -> path, relative to the project root) and the Prefect
    flow-run id. An exception in the body marks the run FAILED, Ctrl-C marks it KILLED, and
    either propagates; a store deleted under the run is one :class:`TrackingUnavailable` naming it.
    """
    import mlflow

    work_root = lineage.project_root(root)
    conn = connect(params.tracking, work_root)
    tags = {**_redacted_context_tags(), **lineage_tags(stage, work_root, inputs)}
    if conn.fallback_from:
        tags["cnnpipe.tracking_fallback_from"] = conn.fallback_from
    experiment_id = conn.experiment_id()
    parent = None if mlflow.active_run() else os.environ.get(ENV_PARENT_RUN)
    active = mlflow.start_run(
        experiment_id=experiment_id, run_name=stage, tags=tags,
        parent_run_id=parent, nested=mlflow.active_run() is not None,
    )
    status = "FAILED"
    try:
        mlflow.log_params(section_params(params, param_sections))
        yield StageRun(active.info.run_id, stage, conn, experiment_id, lineage_tags_only(tags))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception:
        if lost := conn.store_lost():
            raise lost from None  # MLflow's own error is a page of SQL about a read-only database
        raise
    finally:
        _end_run(conn, status)


def _end_run(conn: Connection, status: str) -> None:
    """End the active run with ``status``; a store that is gone can record nothing more."""
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception:
        if conn.store_lost() is None:
            raise


@contextlib.contextmanager
def flow_run(
    params: Params, root: str | Path, *, name: str, flow_run_id: str | None
) -> Iterator[tuple[Connection, str, dict[str, str]]]:
    """The parent MLflow run of one orchestrated pipeline run.

    Yields the connection, the parent run id, and the environment that nests each stage's run
    under it (pass it to the stage processes). The run ends FAILED if the body raises.
    """
    from mlflow.entities import RunStatus

    conn = connect(params.tracking, root)
    client = conn.client()
    tags = {**_redacted_context_tags(), **lineage_tags("pipeline", lineage.project_root(root), {})}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    run = client.create_run(conn.experiment_id(), run_name=name, tags=tags)
    env = {ENV_PARENT_RUN: run.info.run_id, "MLFLOW_TRACKING_URI": conn.uri}
    if flow_run_id:
        env[ENV_FLOW_RUN] = flow_run_id
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield conn, run.info.run_id, env
        status = RunStatus.to_string(RunStatus.FINISHED)
    finally:
        client.set_terminated(run.info.run_id, status)


def child_runs(conn: Connection, parent_run_id: str) -> dict[str, str]:
    """Stage name -> URL of the latest run nested under ``parent_run_id``."""
    client = conn.client()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return {
        r.data.tags.get("cnnpipe.stage", r.info.run_name): conn.run_url(r.info.experiment_id, r.info.run_id)
        for r in runs
    }
