"""Shared test set-up: offline, quiet tools; helpers to build tiny datasets live in tests/helpers.py."""

import functools
import http.server
import os
import threading
from collections.abc import Iterator

import pytest

# No tool may phone home in tests, and TF's start-up chatter hides real failures.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _throwaway_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stage shells log every run to MLflow: in tests that is a throw-away store, never the
    project's own ``mlflow.db`` (stage tests run with the repository as cwd) nor a server named in
    the developer's shell. Tests about where runs go set or clear the variable themselves."""
    from helpers import params_with
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # Created here so its artifacts stay here too (MLflow's default is ./mlruns in the cwd).
    MlflowClient(uri).create_experiment(params_with().tracking.experiment, artifact_location=(root / "mlartifacts").as_uri())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for var in ("CNNPIPE_PARENT_RUN_ID", "CNNPIPE_PREFECT_FLOW_RUN_ID"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def _throwaway_export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``cnnpipe predict`` caches TFLite exports; in tests, in a temp dir, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("exports")))
        yield


@pytest.fixture
def http_dir(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
