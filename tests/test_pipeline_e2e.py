"""The real DVC pipeline, end to end, on tiny data: every stage runs for real for one epoch."""

import json

import pytest

from project import make_project, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = make_project(tmp_path_factory.mktemp("e2e"))
    run(["dvc", "repro"], path)
    return path


def test_every_stage_writes_its_outputs(project):
    for rel in [
        "data/raw/idx/source.json",
        "reports/validate/results.json",
        "reports/validate/data_docs/index.html",
        "data/prepared/classification/x_train.npy",
        "data/prepared/scenes/test_masks.npy",
        "reports/scenes_validation/results.json",
        "models/classifier.keras",
        "models/transfer/scratch.keras",
        "models/transfer/feature_extraction.keras",
        "models/transfer/fine_tuning.keras",
        "models/localizer.keras",
        "models/unet.keras",
        "plots/history/classifier.csv",
        "plots/history/localizer.csv",
        "plots/history/unet.csv",
    ]:
        assert (project / rel).exists(), rel
    assert not (project / "models" / ".checkpoints" / "classifier").exists()


def test_evaluate_metrics_have_the_interface_keys(project):
    if not (project / "metrics" / "classifier.json").exists():
        pytest.skip("evaluate is not in dvc.yaml yet")
    clf = json.loads((project / "metrics" / "classifier.json").read_text())
    assert 0 <= clf["accuracy"] <= 1 and len(clf["per_class"]) == 10
    tr = json.loads((project / "metrics" / "transfer.json").read_text())
    for style in ("scratch", "feature_extraction", "fine_tuning"):
        assert 0 <= tr[style]["accuracy"] <= 1
    loc = json.loads((project / "metrics" / "localizer.json").read_text())
    assert {"mean_iou", "iou50_rate", "class_accuracy"} <= set(loc)
    unet = json.loads((project / "metrics" / "unet.json").read_text())
    assert {"dice", "iou", "pixel_accuracy", "per_class", "mean_dice"} <= set(unet)


def test_second_repro_has_nothing_to_do(project):
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status
    out = run(["dvc", "repro"], project).stdout
    assert "didn't change, skipping" in out or "up to date" in out.lower()
    assert "Running stage" not in out, out


def test_prepare_is_deterministic(project):
    lock_before = (project / "dvc.lock").read_text()
    run(["dvc", "repro", "--force", "--single-item", "prepare"], project)
    status = run(["dvc", "status"], project).stdout
    # Same seed, same bytes: re-running prepare changes no output hash, so nothing downstream is stale.
    assert "up to date" in status, status
    import yaml

    before = yaml.safe_load(lock_before)["stages"]["prepare"]["outs"]
    after = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    by_path = lambda outs: {o["path"]: o["md5"] for o in outs}  # noqa: E731
    b, a = by_path(before), by_path(after)
    assert b["data/prepared/classification"] == a["data/prepared/classification"]
    assert b["data/prepared/scenes"] == a["data/prepared/scenes"]
