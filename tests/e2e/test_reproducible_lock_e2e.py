"""Same commit + seed -> same dvc.lock: `dvc repro` of a tiny project, then `dvc repro -f` from a
fresh tracking store (as on a fresh clone), with another process busy on the cores and Python's
string hashing randomized (as `make run` runs, with no PYTHONHASHSEED), gives every output the
same hash."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project import env, make_project, run

pytestmark = pytest.mark.slow

TRAINED = ("classifier", "transfer", "localizer", "unet")


def _out_hashes(lock: Path) -> dict[tuple[str, str], str]:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {(stage, out["path"]): out.get("md5") for stage, entry in stages.items() for out in entry.get("outs", [])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro-lock")
    project = make_project(tmp)
    run(["dvc", "repro"], project, timeout=1800)
    first = _out_hashes(project / "dvc.lock")
    models = {p.relative_to(project): p.read_bytes() for p in sorted((project / "models").rglob("*.keras"))}
    # A fresh tracking store, as on a fresh clone: registry versions restart at 1.
    for store in project.glob("mlflow.db*"):  # the store and its markers (created, promote.lock)
        store.unlink()
    shutil.rmtree(project / "mlartifacts", ignore_errors=True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # other work on the cores
    try:
        proc = subprocess.run(["dvc", "repro", "-f"], cwd=project, env={**env(), "PYTHONHASHSEED": "random"},
                              capture_output=True, text=True, timeout=1800, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    finally:
        busy.kill()
        busy.wait()
    return project, first, _out_hashes(project / "dvc.lock"), models


def test_every_output_hash_is_reproduced(runs):
    _, first, second, _ = runs
    assert set(first) == set(second)
    assert len(first) > 20  # every stage's outputs, the models among them
    differ = sorted(f"{stage}: {path}" for (stage, path), md5 in first.items() if second[(stage, path)] != md5)
    assert not differ, "outputs whose hash changed between two runs of the same commit:\n" + "\n".join(differ)


def test_model_files_are_byte_identical(runs):
    project, _, _, models = runs
    assert len(models) == 6  # classifier, localizer, unet and the three transfer models
    for rel, content in models.items():
        assert (project / rel).read_bytes() == content, rel


def test_timings_are_kept_out_of_the_hashed_metrics(runs):
    project = runs[0]
    for task in TRAINED:
        summary = json.loads((project / "metrics" / "train" / f"{task}.json").read_text())
        flat = json.dumps(summary)
        assert "seconds" not in flat and "resumed_from" not in flat, (task, summary)
        timings = json.loads((project / "reports" / "timings" / f"{task}.json").read_text())
        assert "seconds_per_epoch" in flat_keys(timings), (task, timings)
    # The Data Docs are still written, beside the hashed results.
    assert (project / "reports" / "validate" / "data_docs" / "index.html").is_file()


def flat_keys(d: dict) -> set[str]:
    return {k for key, v in d.items() for k in ({key} | (flat_keys(v) if isinstance(v, dict) else set()))}
