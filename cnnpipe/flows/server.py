"""The project's persistent local Prefect server: started in the background, found again, stopped.

``prefect server start`` runs as a detached process (its own session, so closing the shell does
not stop it) on 127.0.0.1, with its database, pid and log under ``<project>/.cnnpipe/prefect/``.
Its API URL is saved in the Prefect profile ``cnnpipe``, made the active profile, so every later
shell (``cnnpipe run``, ``prefect deployment ls``) talks to it without an ``export``; stopping
the server makes the previously active profile active again. Prefect is imported lazily.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cnnpipe.errors import CnnpipeError
from cnnpipe.io import write_json

HOST = "127.0.0.1"
PROFILE = "cnnpipe"
STATE_DIR = ".cnnpipe/prefect"
PROMOTION_LIMIT = "cnnpipe-promotion"  # one promotion at a time (pipelines/promotion.py)
START_TIMEOUT_S = 180.0  # a cold start (database migrations) on a busy 2-core machine takes ~30 s


@dataclass(frozen=True)
class Server:
    """A running project server: its process, where it listens, and whether this call started it."""

    pid: int
    port: int
    state_dir: Path
    started: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def state_dir(root: Path) -> Path:
    return Path(root).resolve() / STATE_DIR


def default_port() -> int:
    """Prefect's own setting (``PREFECT_SERVER_API_PORT``, default 4200)."""
    from prefect.settings import get_current_settings

    return int(get_current_settings().server.api.port)


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a server started by a still-running ``cnnpipe
    schedule`` is its child: stopped from another shell, it stays a zombie until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _record(root: Path) -> dict | None:
    try:
        return json.loads((state_dir(root) / "server.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def running(root: Path) -> Server | None:
    """The project's server if its process is alive (healthy or still starting), else None."""
    record = _record(root)
    if record and _alive(int(record["pid"])):
        return Server(int(record["pid"]), int(record["port"]), state_dir(root))
    return None


@contextlib.contextmanager
def _start_lock(root: Path) -> Iterator[None]:
    """Two ``start`` calls at once start one server."""
    path = state_dir(root)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "start.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _server_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(
        PREFECT_HOME=str(state),
        PREFECT_PROFILES_PATH=str(state / "profiles.toml"),  # the server ignores the user's profiles
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{state / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
    )
    return env


def _wait_healthy(server: Server, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(server.api_url):
            return
        if not _alive(server.pid):
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
            raise CnnpipeError(f"the Prefect server on port {server.port} exited while starting"
                               f"{': ' + tail[0].strip() if tail else ''} (log: {log})")
        time.sleep(0.5)
    raise CnnpipeError(f"the Prefect server on port {server.port} did not answer within {timeout_s:.0f} s "
                       f"(log: {log}); stop it with `cnnpipe server stop`")


def start(root: Path, port: int | None = None, timeout_s: float = START_TIMEOUT_S) -> Server:
    """Start the project's server in the background, or reuse the one already running; either
    way wait until it answers, and make the ``cnnpipe`` profile point at it."""
    with _start_lock(root):
        server = running(root)
        if server is None:
            server = _launch(root, port or default_port())
        elif port and port != server.port:
            raise CnnpipeError(f"the project's Prefect server already runs on port {server.port}, not {port}; "
                               "stop it first (cnnpipe server stop)")
        _wait_healthy(server, server.state_dir / "server.log", timeout_s)
        _ensure_limit(server.api_url, PROMOTION_LIMIT)
    use_profile(root, server.api_url)
    return server


def _ensure_limit(api_url: str, name: str, limit: int = 1) -> None:
    """The global concurrency limit the promotion flow takes (``pipelines/promotion.py``)."""
    import httpx

    if httpx.get(f"{api_url}/v2/concurrency_limits/{name}", timeout=10).status_code == 404:
        httpx.post(f"{api_url}/v2/concurrency_limits/", json={"name": name, "limit": limit}, timeout=10).raise_for_status()


def _launch(root: Path, port: int) -> Server:
    if not _port_free(port):
        owner = "another Prefect server" if healthy(f"http://{HOST}:{port}/api") else "another program"
        raise CnnpipeError(f"port {port} on {HOST} is taken by {owner}, not this project's server; stop it or "
                           "choose another port (--port, or PREFECT_SERVER_API_PORT)")
    state = state_dir(root)
    log = state / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port),
               "--analytics-off"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=state, env=_server_env(state), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    write_json(state / "server.json", {"pid": proc.pid, "port": port})
    return Server(proc.pid, port, state, started=True)


def stop(root: Path, timeout_s: float = 30.0) -> Server | None:
    """Stop the project's server (its whole process group) and restore the previous profile;
    None if it was not running."""
    server = running(root)
    if server is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(server.pid) and time.monotonic() < deadline:
            _reap(server.pid)
            time.sleep(0.2)
        if _alive(server.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
    (state_dir(root) / "server.json").unlink(missing_ok=True)
    restore_profile(root)
    return server


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the server (tests, ``schedule``)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --------------------------------------------------------------------------------------
# The Prefect profile
# --------------------------------------------------------------------------------------


def use_profile(root: Path, api_url: str) -> None:
    """Save ``PREFECT_API_URL`` in the ``cnnpipe`` profile and make it the active one,
    remembering which profile was active before (``stop`` restores it)."""
    from prefect.settings import PREFECT_API_URL, load_profiles, save_profiles

    profiles = load_profiles()
    previous = profiles.active_name
    profiles.update_profile(PROFILE, {PREFECT_API_URL: api_url})
    profiles.set_active(PROFILE)
    save_profiles(profiles)
    if previous and previous != PROFILE:
        (state_dir(root) / "previous-profile").write_text(previous)


def restore_profile(root: Path) -> None:
    """Make the profile that was active before ``start`` active again (if ``cnnpipe`` still is)."""
    from prefect.settings import load_profiles, save_profiles

    profiles = load_profiles()
    if profiles.active_name != PROFILE:
        return
    marker = state_dir(root) / "previous-profile"
    previous = marker.read_text().strip() if marker.is_file() else "ephemeral"
    profiles.set_active(previous if previous in profiles.names else None)
    save_profiles(profiles)


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect resolves it now: the variable, else the saved active profile
    (read from disk, so a server started by this process counts)."""
    from prefect.settings import PREFECT_API_URL, load_profiles

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    active = load_profiles().active_profile
    value = active.settings.get(PREFECT_API_URL) if active else None
    return str(value) if value else None


def is_project_url(api_url: str | None, port: int) -> bool:
    return bool(api_url) and api_url.rstrip("/") in (f"http://{h}:{port}/api" for h in (HOST, "localhost"))


def check_configured(root: Path) -> None:
    """One line, not Prefect's connection traceback, when the configured server does not answer
    (e.g. the ``cnnpipe`` profile is active but the machine rebooted)."""
    from cnnpipe.security import redact

    url = configured_api_url()
    if not url or healthy(url, timeout=5.0):
        return
    current = running(root)
    if is_project_url(url, current.port if current else default_port()):
        hint = "start it (cnnpipe server start), or run without it (cnnpipe server stop)"
    else:
        hint = "start it, or unset PREFECT_API_URL"
    raise CnnpipeError(f"the Prefect server at {redact(url)} does not answer; {hint}")


def api_for_schedule(root: Path) -> tuple[str, str]:
    """The API a schedule is served on, never Prefect's temporary server (it has no scheduler):
    a configured server that is not this project's, else the project's server, started or
    reused. Returns the API URL and one line saying which."""
    from cnnpipe.security import redact

    configured = configured_api_url()
    current = running(root)
    port = current.port if current else default_port()
    if configured and not is_project_url(configured, port):
        if not healthy(configured, timeout=10.0):
            raise CnnpipeError(f"the Prefect server at {redact(configured)} (PREFECT_API_URL) does not answer; "
                               "start it, or unset PREFECT_API_URL to use the project's own server")
        return configured, f"Prefect server {redact(configured)} (PREFECT_API_URL) schedules the runs"
    server = start(root, port)
    how = "started" if server.started else "reusing"
    return server.api_url, (f"Prefect server: {how} the project's server on {server.url} (UI there; "
                            "stop: cnnpipe server stop)")


def command(root: Path, action: str, port: int | None = None) -> str:
    """``cnnpipe server start|stop|status``: do it, and say what happened in one line."""
    if action == "start":
        found = start(root, port)
        return (f"Prefect server {'started' if found.started else 'already running'} on {found.url} "
                f"(pid {found.pid}, state {found.state_dir}); Prefect profile '{PROFILE}' is active")
    if action == "stop":
        found = stop(root)
        return f"Prefect server on {found.url} stopped" if found else "no Prefect server of this project is running"
    found = running(root)
    if found is None:
        return "not running (start: cnnpipe server start)"
    state = "running" if healthy(found.api_url) else "starting"
    return f"{state} on {found.url} (pid {found.pid}, API {found.api_url}, state {found.state_dir})"
