"""The orchestrated pipeline on a tiny copy of the project, through the user's commands
(``dvc repro``, ``cnnpipe run``): new data under an own dataset's ``path`` is noticed and re-runs
exactly that task's stages, nothing changed runs nothing, two runs started together never
share the checkout, a stage past its timeout is killed and named, and a failing branch leaves
the other branches' models and metrics written while the report names what it kept from running.

One project for the module (own classification and segmentation folders, the rest built in),
reproduced once; the tests run in file order and each leaves it up to date."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from own_data import write_class_folders, write_segmentation_folders
from PIL import Image
from project import env, make_project, run

UNET_BRANCH = {"prepare", "train_unet", "evaluate@unet", "register@unet"}
CLASSIFIER_BRANCH = {"prepare_classification", "train_classifier", "evaluate@classifier", "register@classifier"}


def dvc_ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def flow_statuses(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def cnnpipe_run(project, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "cnnpipe.cli", "run"], project, check=check, timeout=1800)


def replace_image(folder, name: str) -> None:
    """A new version of one image, same size (its mask still fits): a user dropping in a new file."""
    path = folder / name
    with Image.open(path) as image:
        image.load()
    image.point(lambda v: min(v + 1, 255)).save(path)


def set_params(project, **sections) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in sections.items():
        params[key].update(value)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module", autouse=True)
def _own_prefect_home(tmp_path_factory):
    """`cnnpipe run` starts Prefect's temporary server: its database in a throw-away home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")  # a fresh database, a loaded machine
        mp.delenv("PREFECT_API_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orch")
    seg = write_segmentation_folders(tmp / "seg", n=12, n_classes=1)
    clf = write_class_folders(tmp / "clf", n_per_class=8)
    project = make_project(tmp, overrides={"datasets": {
        "classification": {"format": "folders", "path": str(clf), "image_size": 28},
        "segmentation": {"format": "folders", "path": str(seg), "image_size": 32},
    }})
    run(["dvc", "repro"], project, timeout=1800)
    return {"project": project, "seg": seg, "clf": clf}


def test_nothing_changed_runs_nothing(own):
    project = own["project"]
    assert dvc_ran(run(["dvc", "repro"], project).stdout) == {"fingerprint"}  # the probe only
    statuses = flow_statuses(cnnpipe_run(project).stdout)
    assert statuses["fingerprint"] == "probed"
    assert {s for s, st in statuses.items() if st != "skipped"} == {"fingerprint"}, statuses
    assert not (project / "mlruns").exists()


def test_replacing_one_image_reruns_exactly_that_tasks_stages(own):
    project, images = own["project"], own["seg"] / "train" / "images"
    replace_image(images, "item000.png")
    out = run(["dvc", "repro"], project).stdout
    assert dvc_ran(out) == {"fingerprint", *UNET_BRANCH}, out
    # A touch (same content, new mtime) is not new data.
    (images / "item002.png").touch()
    assert dvc_ran(run(["dvc", "repro"], project).stdout) == {"fingerprint"}

    replace_image(images, "item003.png")
    statuses = flow_statuses(cnnpipe_run(project).stdout)
    assert {s for s, st in statuses.items() if st == "ran"} == UNET_BRANCH, statuses
    assert {s for s, st in statuses.items() if st not in ("ran", "skipped", "probed")} == set(), statuses
    assert dvc_ran(run(["dvc", "repro"], project).stdout) == {"fingerprint"}


def test_two_runs_started_together_one_runs_the_other_is_refused(own):
    project, images = own["project"], own["seg"] / "train" / "images"
    replace_image(images, "item005.png")  # work for the one that runs
    cmd = [sys.executable, "-m", "cnnpipe.cli", "run"]
    procs = [subprocess.Popen(cmd, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(1800), *p.communicate()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert len(ok) == 1 and len(refused) == 1, results
    lines = refused[0][2].strip().splitlines()
    assert len(lines) == 1, refused[0][2]
    assert re.fullmatch(rf"cnnpipe run: another pipeline run holds {re.escape(str(project))}/\.cnnpipe/run\.lock "
                        r"\(pid \d+: .*run.*\); wait for it to finish", lines[0]), lines[0]
    assert {s for s, st in flow_statuses(ok[0][1]).items() if st == "ran"} == UNET_BRANCH
    # The checkout is consistent: DVC has nothing left to do.
    status = run([sys.executable, "-m", "dvc", "status", "--json"], project).stdout
    assert set(yaml.safe_load(status)) <= {"fingerprint"}, status  # the probe is always "changed"


def _stage_processes(project, stage: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if f"stages.{stage}" in " ".join(proc.info["cmdline"] or []) and proc.info["cwd"] == str(project):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_stage_past_its_timeout_is_killed_and_named(own):
    project, images = own["project"], own["seg"] / "train" / "images"
    original = (project / "params.yaml").read_text()
    set_params(project, orchestrate={"stage_timeouts": {"train_unet": 3}})  # not a DVC param: nothing re-runs for it
    replace_image(images, "item007.png")
    proc = cnnpipe_run(project, check=False)
    assert proc.returncode == 1
    # cnnpipe's one line among Prefect's own log lines (they go to stderr too)
    assert ("cnnpipe run: stage 'train_unet' timed out after 3 s (orchestrate.stage_timeout_s / stage_timeouts) "
            "and was killed; not run because of it: evaluate@unet, register@unet") in proc.stderr.splitlines(), proc.stderr
    deadline = time.monotonic() + 30
    while _stage_processes(project, "train_unet") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _stage_processes(project, "train_unet")  # killed with its process group
    (project / "params.yaml").write_text(original)
    statuses = flow_statuses(cnnpipe_run(project).stdout)  # DVC re-runs the killed stage next time
    assert {s for s, st in statuses.items() if st == "ran"} == {"train_unet", "evaluate@unet", "register@unet"}


def test_a_failing_branch_leaves_the_other_branches_written(own):
    project, seg, clf = own["project"], own["seg"] / "train" / "images", own["clf"] / "train" / "boot"
    models, metrics = project / "models", project / "metrics"
    before = {p: p.stat().st_mtime_ns for p in (models / "classifier.keras", metrics / "classifier.json",
                                                metrics / "register" / "classifier.json", models / "unet.keras")}
    (seg / "item009.png").write_bytes(b"not a png")  # breaks prepare: the scenes/U-Net side
    replace_image(clf, "boot_0.png")  # new data for the classifier branch
    proc = cnnpipe_run(project, check=False)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("cnnpipe run: "))
    assert re.match(r"cnnpipe run: stage 'prepare' failed \(dvc repro exit \d+\): ", line) and "item009.png" in line, line
    blocked = line.split("; not run because of it: ")[1].split(", ")
    assert set(blocked) == {"transfer", "train_localizer", "train_unet", "evaluate@transfer", "evaluate@localizer",
                            "evaluate@unet", "register@transfer", "register@localizer", "register@unet"}, line
    # The classifier branch, independent of prepare, ran to the end; the U-Net's model is untouched.
    for path in (models / "classifier.keras", metrics / "classifier.json", metrics / "register" / "classifier.json"):
        assert path.stat().st_mtime_ns > before[path], path
    assert (models / "unet.keras").stat().st_mtime_ns == before[models / "unet.keras"]
    status = yaml.safe_load(run([sys.executable, "-m", "dvc", "status", "--json"], project).stdout)
    assert not set(status) & CLASSIFIER_BRANCH, status
