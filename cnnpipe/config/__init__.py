"""Typed, frozen view of ``params.yaml``: loaded once, validated, passed down as arguments.

``params.yaml`` is the one source of every value (the schema in ``schema.py`` declares no
defaults). A params file may instead be an overlay: a top-level ``extends: <file>`` (relative
to the overlay) names its base, and the overlay's mappings are merged into the base's key by
key (anything else, lists included, replaces the base value). Loading rejects unknown keys,
wrong types and out-of-range values with one line naming the dotted key (and the valid
choices, where there is a closed set), so a typo in ``dvc exp run -S`` fails fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cnnpipe.config.datasets import (
    DEFAULT_IMAGE_SIZE,
    OXFORD_CLASSES,
    DatasetParams,
    DatasetsParams,
)
from cnnpipe.config.messages import describe
from cnnpipe.config.schema import (
    BACKBONES,
    DATASETS,
    PRECISIONS,
    SCHEDULES,
    STRATEGIES,
    AugmentParams,
    ClassifierParams,
    EvaluateParams,
    FetchParams,
    FitParams,
    LocalizerParams,
    Params,
    Paths,
    PrepareParams,
    RegisterParams,
    ScenesParams,
    TrackingParams,
    TrainParams,
    TransferParams,
    UnetParams,
    ValidateParams,
)
from cnnpipe.errors import CnnpipeError

__all__ = [
    "BACKBONES", "DATASETS", "DEFAULT_IMAGE_SIZE", "OXFORD_CLASSES", "PRECISIONS", "SCHEDULES", "STRATEGIES",
    "AugmentParams", "ClassifierParams", "DatasetParams", "DatasetsParams", "EvaluateParams", "FetchParams",
    "FitParams", "LocalizerParams", "Params", "ParamsError", "Paths", "PrepareParams", "RegisterParams",
    "ScenesParams", "TrackingParams", "TrainParams", "TransferParams", "UnetParams", "ValidateParams",
    "EXTENDS", "load_params", "merge", "params_from_dict", "read_params", "to_dict",
]

EXTENDS = "extends"  # top-level key of an overlay: the file it is merged onto


class ParamsError(CnnpipeError, ValueError):
    """params.yaml (or an override) is invalid; the message names the key and the problem."""


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` deep-merged onto ``base`` (new dict): mappings merge key by key, any other
    value (a list, a scalar, null) replaces the base's."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a params file, its ``extends`` chain resolved; not validated."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ParamsError(f"{path}: {EXTENDS} loops back to itself")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    base = data.pop(EXTENDS, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ParamsError(f"{path}: {EXTENDS}: expected a file name, got {type(base).__name__} {base!r}")
    return merge(read_params(path.parent / base, (*_seen, path.resolve())), data)


def params_from_dict(data: dict[str, Any]) -> Params:
    """Validate a complete parsed params mapping; raises :class:`ParamsError` naming the bad key."""
    if not isinstance(data, dict):
        raise ParamsError(f"params: expected a mapping, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(describe(err, Params)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read (resolving ``extends``) and validate a params file."""
    return params_from_dict(read_params(path))


def to_dict(obj: BaseModel) -> dict[str, Any]:
    """Plain-dict form (tuples as lists), e.g. for logging params to MLflow."""
    return obj.model_dump(mode="json")
