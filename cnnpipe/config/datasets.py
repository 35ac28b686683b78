"""The ``datasets`` section: where each task's data comes from (README "Own data")."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cnnpipe.config.base import Fraction, Invalid, Names, Section
from cnnpipe.taskspec import DATASET_FORMATS

OxfordClasses = Literal["species", "breed"]
OXFORD_CLASSES: tuple[str, ...] = typing.get_args(OxfordClasses)
CHANNELS = (1, 3)  # grayscale or RGB
DEFAULT_IMAGE_SIZE = 64  # side images of files are resized to when image_size is null


class DatasetParams(Section):
    """Where one task's data comes from; ``DatasetsParams`` checks it against its task."""

    format: str
    path: str | None
    url: str | None
    image_size: Annotated[int, Field(ge=8, le=1024)] | None
    channels: int
    classes: OxfordClasses
    image_root: str | None
    test_fraction: Fraction
    class_names: Names | None

    @model_validator(mode="after")
    def _options(self) -> DatasetParams:
        if self.channels not in CHANNELS:
            raise Invalid("channels", f"unsupported value {self.channels!r}; choose one of: 1, 3")
        if self.image_root and self.format != "csv":
            raise Invalid("image_root", "only for format csv")
        names = self.class_names
        if names is not None and len(set(names)) != len(names):
            raise Invalid("class_names", f"names must be distinct, got {list(names)!r}")
        return self

    def check(self, task: str) -> None:
        """Raise :class:`Invalid` (key relative to ``datasets``) unless this suits ``task``."""
        formats = DATASET_FORMATS[task]
        if self.format not in formats:
            raise Invalid(f"{task}.format", f"unsupported value {self.format!r}; choose one of: {', '.join(formats)}")
        built_in = self.format == formats[0]
        if built_in and (self.path or self.url):
            raise Invalid(task, f"format {self.format!r} is built in; path/url apply to the other formats")
        if self.format == "oxford_pet":
            if bool(self.path) == bool(self.url):
                raise Invalid(task, "oxford_pet needs exactly one of path (a directory) or url")
        elif not built_in:
            if self.url:
                raise Invalid(f"{task}.url", f"only oxford_pet downloads; give path for format {self.format!r}")
            if not self.path:
                raise Invalid(f"{task}.path", f"format {self.format!r} needs a path")

    def side(self, native: int | None = None) -> int:
        """The side images are resized to: ``image_size``, else ``native`` (IDX), else 64."""
        return self.image_size or native or DEFAULT_IMAGE_SIZE


class DatasetsParams(Section):
    """Each task's data: ``dvc exp run -S datasets.segmentation.format=folders -S ...path=DIR``."""

    classification: DatasetParams
    localization: DatasetParams
    segmentation: DatasetParams

    @model_validator(mode="after")
    def _tasks(self) -> DatasetsParams:
        for task in DATASET_FORMATS:
            getattr(self, task).check(task)
        loc, seg = self.localization, self.segmentation
        # Both read from one prepared directory then (data/prepared/oxford_pet): one source.
        if loc.format == seg.format == "oxford_pet" and loc != seg:
            raise Invalid(None, "localization and segmentation both use oxford_pet, so they must name "
                                "the same source and options (they share data/prepared/oxford_pet)")
        return self
