"""DVC stages ``register@<task>``: log one task's trained model to MLflow (signature + input
example), register it as a new ``@challenger`` version and promote it to ``@champion`` only
through the gates.

Writes ``metrics/register/<task>.json``: the version registered and the decision (or why the
task was skipped). ``--task`` picks the task; without it every task is registered in turn.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params
from cnnpipe.data.images import to_model_input
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.errors import DataError
from cnnpipe.io import read_json, write_json
from cnnpipe.registry.gates import Gate, gates
from cnnpipe.registry.lock import lock_path
from cnnpipe.registry.promotion import promote, settle_unfinished
from cnnpipe.registry.versions import actor, register_version
from cnnpipe.stage_shell import run_task_stage
from cnnpipe.taskspec import PRODUCERS, TASKS
from cnnpipe.tracking.keras import log_keras_model
from cnnpipe.tracking.lineage import content_hash
from cnnpipe.tracking.runs import numeric_metrics, stage_run
from cnnpipe.training.outputs import load_model

log = logging.getLogger("cnnpipe")

N_EXAMPLES = 2  # input-example rows stored with each model: enough to show the shape, small


def register_task(params: Params, gate: Gate) -> dict[str, Any]:
    """Log, register and gate one task's model; the returned dict is its register JSON."""
    task, paths = gate.task, params.paths
    model_path = Path(paths.models) / task.model_file
    if not model_path.is_file():
        log.info("%s: skipped: %s not found (its training stage has not run)", gate.name, model_path)
        return {"name": gate.name, "skipped": f"{model_path} not found"}
    metrics_path = Path(paths.metrics) / task.metrics_file
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path}: test metrics of {model_path} not found; "
                        f"run `dvc repro evaluate@{task.key}`")
    metrics = read_json(metrics_path)
    data_dir = prepared_dir(params, task.key)  # own localization/segmentation data: <prepared>/<format>
    inputs = {"model": model_path, "test_data": data_dir, "raw_data": Path(paths.raw) / params.fetch.dataset}

    with stage_run(f"register@{task.key}", params, param_sections=[*task.sections, "register"],
                   inputs=inputs) as run:
        data = PreparedSet.open(data_dir)
        names = list(data.class_names)
        test_images = data.load("test").images
        example = to_model_input(np.asarray(test_images[:N_EXAMPLES]))
        info = log_keras_model(
            run, load_model(model_path, PRODUCERS[task.model_file]), "model", example,
            metadata={"task": task.key, "kind": task.kind, "class_names": names},
        )
        run.log_metrics(metrics)
        run.log_artifacts(metrics_path, "metrics")
        test_set = content_hash(data_dir, "*test*")
        run.log_dataset(test_images, f"{data_dir.name}-test", test_set, source=data_dir, context="testing")
        client = run.connection.client()
        version = register_version(
            client, info.model_uri, gate, run_id=run.run_id, model_id=info.model_id, metrics=numeric_metrics(metrics),
            test_set=test_set, tags={**run.tags, "cnnpipe.class_names": json.dumps(names)},
        )
        who = f"register stage ({actor()})"
        try:
            decision = promote(client, gate, version.version, who=who, lock=lock_path(run.connection.uri))
        except BaseException:  # Ctrl-C while waiting for the lock, a lock timeout, ...: record it
            with contextlib.suppress(Exception):  # the first error is the one to report
                if settle_unfinished(client, gate.name, version.version, who=who):
                    log.info("%s version %s stays @challenger: stopped before the gate decided",
                             gate.name, version.version)
            raise
        run.log_metrics({"promoted": int(decision.promote)})

    verdict = "promoted to @champion" if decision.promote else "stays @challenger"
    log.info("%s version %s %s: %s", gate.name, version.version, verdict, decision.reason)
    return {
        "name": gate.name, "version": version.version, "metric": task.gate_metric,
        "value": task.gate_value(metrics), "promoted": decision.promote, "reason": decision.reason,
    }


def main(params: Params, task: str) -> None:
    """Register ``task``'s model through its gate; writes ``metrics/register/<task>.json``."""
    (gate,) = (g for g in gates(params.register).values() if g.task.key == task)
    write_json(Path(params.paths.metrics) / "register" / f"{task}.json", register_task(params, gate))


if __name__ == "__main__":
    run_task_stage("register", main, tuple(TASKS))
