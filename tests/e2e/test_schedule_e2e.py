"""A schedule that fires, from the README's commands alone: on a tiny copy of the project, with
nothing else started, ``cnnpipe server start`` then ``cnnpipe schedule --cron "* * * * *"``;
nothing is triggered by hand. Prefect's own scheduler creates the run, the served deployment
executes it, and the DVC stages run for real. Everything started is stopped, pass or fail.

The copy keeps the real dvc.yaml's stages up to the prepared classification set (the data
fingerprint, fetch, validate, prepare_classification), so one run fits inside the one-minute
period."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import yaml
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
from project import make_project

STAGES = ("fetch", "validate", "prepare_classification")
KEEP = ("fingerprint", *STAGES)
FAILED = {"FAILED", "CRASHED"}


@pytest.fixture
def project(tmp_path):
    root = make_project(tmp_path)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc["stages"] = {name: dvc["stages"][name] for name in KEEP}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    return root


def test_readme_schedule_produces_a_completed_run_that_ran_the_stages(project, tmp_path):
    env = prefect_env(tmp_path / "prefect-home", free_port())
    log = tmp_path / "schedule.log"
    schedule = None
    try:
        started = cnnpipe(["server", "start"], project, env)
        assert started.returncode == 0, started.stderr
        api = started.stdout.split(" on ", 1)[1].split()[0] + "/api"

        t0 = time.monotonic()
        schedule = start_schedule("* * * * *", project, env, log)
        dep = wait_for(lambda: deployment(api, "cnnpipe-scheduled"), 120, "deployment", log)

        def finished():
            assert schedule.poll() is None, f"cnnpipe schedule exited:\n{log.read_text()[-3000:]}"
            runs = flow_runs(api, dep["id"])
            # A run that came due while the first still ran is cancelled by the deployment's
            # concurrency limit (CANCEL_NEW); any other end but COMPLETED is a failure.
            bad = [r for r in runs if r["state_type"] in FAILED or (
                r["state_type"] == "CANCELLED" and "concurrency limit" not in (r["state"]["message"] or ""))]
            assert not bad, f"a scheduled run ended {bad[0]['state_type']}: {bad[0]['state']['message']}\n" \
                            f"{log.read_text()[-3000:]}"
            return next((r for r in runs if r["state_type"] == "COMPLETED"), None)

        run = wait_for(finished, 270, "completed scheduled run", log, interval=3)
        took = time.monotonic() - t0
        expected = datetime.fromisoformat(run["expected_start_time"])
        ended = datetime.fromisoformat(run["end_time"])
        print(f"\nfirst completed scheduled run {took:.0f} s after `cnnpipe schedule` started "
              f"(due {expected:%H:%M:%S}, ended {ended:%H:%M:%S}, {(ended - expected).total_seconds():.0f} s after due)")

        # The scheduler made the run (auto-scheduled from the cron), not a hand-made trigger.
        assert run["auto_scheduled"] and run["deployment_id"] == dep["id"]
        assert dep["schedules"][0]["schedule"]["cron"] == "* * * * *"
        assert dep["global_concurrency_limit"]["limit"] == 1
        assert dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        # The run executed the DVC stages in the project: the lock records them, outputs exist.
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        assert set(STAGES) <= set(lock["stages"])
        meta = json.loads((project / "data/prepared/classification/meta.json").read_text())
        assert sum(meta["counts"].values()) > 0
        # `schedule` said in one line which server it serves on: the one `server start` started.
        assert "Prefect server: reusing the project's server on http://127.0.0.1:" in log.read_text()
    finally:
        if schedule is not None:
            end(schedule)
        stopped = cnnpipe(["server", "stop"], project, env)
        assert stopped.returncode == 0, stopped.stderr
    assert "not running" in cnnpipe(["server", "status"], project, env).stdout
