"""The Prefect flows on Prefect's real engine (its test harness) over a tiny DVC project:
every stage runs, then all skip (no MLflow run opened), a failed fetch is not retried by the flow
(fetch owns its retries), a hard failure names its stage and what it kept from running; the
parent MLflow run holds the stage runs"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before Prefect loads its settings

import pytest
from helpers import write_params
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness

from cnnpipe.config import load_params
from cnnpipe.flows.dvc import StageFailed
from cnnpipe.flows.report import UPSTREAM_FAILED
from cnnpipe.tracking.connection import connect
from pipelines.promotion import promotion_flow
from pipelines.training import REPORT_KEY, training_flow

# fetch fails once while the flag file exists (a transient error), process fails while its input
# says "boom" (a hard one); report logs an MLflow run the way a real stage shell does.
DVC_YAML = textwrap.dedent("""\
    stages:
      report:
        cmd: python report.py
        deps: [data/processed.txt, report.py]
        metrics:
          - metrics/report.json:
              cache: false
      fetch:
        cmd: >-
          python -c "import pathlib, sys; flag = pathlib.Path('fail_once');
          flag.exists() and (flag.unlink() or sys.exit('transient: mirror unreachable'));
          pathlib.Path('data').mkdir(exist_ok=True);
          pathlib.Path('data/raw.txt').write_text(pathlib.Path('source.txt').read_text())"
        deps: [source.txt]
        outs: [data/raw.txt]
      process:
        cmd: >-
          python -c "import pathlib, sys; text = pathlib.Path('data/raw.txt').read_text();
          'boom' in text and sys.exit('hard failure: cannot process boom');
          pathlib.Path('data/processed.txt').write_text(text.upper())"
        deps: [data/raw.txt]
        outs: [data/processed.txt]
""")
REPORT_PY = textwrap.dedent("""\
    from pathlib import Path
    from cnnpipe.config import load_params
    from cnnpipe.io import write_json
    from cnnpipe.tracking.runs import stage_run

    with stage_run("report", load_params(), param_sections=["seed"],
                   inputs={"processed": "data/processed.txt"}) as run:
        result = {"chars": len(Path("data/processed.txt").read_text())}
        write_json("metrics/report.json", result)
        run.log_metrics(result)
""")


def sh(root: Path, *args: str) -> None:
    subprocess.run(args, cwd=root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_server) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("flow") / "proj"
    root.mkdir()
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "report.py").write_text(REPORT_PY)
    (root / "source.txt").write_text("hello\n")
    write_params(root / "params.yaml", {"seed": 3, "tracking": {"uri": mlflow_server.url, "experiment": "flows"},
                                        "register": {"localizer_name": "flows-localizer"}})
    sh(root, "git", "init", "-q")
    sh(root, sys.executable, "-m", "dvc", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "tiny")
    return root


def run_flow(project: Path, **kwargs: Any) -> Any:
    return training_flow(project_dir=str(project), return_state=True, **kwargs)


def report_markdown() -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])))
    return max(found, key=lambda a: a.created).data


def test_first_run_executes_every_stage_and_a_second_skips_them(harness, project, mlflow_server, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = run_flow(project)
    assert state.is_completed()
    assert state.result() == {"fetch": "ran", "process": "ran", "report": "ran"}  # dependency order

    # One parent MLflow run per flow run; the report stage's run nests under it with the flow run id.
    flow_run_id = str(state.state_details.flow_run_id)
    conn = connect(load_params(project / "params.yaml").tracking, project)
    parents = conn.client().search_runs(
        [conn.experiment_id()], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    children = {r.data.tags["cnnpipe.stage"]: r for r in parents if "mlflow.parentRunId" in r.data.tags}
    parent = next(r for r in parents if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["cnnpipe.stage"] == "pipeline" and parent.info.status == "FINISHED"
    assert children["report"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert children["report"].data.metrics == {"chars": 6.0}
    markdown = report_markdown()
    assert "| report | ran | [run](" in markdown and "| report.json | chars | 6 |" in markdown
    # Each stage's output reached the Prefect logs line by line, under its task run.
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    lines = {log.message for log in logs if log.task_run_id}
    assert {"Running stage 'fetch':", "Running stage 'process':", "Running stage 'report':"} <= lines, sorted(lines)

    start = datetime.now()
    again = run_flow(project)
    assert again.result() == {"fetch": "skipped", "process": "skipped", "report": "skipped"}
    print(f"flow with every stage skipped: {(datetime.now() - start).total_seconds():.1f}s")
    # A no-op run opens no MLflow run and starts no stage task.
    noop_id = str(again.state_details.flow_run_id)
    assert not conn.client().search_runs([conn.experiment_id()], filter_string=f"tags.`prefect.flow_run_id` = '{noop_id}'")
    with get_client(sync_client=True) as client:
        assert not [r for r in client.read_task_runs() if str(r.flow_run_id) == noop_id]
    assert "Every stage is up to date: nothing ran." in report_markdown()


def test_a_failed_fetch_is_not_retried_by_the_flow(harness, project):
    """fetch owns its retries (fetch.retries, no retry on a permanent 4xx): the flow runs it once."""
    (project / "source.txt").write_text("changed\n")
    (project / "fail_once").touch()
    state = run_flow(project)
    assert state.is_failed() and not (project / "fail_once").exists()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    fetch = [r for r in runs if r.flow_run_id == state.state_details.flow_run_id and r.name == "fetch"]
    assert len(fetch) == 1 and fetch[0].run_count == 1
    assert run_flow(project).result()["fetch"] == "ran"  # the next run picks it up


def test_hard_failure_ends_the_flow_naming_the_stage(harness, project):
    (project / "source.txt").write_text("boom\n")
    state = run_flow(project)
    assert state.is_failed()
    with pytest.raises(StageFailed, match=r"^stage 'process' failed \(dvc repro exit \d+\): hard failure: cannot "
                                          r"process boom; not run because of it: report$"):
        state.result()
    markdown = report_markdown()
    assert "| fetch | ran |" in markdown and "| process | failed |" in markdown
    assert f"| report | {UPSTREAM_FAILED} (process) |" in markdown  # downstream of the failure
    assert "## Skipped because of a failure" in markdown
    (project / "source.txt").write_text("hello\n")


def test_promotion_flow_reports_a_model_without_a_challenger(harness, project):
    results = promotion_flow(names=["flows-localizer"], project_dir=str(project))
    assert results == {"flows-localizer": {"version": None, "promoted": False, "reason": "no @challenger to promote"}}
