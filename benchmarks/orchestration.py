"""Orchestration cost: a no-op ``dvc repro`` and a no-op ``cnnpipe run`` (every stage up to date)
side by side, with nothing started (Prefect's temporary server) and with the project's Prefect
server running (``cnnpipe server start``); and MLflow's logging time per epoch. Against a temp
copy of the project, never the project.

``python -m benchmarks.orchestration PROJECT`` runs the side-by-side part alone on an up-to-date
project (e.g. a tiny copy reproduced once); targets: ``cnnpipe run`` at most 8x ``dvc repro``
with nothing started, 4x with the server."""

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
               DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")  # a loaded machine: slow, not failed
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
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

        side = noop_side_by_side(root, env, repeats)
        result.data.update(side)
        for label, key in (("no-op dvc repro", "dvc_repro_noop_s"),
                           ("no-op cnnpipe run, nothing started", "cnnpipe_run_noop_s"),
                           ("no-op cnnpipe run, server running", "cnnpipe_run_noop_server_s")):
            if side.get(key):
                ratio = "" if key == "dvc_repro_noop_s" else f", {side[key + '_ratio']:.1f}x dvc repro"
                result.row(label, f"{min(side[key]):.1f}-{max(side[key]):.1f} s", f"{len(side[key])} runs{ratio}")
        if side.get("server_error"):
            result.row("no-op cnnpipe run, server running", "-", side["server_error"])

        ms = mlflow_epoch_ms(Path(tmp), ctx.pick(10, 40))
        result.data["mlflow_ms_per_epoch"] = {k: round(v, 2) for k, v in ms.items()}
        result.row("MLflow logging per epoch", f"{ms['median']:.1f} ms",
                   f"median of {ctx.pick(10, 40)} epochs (p95 {ms['p95']:.1f} ms), 4 metrics, embedded SQLite store")
    return result


def _noop_flow(root: Path, env: dict[str, str]) -> float:
    seconds, out = _run([sys.executable, "-m", "cnnpipe.cli", "run"], root, env)
    ran = [line for line in out.splitlines() if line.endswith((": ran", ": failed", ": restored"))]
    if ran:
        raise RuntimeError(f"the no-op flow ran a stage ({ran}); the project is not up to date:\n{out[-800:]}")
    return seconds


def noop_side_by_side(root: Path, env: dict[str, str], repeats: int) -> dict:
    """Interleaved no-op ``dvc repro`` and ``cnnpipe run`` (the same machine load for both),
    first with nothing started, then with ``cnnpipe server start`` running (stopped after)."""
    _run(["dvc", "repro"], root, env)  # warm DVC's state db and the OS cache
    _noop_flow(root, env)  # and create the Prefect home's database (once per user, not per run)
    out: dict = {"dvc_repro_noop_s": [], "cnnpipe_run_noop_s": [], "cnnpipe_run_noop_server_s": []}
    for _ in range(repeats):
        out["dvc_repro_noop_s"].append(round(_run(["dvc", "repro"], root, env)[0], 2))
        out["cnnpipe_run_noop_s"].append(round(_noop_flow(root, env), 2))
    server_env = dict(env)
    try:
        _, started = _run([sys.executable, "-m", "cnnpipe.cli", "server", "start"], root, env)
    except RuntimeError as err:  # e.g. no `cnnpipe server` in this checkout
        out["server_error"] = f"cnnpipe server start failed: {str(err)[-200:]}"
    else:
        try:
            server_env["PREFECT_API_URL"] = started.split(" on ", 1)[1].split()[0].rstrip("/") + "/api"
            _noop_flow(root, server_env)  # the first run against a fresh server registers the flow
            for _ in range(repeats):
                out["dvc_repro_noop_s"].append(round(_run(["dvc", "repro"], root, env)[0], 2))
                out["cnnpipe_run_noop_server_s"].append(round(_noop_flow(root, server_env), 2))
        finally:
            _run([sys.executable, "-m", "cnnpipe.cli", "server", "stop"], root, env)
    dvc = statistics.median(out["dvc_repro_noop_s"])
    for key in ("cnnpipe_run_noop_s", "cnnpipe_run_noop_server_s"):
        if out[key]:
            out[key + "_ratio"] = round(statistics.median(out[key]) / dvc, 2)
    return out


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


if __name__ == "__main__":
    import json

    project = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(prefix="cnnpipe-bench-orch-") as home:
        print(json.dumps(noop_side_by_side(project, _env(Path(home)), int(sys.argv[2]) if len(sys.argv) > 2 else 3),
                         indent=2))
