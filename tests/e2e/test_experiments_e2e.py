"""Experiments never move @champion (issue 18), through real DVC and the real stages on a tiny
project in a temp git repo: `dvc repro`, commit the run (dvc.lock, metrics/, plots/), then
`dvc exp run -S train_unet.fit.epochs=2` (the U-Net: no other task depends on it, so only its
stages re-run). DVC compares the experiment with the committed baseline; every @champion stays
where it was; the experiment's version is @challenger, tagged with the experiment's name, its
baseline commit and the changed params; `cnnpipe promote NAME --experiment EXP` decides through
the gates, recorded. Last, uncommitted params edits under plain `dvc repro` stay @challenger too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from project import ROOT, env, make_project, run

from cnnpipe.registry.provenance import (
    BASELINE_TAG,
    EXPERIMENT_TAG,
    ORIGIN_TAG,
    PARAMS_CHANGED_TAG,
)
from cnnpipe.registry.versions import history, version_metrics

REGISTERED = {"classifier": "cnnpipe-classifier", "transfer": "cnnpipe-transfer",
              "localizer": "cnnpipe-localizer", "unet": "cnnpipe-unet"}
UNET = REGISTERED["unet"]


def git(project: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], project).stdout.strip()


def client_of(project: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def latest(client, name: str) -> str:
    return str(max(int(v.version) for v in client.search_model_versions(f"name = '{name}'")))


def revisions(shown: Any) -> list[dict]:
    """Every row of `dvc exp show --json` (the workspace, the baseline, its experiments)."""
    if isinstance(shown, list):
        return [row for item in shown for row in revisions(item)]
    if not isinstance(shown, dict):
        return []
    rows = [shown] if "rev" in shown and "data" in shown else []
    for value in shown.values():
        if isinstance(value, (list, dict)):
            rows += revisions(value)
    return rows


def metric(row: dict, path: str, key: str) -> Any:
    return row["data"]["metrics"][path]["data"][key]


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Any]:
    project = make_project(tmp_path_factory.mktemp("exp"))
    shutil.copy2(ROOT / ".gitignore", project / ".gitignore")  # the store and data stay out of git
    run(["dvc", "repro"], project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the default run's results")
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    client = client_of(project)
    before = {name: aliases(client, name) for name in REGISTERED.values()}
    out = run(["dvc", "exp", "run", "-S", "train_unet.fit.epochs=2"], project)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    return {"project": project, "baseline": git(project, "rev-parse", "HEAD"), "before": before,
            "out": out.stdout + out.stderr, "rows": revisions(shown)}


def test_the_committed_run_promoted_every_model(exp):
    for name, found in exp["before"].items():
        assert found == {"champion": "1"}, (name, found)


def test_exp_show_holds_the_baseline_and_the_experiment(exp):
    by_rev = {row["rev"]: row for row in exp["rows"]}
    baseline = by_rev[exp["baseline"]]
    experiments = [row for row in exp["rows"] if row.get("name") and row["rev"] not in ("workspace", exp["baseline"])]
    assert len(experiments) == 1, [(r["rev"], r.get("name")) for r in exp["rows"]]
    (experiment,) = experiments
    # The baseline's figures are the committed ones; the experiment's trained twice as long.
    committed = json.loads(git(exp["project"], "show", "HEAD:metrics/train/unet.json"))
    assert metric(baseline, "metrics/train/unet.json", "epochs_run") == committed["epochs_run"] == 1
    assert metric(experiment, "metrics/train/unet.json", "epochs_run") == 2
    for row in (baseline, experiment):
        assert 0 <= metric(row, "metrics/unet.json", "dice") <= 1
    assert experiment["data"]["params"]["params.yaml"]["data"]["train_unet"]["fit"]["epochs"] == 2


def test_metrics_diff_shows_old_and_new_values(exp):
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json"], exp["project"]).stdout)
    epochs = diff["metrics/train/unet.json"]["epochs_run"]
    assert (epochs["old"], epochs["new"]) == (1, 2), diff["metrics/train/unet.json"]
    dice = diff["metrics/unet.json"]["dice"]
    committed = json.loads(git(exp["project"], "show", "HEAD:metrics/unet.json"))
    now = json.loads((exp["project"] / "metrics/unet.json").read_text())
    assert (dice["old"], dice["new"]) == (committed["dice"], now["dice"])


def experiment_name(exp) -> str:
    return next(row["name"] for row in exp["rows"]
                if row.get("name") and row["rev"] not in ("workspace", exp["baseline"]))


def test_no_champion_moved_and_the_experiments_version_is_a_tagged_challenger(exp):
    project, client, name = exp["project"], client_of(exp["project"]), experiment_name(exp)
    for model in ("cnnpipe-classifier", "cnnpipe-transfer", "cnnpipe-localizer"):
        assert aliases(client, model) == exp["before"][model] and latest(client, model) == "1", model
    decision = json.loads((project / "metrics/register/unet.json").read_text())
    assert (decision["promoted"], decision["origin"], decision["experiment"]) == (False, "experiment", name)
    assert decision["reason"].startswith(f"challenger only: experiment {name} (from commit {exp['baseline'][:12]}")
    assert "train_unet.fit.epochs 1 -> 2" in decision["reason"]
    said = [line for line in exp["out"].splitlines() if "challenger only" in line]
    assert len(said) == 1 and f"{UNET} version {decision['version']} stays @challenger" in said[0], exp["out"][-3000:]

    assert aliases(client, UNET) == {"champion": "1", "challenger": str(decision["version"])}
    version = client.get_model_version(UNET, str(decision["version"]))
    assert version.tags[ORIGIN_TAG] == "experiment" and version.tags[EXPERIMENT_TAG] == name
    assert version.tags[BASELINE_TAG] == exp["baseline"]
    assert json.loads(version.tags[PARAMS_CHANGED_TAG]) == {"train_unet.fit.epochs": [1, 2]}
    assert [e["event"] for e in history(version)] == ["registered", "held"]


def test_promote_experiment_decides_through_the_gates(exp):
    project, client, name = exp["project"], client_of(exp["project"]), experiment_name(exp)
    candidate = client.get_model_version(UNET, latest(client, UNET))
    champion = client.get_model_version_by_alias(UNET, "champion")
    proc = subprocess.run([sys.executable, "-m", "cnnpipe.cli", "promote", UNET, "--experiment", name],
                          cwd=project, env=env(), capture_output=True, text=True, timeout=300, check=False)
    # The tiny params' floor is 0 and margin 0: the gate promotes iff the experiment's dice is
    # strictly higher than the champion's. Either way, the decision is recorded on the version.
    new, old = version_metrics(candidate)["dice"], version_metrics(champion)["dice"]
    events = history(client.get_model_version(UNET, candidate.version))
    assert events[-1]["challenger"] == {"version": candidate.version, "run_id": candidate.run_id,
                                        "value": new, "experiment": name}
    if new > old:
        assert proc.returncode == 0 and proc.stdout.startswith(f"{UNET}: version {candidate.version} is @champion"), proc
        assert events[-1]["event"] == "promoted"
        assert aliases(client, UNET) == {"champion": str(candidate.version), "previous": "1"}
    else:
        assert proc.returncode == 1 and f"{UNET}: not promoted: dice" in proc.stderr, proc
        assert events[-1]["event"] == "refused"
        assert aliases(client, UNET) == {"champion": "1", "challenger": str(candidate.version)}


def test_uncommitted_params_under_dvc_repro_stay_challenger(exp):
    """Last: it changes the project. The workspace holds the experiment's params (applied by
    `dvc exp run`, not committed); one more edit, then a plain `dvc repro`."""
    project, client = exp["project"], client_of(exp["project"])
    champion = aliases(client, UNET)["champion"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train_unet"]["fit"]["epochs"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "register@unet"], project)
    decision = json.loads((project / "metrics/register/unet.json").read_text())
    assert (decision["promoted"], decision["origin"], decision["experiment"]) == (False, "dirty", None)
    assert decision["reason"].startswith("challenger only: uncommitted changes to params.yaml")
    assert "train_unet.fit.epochs 1 -> 3" in decision["reason"]
    now = aliases(client, UNET)
    assert (now["champion"], now["challenger"]) == (champion, str(decision["version"]))
