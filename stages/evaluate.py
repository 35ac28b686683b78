"""DVC stages ``evaluate@<task>``: score one task's trained model on its held-out test data.

Writes ``metrics/<task>.json`` (classifier, transfer, localizer, unet) and the task's figures
in its own folder ``plots/evaluate/<task>/`` (a DVC output of the stage): the confusion
heatmap, its CSV and Grad-CAM (classifier), accuracy by mode and the fine-tuned model's
confusion heatmap and CSV (transfer), box overlays (localizer), mask overlays (unet).
``--task`` picks the task; without it every task is scored in turn, each in its own MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.evaluation.evaluate import load_models
from cnnpipe.evaluation.tasks import EVALUATORS
from cnnpipe.io import write_json
from cnnpipe.stage_shell import run_task_stage
from cnnpipe.taskspec import TASKS
from cnnpipe.tracking.runs import stage_run


def main(params: Params, task: str) -> None:
    """Score ``task``'s model: ``metrics/<task>.json``, its figures, one MLflow run ``evaluate@<task>``."""
    models_dir = Path(params.paths.models)
    # Own localization / segmentation data lives in <prepared>/<format>; the default is the scenes.
    data_dir = prepared_dir(params, task)
    out = Path(params.paths.metrics) / f"{task}.json"
    model_path = models_dir / TASKS[task].model_path
    inputs = {data_dir.name: data_dir, task: model_path}
    with stage_run(f"evaluate@{task}", params, param_sections=["evaluate"], inputs=inputs) as run:
        # The model first: a missing one fails before the test data is read.
        models = load_models(models_dir, task)
        report, test, figures = EVALUATORS[task](params, models, PreparedSet.open(data_dir),
                                                 Path(params.paths.plots) / "evaluate" / task)
        write_json(out, report)
        run.log_dataset(test.images, f"{data_dir.name}-test", run.tags[f"dvc.{data_dir.name}"], source=data_dir,
                        context="testing", targets=test.labels)
        # Prefixed by task, as the four reports share keys (n_test, per_class.<name>).
        run.log_metrics({task: report})
        run.log_artifacts(out, "metrics")
        for figure in figures:
            run.log_artifacts(figure, "plots")


if __name__ == "__main__":
    run_task_stage("evaluate", main, tuple(TASKS))
