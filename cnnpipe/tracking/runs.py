"""MLflow at the stage edge: one run per stage run, with the params, metrics, artifacts, datasets
and models of that stage, and the lineage tags that answer "what produced this?".

Nothing here connects at import time; :func:`connect` (called by :func:`stage_run`) resolves
the tracking URI, checks a server is reachable within seconds, and points MLflow at it.
Keras is imported only where a model or a callback needs it (it costs seconds).

A stage shell uses it like this::

    with stage_run("train_classifier", params, param_sections=["seed", "augment", "train_classifier"],
                   inputs={"classification": data_dir}) as run:
        model = train(..., callbacks=[run.epoch_logger()])
        run.log_metrics(summary)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from cnnpipe.config import Params, TrackingParams, to_dict
from cnnpipe.errors import CnnpipeError
from cnnpipe.io import read_json
from cnnpipe.tracking import lineage

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.tracking import MlflowClient

log = logging.getLogger("cnnpipe")

# Set by the Prefect training flow for the stage processes it starts through DVC.
ENV_PARENT_RUN = "CNNPIPE_PARENT_RUN_ID"
ENV_FLOW_RUN = "CNNPIPE_PREFECT_FLOW_RUN_ID"

STORE_DB = "mlflow.db"
STORE_ARTIFACTS = "mlartifacts"
UI_URL = "http://127.0.0.1:5000"  # where `cnnpipe ui` serves the embedded store


class TrackingUnavailable(CnnpipeError):
    """The configured tracking server cannot be reached; the message names its (redacted) URI."""


# --------------------------------------------------------------------------------------
# Credentials never leave the process
# --------------------------------------------------------------------------------------

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """Replace the ``user:password@`` part of every URL in ``text`` with ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def _strip_userinfo(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------
# Where runs go
# --------------------------------------------------------------------------------------


def embedded_uri(root: str | Path) -> str:
    """The SQLite store of the project at ``root`` (absolute, so any cwd finds the same one)."""
    return f"sqlite:///{(Path(root).resolve() / STORE_DB).as_posix()}"


def resolve_uri(tracking: TrackingParams, root: str | Path) -> str:
    """Env MLFLOW_TRACKING_URI, else ``tracking.uri``, else the embedded store under ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri or embedded_uri(root)


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise :class:`TrackingUnavailable` unless an HTTP(S) server answers within ``timeout_s``.

    Any HTTP answer counts (a 401 still means a server is there); other schemes are local.
    """
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    url = _strip_userinfo(uri).rstrip("/") + "/health"
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(
            f"MLflow tracking server {redact(uri)} is unreachable ({reason}; gave up after "
            f"{time.monotonic() - start:.1f}s). Start it, point tracking.uri / MLFLOW_TRACKING_URI "
            "elsewhere, or set tracking.fallback_local: true to log to the embedded store"
        ) from None


@dataclass(frozen=True)
class Connection:
    """Where this process logs: the URI in use, and what it replaced when it fell back."""

    uri: str
    root: Path  # the store root: the original project, also inside a `dvc exp` temp copy
    experiment: str
    fallback_from: str | None = None  # redacted URI of the unreachable server

    @property
    def embedded(self) -> bool:
        return self.uri == embedded_uri(self.root)

    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self) -> str:
        """Get or create the experiment; the embedded store keeps artifacts in ``mlartifacts/``."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = (self.root / STORE_ARTIFACTS).as_uri() if self.embedded else None
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by a concurrent stage
            return client.get_experiment_by_name(self.experiment).experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = UI_URL if self.embedded else redact(self.uri).rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _credentials_to_env(uri: str) -> str:
    """Move ``user:password@`` of an HTTP(S) URI into MLflow's basic-auth variables (unless set)
    and return the URI without them: MLflow prints and records the URI, never these variables."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return _strip_userinfo(uri)


def connect(tracking: TrackingParams, root: str | Path | None = None) -> Connection:
    """Resolve the URI, check it, fall back if allowed, and point MLflow (tracking + registry) at it."""
    import mlflow

    store = lineage.store_root(lineage.project_root(root))
    uri = _credentials_to_env(resolve_uri(tracking, store))
    fallback_from = None
    try:
        check_reachable(uri, tracking.timeout_s)
    except TrackingUnavailable as err:
        if not tracking.fallback_local:
            raise
        fallback_from, uri = redact(uri), embedded_uri(store)
        log.warning("%s; tracking.fallback_local is set: logging to %s instead", err, uri)
    if uri == embedded_uri(store):
        (store / STORE_ARTIFACTS).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return Connection(uri, store, tracking.experiment, fallback_from)


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
        out.update(flatten({name: to_dict(value)}) if hasattr(value, "__dataclass_fields__") else {name: value})
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

        ``digest`` is the data's hash (e.g. from :func:`cnnpipe.lineage.input_hashes`); MLflow
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
        with _active(self.run_id):
            mlflow.log_input(dataset, context=context, tags={"cnnpipe.hash": digest})

    def epoch_logger(self) -> Any:
        """A Keras callback logging every epoch's metrics to this run (see MlflowEpochLogger)."""
        return _epoch_logger_class()(self.run_id, self.connection)

    def log_keras_model(
        self,
        model: Any,
        name: str,
        input_example: np.ndarray,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelInfo:
        """Log ``model`` with the mlflow.keras flavor, a signature inferred from ``input_example``
        (and the model's own output on it: an array, or a dict of arrays for multi-head models)."""
        from mlflow.models import Model, infer_signature

        output = model.predict(input_example, verbose=0)
        output = {k: np.asarray(v) for k, v in output.items()} if isinstance(output, Mapping) else np.asarray(output)
        with _active(self.run_id):
            # Model.log is what mlflow.keras.log_model calls, with the flavor made safe (below).
            return Model.log(
                artifact_path=None,
                name=name,
                flavor=_KERAS_FLAVOR,
                model=model,
                signature=infer_signature(input_example, output),
                input_example=input_example,
                metadata=dict(metadata or {}),
                pip_requirements=_pinned_requirements(),
            )


def _save_keras_model(path: str, **kwargs: Any) -> None:
    """mlflow.keras.save_model, after creating ``path``: the flavor writes the input example
    before making its directory, so log_model with an input example fails (mlflow#16183)."""
    import mlflow.keras

    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# The flavor as Model.log sees it: its name and save_model.
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


@contextlib.contextmanager
def _active(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run for the fluent API, unless it already is."""
    import mlflow

    current = mlflow.active_run()
    if current is not None and current.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=current is not None):
        yield


@functools.cache
def _pinned_requirements() -> list[str]:
    """The exact versions in this environment: MLflow would otherwise infer them by loading the
    model in a subprocess (tens of seconds with TensorFlow)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "keras", "tensorflow-cpu", "tensorflow", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{dist}=={version(dist)}")
    return reqs


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
    flow-run id. An exception in the body marks the run FAILED and propagates.
    """
    import mlflow

    work_root = lineage.project_root(root)
    conn = connect(params.tracking, work_root)
    tags = {**_redacted_context_tags(), **lineage_tags(stage, work_root, inputs)}
    if conn.fallback_from:
        tags["cnnpipe.tracking_fallback_from"] = conn.fallback_from
    experiment_id = conn.experiment_id()
    parent = None if mlflow.active_run() else os.environ.get(ENV_PARENT_RUN)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=stage, tags=tags,
        parent_run_id=parent, nested=mlflow.active_run() is not None,
    ) as active:
        mlflow.log_params(section_params(params, param_sections))
        yield StageRun(active.info.run_id, stage, conn, experiment_id, lineage_tags_only(tags))


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


# --------------------------------------------------------------------------------------
# Keras: per-epoch metrics (a callback, so model code never sees MLflow)
# --------------------------------------------------------------------------------------


@functools.cache
def _epoch_logger_class() -> type:
    # Defined on first use: subclassing keras.callbacks.Callback imports Keras (seconds), which
    # the CLI and the Prefect flow, importing this module, must not pay.
    import keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        """Logs each epoch's ``logs`` (loss, metrics, val_*) to an MLflow run, step = epoch."""

        def __init__(self, run_id: str, connection: Connection) -> None:
            super().__init__()
            self.run_id = run_id
            self._client = connection.client()

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, epoch) for k, v in numeric_metrics(dict(logs or {})).items()]
            if metrics:
                self._client.log_batch(self.run_id, metrics=metrics)

    return MlflowEpochLogger


def __getattr__(name: str) -> Any:
    if name == "MlflowEpochLogger":
        return _epoch_logger_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# The pipeline report (a Prefect markdown artifact)
# --------------------------------------------------------------------------------------


def pipeline_report(
    statuses: Mapping[str, str],
    metrics_dir: str | Path,
    *,
    parent_url: str | None = None,
    stage_urls: Mapping[str, str] | None = None,
    error: str | None = None,
) -> str:
    """Markdown: each stage's DVC outcome with its MLflow run link, then every metric in
    ``metrics_dir/*.json`` and ``metrics_dir/register/*.json``."""
    stage_urls = stage_urls or {}
    lines = ["# cnnpipe pipeline run", ""]
    if parent_url:
        lines += [f"MLflow run of this pipeline run: [{parent_url}]({parent_url})", ""]
    if error:
        lines += ["**Failed:**", "", "```", error, "```", ""]
    lines += ["| stage | DVC | MLflow run |", "|---|---|---|"]
    for stage, status in statuses.items():
        url = stage_urls.get(stage)
        lines.append(f"| {stage} | {status} | {f'[run]({url})' if url else '-'} |")
    lines += ["", "## Metrics", "", "| file | metric | value |", "|---|---|---|"]
    metrics_dir = Path(metrics_dir)
    # The test metrics (<task>.json) and the register@<task> decisions (register/<task>.json).
    for path in [*sorted(metrics_dir.glob("*.json")), *sorted(metrics_dir.glob("register/*.json"))]:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue  # a half-written or foreign file must not sink the report
        values = numeric_metrics(data) if isinstance(data, Mapping) else {}
        name = path.relative_to(metrics_dir).as_posix()
        lines += [f"| {name} | {k} | {v:.4g} |" for k, v in values.items()]
    return redact("\n".join(lines) + "\n")  # a stage's error output may quote a URL with credentials
