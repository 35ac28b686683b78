"""A real ``mlflow server`` for tests: 127.0.0.1, a free port, SQLite backend, a temp artifact
root served through the server (``--serve-artifacts``).

One server per test session, shared by every module that uses the ``mlflow_server`` fixture
(it costs tens of seconds to start on a busy 2-core machine); it stops at interpreter exit.
Test modules import the fixture: ``from mlflow_server import mlflow_server``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 180


@dataclass
class MlflowServer:
    url: str
    root: Path
    proc: subprocess.Popen[bytes]

    def get(self, endpoint: str, **query: str) -> Any:
        """GET a REST endpoint (e.g. ``registered-models/get``) and decode its JSON."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.load(resp)

    def artifact(self, path: str) -> bytes:
        """Download an artifact through the server's proxy (``mlflow-artifacts:/<path>``)."""
        with urllib.request.urlopen(f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{path}", timeout=30) as resp:
            return resp.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> MlflowServer:
    """Start a server storing under ``root``; returns once ``/health`` answers."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner to start
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,  # own group: stop() ends all of it
    )
    server = MlflowServer(f"http://127.0.0.1:{port}", root, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    stop(server)
    raise RuntimeError(f"mlflow server not healthy after {START_TIMEOUT_S}s")


def stop(server: MlflowServer) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


_shared: MlflowServer | None = None


def shared_server() -> MlflowServer:
    """The session's server, started on first use."""
    global _shared
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="cnnpipe-mlflow-server-"))
        _shared = start(root)
        atexit.register(shutil.rmtree, root, True)
        atexit.register(stop, _shared)
    return _shared


@pytest.fixture(scope="session")
def mlflow_server() -> MlflowServer:
    return shared_server()
