"""What every params section shares: strict frozen models, value types, the cross-field error.

Types are strict (a string is not a number, a bool not an int, NaN/inf no float); ranges are
``Field`` constraints. ``cnnpipe.config.messages`` turns the first problem into one line.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from cnnpipe.errors import CnnpipeError


class ParamsError(CnnpipeError, ValueError):
    """params.yaml (or an override) is invalid; the message names the key and the problem."""


class Invalid(ValueError):
    """A cross-field rule failed: ``key`` (relative to the model, or None for the model itself)
    and what is wrong with it."""

    def __init__(self, key: str | None, text: str) -> None:
        super().__init__(f"{key}: {text}" if key else text)
        self.key, self.text = key, text


class Section(BaseModel):
    """Base of every section: unknown keys fail, values are frozen, no silent coercion."""

    # strict: YAML `epochs: "10"` or `true` for an int fails instead of being converted.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# Value types. Tuples take YAML lists (strict=False on the sequence only; items stay strict).
Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]  # open interval (0, 1)
Share = Annotated[float, Field(ge=0, le=1)]  # closed interval [0, 1]
Sizes = Annotated[tuple[Annotated[StrictInt, Field(gt=0)], ...], Field(strict=False, min_length=1)]
Names = Annotated[tuple[StrictStr, ...], Field(strict=False)]
