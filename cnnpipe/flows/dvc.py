"""The DAG of dvc.yaml, run through DVC: the stage order and one stage at a time, so DVC decides
what is unchanged (and skips it) and dvc.yaml stays the one definition of the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cnnpipe.errors import CnnpipeError
from cnnpipe.security import redact


class StageFailed(CnnpipeError):
    """A DVC stage exited non-zero; the message names it and ends with its output."""


def stage_order(root: str | Path) -> list[str]:
    """Stage names of dvc.yaml, dependencies first; ties keep their dvc.yaml order."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {stage: i for i, stage in enumerate(stages)}
        ordered = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: position[s])
        return [_address(stage, Path(repo.root_dir)) for stage in ordered]


def _address(stage: object, root: Path) -> str:
    """How `dvc repro` run in ``root`` names the stage (DVC's own ``addressing`` is relative to
    the caller's cwd)."""
    dvcfile = Path(stage.path).relative_to(root).as_posix()  # type: ignore[attr-defined]
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    status: str  # "ran" | "skipped" (unchanged) | "restored" (from DVC's run cache) | "failed"
    returncode: int
    output: str  # DVC's and the stage command's combined stdout/stderr

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])

    def raise_for_failure(self) -> None:
        """Raise :class:`StageFailed` (naming the stage, ending with its output, redacted) if it failed."""
        if self.status == "failed":
            raise StageFailed(redact(
                f"stage {self.stage!r} failed (dvc repro exit {self.returncode}):\n{self.tail()}"))


def repro_stage(root: str | Path, stage: str, env: Mapping[str, str] | None = None) -> StageOutcome:
    """``dvc repro --single-item <stage>`` in ``root``; DVC decides whether it runs or skips."""
    run_env = {**os.environ, **(env or {})}
    # Stage commands say `python`: make it this interpreter, whatever PATH the caller had.
    run_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), run_env.get("PATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root, env=run_env, capture_output=True, text=True, check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        status = "failed"
    elif f"Running stage '{stage}'" in output:
        status = "ran"
    elif "is cached - skipping run" in output:
        status = "restored"
    else:  # "Stage '<stage>' didn't change, skipping"
        status = "skipped"
    return StageOutcome(stage, status, proc.returncode, output)
