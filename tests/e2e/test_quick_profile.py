"""``python -m stages`` (what ``make quick`` runs): every stage of dvc.yaml in one process, in
the file's order, on a tiny project copy; DVC is not involved."""

import json
import subprocess
import sys

from project import ROOT, env, make_project, run

sys.path.insert(0, str(ROOT))
from stages.__main__ import stage_names  # noqa: E402


def test_stage_names_follow_dvc_yaml_like_dvc_stage_list():
    listed = run(["dvc", "stage", "list", "--name-only"], ROOT).stdout.split()
    assert stage_names() == list(dict.fromkeys(name.split("@")[0] for name in listed))


def test_one_process_runs_every_stage_and_stops_at_the_first_failure(tmp_path):
    project = make_project(tmp_path)
    proc = run([sys.executable, "-m", "stages", "--skip", "register"], project)
    done = [line.split(":")[0][3:] for line in proc.stdout.splitlines() if line.startswith("== ") and " s" in line]
    assert done == [n for n in stage_names() if n != "register"]
    for task in ("classifier", "transfer", "localizer", "unet"):
        assert json.loads((project / "metrics" / f"{task}.json").read_text())
    # Each stage logged under its own name (logging is re-configured per stage).
    assert "[train_unet] train_unet:" in proc.stderr and "[evaluate@*] classifier: accuracy" in proc.stderr
    assert not (project / "dvc.lock").exists() and not (project / "metrics" / "register").exists()

    # A bad value anywhere: the first stage fails with one line naming it and nothing after it runs.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("dropout: 0.2", "dropout: 2.0", 1))
    bad = subprocess.run([sys.executable, "-m", "stages", "--skip", "register"], cwd=project, env=env(),
                         capture_output=True, text=True, timeout=600)
    # (the first stage is the fingerprint probe, dvc.yaml's first)
    assert bad.returncode == 1 and "stage fingerprint failed" in bad.stderr and "dropout" in bad.stderr, bad.stderr[-2000:]
    assert "== fetch" not in bad.stdout
