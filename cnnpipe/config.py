"""Typed, frozen view of ``params.yaml``: loaded once, validated, passed down as arguments.

Every section is a frozen dataclass. Loading rejects unknown keys, wrong types and
out-of-range values with a message that names the key (and the valid choices, where
there is a closed set), so a typo in ``dvc exp run -S`` fails fast instead of silently
training with a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnpipe.errors import CnnpipeError
from cnnpipe.taskspec import DATASET_FORMATS


class ParamsError(CnnpipeError, ValueError):
    """params.yaml (or an override) is invalid; the message names the key and the problem."""


def _choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParamsError(f"{where}: unsupported value {value!r}; choose one of: {', '.join(choices)}")


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise ParamsError(f"{where}: must be > 0, got {value!r}")


def _fraction(where: str, value: float, *, closed: bool = False) -> None:
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ParamsError(f"{where}: must be in {interval}, got {value!r}")


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes; dvc.yaml templates its deps/outs from the same keys."""

    raw: str = "data/raw"
    prepared: str = "data/prepared"
    models: str = "models"
    metrics: str = "metrics"
    plots: str = "plots"
    reports: str = "reports"


# fashion-mnist: pinned content hashes and class names; idx: any MNIST-like set of the same
# four files (hashes recorded, not checked), class names from fetch.class_names.
DATASETS = ("fashion-mnist", "idx")


@dataclass(frozen=True)
class FetchParams:
    dataset: str = "fashion-mnist"
    # Sources, tried in this order; the first that yields verified files wins.
    local_dir: str | None = None
    system_dir: str | None = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist
    url: str | None = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    timeout_s: float = 30.0  # per HTTP request; a dead mirror must not hang a scheduled run
    retries: int = 2  # extra download attempts per file, with back-off
    class_names: tuple[str, ...] | None = None  # idx only; null means "0".."9"

    def __post_init__(self) -> None:
        _choice("fetch.dataset", self.dataset, DATASETS)
        if self.class_names is not None:
            if self.dataset == "fashion-mnist":
                raise ParamsError("fetch.class_names: fashion-mnist has fixed class names; set it only for dataset idx")
            if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
                raise ParamsError(f"fetch.class_names: need at least 2 distinct names, got {self.class_names!r}")
        _positive("fetch.timeout_s", self.timeout_s)
        if self.retries < 0:
            raise ParamsError(f"fetch.retries: must be >= 0, got {self.retries!r}")


@dataclass(frozen=True)
class ValidateParams:
    # Largest allowed |share_of_class - 1/n_classes| * n_classes, per split. Fashion-MNIST
    # is exactly balanced; 0.1 tolerates small user subsets without hiding a missing class.
    balance_tolerance: float = 0.1

    def __post_init__(self) -> None:
        _fraction("validate.balance_tolerance", self.balance_tolerance, closed=True)


@dataclass(frozen=True)
class ScenesParams:
    """The localization/segmentation benchmark: keep these defaults (harder is fine, easier is not)."""

    canvas: int = 64
    n_train: int = 20000
    n_val: int = 2000  # from the validation items carved out of train (early stopping)
    n_test: int = 2000
    min_side: int = 20  # the pasted item's longer side, in pixels, drawn uniformly
    max_side: int = 48
    clutter: int = 6  # fragments of other items per scene
    clutter_min: int = 8  # fragment side, pixels
    clutter_max: int = 12
    noise_std: float = 0.05  # additive Gaussian noise, in [0, 1] intensity units
    mask_threshold: float = 0.1  # mask = item pixels >= this fraction of the item's peak

    def __post_init__(self) -> None:
        for name in ("canvas", "n_train", "n_val", "n_test", "min_side", "max_side", "clutter_min", "clutter_max"):
            _positive(f"prepare.scenes.{name}", getattr(self, name))
        if self.clutter < 0:
            raise ParamsError(f"prepare.scenes.clutter: must be >= 0, got {self.clutter!r}")
        if self.min_side > self.max_side:
            raise ParamsError(
                f"prepare.scenes.min_side ({self.min_side}) must be <= max_side ({self.max_side})"
            )
        if self.max_side > self.canvas:
            raise ParamsError(
                f"prepare.scenes.max_side: an item of {self.max_side} px does not fit the "
                f"{self.canvas} px canvas"
            )
        if self.clutter_min > self.clutter_max or self.clutter_max > self.canvas:
            raise ParamsError(
                "prepare.scenes: need clutter_min <= clutter_max <= canvas, got "
                f"{self.clutter_min}, {self.clutter_max}, {self.canvas}"
            )
        if self.noise_std < 0:
            raise ParamsError(f"prepare.scenes.noise_std: must be >= 0, got {self.noise_std!r}")
        _fraction("prepare.scenes.mask_threshold", self.mask_threshold)


@dataclass(frozen=True)
class PrepareParams:
    val_fraction: float = 0.1  # stratified, carved from train; test stays untouched
    scenes: ScenesParams = field(default_factory=ScenesParams)
    # 0: each scenes split as single arrays (the default run's outputs). N > 0: composed,
    # written and streamed at training time in shards of N scenes, so memory stays flat
    # however large prepare.scenes.n_* grow (cnnpipe/data/shards.py). Kept out of
    # params.yaml so the committed dvc.lock holds: set it with `dvc exp run -S`.
    shard_size: int = 0

    def __post_init__(self) -> None:
        _fraction("prepare.val_fraction", self.val_fraction)
        if self.shard_size < 0:
            raise ParamsError(f"prepare.shard_size: must be >= 0 (0 = no shards), got {self.shard_size!r}")


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the train-time augmentation; each training stage says whether it uses it."""

    flip: bool = True  # horizontal only: clothes are left/right symmetric, not up/down
    shift: float = 0.1  # fraction of the side
    rotation: float = 0.0  # fraction of a full turn (keras RandomRotation factor)
    zoom: float = 0.0  # fraction of the side

    def __post_init__(self) -> None:
        for name in ("shift", "rotation", "zoom"):
            _fraction(f"augment.{name}", getattr(self, name), closed=True)


SCHEDULES = ("cosine", "constant")
# auto: mixed_bfloat16 where the CPU computes bfloat16 natively (AVX512-BF16/AMX: ~2x faster
# training here, same accuracy), else float32 (emulated bfloat16 would be slower).
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


@dataclass(frozen=True)
class FitParams:
    """One recipe shape for every model; each training section holds its own values."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4  # AdamW
    schedule: str = "cosine"  # cosine decay after a short warm-up; constant for debugging
    warmup_epochs: float = 0.5
    patience: int = 5  # early stopping on the validation loss
    augment: bool = True
    steps_per_epoch: int | None = None  # null: one pass over the training set per epoch
    precision: str = "auto"

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        if self.steps_per_epoch is not None:
            _positive("steps_per_epoch", self.steps_per_epoch)
        _positive("batch_size", self.batch_size)
        _positive("learning_rate", self.learning_rate)
        if self.weight_decay < 0:
            raise ParamsError(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        _choice("schedule", self.schedule, SCHEDULES)
        if self.warmup_epochs < 0:
            raise ParamsError(f"warmup_epochs: must be >= 0, got {self.warmup_epochs!r}")
        _positive("patience", self.patience)
        _choice("precision", self.precision, PRECISIONS)

    def steps(self, n_examples: int) -> int:
        """Optimizer steps per epoch for ``n_examples`` training examples."""
        return self.steps_per_epoch or max(1, n_examples // self.batch_size)


# default: one device; mirrored: every local GPU (synchronous); multi_worker: several hosts
# named in the TF_CONFIG environment variable (tf.distribute.MultiWorkerMirroredStrategy).
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclass(frozen=True)
class TrainParams:
    """How every training stage runs, not what it computes: no stage lists it in dvc.yaml
    (like ``tracking``), so switching strategy re-runs nothing. ``fit.batch_size`` stays the
    global batch, split over the replicas."""

    strategy: str = "default"

    def __post_init__(self) -> None:
        _choice("train.strategy", self.strategy, STRATEGIES)


@dataclass(frozen=True)
class ClassifierParams:
    filters: tuple[int, ...] = (32, 64, 128)  # one conv block per entry, each halving the side
    convs_per_block: int = 2
    dense: int = 256  # hidden units of a flatten head; 0 = global-average-pool head
    dropout: float = 0.3
    label_smoothing: float = 0.1
    fit: FitParams = field(default_factory=FitParams)

    def __post_init__(self) -> None:
        if self.dense < 0:
            raise ParamsError(f"train_classifier.dense: must be >= 0, got {self.dense!r}")
        if not self.filters or any(f <= 0 for f in self.filters):
            raise ParamsError(f"train_classifier.filters: need positive ints, got {self.filters!r}")
        _positive("train_classifier.convs_per_block", self.convs_per_block)
        _fraction("train_classifier.dropout", self.dropout, closed=True)
        _fraction("train_classifier.label_smoothing", self.label_smoothing, closed=True)


BACKBONES = ("classifier", "mobilenet_v2", "none")


@dataclass(frozen=True)
class TransferParams:
    backbone: str = "classifier"  # this pipeline's own classifier: always available offline
    # keras.applications backbones only: "imagenet" (download or keras cache), a path to a
    # weights file, or null for random init.
    weights: str | None = "imagenet"
    image_size: int = 96  # input side for keras.applications backbones
    # classifier/none backbones: the input resized by each factor, features max-pooled per
    # scale and concatenated (an image pyramid: items of 20-48 px meet a base trained on 28 px)
    scales: tuple[float, ...] = (1.25, 1.0, 0.75, 0.55)
    labels_per_class: int = 20  # the few-label budget of the new task
    val_per_class: int = 20
    unfreeze_top: int = 4  # weighted layers of the base trained in the fine-tuning phase
    dropout: float = 0.3
    fine_tune_lr_factor: float = 0.1  # fine-tuning rate = head rate * this
    fit: FitParams = field(default_factory=FitParams)
    fine_tune_epochs: int = 10

    def __post_init__(self) -> None:
        _choice("transfer.backbone", self.backbone, BACKBONES)
        _positive("transfer.image_size", self.image_size)
        if not self.scales or any(not 0 < f <= 4 for f in self.scales):
            raise ParamsError(f"transfer.scales: need one or more factors in (0, 4], got {self.scales!r}")
        _positive("transfer.labels_per_class", self.labels_per_class)
        _positive("transfer.val_per_class", self.val_per_class)
        if self.unfreeze_top < 0:
            raise ParamsError(f"transfer.unfreeze_top: must be >= 0, got {self.unfreeze_top!r}")
        _fraction("transfer.fine_tune_lr_factor", self.fine_tune_lr_factor)
        _fraction("transfer.dropout", self.dropout, closed=True)
        _positive("transfer.fine_tune_epochs", self.fine_tune_epochs)


@dataclass(frozen=True)
class LocalizerParams:
    backbone: str = "classifier"  # "classifier" reuses the trained conv base; "none" = scratch
    box_loss_weight: float = 5.0
    dropout: float = 0.2
    fit: FitParams = field(default_factory=FitParams)

    def __post_init__(self) -> None:
        _choice("train_localizer.backbone", self.backbone, ("classifier", "none"))
        _positive("train_localizer.box_loss_weight", self.box_loss_weight)
        _fraction("train_localizer.dropout", self.dropout, closed=True)


@dataclass(frozen=True)
class UnetParams:
    filters: tuple[int, ...] = (16, 32, 64, 128)  # encoder levels; the decoder mirrors them
    multiclass: bool = False  # False: one sigmoid channel; True: softmax over background + classes
    dice_weight: float = 1.0  # loss = crossentropy + dice_weight * (1 - dice)
    fit: FitParams = field(default_factory=FitParams)

    def __post_init__(self) -> None:
        if not self.filters or any(f <= 0 for f in self.filters):
            raise ParamsError(f"train_unet.filters: need positive ints, got {self.filters!r}")
        if self.dice_weight < 0:
            raise ParamsError(f"train_unet.dice_weight: must be >= 0, got {self.dice_weight!r}")


@dataclass(frozen=True)
class EvaluateParams:
    gradcam_examples: int = 8
    overlay_examples: int = 16

    def __post_init__(self) -> None:
        for name in ("gradcam_examples", "overlay_examples"):
            if getattr(self, name) < 0:
                raise ParamsError(f"evaluate.{name}: must be >= 0, got {getattr(self, name)!r}")


OXFORD_CLASSES = ("species", "breed")
DEFAULT_IMAGE_SIZE = 64  # side images of files are resized to when image_size is null


@dataclass(frozen=True)
class DatasetParams:
    """Where one task's data comes from. Only ``format`` is needed for the defaults."""

    format: str = ""  # required: one of DATASET_FORMATS[task]
    path: str | None = None  # a directory (idx, folders, oxford_pet) or a CSV file; absolute for `dvc exp`
    url: str | None = None  # oxford_pet only: a .tar(.gz) holding the layout, or the base of the official two
    image_size: int | None = None  # square side the images are resized to; null: IDX header size, else 64
    channels: int = 1  # 1 = grayscale, 3 = RGB: every image is converted (the backbones are shared)
    classes: str = "species"  # oxford_pet: species (cat/dog) or breed (37)
    image_root: str | None = None  # csv: where its `file` column is relative to (null: the CSV's folder)
    test_fraction: float = 0.2  # held out (seeded, stratified) when the data names no test split
    class_names: tuple[str, ...] | None = None  # idx / segmentation index masks: names of labels 0.. (else "0", "1", ..)

    def check(self, task: str) -> None:
        where = f"datasets.{task}"
        _choice(f"{where}.format", self.format, DATASET_FORMATS[task])
        default = self.format == DATASET_FORMATS[task][0]
        if default and (self.path or self.url):
            raise ParamsError(f"{where}: format {self.format!r} is built in; path/url apply to the other formats")
        if self.format == "oxford_pet":
            if bool(self.path) == bool(self.url):
                raise ParamsError(f"{where}: oxford_pet needs exactly one of path (a directory) or url")
            _choice(f"{where}.classes", self.classes, OXFORD_CLASSES)
        elif not default:
            if self.url:
                raise ParamsError(f"{where}.url: only oxford_pet downloads; give path for format {self.format!r}")
            if not self.path:
                raise ParamsError(f"{where}.path: format {self.format!r} needs a path")
        if self.image_root and self.format != "csv":
            raise ParamsError(f"{where}.image_root: only for format csv")
        if self.image_size is not None and not 8 <= self.image_size <= 1024:
            raise ParamsError(f"{where}.image_size: must be in [8, 1024] pixels, got {self.image_size!r}")
        _choice(f"{where}.channels", str(self.channels), ("1", "3"))
        _fraction(f"{where}.test_fraction", self.test_fraction)
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise ParamsError(f"{where}.class_names: names must be distinct, got {self.class_names!r}")

    def side(self, native: int | None = None) -> int:
        """The side images are resized to: ``image_size``, else ``native`` (IDX), else 64."""
        return self.image_size or native or DEFAULT_IMAGE_SIZE


@dataclass(frozen=True)
class DatasetsParams:
    """Each task's data: ``dvc exp run -S datasets.segmentation.format=folders -S ...path=DIR``."""

    classification: DatasetParams = field(default_factory=lambda: DatasetParams("fashion_mnist"))
    localization: DatasetParams = field(default_factory=lambda: DatasetParams("scenes"))
    segmentation: DatasetParams = field(default_factory=lambda: DatasetParams("scenes"))

    def __post_init__(self) -> None:
        for task in DATASET_FORMATS:
            getattr(self, task).check(task)
        loc, seg = self.localization, self.segmentation
        # Both read from one prepared directory then (data/prepared/oxford_pet): one source.
        if loc.format == seg.format == "oxford_pet" and dataclasses.astuple(loc) != dataclasses.astuple(seg):
            raise ParamsError("datasets: localization and segmentation both use oxford_pet, so they must "
                              "name the same source and options (they share data/prepared/oxford_pet)")


@dataclass(frozen=True)
class TrackingParams:
    """Where MLflow records runs and holds the registry; the default needs no server."""

    # None: the embedded store, SQLite ``mlflow.db`` + ``mlartifacts/`` at absolute paths in the
    # project root (a ``dvc exp`` temp copy must not lose runs). Env MLFLOW_TRACKING_URI wins.
    uri: str | None = None
    experiment: str = "cnnpipe"
    # Reachability check of an HTTP server: MLflow's own client retries for minutes, and a
    # scheduled run must fail in seconds naming the URI instead.
    timeout_s: float = 5.0
    fallback_local: bool = False  # unreachable server: log to the embedded store (and say so)

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ParamsError("tracking.experiment: must not be empty")
        _positive("tracking.timeout_s", self.timeout_s)


@dataclass(frozen=True)
class RegisterParams:
    """Registered model names and the promotion gates of the register stage.

    A challenger becomes @champion only if its gate metric on the test set reaches the floor
    and beats the champion's (measured on the same test set) by more than 0 and at least
    ``margin``. The floors refuse a broken model; they are not quality targets.
    """

    classifier_name: str = "cnnpipe-classifier"
    transfer_name: str = "cnnpipe-transfer"
    localizer_name: str = "cnnpipe-localizer"
    unet_name: str = "cnnpipe-unet"
    min_accuracy: float = 0.85  # classifier test accuracy (a small CNN reaches ~0.9)
    min_transfer_accuracy: float = 0.5  # fine-tuned few-label scene classifier (chance: 0.1)
    min_mean_iou: float = 0.5  # localizer mean box IoU
    min_dice: float = 0.7  # U-Net foreground Dice
    margin: float = 0.0  # absolute; 0 still needs a strict improvement (a tie keeps the champion)

    def __post_init__(self) -> None:
        names = [self.classifier_name, self.transfer_name, self.localizer_name, self.unet_name]
        if not all(names) or len(set(names)) != len(names):
            raise ParamsError(f"register: model names must be non-empty and distinct, got {names}")
        for key in ("min_accuracy", "min_transfer_accuracy", "min_mean_iou", "min_dice"):
            _fraction(f"register.{key}", getattr(self, key), closed=True)
        if not 0 <= self.margin < 1:
            raise ParamsError(f"register.margin: must be in [0, 1), got {self.margin!r}")


@dataclass(frozen=True)
class Params:
    seed: int = 42
    paths: Paths = field(default_factory=Paths)
    fetch: FetchParams = field(default_factory=FetchParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    train: TrainParams = field(default_factory=TrainParams)
    train_classifier: ClassifierParams = field(default_factory=ClassifierParams)
    transfer: TransferParams = field(default_factory=TransferParams)
    train_localizer: LocalizerParams = field(default_factory=LocalizerParams)
    train_unet: UnetParams = field(default_factory=UnetParams)
    datasets: DatasetsParams = field(default_factory=DatasetsParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    register: RegisterParams = field(default_factory=RegisterParams)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _coerce(where: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML shapes (list -> tuple)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ParamsError(f"{where}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, inner[0], value)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(f"{where}[{i}]", item_tp, v) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {where}")  # a bug in this module


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where or 'params'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ParamsError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(f"{where}.{name}" if where else name, hints[name], data[name])
    try:
        return cls(**kwargs)
    except ParamsError as err:
        # FitParams is shared by several sections: prefix its bare key names with the section.
        msg = str(err)
        if where and not msg.startswith(where):
            msg = f"{where}.{msg}"
        raise ParamsError(msg) from None


def params_from_dict(data: dict[str, Any]) -> Params:
    """Validate a parsed params mapping; raises :class:`ParamsError` naming the bad key."""
    return _build(Params, data, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(data or {})


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form (tuples as lists), e.g. for logging params to MLflow."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))
