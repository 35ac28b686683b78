"""Where runs go: the tracking URI (env, params, or the project's embedded store), a reachability
check that fails within seconds, credentials moved out of the URI, and MLflow pointed at it.

Nothing here connects at import time; :func:`connect` does, when a stage or command asks.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from cnnpipe.config import TrackingParams
from cnnpipe.errors import CnnpipeError
from cnnpipe.security import redact, strip_userinfo
from cnnpipe.tracking import lineage

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("cnnpipe")

STORE_DB = "mlflow.db"
STORE_ARTIFACTS = "mlartifacts"
UI_URL = "http://127.0.0.1:5000"  # where `cnnpipe ui` serves the embedded store


class TrackingUnavailable(CnnpipeError):
    """The configured tracking server cannot be reached; the message names its (redacted) URI."""


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
    url = strip_userinfo(uri).rstrip("/") + "/health"
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
    return strip_userinfo(uri)


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
