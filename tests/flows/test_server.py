"""The project's Prefect server and the schedule served on it, through the ``cnnpipe`` command
as a user runs it (subprocesses; an isolated Prefect home and profiles file):

- ``cnnpipe schedule`` with nothing started starts the project's server itself, says so in one
  line, and serves the deployment there: a cron, one run at a time (CANCEL_NEW), and Prefect's
  scheduler (not the test) creates its upcoming runs at the cron's times;
- ``cnnpipe server start`` reuses it; the ``cnnpipe`` profile lets a fresh shell reach it with
  nothing exported; ``stop`` stops it and restores the previously active profile;
- the committed ``prefect.yaml`` is accepted by ``prefect deploy --all`` and yields the
  deployment it describes (schedule, parameters, limit, the ``dvc pull`` step, the work pool).

Tests in this module run in order on one server (a cold start costs ~25 s)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect_server import (
    cnnpipe,
    deployment,
    end,
    flow_runs,
    free_port,
    prefect_env,
    start_schedule,
    wait_for,
)
from project import ROOT, make_project

from cnnpipe.flows.schedule import next_run_times

CRON = "0 3 * * *"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    project = make_project(tmp)
    env = prefect_env(tmp / "prefect-home", free_port())
    log = tmp / "schedule.log"
    schedule = start_schedule(CRON, project, env, log)
    try:
        api = "http://127.0.0.1:{}/api".format(env["PREFECT_SERVER_API_PORT"])
        wait_for(lambda: _answers(api) and deployment(api, "cnnpipe-scheduled"), 240, "served deployment", log)
        yield {"project": project, "env": env, "api": api, "log": log, "home": Path(env["PREFECT_HOME"])}
    finally:
        end(schedule)
        cnnpipe(["server", "stop"], project, env)


def _answers(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_schedule_with_nothing_started_starts_the_server_and_the_scheduler_plans_runs(served):
    lines = [line for line in served["log"].read_text().splitlines() if line.startswith("Prefect server:")]
    url = served["api"][:-4]
    assert lines == [f"Prefect server: started the project's server on {url} (UI there; stop: cnnpipe server stop)"]
    dep = deployment(served["api"], "cnnpipe-scheduled")
    assert dep["schedules"][0]["schedule"]["cron"] == CRON
    assert dep["parameters"] == {"project_dir": str(served["project"].resolve()), "params_file": "params.yaml"}
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    # ... and the limit the promotion flow takes was created with the server: one at a time.
    assert httpx.get(f"{served['api']}/v2/concurrency_limits/cnnpipe-promotion").json()["limit"] == 1
    # Prefect's scheduler service (nothing posted by the test) plans the upcoming runs.
    runs = wait_for(lambda: flow_runs(served["api"], dep["id"]), 90, "scheduled runs", served["log"])
    first = min(datetime.fromisoformat(r["expected_start_time"]) for r in runs)
    assert first == next_run_times(CRON, 1, after=datetime.now(UTC))[0]
    assert all(r["state_type"] == "SCHEDULED" and r["auto_scheduled"] for r in runs)


def test_server_start_reuses_it_and_a_fresh_shell_reaches_it_through_the_profile(served):
    again = cnnpipe(["server", "start"], served["project"], served["env"])
    assert again.returncode == 0 and again.stdout.startswith("Prefect server already running on "), again.stderr
    status = cnnpipe(["server", "status"], served["project"], served["env"])
    assert status.stdout.startswith(f"running on {served['api'][:-4]} ")
    # A new shell with nothing exported: Prefect's own settings resolve the profile's URL.
    probe = subprocess.run(
        [str(Path(shutil.which("python", path=served["env"]["PATH"]))), "-c",
         "from prefect.settings import get_current_settings as s; print(s().api.url)"],
        env=served["env"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == served["api"]


def test_prefect_yaml_is_accepted_by_prefect_deploy(served, tmp_path):
    """For teams: ``prefect deploy --all`` with the committed file, against a work pool."""
    for name in ("prefect.yaml", "pipelines"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, tmp_path / name)
    env = {**served["env"], "CNNPIPE_REPOSITORY": "https://git.example/cnnpipe.git"}
    prefect = str(Path(shutil.which("prefect", path=env["PATH"])))
    subprocess.run([prefect, "work-pool", "create", "cnnpipe-pool", "--type", "process"], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    deploy = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], check=False, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    dep = deployment(served["api"], "cnnpipe-scheduled")
    assert dep["work_pool_name"] == "cnnpipe-pool" and dep["entrypoint"] == "pipelines/training.py:training_flow"
    assert dep["schedules"][0]["schedule"]["cron"] == CRON
    assert dep["parameters"] == {"project_dir": ".", "params_file": "params.yaml"}
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    steps = [next(iter(step)) for step in dep["pull_steps"]]
    assert steps == ["prefect.deployments.steps.git_clone", "prefect.deployments.steps.set_working_directory",
                     "prefect.deployments.steps.run_shell_script"]
    assert dep["pull_steps"][0]["prefect.deployments.steps.git_clone"]["repository"] == env["CNNPIPE_REPOSITORY"]
    assert dep["pull_steps"][2]["prefect.deployments.steps.run_shell_script"]["script"].startswith("dvc pull")


def _bare_project(root: Path) -> Path:
    """Enough of a project for the command to find it: dvc.yaml, params.yaml, pipelines/."""
    (root / "pipelines").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "pipelines/__init__.py"):
        shutil.copy2(ROOT / name, root / name)
    return root


def test_a_bad_cron_is_one_line_and_starts_no_server(tmp_path):
    project = _bare_project(tmp_path / "p")
    env = prefect_env(tmp_path / "home", free_port())
    out = cnnpipe(["schedule", "--cron", "61 * * * *"], project, env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("cnnpipe schedule: invalid schedule cron='61 * * * *' timezone='UTC': ")
    assert not (project / ".cnnpipe/prefect/server.json").exists()


def test_a_taken_port_is_refused_in_one_line(tmp_path):
    project = _bare_project(tmp_path / "p")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cnnpipe(["server", "start", "--port", str(port)], project, prefect_env(tmp_path / "home", port))
    assert out.returncode == 1
    assert out.stderr.strip() == (f"cnnpipe server: port {port} on 127.0.0.1 is taken by another program, not this "
                                  "project's server; stop it or choose another port (--port, or PREFECT_SERVER_API_PORT)")


def test_run_with_the_profiles_server_down_is_one_line(tmp_path):
    """The ``cnnpipe`` profile still active after the server went away (e.g. a reboot)."""
    project = _bare_project(tmp_path / "p")
    port = free_port()
    env = prefect_env(tmp_path / "home", port)
    (tmp_path / "home/profiles.toml").write_text(
        f'active = "cnnpipe"\n\n[profiles.cnnpipe]\nPREFECT_API_URL = "http://127.0.0.1:{port}/api"\n')
    out = cnnpipe(["run"], project, env)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"cnnpipe run: the Prefect server at http://127.0.0.1:{port}/api does not answer; "
                                  "start it (cnnpipe server start), or run without it (cnnpipe server stop)")


def test_server_stop_stops_it_and_restores_the_previous_profile(served):
    stopped = cnnpipe(["server", "stop"], served["project"], served["env"])
    assert stopped.returncode == 0 and stopped.stdout.startswith("Prefect server on "), stopped.stderr
    assert not _answers(served["api"])
    assert cnnpipe(["server", "status"], served["project"], served["env"]).stdout.startswith("not running")
    profiles = (served["home"] / "profiles.toml").read_text()
    assert 'active = "ephemeral"' in profiles
    again = cnnpipe(["server", "stop"], served["project"], served["env"])
    assert again.stdout.strip() == "no Prefect server of this project is running"
