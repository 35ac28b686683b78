"""One line per params problem: pydantic's first error, told with the dotted key.

``unknown key(s) train_classifier.fit.epochz; valid keys of train_classifier.fit: epochs, ...``,
``transfer.backbone: unsupported value 'x'; choose one of: classifier, mobilenet_v2, none``,
``train_classifier.fit.epochs: must be > 0, got 0``.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from cnnpipe.config.base import Invalid

EXPECTED = {
    "int": "an integer", "float": "a number", "bool": "true/false", "string": "a string",
    "tuple": "a list", "list": "a list", "model": "a mapping", "dict": "a mapping",
    "model_attributes": "a mapping",
}
SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section class an annotation holds (``X`` or ``X | None``), if any."""
    for tp in (annotation, *typing.get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None, Any]:
    """Dotted key of ``loc``, the section holding its last key, and that key's field (or item) type."""
    key, owner, annotation = "", model, None
    current: type[BaseModel] | None = model
    for part in loc:
        if current is not None and isinstance(part, str) and part in current.model_fields:
            info = current.model_fields[part]
            key, owner = f"{key}.{part}" if key else part, current
            annotation = info  # FieldInfo: its own metadata holds the range
            current = _model_of(info.annotation)
        elif isinstance(part, int):
            key += f"[{part}]"
            annotation = _item_type(annotation)
            current = None
        elif current is not None and isinstance(part, str):
            key = f"{key}.{part}" if key else part  # an unknown key: its owner is `current`
            owner, current = current, None
        elif isinstance(part, str) and (value := _value_type(annotation)) is not None:
            key, annotation = f"{key}.{part}", value  # an entry of a mapping field
        # else: a union member tag such as 'str' or 'none': not part of the key
    return key, owner, annotation


def _item_type(annotation: Any) -> Any:
    """The item type of a tuple field (a FieldInfo or a type), through ``| None`` and Annotated."""
    tp = annotation.annotation if isinstance(annotation, FieldInfo) else annotation
    for candidate in (tp, *typing.get_args(tp)):
        if typing.get_origin(candidate) is typing.Annotated:
            candidate = typing.get_args(candidate)[0]
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)[0]
    return None


def _value_type(annotation: Any) -> Any:
    """The value type of a ``dict`` field (a FieldInfo or a type), else None."""
    tp = annotation.annotation if isinstance(annotation, FieldInfo) else annotation
    for candidate in (tp, *typing.get_args(tp)):
        if typing.get_origin(candidate) is dict:
            return typing.get_args(candidate)[1]
    return None


def _bounds(annotation: Any) -> dict[str, Any]:
    """The Gt/Ge/Lt/Le constraints of a field or an ``Annotated`` item type."""
    found: dict[str, Any] = {}
    metadata: list[Any] = []
    if isinstance(annotation, FieldInfo):
        metadata = list(annotation.metadata)
        annotation = annotation.annotation
    for tp in (annotation, *typing.get_args(annotation)):  # X | None: look inside
        for extra in typing.get_args(tp)[1:] if typing.get_origin(tp) is typing.Annotated else ():
            metadata += list(extra.metadata) if isinstance(extra, FieldInfo) else [extra]
    for item in metadata:  # annotated_types.Gt(gt=0) and the like
        found.update({name: getattr(item, name) for name in SIGNS if getattr(item, name, None) is not None})
    return found


def _range(bounds: dict[str, Any]) -> str:
    """``must be in (0, 1)`` for two bounds, ``must be > 0`` for one."""
    low = next(((mark, bounds[k]) for k, mark in (("gt", "("), ("ge", "[")) if k in bounds), None)
    high = next(((mark, bounds[k]) for k, mark in (("lt", ")"), ("le", "]")) if k in bounds), None)
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[1]}{high[0]}"
    name = next(iter(bounds))
    return f"must be {SIGNS[name]} {bounds[name]}"


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` field (or ``Literal | None``)."""
    tp = annotation.annotation if isinstance(annotation, FieldInfo) else annotation
    for candidate in (tp, *typing.get_args(tp)):
        if typing.get_origin(candidate) is Literal:
            return typing.get_args(candidate)
    return ()


def _problem(kind: str, error: dict[str, Any], annotation: Any) -> str:
    value = error.get("input")
    got = f"got {type(value).__name__} {value!r}"
    if kind == "missing":
        return "missing; params.yaml sets every key (an overlay takes the rest from the file it extends)"
    if kind == "literal_error":
        choices = ", ".join(str(c) for c in _choices(annotation))
        return f"unsupported value {value!r}; choose one of: {choices}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{_range(_bounds(annotation) or error.get('ctx', {}))}, got {value!r}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if value is None:
        return "must not be null"
    base = kind.removesuffix("_type").removesuffix("_parsing").removesuffix("_from_float")
    if base in EXPECTED:
        return f"expected {EXPECTED[base]}, {got}"
    return f"{error['msg']}, {got}"  # a kind this schema does not produce today


def describe(err: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first problem of ``err`` (unknown keys first: a typo also reads as missing)."""
    errors = err.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        parent = unknown[0]["loc"][:-1]
        _, owner, _ = _walk(model, unknown[0]["loc"])
        where = _walk(model, parent)[0] if parent else ""
        keys = [_walk(model, e["loc"])[0] for e in unknown if e["loc"][:-1] == parent]
        return (f"unknown key(s) {', '.join(keys)}; valid keys{' of ' + where if where else ''}: "
                f"{', '.join(owner.model_fields)}")
    error = errors[0]
    where, _, annotation = _walk(model, error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, Invalid):
        key = ".".join(k for k in (where, cause.key) if k)
        return f"{key}: {cause.text}" if key else cause.text
    return f"{where or 'params'}: {_problem(error['type'], error, annotation)}"
