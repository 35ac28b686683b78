"""Where a version comes from (registry/provenance.py), on real git repositories: a committed,
clean tree may promote; a DVC experiment or uncommitted edits stay @challenger; what the
pipeline writes itself (dvc.lock and its recorded outs, e.g. committed metrics) and untracked
files don't make a tree dirty; outside git the provenance is unknown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cnnpipe.registry.provenance import (
    BASELINE_TAG,
    EXPERIMENT_TAG,
    ORIGIN_TAG,
    PARAMS_CHANGED_TAG,
    provenance,
)

PARAMS = {"train_unet": {"fit": {"epochs": 1, "batch_size": 16}}, "register": {"margin": 0.0}}
NO_EXP: dict[str, str] = {}  # the environment outside `dvc exp run`


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed project: params, code, dvc.lock recording a metrics file and a plots folder."""
    root = tmp_path / "proj"
    (root / "metrics").mkdir(parents=True)
    (root / "plots/evaluate").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "code.py").write_text("x = 1\n")
    (root / "metrics/unet.json").write_text('{"dice": 0.5}')
    (root / "plots/evaluate/masks.png").write_bytes(b"png")
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "evaluate@unet": {"cmd": "x", "outs": [{"path": "metrics/unet.json", "md5": "a"},
                                               {"path": "plots/evaluate", "md5": "b.dir"}]}}}))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline")
    return root


def test_a_committed_clean_tree_may_promote(repo):
    got = provenance(repo, PARAMS, env=NO_EXP)
    assert (got.origin, got.commit, got.may_promote) == ("commit", git(repo, "rev-parse", "HEAD"), True)
    assert got.tags()[ORIGIN_TAG] == "commit" and EXPERIMENT_TAG not in got.tags()


def test_what_the_pipeline_writes_and_untracked_files_keep_it_clean(repo):
    (repo / "metrics/unet.json").write_text('{"dice": 0.7}')  # a recorded out, committed as a baseline
    (repo / "plots/evaluate/masks.png").write_bytes(b"new png")  # inside a recorded directory out
    (repo / "metrics/register").mkdir()
    (repo / "metrics/register/unet.json").write_text("{}")  # untracked
    (repo / "notes.txt").write_text("mine")  # untracked
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["evaluate@unet"]["outs"][0]["md5"] = "changed"
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert provenance(repo, PARAMS, env=NO_EXP).origin == "commit"


def test_the_running_stages_own_outputs_can_be_ignored(repo):
    (repo / "out").mkdir()
    (repo / "out/decision.json").write_text("{}")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a committed result the stage rewrites")
    (repo / "out/decision.json").write_text('{"v": 2}')
    assert provenance(repo, PARAMS, env=NO_EXP).origin == "dirty"
    assert provenance(repo, PARAMS, ignore=(Path("out"),), env=NO_EXP).origin == "commit"


def test_uncommitted_edits_stay_challenger_naming_files_and_params(repo):
    head = git(repo, "rev-parse", "HEAD")
    edited = {**PARAMS, "train_unet": {"fit": {"epochs": 3, "batch_size": 16}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(edited))
    (repo / "code.py").write_text("x = 2\n")
    got = provenance(repo, edited, env=NO_EXP)
    assert (got.origin, got.may_promote, got.commit, got.experiment) == ("dirty", False, head, None)
    assert set(got.changed_files) == {"params.yaml", "code.py"}
    assert got.changed_params == {"train_unet.fit.epochs": [1, 3]}
    assert json.loads(got.tags()[PARAMS_CHANGED_TAG]) == {"train_unet.fit.epochs": [1, 3]}
    reason = got.held_reason("cnnpipe-unet", "4")
    assert reason.startswith("challenger only: uncommitted changes to ")
    assert "train_unet.fit.epochs 1 -> 3" in reason and "`cnnpipe promote cnnpipe-unet --version 4`" in reason
    # The params hash is of the effective params: it tells the two runs apart.
    assert got.params_hash != provenance(repo, PARAMS, env=NO_EXP).params_hash


def test_a_staged_edit_is_dirty_too(repo):
    (repo / "code.py").write_text("x = 3\n")
    git(repo, "add", "code.py")
    assert provenance(repo, PARAMS, env=NO_EXP).changed_files == ("code.py",)


def test_inside_dvc_exp_run_it_is_an_experiment_of_its_baseline(repo):
    baseline = git(repo, "rev-parse", "HEAD")
    (repo / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "register": {"margin": 0.1}}))
    env = {"DVC_EXP_NAME": "tidy-moss", "DVC_EXP_BASELINE_REV": baseline}
    got = provenance(repo, PARAMS, env=env)
    assert (got.origin, got.experiment, got.commit, got.may_promote) == ("experiment", "tidy-moss", baseline, False)
    assert got.tags()[EXPERIMENT_TAG] == "tidy-moss" and got.tags()[BASELINE_TAG] == baseline
    assert got.changed_params == {"register.margin": [0.0, 0.1]}
    assert got.held_reason("cnnpipe-unet", "2") == (
        f"challenger only: experiment tidy-moss (from commit {baseline[:12]}; params changed: register.margin "
        "0.0 -> 0.1); promote it with `cnnpipe promote cnnpipe-unet --experiment tidy-moss`")


def test_an_experiment_is_never_promoted_even_from_a_clean_tree(repo):
    # `dvc exp run` of the committed params (no -S) still runs as an experiment
    got = provenance(repo, PARAMS, env={"DVC_EXP_NAME": "plain-exp"})
    assert got.origin == "experiment" and not got.may_promote and got.changed_params == {}


def test_outside_git_the_provenance_is_unknown_and_promotion_goes_through_the_gates(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    got = provenance(tmp_path, PARAMS, env=NO_EXP)
    assert (got.origin, got.commit, got.may_promote) == ("unknown", "none", True)
