"""Orchestration cost: a no-op ``dvc repro``, a no-op Prefect flow (every stage skipped) and
MLflow's logging time per epoch, all against a temp copy of the project, never the project."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.runner import Context, Result

# The DVC outputs a no-op run needs in place, copied (never linked) from the project.
OUTPUTS = ("data", "models", "metrics", "plots", "reports")


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in ("MLFLOW_TRACKING_URI", "CNNPIPE_PARENT_RUN_ID", "CNNPIPE_PREFECT_FLOW_RUN_ID", "PREFECT_API_URL"):
        env.pop(var, None)  # the copy's own embedded stores and a temporary Prefect server
    env.update(PREFECT_HOME=str(root / ".prefect-home"), DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}")
    return seconds, proc.stdout + proc.stderr


def project_copy(ctx: Context, dest: Path) -> Path:
    """The project as committed with its ``dvc.lock`` (``git archive`` of the last commit that
    changed it: the code and stages that produced the outputs) plus copies of the DVC outputs,
    as a fresh git + DVC repo, its lock re-committed to match (``dvc commit``)."""
    env = _env(dest)
    root = dest / "project"
    root.mkdir(parents=True)
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", "dvc.lock"], cwd=ctx.root,
                            capture_output=True, text=True, check=True).stdout.strip() or "HEAD"
    archive = subprocess.run(["git", "archive", commit], cwd=ctx.root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x"], cwd=root, input=archive, check=True)
    for name in OUTPUTS:
        if (ctx.root / name).exists():
            shutil.copytree(ctx.root / name, root / name, dirs_exist_ok=True)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    _run([*git, "init", "-q"], root, env)
    _run([*git, "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "bench copy"], root, env)
    _run(["dvc", "commit", "-f", "-q"], root, env, timeout=900)
    return root


def run(ctx: Context) -> Result:
    result = Result()
    repeats = ctx.pick(1, 3)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-bench-orch-") as tmp:
        start = time.perf_counter()
        root = project_copy(ctx, Path(tmp))
        result.data["copy_and_dvc_commit_s"] = round(time.perf_counter() - start, 1)
        env = _env(Path(tmp))

        dvc = [_run(["dvc", "repro"], root, env)[0] for _ in range(repeats + 1)][1:]  # first: DVC's state db
        result.data["dvc_repro_noop_s"] = [round(s, 2) for s in dvc]
        result.row("no-op dvc repro", f"{min(dvc):.2f}-{max(dvc):.2f} s", f"{len(dvc)} runs, every stage up to date")

        flow = []
        for _ in range(repeats):
            seconds, out = _run([sys.executable, "-m", "cnnpipe.cli", "run"], root, env)
            if any(line.endswith((": ran", ": failed")) for line in out.splitlines()):
                raise RuntimeError(f"the no-op flow ran a stage:\n{out[-800:]}")
            flow.append(seconds)
        result.data["prefect_flow_noop_s"] = [round(s, 2) for s in flow]
        result.row("no-op Prefect flow (cnnpipe run)", f"{min(flow):.1f}-{max(flow):.1f} s",
                   f"{len(flow)} runs, temporary Prefect server, every stage skipped by DVC")

        ms = mlflow_epoch_ms(Path(tmp), ctx.pick(10, 40))
        result.data["mlflow_ms_per_epoch"] = {k: round(v, 2) for k, v in ms.items()}
        result.row("MLflow logging per epoch", f"{ms['median']:.1f} ms",
                   f"median of {ctx.pick(10, 40)} epochs (p95 {ms['p95']:.1f} ms), 4 metrics, embedded SQLite store")
    return result


def mlflow_epoch_ms(tmp: Path, epochs: int) -> dict[str, float]:
    """The stages' epoch callback (``cnnpipe.tracking.keras.MlflowEpochLogger``) logging a classifier
    epoch's logs."""
    from cnnpipe.config import load_params
    from cnnpipe.tracking.connection import connect
    from cnnpipe.tracking.keras import MlflowEpochLogger

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        conn = connect(load_params(Path(__file__).resolve().parents[1] / "params.yaml").tracking, tmp / "mlflow-store")
        client = conn.client()
        run = client.create_run(conn.experiment_id())
        logger = MlflowEpochLogger(run.info.run_id, conn)
        times = []
        for epoch in range(epochs):
            logs = {"accuracy": 0.9 + epoch * 1e-3, "loss": 0.6, "val_accuracy": 0.91, "val_loss": 0.64}
            start = time.perf_counter()
            logger.on_epoch_end(epoch, logs)
            times.append((time.perf_counter() - start) * 1e3)
        client.set_terminated(run.info.run_id)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    times.sort()
    return {"median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))], "max": times[-1]}
