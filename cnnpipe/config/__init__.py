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

from cnnpipe.config.base import ParamsError
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

__all__ = [
    "BACKBONES", "DATASETS", "DEFAULT_IMAGE_SIZE", "EXTENDS", "OXFORD_CLASSES", "PRECISIONS", "SCHEDULES",
    "STRATEGIES",
    "AugmentParams", "ClassifierParams", "DatasetParams", "DatasetsParams", "EvaluateParams", "FetchParams",
    "FitParams", "LocalizerParams", "Params", "ParamsError", "Paths", "PrepareParams", "RegisterParams",
    "ScenesParams", "TrackingParams", "TrainParams", "TransferParams", "UnetParams", "ValidateParams",
    "load_params", "merge", "params_from_dict", "read_params", "to_dict",
]

EXTENDS = "extends"  # top-level key of an overlay: the file it is merged onto


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (as DVC does): plain
    PyYAML keeps the last one silently, so ``dvc exp run`` and a stage would disagree."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: overriding it is the point
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise ParamsError(f"line {line}: duplicate key {key!r} (first set on line {first[key]}); "
                                      "give each key once")
            except TypeError:  # an unhashable key: the base class says so
                break
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one line: where, and what."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(err).split())
    context = getattr(err, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


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
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no tags run code
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
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
