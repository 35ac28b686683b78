"""Promotion gates, one per task of :mod:`cnnpipe.taskspec`, and the decision they make (pure:
no MLflow here, so every rule is tested on plain numbers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cnnpipe.config import RegisterParams
from cnnpipe.errors import RegistryError
from cnnpipe.taskspec import TASKS, TaskSpec


@dataclass(frozen=True)
class Gate:
    name: str  # registered model name
    task: TaskSpec
    floor: float
    margin: float


def gates(register: RegisterParams) -> dict[str, Gate]:
    """Registered model name -> its gate, from params."""
    return {
        getattr(register, t.name_param): Gate(
            getattr(register, t.name_param), t, getattr(register, t.floor_param), register.margin
        )
        for t in TASKS.values()
    }


def gate_for(register: RegisterParams, name: str) -> Gate:
    """The gate of registered model ``name``; an unknown name lists the known ones."""
    known = gates(register)
    if name not in known:
        raise RegistryError(f"unknown model {name!r}; the registered models are: {', '.join(known)}")
    return known[name]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str,
    floor: float,
    margin: float,
    same_test_set: bool = True,
) -> Decision:
    """Promote iff the challenger's ``metric`` reaches ``floor`` and beats the champion's
    (measured on the same test set) by more than 0 and at least ``margin``."""
    value = challenger.get(metric)
    if value is None or not math.isfinite(value):
        return Decision(False, f"challenger has no finite {metric} (got {value!r})")
    if value < floor:
        return Decision(False, f"{metric} {value:.4f} is below the floor {floor:.4f}")
    if champion is None:
        return Decision(True, f"{metric} {value:.4f} reaches the floor {floor:.4f}; no champion yet")
    if not same_test_set:
        return Decision(False, "the champion was scored on a different test set, so the metrics "
                               "don't compare; re-evaluate it, or promote with --force")
    best = champion.get(metric)
    if best is None or not math.isfinite(best):
        return Decision(True, f"{metric} {value:.4f} reaches the floor; the champion has no {metric}")
    delta = value - best
    if delta <= 0 or delta < margin:
        need = f"by at least {margin:.4f}" if margin > 0 else "strictly"
        return Decision(False, f"{metric} {value:.4f} does not beat the champion's {best:.4f} {need} "
                               f"(difference {delta:+.4f})")
    return Decision(True, f"{metric} {value:.4f} beats the champion's {best:.4f} by {delta:+.4f} "
                          f"(margin {margin:.4f}, floor {floor:.4f})")
