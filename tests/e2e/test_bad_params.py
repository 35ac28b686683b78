"""Bad params and unexpected errors through the real stages and the ``cnnpipe`` command (issue 15).

- the error boundary: any exception no check foresaw is one line naming the stage (or command),
  the exception type and message, exit 1, the traceback in a log file the line names; Ctrl-C is
  ``interrupted``, exit 130; never a traceback on the terminal;
- ``seed`` outside 0..2**32-1, NaN/inf for any float, duplicate keys, Grad-CAM/overlay counts
  beyond the maximum: refused by the params loader in one line naming the key;
- ``filters`` deeper than the images allow (the classifier's 28 px, an own segmentation side not
  divisible by 2^(levels-1)): one line naming both keys, before Keras builds anything;
- a bad cron for ``cnnpipe schedule``: one line.
Earlier outputs (models, metrics, plots) stay byte-identical through every failure.
"""

from __future__ import annotations

import math
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_params
from own_data import write_segmentation_folders
from project import env, make_project, run

from cnnpipe import cli
from cnnpipe.io import read_json
from cnnpipe.stage_shell import run_stage

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("models", "metrics", "plots")
LOG_LINE = re.compile(r"\(traceback in (?P<log>\S+\.log)\)$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project where the classifier and a U-Net on own 30 px segmentation folders trained."""
    tmp = tmp_path_factory.mktemp("badparams")
    seg = write_segmentation_folders(tmp / "seg", n=12)
    path = make_project(tmp, {"datasets": {"segmentation": {"format": "folders", "path": str(seg),
                                                            "image_size": 30}}})
    run(["dvc", "repro", "train_classifier", "train_unet"], path)
    return path


def snapshot(project: Path) -> dict[str, bytes]:
    """Every file of the earlier outputs (checkpoints included) -> its bytes."""
    return {str(p.relative_to(project)): p.read_bytes()
            for name in OUTPUTS for p in sorted((project / name).rglob("*")) if p.is_file()}


def stage(project: Path, name: str, overrides: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m stages.<name> --params over.yaml`` in ``project``, the overlay extending its params.yaml."""
    over = project / "over.yaml"
    over.write_text(yaml.safe_dump({"extends": "params.yaml", **overrides}, sort_keys=False))
    return subprocess.run([sys.executable, "-m", f"stages.{name}", "--params", str(over)], cwd=project, env=env(),
                          capture_output=True, text=True, check=False, timeout=timeout)


def one_line_failure(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """The last stderr line, after checking the exit code and that no traceback was printed."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def run_stage_in_process(name: str, params_file: Path, capsys, *extra: str) -> tuple[int, str]:
    """The stage module run as ``python -m stages.<name>`` runs it, in this process, from the
    params file's folder; (exit code, stderr)."""
    cwd_before, argv_before = Path.cwd(), sys.argv
    os.chdir(params_file.parent)
    sys.argv = [f"stages.{name}", "--params", str(params_file), *extra]
    capsys.readouterr()
    try:
        runpy.run_module(f"stages.{name}", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = argv_before
        os.chdir(cwd_before)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------
# The error boundary
# --------------------------------------------------------------------------------------


def test_an_unexpected_error_in_a_stage_process_is_one_line_and_a_log(project, tmp_path):
    # Labels beyond the class names in a prepared set: no check knows this, numpy raises.
    broken = tmp_path / "prepared"
    shutil.copytree(project / "data/prepared/classification", broken / "classification")
    labels = np.load(broken / "classification/train_labels.npy")
    labels[0] = 200
    np.save(broken / "classification/train_labels.npy", labels)
    before = snapshot(project)
    line = one_line_failure(stage(project, "train_classifier", {"paths": {"prepared": str(broken)}}))
    assert line.startswith("stage train_classifier failed: unexpected IndexError: index 200 is out of bounds"), line
    log = Path(LOG_LINE.search(line)["log"])
    report = log.read_text()
    assert "Traceback (most recent call last)" in report and "IndexError" in report
    assert "train_classifier" in report.splitlines()[0]
    assert log.stat().st_mode & 0o077 == 0  # the owner's only: a traceback can hold paths and values
    assert snapshot(project) == before


def shell_in_process(body, tmp_path: Path, capsys, monkeypatch) -> tuple[int, str]:
    """The stage shell (``run_stage``) around ``body``, run from ``tmp_path``; (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path / "params.yaml")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_stage("fetch", body, ["--params", str(path)])
    return int(exit_.value.code), capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_type_message_and_log(tmp_path, capsys, monkeypatch):
    def bug(params):
        raise RuntimeError("first line\n\x1b[1msecond line\x1b[0m of http://alice:s3cret@host/x")

    code, err = shell_in_process(bug, tmp_path, capsys, monkeypatch)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    line = err.strip()
    assert line.startswith("stage fetch failed: unexpected RuntimeError: first line second line of "
                           "http://***@host/x (traceback in "), line
    report = Path(LOG_LINE.search(line)["log"]).read_text()
    assert 'raise RuntimeError("first line' in report and "s3cret" not in report


def test_ctrl_c_in_a_stage_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(params):
        raise KeyboardInterrupt

    assert shell_in_process(interrupted, tmp_path, capsys, monkeypatch) == (130, "stage fetch interrupted\n")


def test_sigint_during_training_exits_130_with_one_line_and_keeps_the_model(project):
    over = project / "long.yaml"
    over.write_text(yaml.safe_dump({"extends": "params.yaml",
                                    "train_classifier": {"fit": {"epochs": 200, "patience": 1000}}}))
    before = {k: v for k, v in snapshot(project).items() if ".checkpoints" not in k}
    state = project / "models/.checkpoints/classifier/state.json"
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_classifier", "--params", str(over)], cwd=project,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    try:
        while not (state.exists() and read_json(state)["epoch"] >= 1):  # inside the stage body, training
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no first epoch within 10 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "stage train_classifier interrupted"
    after = {k: v for k, v in snapshot(project).items() if ".checkpoints" not in k}
    assert after == before  # the interrupted run saved nothing over the earlier model
    shutil.rmtree(project / "models/.checkpoints/classifier")  # the next test's training starts afresh


def test_the_cnnpipe_command_turns_any_error_into_one_line(capsys, monkeypatch):
    def bug(args):
        raise ValueError("Port could not be cast\nto integer")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_lineage", bug)
    capsys.readouterr()
    assert cli.main(["lineage", "cnnpipe-classifier"]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("cnnpipe lineage: unexpected ValueError: Port could not be cast to integer (traceback in ")
    assert "Traceback" in Path(LOG_LINE.search(line)["log"]).read_text()
    monkeypatch.setattr(cli, "cmd_lineage", interrupted)
    assert cli.main(["lineage", "cnnpipe-classifier"]) == 130
    assert capsys.readouterr().err.strip() == "cnnpipe lineage: interrupted"


# --------------------------------------------------------------------------------------
# Params refused by the loader
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ({"seed": -1}, "seed: must be in [0, 4294967295], got -1"),
    ({"seed": 2**32}, "seed: must be in [0, 4294967295], got 4294967296"),
    ({"evaluate": {"gradcam_examples": 100000}}, "evaluate.gradcam_examples: must be in [0, 64], got 100000"),
    ({"evaluate": {"overlay_examples": 65}}, "evaluate.overlay_examples: must be in [0, 64], got 65"),
], ids=["seed-negative", "seed-2**32", "gradcam-100000", "overlays-65"])
def test_out_of_range_params_stop_the_stage_process_in_one_line(tmp_path, data, message):
    write_params(tmp_path / "params.yaml", {"fetch": {"dataset": "idx"}, **data})
    proc = subprocess.run([sys.executable, "-m", "stages.fetch", "--params", "params.yaml"], cwd=tmp_path,
                          env={**env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
                          timeout=300)
    assert one_line_failure(proc) == f"stage fetch failed: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


FLOATS = [  # (stage that reads it, dotted key)
    ("train_classifier", "train_classifier.fit.learning_rate"),
    ("train_classifier", "train_classifier.fit.weight_decay"),
    ("train_classifier", "train_classifier.fit.warmup_epochs"),
    ("train_classifier", "train_classifier.dropout"),
    ("train_localizer", "train_localizer.box_loss_weight"),
    ("train_unet", "train_unet.dice_weight"),
    ("prepare", "prepare.scenes.noise_std"),
    ("fetch", "fetch.timeout_s"),
    ("register", "tracking.timeout_s"),
    ("register", "register.margin"),
    ("fetch", "orchestrate.stage_timeout_s"),  # read by the flow, validated by every stage
    ("fetch", "orchestrate.stage_timeouts.fetch"),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("name", "key"), FLOATS, ids=[key for _, key in FLOATS])
def test_nan_and_inf_are_refused_for_every_float(tmp_path, capsys, name, key, value):
    data: dict = {}
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    path = write_params(tmp_path / "params.yaml", data)
    assert (".nan" if math.isnan(value) else ".inf") in path.read_text()  # YAML's spelling reaches the loader
    code, err = run_stage_in_process(name, path, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"failed: {key}: must be a finite number, got {value}")


def test_a_key_given_twice_is_refused_naming_key_and_line(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("fetch:\n", "fetch:\n  retries: 5\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    first = text.splitlines().index("  retries: 5") + 1
    second = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("  retries: 2"))
    proc = subprocess.run([sys.executable, "-m", "stages.fetch", "--params", "params.yaml"], cwd=tmp_path,
                          env={**env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=False,
                          timeout=300)
    assert one_line_failure(proc) == (f"stage fetch failed: params.yaml: line {second}: duplicate key 'retries' "
                                      f"(first set on line {first}); give each key once")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# --------------------------------------------------------------------------------------
# Networks deeper than the images allow
# --------------------------------------------------------------------------------------


def test_classifier_filters_deeper_than_28_px_are_one_line_naming_both_keys(project):
    before = snapshot(project)
    proc = stage(project, "train_classifier", {"train_classifier": {"filters": [8, 16, 32, 64, 128, 256]}})
    assert one_line_failure(proc) == (
        "stage train_classifier failed: train_classifier.filters: 6 blocks pool 6 times (between blocks and the "
        "one before the dense head), which needs images of at least 64 px; the classification images are 28 px, "
        "where at most 4 blocks fit; use fewer filters or larger images (datasets.classification.image_size)")
    assert snapshot(project) == before


def test_own_segmentation_side_not_divisible_by_the_unet_depth_is_one_line(project):
    before = snapshot(project)
    proc = stage(project, "train_unet", {"train_unet": {"filters": [4, 8, 16]}})
    assert one_line_failure(proc) == (
        "stage train_unet failed: train_unet.filters: 3 levels need an image side divisible by 4 (2^2); the "
        "segmentation images are 30 px, where at most 2 levels fit; use fewer filters or a side divisible by 4 "
        "(datasets.segmentation.image_size, or prepare.scenes.canvas for the scenes)")
    assert snapshot(project) == before


@pytest.mark.parametrize("how", ["edited", "-S"])
def test_dvc_exp_run_with_a_nan_learning_rate_fails_before_training(project, how):
    # `-S key=.nan` reaches params.yaml as the string '.nan'; an edited params.yaml holds YAML's NaN.
    # DVC removes a stage's declared outputs before running it (docs/reliability.md), so what is
    # checked here is that the stages refuse before any training: no checkpoint is started.
    params = (project / "params.yaml").read_text()
    nan = re.sub(r"(?<=learning_rate: )[0-9.e-]+", ".nan", params, count=1)
    assert nan != params
    try:
        if how == "edited":
            (project / "params.yaml").write_text(nan)
        cmd = ["dvc", "exp", "run", *(["-S", "train_classifier.fit.learning_rate=.nan"] if how == "-S" else []),
               "train_classifier"]
        proc = run(cmd, project, check=False)
    finally:
        (project / "params.yaml").write_text(params)
    out = proc.stdout + proc.stderr
    problem = "must be a finite number, got nan" if how == "edited" else "expected a number, got str '.nan'"
    assert proc.returncode != 0
    assert re.search(rf"stage \S+ failed: train_classifier\.fit\.learning_rate: {re.escape(problem)}\n", out), out
    assert "Traceback" not in out
    assert not (project / "models/.checkpoints/classifier").exists()


# --------------------------------------------------------------------------------------
# cnnpipe schedule
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "serve"])
def test_a_bad_cron_is_one_line(dry_run):
    cmd = [str(Path(sys.executable).parent / "cnnpipe"), "schedule", "--cron", "bad", *(["--dry-run"] * dry_run)]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, check=False, timeout=300)
    line = one_line_failure(proc)
    assert line.startswith("cnnpipe schedule: invalid schedule cron='bad' timezone='UTC': "), line
    others = proc.stderr.strip().splitlines()[:-1]
    assert all(other.startswith("note: PREFECT_API_URL is not set") for other in others), others


# --------------------------------------------------------------------------------------
# python -m stages (make quick)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code", "line"), [
    (KeyboardInterrupt(), 130, "stage {first} interrupted"),
    (ImportError("No module named 'tensorflow'"), 1,
     "stage {first} failed: unexpected ImportError: No module named 'tensorflow' (traceback in "),
])
def test_the_one_process_runner_ends_an_error_outside_a_stage_shell_in_one_line(capsys, monkeypatch, error, code,
                                                                               line):
    # e.g. Ctrl-C while a stage module imports TensorFlow, before the stage shell runs
    import stages.__main__ as runner

    def fail(name, params):
        raise error

    monkeypatch.setattr(runner, "_run_one", fail)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        runner.main([])
    err = capsys.readouterr().err
    assert exit_.value.code == code and len(err.splitlines()) == 1
    assert err.startswith(line.format(first=runner.stage_names()[0])), err
