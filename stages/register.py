"""DVC stages ``register@<task>``: log one task's trained model to MLflow as a pyfunc that takes
raw images (:mod:`cnnpipe.serving.pyfunc`; signature + uint8 input example), register it as a new ``@challenger`` version and promote it to ``@champion`` only
through the gates, and only from a committed, clean run: inside ``dvc exp run`` or from
uncommitted work the version stays ``@challenger``, tagged with its experiment, commit and
params, for ``cnnpipe promote NAME --experiment EXP`` to decide (``registry/provenance.py``).

Writes ``metrics/register/<task>.json``: the version registered and the decision (or why the
task was skipped). ``--task`` picks the task; without it every task is registered in turn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params, to_dict
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.errors import DataError
from cnnpipe.io import read_json, write_json
from cnnpipe.registry.gates import Gate, gates
from cnnpipe.registry.lock import lock_path
from cnnpipe.registry.promotion import hold, promote, settle_unfinished
from cnnpipe.registry.provenance import provenance
from cnnpipe.registry.versions import actor, register_version
from cnnpipe.serving.pyfunc import loaded_model
from cnnpipe.stage_shell import run_task_stage
from cnnpipe.taskspec import PRODUCERS, TASKS
from cnnpipe.tracking.keras import log_pyfunc_model
from cnnpipe.tracking.lineage import content_hash, project_root
from cnnpipe.tracking.runs import numeric_metrics, stage_run

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
    # This stage's own results don't make the tree dirty (the quick profile writes them task by task).
    origin = provenance(project_root(), to_dict(params), ignore=(Path(paths.metrics) / "register",))
    if origin.origin == "unknown":
        log.info("%s: provenance unknown (%s is not in a git repository with a commit): "
                 "promoting through the gates as for a committed run", gate.name, Path.cwd())

    with stage_run(f"register@{task.key}", params, param_sections=[*task.sections, "register"],
                   inputs=inputs) as run:
        data = PreparedSet.open(data_dir)
        names = list(data.class_names)
        test_images = data.load("test").images
        example = np.asarray(test_images[:N_EXAMPLES])  # uint8 images, as a client sends them
        meta = {"task": task.key, "kind": task.kind, "class_names": names}
        with tempfile.TemporaryDirectory(prefix="cnnpipe-register-") as tmp:
            served, files = loaded_model(model_path, meta, Path(tmp), PRODUCERS[task.model_file])
            info = log_pyfunc_model(run, "model", files, input_example=example,
                                    output_example=served.predict(None, example), metadata=meta)
        run.log_metrics(metrics)
        run.log_artifacts(metrics_path, "metrics")
        test_set = content_hash(data_dir, "*test*")
        run.log_dataset(test_images, f"{data_dir.name}-test", test_set, source=data_dir, context="testing")
        client = run.connection.client()
        version = register_version(
            client, info.model_uri, gate, run_id=run.run_id, model_id=info.model_id, metrics=numeric_metrics(metrics),
            test_set=test_set, tags={**run.tags, **origin.tags(), "cnnpipe.class_names": json.dumps(names)},
        )
        who = f"register stage ({actor()})"
        try:
            if origin.may_promote:  # a committed, clean run (or no git to tell): through the gates
                decision = promote(client, gate, version.version, who=who, lock=lock_path(run.connection.uri))
            else:  # an experiment or uncommitted work never moves @champion
                decision = hold(client, gate, version.version, origin.held_reason(gate.name, version.version), who=who)
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
        "origin": origin.origin, "experiment": origin.experiment,
    }


def main(params: Params, task: str) -> None:
    """Register ``task``'s model through its gate; writes ``metrics/register/<task>.json``."""
    (gate,) = (g for g in gates(params.register).values() if g.task.key == task)
    write_json(Path(params.paths.metrics) / "register" / f"{task}.json", register_task(params, gate))


if __name__ == "__main__":
    run_task_stage("register", main, tuple(TASKS))
