"""The real DVC pipeline, end to end, on tiny data: every stage runs for real for one epoch,
logs its MLflow run to the copy's embedded store, and the register@<task> stages gate all four
models."""

import json
import re

import pytest
import yaml
from project import make_project, run

# Stage -> the inputs its MLflow run is tagged with (``dvc.<name>``) and their paths in dvc.lock.
STAGE_INPUTS = {
    "fetch": {},
    "validate": {"raw": "data/raw/idx"},
    "prepare": {"raw": "data/raw/idx"},
    "prepare_classification": {"raw": "data/raw/idx"},
    "train_classifier": {"classification": "data/prepared/classification"},
    "transfer": {"scenes": "data/prepared/scenes", "classifier": "models/classifier.keras"},
    "train_localizer": {"scenes": "data/prepared/scenes", "classifier": "models/classifier.keras"},
    "train_unet": {"scenes": "data/prepared/scenes"},
    "evaluate@classifier": {"classification": "data/prepared/classification", "classifier": "models/classifier.keras"},
    "evaluate@transfer": {"scenes": "data/prepared/scenes", "transfer": "models/transfer"},
    "evaluate@localizer": {"scenes": "data/prepared/scenes", "localizer": "models/localizer.keras"},
    "evaluate@unet": {"scenes": "data/prepared/scenes", "unet": "models/unet.keras"},
    "register@classifier": {"model": "models/classifier.keras", "test_data": "data/prepared/classification"},
    "register@transfer": {},
    "register@localizer": {"model": "models/localizer.keras", "test_data": "data/prepared/scenes"},
    "register@unet": {"model": "models/unet.keras", "test_data": "data/prepared/scenes"},
}
TASKS = ("classifier", "transfer", "localizer", "unet")
REGISTERED = ("cnnpipe-classifier", "cnnpipe-transfer", "cnnpipe-localizer", "cnnpipe-unet")


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
        "data/prepared/classification/train_images.npy",
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
        "plots/history/classifier.png",  # the curves viewable offline, beside each CSV
        "plots/history/transfer_fine_tuning.png",
        "plots/history/unet.png",
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


@pytest.fixture(scope="module")
def mlflow_client(project):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def stage_runs(client) -> dict[str, list]:
    experiment = client.get_experiment_by_name("cnnpipe")
    by_stage: dict[str, list] = {}
    for r in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
        by_stage.setdefault(r.data.tags.get("cnnpipe.stage"), []).append(r)
    return by_stage


def lock_outs(project) -> dict[str, str]:
    """Out path -> ``md5:<hash>`` as dvc.lock records it."""
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"].values()
    return {out["path"]: f"md5:{out['md5']}" for stage in stages for out in stage.get("outs", [])}


def test_dvc_repro_without_prefect_logs_every_stage_to_mlflow(project, mlflow_client):
    from cnnpipe.flows.dvc import stage_order

    # foreach groups expand to <group>@<task>; the fingerprint probe logs no MLflow run
    assert set(stage_order(project)) - {"fingerprint"} == set(STAGE_INPUTS)
    assert (project / "mlartifacts").is_dir()  # the embedded store, at the project root
    lock = lock_outs(project)
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    runs = stage_runs(mlflow_client)
    for stage, inputs in STAGE_INPUTS.items():
        assert stage in runs, f"no MLflow run for stage {stage!r}; runs: {sorted(map(str, runs))}"
        r = runs[stage][0]
        assert r.info.status == "FINISHED", stage
        assert r.data.tags["git.commit"] == head and r.data.tags["git.dirty"] == "false", stage
        assert "prefect.flow_run_id" not in r.data.tags, stage  # plain `dvc repro`
        for name, path in inputs.items():
            assert r.data.tags[f"dvc.{name}"] == lock[path], (stage, name)  # DVC's own hash of it


def test_stage_runs_record_params_metrics_datasets_and_artifacts(project, mlflow_client):
    runs = {stage: found[0] for stage, found in stage_runs(mlflow_client).items()}
    artifacts = lambda stage, path: {a.path for a in mlflow_client.list_artifacts(runs[stage].info.run_id, path)}  # noqa: E731

    fetch, validate = runs["fetch"], runs["validate"]
    assert fetch.data.params["fetch.dataset"] == "idx" and "fetch/source.json" in artifacts("fetch", "fetch")
    assert [d.dataset.name for d in fetch.inputs.dataset_inputs] == ["idx"]
    assert validate.data.metrics["failed_expectations"] == 0
    assert {"validate/results.json", "validate/data_docs"} <= artifacts("validate", "validate")
    assert "scenes_validation/data_docs" in artifacts("prepare", "scenes_validation")

    train = runs["train_classifier"]
    assert train.data.params["train_classifier.fit.epochs"] == "1" and train.data.params["seed"] == "42"
    (dataset,) = train.inputs.dataset_inputs
    assert dataset.dataset.name == "classification-train"
    assert lock_outs(project)["data/prepared/classification"].split(":")[1].startswith(dataset.dataset.digest)
    epochs = mlflow_client.get_metric_history(train.info.run_id, "val_accuracy")  # the epoch callback
    assert [m.step for m in epochs] == [0]
    assert {"epochs_run", "params"} <= set(train.data.metrics)
    assert artifacts("train_classifier", "history") == {"history/classifier.csv"}
    assert len(artifacts("transfer", "history")) == 3

    for task, key in [("classifier", "accuracy"), ("localizer", "mean_iou"), ("unet", "dice"),
                      ("transfer", "fine_tuning.accuracy")]:
        assert f"{task}.{key}" in runs[f"evaluate@{task}"].data.metrics, task
    # Each evaluate@<task> run holds its own task's figures only.
    assert artifacts("evaluate@classifier", "plots") == {"plots/confusion.png", "plots/confusion.csv",
                                                         "plots/gradcam.png"}
    assert artifacts("evaluate@unet", "plots") == {"plots/masks.png"}


def test_dvc_repro_registers_all_four_models_through_the_gates(project, mlflow_client):
    runs = stage_runs(mlflow_client)
    for task, name in zip(TASKS, REGISTERED):
        decision = json.loads((project / "metrics" / "register" / f"{task}.json").read_text())
        assert decision["name"] == name
        version = mlflow_client.get_model_version(name, decision["version"])
        assert version.run_id == runs[f"register@{task}"][0].info.run_id  # the register@<task> stage's run
        # Floors are 0 in the tiny params: the first version of each becomes @champion (and
        # stops being @challenger); the decision is recorded on the version.
        assert decision["promoted"] is True, decision
        assert version.aliases == ["champion"], version.aliases
        assert any(k.startswith("cnnpipe.event.") and '"promoted"' in v for k, v in version.tags.items())


def test_second_repro_has_nothing_to_do(project):
    # The fingerprint stage is `always_changed` (it re-reads the sources on every repro); nothing
    # else may be stale, and its unchanged fingerprints must re-run nothing downstream.
    status = run(["dvc", "status"], project).stdout
    assert status.split() == ["fingerprint:", "always", "changed"], status
    out = run(["dvc", "repro"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"fingerprint"}, out
    assert "didn't change, skipping" in out


def test_metrics_plots_and_the_evaluate_group_through_dvc(project):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = {path for rev in shown.values() for path in rev["data"]}
    assert {f"metrics/{t}.json" for t in TASKS} | {f"metrics/register/{t}.json" for t in TASKS} <= files
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    # Each evaluate@<task> stage's figures are its output, in its own folder; transfer's too.
    assert {"plots/evaluate/classifier/confusion.csv", "plots/evaluate/classifier/gradcam.png",
            "plots/evaluate/transfer/confusion.csv", "plots/evaluate/transfer/accuracy.png",
            "plots/evaluate/localizer/boxes.png", "plots/evaluate/unet/masks.png",
            "plots/history/classifier.png"} <= set(plots)
    for task in ("classifier", "transfer"):  # DVC's confusion template (from the folder's props), not a line
        assert "xy_count" in json.dumps(plots[f"plots/evaluate/{task}/confusion.csv"][0]["content"]), task
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for task in TASKS:
        outs = {o["path"]: o for o in lock[f"evaluate@{task}"]["outs"]}
        assert outs[f"plots/evaluate/{task}"]["md5"].endswith(".dir"), task  # the folder, hashed in dvc.lock
    # The group name reproduces all four of its stages (a dry run: nothing is executed).
    out = run(["dvc", "repro", "--dry", "--force", "--single-item", "evaluate"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {f"evaluate@{t}" for t in TASKS}, out


def test_prepare_is_deterministic(project):
    lock_before = (project / "dvc.lock").read_text()
    run(["dvc", "repro", "--force", "--single-item", "prepare"], project)
    run(["dvc", "repro", "--force", "--single-item", "prepare_classification"], project)
    status = run(["dvc", "status"], project).stdout
    # Same seed, same bytes: re-running prepare changes no output hash, so nothing downstream is
    # stale (fingerprint is always_changed by design).
    assert status.split() == ["fingerprint:", "always", "changed"], status
    import yaml

    by_path = lambda outs: {o["path"]: o["md5"] for o in outs}  # noqa: E731
    outs = lambda lock: {p: h for stage in ("prepare", "prepare_classification")  # noqa: E731
                         for p, h in by_path(yaml.safe_load(lock)["stages"][stage]["outs"]).items()}
    before, after = outs(lock_before), outs((project / "dvc.lock").read_text())
    b, a = before, after
    assert b["data/prepared/classification"] == a["data/prepared/classification"]
    assert b["data/prepared/scenes"] == a["data/prepared/scenes"]


def test_training_is_reproducible(project):
    """Same seed, same data: re-training every model from scratch gives the same test metrics
    (op determinism is on), so two runs of the pipeline agree - here exactly."""
    metrics = ("classifier", "transfer", "localizer", "unet")
    read = lambda: {m: json.loads((project / "metrics" / f"{m}.json").read_text()) for m in metrics}  # noqa: E731
    before = read()
    for stage in ("train_classifier", "transfer", "train_localizer", "train_unet"):
        run(["dvc", "repro", "--force", "--single-item", stage], project)
    run(["dvc", "repro", "evaluate"], project)
    after = read()
    assert after == before
