"""The one table of the four tasks: every stage, the registry, evaluation and the tests read it.

A *task* is one trained product, named by its model: ``classifier``, ``transfer``,
``localizer``, ``unet`` (dvc.yaml's ``evaluate@<task>`` / ``register@<task>`` keys; a test
checks they match). Each task reads one *dataset* of ``params.datasets`` (classification,
localization, segmentation; transfer's new task is always the scenes), trained by one
*producer* stage into one or more model files. Nothing here imports the rest of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The three ways transfer trains its new task, in the order they run and are reported.
TRANSFER_VARIANTS = ("scratch", "feature_extraction", "fine_tuning")

# Each dataset's formats; the first is the built-in default (Fashion-MNIST and the scenes built
# from it), the others read the user's files (docs/own-data.md).
DATASET_FORMATS: dict[str, tuple[str, ...]] = {
    "classification": ("fashion_mnist", "idx", "folders"),
    "localization": ("scenes", "oxford_pet", "csv"),
    "segmentation": ("scenes", "folders", "oxford_pet"),
}


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its model and metrics live, what produced them, how it is judged."""

    key: str  # the task's name everywhere (dvc.yaml foreach key, metrics/<key>.json)
    dataset: str | None  # the params.datasets section it reads; None: transfer (always the scenes)
    producer: str  # the DVC stage that trains it
    model_files: tuple[str, ...]  # under paths.models; the first is the one registered
    gate_metric: str  # dotted key in metrics/<key>.json, higher is better
    floor_param: str  # the params.register field holding the gate's floor
    kind: Literal["class", "box", "mask"]  # how a prediction is read
    sections: tuple[str, ...]  # params sections that produced the model (logged for lineage)
    distributed: bool  # its producer runs under params.train.strategy

    @property
    def model_file(self) -> str:
        """The registered model file: the last one (transfer: the fine-tuned variant)."""
        return self.model_files[-1]

    @property
    def model_path(self) -> str:
        """What DVC tracks for the task under paths.models: a file, or transfer's directory."""
        return self.model_files[0].split("/")[0]

    @property
    def metrics_file(self) -> str:
        return f"{self.key}.json"

    @property
    def name_param(self) -> str:
        """The params.register field holding the registered model name."""
        return f"{self.key}_name"

    def gate_value(self, metrics: Mapping[str, Any]) -> float | None:
        """The gate metric out of a (nested) metrics JSON, or None when absent."""
        value: Any = metrics
        for part in self.gate_metric.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_BASE = ("seed", "prepare", "augment")
TASKS: dict[str, TaskSpec] = {
    t.key: t
    for t in (
        TaskSpec("classifier", "classification", "train_classifier", ("classifier.keras",), "accuracy",
                 "min_accuracy", "class", (*_BASE, "train_classifier"), True),
        TaskSpec("transfer", None, "transfer", tuple(f"transfer/{v}.keras" for v in TRANSFER_VARIANTS),
                 "fine_tuning.accuracy", "min_transfer_accuracy", "class",
                 (*_BASE, "train_classifier", "transfer"), False),
        TaskSpec("localizer", "localization", "train_localizer", ("localizer.keras",), "mean_iou",
                 "min_mean_iou", "box", (*_BASE, "train_classifier", "train_localizer"), True),
        TaskSpec("unet", "segmentation", "train_unet", ("unet.keras",), "dice", "min_dice", "mask",
                 (*_BASE, "train_unet"), True),
    )
}

# Model file (under paths.models) -> the stage that writes it, for errors that say how to get it.
PRODUCERS: dict[str, str] = {f: t.producer for t in TASKS.values() for f in t.model_files}
DISTRIBUTED_STAGES = tuple(t.producer for t in TASKS.values() if t.distributed)
