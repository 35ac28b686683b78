"""The DAG of dvc.yaml, run through DVC, so dvc.lock and the cache stay the single truth.

DVC is asked once, in-process (``dvc.repo.Repo``), what is stale: :func:`plan` reproduces the
probe stages (``always_changed``, the data fingerprints) in-process, then reads ``repo.status()``
and the stage graph; a stale stage is one DVC reports changed, or one downstream of it. Only
those run, each as ``dvc repro --single-item <stage>`` in a subprocess (:func:`run_stage`): a
subprocess because its output is streamed line by line to the caller's log, and because a stage
past its timeout must be killed (its process group) without taking the flow down with it.
Right before a downstream stage runs, DVC is asked again whether it changed: a re-run that wrote
the same bytes leaves it unchanged, and it is skipped without starting DVC.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cnnpipe.errors import CnnpipeError
from cnnpipe.security import redact

KILL_GRACE_S = 10.0  # after SIGTERM, how long a timed-out stage may take to exit before SIGKILL


class StageFailed(CnnpipeError):
    """A DVC stage failed or timed out; the message names it (one line)."""


@dataclass(frozen=True)
class Plan:
    order: list[str]  # every stage, dependencies first; ties keep their dvc.yaml order
    probes: list[str]  # always_changed stages, reproduced by plan() itself
    stale: list[str]  # the stages to run, in ``order``
    upstream: dict[str, frozenset[str]] = field(default_factory=dict)  # stage -> all it depends on


@contextmanager
def _interpreter_on_path() -> Iterator[None]:
    """Stage commands say ``python``: make it this interpreter while DVC runs one in-process."""
    saved = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved or ""])
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def _address(stage: object, root: Path) -> str:
    """How `dvc repro` run in ``root`` names the stage (DVC's own ``addressing`` is relative to
    the caller's cwd)."""
    dvcfile = Path(stage.path).relative_to(root).as_posix()  # type: ignore[attr-defined]
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"  # type: ignore[attr-defined]


def plan(root: str | Path) -> Plan:
    """Reproduce the probe stages, then ask DVC which stages are stale (see the module doc)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = [s for s in repo.index.stages if s.always_changed]
        probes = [_address(s, Path(repo.root_dir)) for s in found]
        if probes:
            try:
                with _interpreter_on_path():  # targets by absolute path: DVC resolves them from the cwd
                    repo.reproduce([f"{s.path}:{s.name}" for s in found], single_item=True)
            except DvcException as err:
                raise StageFailed(redact(f"probe stage(s) {', '.join(probes)} failed: {err}")) from err
    with Repo(str(root)) as repo:  # afresh: the probes rewrote dvc.lock
        top = Path(repo.root_dir)
        stages = list(repo.index.stages)
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {stage: i for i, stage in enumerate(stages)}
        ordered = list(nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: position[s]))
        by_addressing = {s.addressing: s for s in stages}
        changed = {by_addressing[a] for a in repo.status() if a in by_addressing and not by_addressing[a].always_changed}
        stale = set(changed)
        for stage in changed:
            stale |= nx.ancestors(graph, stage)  # everything that depends on it
        return Plan(
            order=[_address(s, top) for s in ordered],
            probes=probes,
            stale=[_address(s, top) for s in ordered if s in stale and not s.always_changed],
            upstream={_address(s, top): frozenset(_address(d, top) for d in nx.descendants(graph, s)) for s in ordered},
        )


def stage_order(root: str | Path) -> list[str]:
    """Stage names of dvc.yaml, dependencies first; ties keep their dvc.yaml order (no probe runs)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        position = {stage: i for i, stage in enumerate(stages)}
        ordered = nx.lexicographical_topological_sort(repo.index.graph.reverse(), key=lambda s: position[s])
        return [_address(stage, Path(repo.root_dir)) for stage in ordered]


def still_changed(root: str | Path, stage: str) -> bool:
    """Whether DVC reports ``stage`` changed now (its upstream may just have re-run)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.lock:
        top = Path(repo.root_dir)
        found = [s for s in repo.index.stages if _address(s, top) == stage]
        if not found:
            raise StageFailed(f"stage {stage!r} is not in {top / 'dvc.yaml'}")
        return bool(found[0].status())


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    status: str  # "ran" | "restored" (DVC's run cache) | "skipped" (unchanged) | "failed" | "timed out"
    returncode: int
    output: str  # DVC's and the stage command's combined stdout/stderr
    timeout_s: float | None = None

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])

    def reason(self) -> str:
        """The stage's own last words: its last output line that is not DVC's closing error."""
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        own = [ln for ln in lines if not ln.startswith(("ERROR: failed to reproduce", "ERROR: failed to run"))]
        return (own or lines or ["no output"])[-1]

    def error(self) -> str:
        """One line naming the stage and why it failed (redacted)."""
        if self.status == "timed out":
            return redact(f"stage {self.stage!r} timed out after {self.timeout_s:g} s (orchestrate.stage_timeout_s / "
                          f"stage_timeouts) and was killed")
        return redact(f"stage {self.stage!r} failed (dvc repro exit {self.returncode}): {self.reason()}")

    def raise_for_failure(self) -> None:
        if self.status in ("failed", "timed out"):
            raise StageFailed(self.error())


def run_stage(
    root: str | Path,
    stage: str,
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float,
    on_line: Callable[[str], None] = lambda line: None,
) -> StageOutcome:
    """``dvc repro --single-item <stage>`` in ``root``, each output line passed to ``on_line`` as it
    comes; past ``timeout_s`` its whole process group (DVC and the stage command) is killed."""
    run_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    run_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), run_env.get("PATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,  # its own process group: a timeout kills the stage command too
    )
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.daemon = True
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            on_line(line)
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted while reading: never leave the stage running
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    output = "\n".join(lines)
    if expired.is_set():
        status = "timed out"
    elif returncode != 0:
        status = "failed"
    elif any("is cached - skipping run" in ln for ln in lines):  # a label only: DVC decided to run it
        status = "restored"
    else:
        status = "ran"
    return StageOutcome(stage, status, returncode, output, timeout_s)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
