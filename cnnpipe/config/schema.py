"""The params schema: one pydantic model per ``params.yaml`` section (``datasets``: datasets.py).

No field has a default: ``params.yaml`` holds every value (with the comment saying why), so
the code and the file cannot disagree, and an overlay such as ``params.quick.yaml`` names
only what differs from its base. Ranges are ``Field`` constraints, closed sets ``Literal``s,
cross-field rules ``model_validator``s raising :class:`Invalid` (base.py).
"""

from __future__ import annotations

import typing
import warnings
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cnnpipe.config.base import (
    Count,
    Fraction,
    Invalid,
    Names,
    Positive,
    Section,
    Share,
    Sizes,
)
from cnnpipe.config.datasets import DatasetsParams

# fashion-mnist: pinned content hashes and class names; idx: any MNIST-like set of the same
# four files (hashes recorded, not checked), class names from fetch.class_names.
Dataset = Literal["fashion-mnist", "idx"]
Schedule = Literal["cosine", "constant"]
# auto: mixed_bfloat16 where the CPU computes bfloat16 natively (AVX512-BF16/AMX: ~2x faster
# training here, same accuracy), else float32 (emulated bfloat16 would be slower).
Precision = Literal["auto", "float32", "mixed_bfloat16"]
# default: one device; mirrored: every local GPU (synchronous); multi_worker: several hosts
# named in the TF_CONFIG environment variable (tf.distribute.MultiWorkerMirroredStrategy).
Strategy = Literal["default", "mirrored", "multi_worker"]
Backbone = Literal["classifier", "mobilenet_v2", "none"]

DATASETS: tuple[str, ...] = typing.get_args(Dataset)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)

# NumPy's legacy seeding (keras.utils.set_random_seed), scikit-learn's random_state and the
# tf.data seeds all take 0..2**32-1.
SEED_MAX = 2**32 - 1
# Grad-CAM and overlay figures are grids of 4 columns: 64 examples is 16 rows; 100000 would
# be a figure hours in the drawing, and no one looks at more than a few dozen.
MAX_FIGURE_EXAMPLES = 64


class Paths(Section):
    """Where each stage reads and writes; dvc.yaml templates its deps/outs from the same keys."""

    raw: str
    prepared: str
    models: str
    metrics: str
    plots: str
    reports: str


class FetchParams(Section):
    dataset: Dataset
    local_dir: str | None
    system_dir: str | None
    url: str | None
    timeout_s: float = Field(gt=0)
    retries: Count
    class_names: Names | None

    @model_validator(mode="after")
    def _class_names(self) -> FetchParams:
        names = self.class_names
        if names is not None:
            if self.dataset == "fashion-mnist":
                raise Invalid("class_names", "fashion-mnist has fixed class names; set it only for dataset idx")
            if len(names) < 2 or len(set(names)) != len(names):
                raise Invalid("class_names", f"need at least 2 distinct names, got {list(names)!r}")
        return self


class ValidateParams(Section):
    balance_tolerance: Share


class ScenesParams(Section):
    """The localization/segmentation benchmark (harder is fine, easier is not)."""

    canvas: Positive
    n_train: Positive
    n_val: Positive
    n_test: Positive
    min_side: Positive
    max_side: Positive
    clutter: Count
    clutter_min: Positive
    clutter_max: Positive
    noise_std: float = Field(ge=0)
    mask_threshold: Fraction

    @model_validator(mode="after")
    def _fits(self) -> ScenesParams:
        if self.min_side > self.max_side:
            raise Invalid("min_side", f"must be <= max_side ({self.max_side}), got {self.min_side}")
        if self.max_side > self.canvas:
            raise Invalid("max_side", f"an item of {self.max_side} px does not fit the {self.canvas} px canvas")
        if self.clutter_min > self.clutter_max or self.clutter_max > self.canvas:
            raise Invalid(None, "need clutter_min <= clutter_max <= canvas, got "
                                f"{self.clutter_min}, {self.clutter_max}, {self.canvas}")
        return self


class PrepareParams(Section):
    val_fraction: Fraction
    scenes: ScenesParams
    shard_size: Count  # 0: single arrays; N > 0: scenes composed and streamed in shards of N


class AugmentParams(Section):
    """Strengths of the train-time augmentation; each training stage says whether it uses it."""

    flip: bool
    shift: Share
    rotation: Share
    zoom: Share


class FitParams(Section):
    """One recipe shape for every model; each training section holds its own values."""

    epochs: Positive
    batch_size: Positive
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    schedule: Schedule
    warmup_epochs: float = Field(ge=0)
    patience: Positive
    augment: bool
    steps_per_epoch: Positive | None
    precision: Precision
    inter_op_threads: Positive | None  # 1: bit-reproducible under load; null: TF's default (faster)

    def steps(self, n_examples: int) -> int:
        """Optimizer steps per epoch for ``n_examples`` training examples."""
        return self.steps_per_epoch or max(1, n_examples // self.batch_size)


class TrainParams(Section):
    """How every training stage runs, not what it computes (no stage lists it in dvc.yaml)."""

    strategy: Strategy


class ClassifierParams(Section):
    filters: Sizes
    convs_per_block: Positive
    dense: Count
    dropout: Share
    label_smoothing: Share
    fit: FitParams


class TransferParams(Section):
    backbone: Backbone
    weights: str | None
    image_size: Positive
    scales: Annotated[tuple[Annotated[float, Field(gt=0, le=4)], ...], Field(strict=False, min_length=1)]
    labels_per_class: Positive
    val_per_class: Positive
    unfreeze_top: Count
    dropout: Share
    fine_tune_lr_factor: Fraction
    fit: FitParams
    fine_tune_epochs: Positive


class LocalizerParams(Section):
    backbone: Literal["classifier", "none"]
    box_loss_weight: float = Field(gt=0)
    dropout: Share
    fit: FitParams


class UnetParams(Section):
    filters: Sizes
    multiclass: bool
    dice_weight: float = Field(ge=0)
    fit: FitParams


class EvaluateParams(Section):
    gradcam_examples: Annotated[int, Field(ge=0, le=MAX_FIGURE_EXAMPLES)]
    overlay_examples: Annotated[int, Field(ge=0, le=MAX_FIGURE_EXAMPLES)]


class TrackingParams(Section):
    """Where MLflow records runs and holds the registry (null uri: the embedded store)."""

    uri: str | None
    experiment: str = Field(min_length=1)
    timeout_s: float = Field(gt=0)
    fallback_local: bool


class OrchestrateParams(Section):
    """How the Prefect flow runs the stages (cnnpipe/flows/dvc.py); no stage depends on it."""

    stage_timeout_s: float = Field(gt=0)  # every stage not named in stage_timeouts
    # stage (``evaluate@unet``) or foreach group (``evaluate``) -> seconds
    stage_timeouts: dict[str, Annotated[float, Field(gt=0)]]

    def timeout_for(self, stage: str) -> float:
        """The seconds ``stage`` may run: its own entry, its group's (``evaluate`` for
        ``evaluate@unet``), else ``stage_timeout_s``."""
        for key in (stage, stage.split("@")[0]):
            if key in self.stage_timeouts:
                return self.stage_timeouts[key]
        return self.stage_timeout_s


class RegisterParams(Section):
    """Registered model names and the promotion gates of the register stage."""

    classifier_name: str
    transfer_name: str
    localizer_name: str
    unet_name: str
    min_accuracy: Share
    min_transfer_accuracy: Share
    min_mean_iou: Share
    min_dice: Share
    margin: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _names(self) -> RegisterParams:
        names = [self.classifier_name, self.transfer_name, self.localizer_name, self.unet_name]
        if not all(names) or len(set(names)) != len(names):
            raise Invalid(None, f"model names must be non-empty and distinct, got {names}")
        return self


with warnings.catch_warnings():
    # Sections `validate` and `register` shadow BaseModel.validate (deprecated) and
    # ABCMeta.register; on an instance, the attribute is still the section.
    warnings.filterwarnings("ignore", message='Field name "(validate|register)"', category=UserWarning)

    class Params(Section):
        """The whole of ``params.yaml``."""

        seed: Annotated[int, Field(ge=0, le=SEED_MAX)]
        paths: Paths
        fetch: FetchParams
        validate: ValidateParams
        prepare: PrepareParams
        augment: AugmentParams
        train: TrainParams
        train_classifier: ClassifierParams
        transfer: TransferParams
        train_localizer: LocalizerParams
        train_unet: UnetParams
        datasets: DatasetsParams
        evaluate: EvaluateParams
        tracking: TrackingParams
        orchestrate: OrchestrateParams
        register: RegisterParams = Field()  # explicit: else pydantic takes ABCMeta.register as its default
