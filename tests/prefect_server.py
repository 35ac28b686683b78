"""The project's Prefect server in tests: an isolated Prefect home and profile file (the
developer's ``~/.prefect`` is never touched), a free port through Prefect's own setting, the
``cnnpipe`` command in subprocesses, and read-only queries of the server's API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from project import env as project_env

CNNPIPE = [str(Path(sys.executable).parent / "cnnpipe")]  # the console script, as a user types it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, port: int) -> dict[str, str]:
    """A user's shell with nothing exported but a Prefect home of its own (profiles inside)."""
    e = project_env()
    for var in list(e):
        if var.startswith("PREFECT_"):
            del e[var]
    home.mkdir(parents=True, exist_ok=True)
    e.update(PREFECT_HOME=str(home), PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
             PREFECT_SERVER_API_PORT=str(port), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return e


def cnnpipe(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNPIPE, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_schedule(cron: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``cnnpipe schedule --cron CRON`` in the background, its output in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([*CNNPIPE, "schedule", "--cron", cron], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def end(proc: subprocess.Popen) -> None:
    """Stop a background command and every process it started (its session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def deployment(api: str, name: str) -> dict | None:
    found = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10)
    found.raise_for_status()
    return (found.json() or [None])[0]


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    found = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                       json={"deployments": {"id": {"any_": [deployment_id]}}})
    found.raise_for_status()
    return found.json()


def wait_for(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 2.0):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` (and the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"no {what} within {timeout:.0f} s\n{tail}")
