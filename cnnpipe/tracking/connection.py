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
from urllib.parse import urlsplit

from cnnpipe.config import TrackingParams
from cnnpipe.errors import CnnpipeError
from cnnpipe.io import atomic_file
from cnnpipe.security import check_uri, credentials, redact, strip_userinfo
from cnnpipe.tracking import lineage

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("cnnpipe")

STORE_DB = "mlflow.db"
STORE_ARTIFACTS = "mlartifacts"
UI_URL = "http://127.0.0.1:5000"  # where `cnnpipe ui` serves the embedded store


class TrackingUnavailable(CnnpipeError):
    """The configured tracking server cannot be reached; the message names its (redacted) URI."""


class StoreMissing(CnnpipeError):
    """A local tracking store that should be there is not; the message names it."""


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


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def store_marker(db: Path) -> Path:
    """The file written beside a SQLite store when it is created: it proves the store existed."""
    return db.with_name(db.name + ".created")


def check_store(uri: str, *, create: bool) -> None:
    """Refuse a SQLite store that cannot be (or must not be) opened: its directory is missing;
    it was deleted (its marker, or the promotion lock beside it, remains: an empty registry
    would crown the next model unopposed); or, with ``create`` False, there is none yet (a
    registry command run outside the project would create an empty store there)."""
    db = sqlite_file(uri)
    if db is None or db.is_file():
        return
    if not db.parent.is_dir():
        raise StoreMissing(f"tracking store {uri}: the directory {db.parent} does not exist; create it, "
                           "or point tracking.uri / MLFLOW_TRACKING_URI at another store")
    # The promotion lock (cnnpipe.registry.lock) sits beside the store too, since before the marker.
    evidence = [p for p in (store_marker(db), db.with_name(db.name + ".promote.lock")) if p.exists()]
    if evidence:
        names = " and ".join(p.name for p in evidence)
        raise StoreMissing(
            f"tracking store {db} is missing, but this project had one ({names} beside it): restore "
            f"{db.name} from your backup; to start an empty registry on purpose (every registered "
            f"version and its history gone), delete {names} and run again")
    if not create:
        raise StoreMissing(f"no tracking store at {db}: nothing has been tracked or registered here "
                           "(run the pipeline in this project first, give --params of the project, "
                           "or point MLFLOW_TRACKING_URI / tracking.uri at your server)")


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

    def store_lost(self) -> StoreMissing | None:
        """The error to report when the local store was deleted (or moved) under this process."""
        db = sqlite_file(self.uri)
        if db is None or db.is_file():
            return None
        return StoreMissing(f"tracking store {db} was deleted or moved while this ran; this run's "
                            f"records are lost. Restore {db.name} from your backup and run again")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = UI_URL if self.embedded else redact(self.uri).rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _credentials_to_env(uri: str) -> str:
    """Move ``user:password@`` of an HTTP(S) URI into MLflow's basic-auth variables (unless set)
    and return the URI without them: MLflow prints and records the URI, never these variables."""
    found = credentials(uri)
    if urlsplit(strip_userinfo(uri)).scheme not in ("http", "https") or found is None:
        return uri
    user, password = found
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
    if password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    return strip_userinfo(uri)


def _mark_store(conn: Connection) -> None:
    """Create the embedded store now and write its marker (once), so a later deletion is noticed."""
    db = sqlite_file(conn.uri)
    if db is None or store_marker(db).exists():
        return
    conn.client().search_experiments(max_results=1)  # creates the database and its tables
    with atomic_file(store_marker(db), "w") as f:
        f.write(f"The MLflow store {db.name} beside this file was created on "
                f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}. While this file exists, cnnpipe refuses to "
                f"replace a missing {db.name} with an empty one; delete it to start afresh on purpose.\n")


def connect(tracking: TrackingParams, root: str | Path | None = None, *, create: bool = True) -> Connection:
    """Resolve the URI, check it, fall back if allowed, and point MLflow (tracking + registry) at it.

    ``create`` False (the registry commands): a local store that does not exist yet is an error,
    not a new empty store."""
    import mlflow

    store = lineage.store_root(lineage.project_root(root))
    resolved = resolve_uri(tracking, store)
    check_uri(resolved, "tracking URI")
    uri = _credentials_to_env(resolved)
    fallback_from = None
    try:
        check_reachable(uri, tracking.timeout_s)
    except TrackingUnavailable as err:
        if not tracking.fallback_local:
            raise
        fallback_from, uri = redact(uri), embedded_uri(store)
        log.warning("%s; tracking.fallback_local is set: logging to %s instead", err, uri)
    check_store(uri, create=create)
    if uri == embedded_uri(store):
        (store / STORE_ARTIFACTS).mkdir(parents=True, exist_ok=True)
    # It logs each failed SQL statement as a page of text; the error is raised (and reported) anyway.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    conn = Connection(uri, store, tracking.experiment, fallback_from)
    _mark_store(conn)
    return conn
