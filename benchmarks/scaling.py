"""Scaling benchmark: how time and peak memory grow as the scenes set grows (1x, 2x, 4x, 8x).

For each scale the training scenes (``prepare.scenes.n_train`` x scale; val and test stay at
1x) are composed shard by shard (``prepare.shard_size``) from the real Fashion-MNIST items,
then the U-Net (the stage with the largest per-example targets) trains a **fixed number of
steps** streaming those shards, validation pass included. Each phase runs in its own
process, which reports its own peak RSS (``VmHWM`` of /proc/self/status), so the
numbers are per phase and include the TensorFlow runtime. For contrast, the in-memory path
(``shard_size: 0``: the whole split as arrays) trains at the smaller scales.

Fixed steps rather than one epoch: the per-step cost is what must not grow. Throughput is
timed from step 6 on (the first steps trace and warm up); the epoch time at each scale is
n_train / throughput (``epoch s*``, an estimate). ``train s`` is the whole fit call: the
fixed steps plus one validation pass (fixed size) plus tracing.

    .venv/bin/python benchmarks/scaling.py            # full: 20000 train scenes at 1x
    .venv/bin/python benchmarks/scaling.py --quick    # development: 2000 at 1x, tiny U-Net

Prints a table and writes ``benchmarks/scaling.json`` (``--out``; quick: scaling.quick.json).
``section(ctx)`` runs the same as the ``scaling`` section of ``python -m benchmarks``. Needs the raw
Fashion-MNIST files (``data/raw/fashion-mnist``, the fetch stage's output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 2, 4, 8)
MEMORY_SCALES = (1, 2)  # the in-memory contrast: it grows with the data, so only the small ones


def _peak_mib() -> float:
    """This process's own peak RSS. Linux: ``VmHWM``, the high-water mark of this address space.
    Not ``ru_maxrss``: Linux carries that across fork and exec, so a child of a parent that had
    grown to 2.5 GiB (the full ``make bench`` by the time this section runs) reported 2540 MiB
    at every scale."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


def _profile(quick: bool) -> dict:
    if quick:
        return {"n_train": 2000, "n_val": 200, "shard_size": 500, "steps": 20, "batch_size": 32,
                "filters": [8, 16, 32]}
    # The default U-Net recipe (params.yaml train_unet) on shards of 2048 scenes.
    return {"n_train": 20000, "n_val": 2000, "shard_size": 2048, "steps": 150, "batch_size": 64,
            "filters": [16, 32, 64, 128]}


# ----------------------------------------------------------------------------------------
# Child processes: one phase each, printing one JSON line with its own peak RSS
# ----------------------------------------------------------------------------------------


def child_generate(out: Path, raw: Path, n_train: int, n_val: int, shard_size: int, seed: int) -> dict:
    """Compose the scenes as the prepare stage does with ``shard_size`` (no GX report)."""
    from cnnpipe.config import load_params
    from cnnpipe.data.raw.fetched import read_fetched
    from cnnpipe.data.scenes.shards import write_scene_shards
    from cnnpipe.data.splits import split_items
    from cnnpipe.io import write_json

    start = time.perf_counter()
    fetched = read_fetched(raw)
    items = split_items(*fetched.splits["train"], *fetched.splits["test"], 0.1, seed)
    params = load_params(ROOT / "params.yaml").prepare.scenes.model_copy(
        update={"n_train": n_train, "n_val": n_val, "n_test": n_val})
    out.mkdir(parents=True)
    shards = write_scene_shards(out, items.images, items.labels, params, seed, shard_size)
    write_json(out / "meta.json", {"class_names": fetched.class_names, "shards": shards, "shard_size": shard_size})
    return {"seconds": time.perf_counter() - start, "peak_mib": _peak_mib(), "shards": len(shards["train"])}


WARMUP_STEPS = 5


def child_train(scenes: Path, mode: str, steps: int, batch_size: int, filters: list[int], seed: int) -> dict:
    """Train the U-Net ``steps`` steps on ``scenes``: streamed shards, or the split in memory."""
    import keras

    from cnnpipe.config import load_params
    from cnnpipe.data.prepared import PreparedSet, examples
    from cnnpipe.seeding import set_global_seed
    from cnnpipe.training.outputs import TrainOutputs
    from cnnpipe.training.unet import train_unet

    set_global_seed(seed)
    data = PreparedSet.open(scenes)
    load = data.split if mode == "stream" else data.load
    train, val = load("train"), load("val")
    base = load_params(ROOT / "params.yaml")
    fit = base.train_unet.fit.model_copy(update={
        "epochs": 1, "steps_per_epoch": steps, "batch_size": batch_size, "learning_rate": 0.003,
        "warmup_epochs": 0.0, "patience": 4, "augment": True})
    params = base.train_unet.model_copy(update={"filters": tuple(filters), "fit": fit})
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    with tempfile.TemporaryDirectory() as tmp:
        out = TrainOutputs.named(Path(tmp) / "models", Path(tmp) / "plots", "unet")
        start = time.perf_counter()
        train_unet(train, val, 10, params, base.augment, seed, out, callbacks=(timer,))
        seconds = time.perf_counter() - start
    timed = ends[WARMUP_STEPS:]
    images_per_s = (len(timed) - 1) * batch_size / (timed[-1] - timed[0])
    return {"seconds": seconds, "images_per_s": images_per_s, "peak_mib": _peak_mib(), "n_train": examples(train)}


def _run_child(args: list[str]) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------


def run(quick: bool, raw: Path, workdir: Path, seed: int = 42) -> dict:
    prof = _profile(quick)
    rows = []
    for scale in SCALES:
        n_train = prof["n_train"] * scale
        scenes = workdir / f"scenes-{scale}x"
        gen = _run_child(["--child-generate", str(scenes), "--raw", str(raw), "--n-train", str(n_train),
                          "--n-val", str(prof["n_val"]), "--shard-size", str(prof["shard_size"]),
                          "--seed", str(seed)])
        modes = ("stream", "memory") if scale in MEMORY_SCALES else ("stream",)
        for mode in modes:
            train = _run_child(["--child-train", str(scenes), "--mode", mode, "--steps", str(prof["steps"]),
                                "--batch-size", str(prof["batch_size"]),
                                "--filters", ",".join(map(str, prof["filters"])), "--seed", str(seed)])
            images_per_s = train["images_per_s"]
            rows.append({
                "scale": scale, "mode": mode, "n_train": n_train, "shards": gen["shards"],
                "generate_s": round(gen["seconds"], 1), "generate_peak_mib": round(gen["peak_mib"]),
                "train_s": round(train["seconds"], 1), "images_per_s": round(images_per_s, 1),
                "epoch_s_estimated": round(n_train / images_per_s, 1),
                "train_peak_mib": round(train["peak_mib"]),
            })
            print(_format_row(rows[-1]), flush=True)
        shutil.rmtree(scenes)
    stream = {r["scale"]: r["train_peak_mib"] for r in rows if r["mode"] == "stream"}
    ratio = stream[SCALES[-1]] / stream[SCALES[0]]
    return {
        "benchmark": "scaling",
        "quick": quick,
        "profile": prof,
        "model": "U-Net (train_unet task), binary masks, augmentation on",
        "timing": f"fixed {prof['steps']} training steps per scale; images_per_s over steps "
                  f"{WARMUP_STEPS + 1}..{prof['steps']}; train_s = the fit call (steps + one pass over "
                  f"{prof['n_val']} val scenes + tracing); epoch_s_estimated = n_train / images_per_s",
        "rows": rows,
        "peak_ratio_8x_over_1x": round(ratio, 3),
        "acceptance_peak_ratio_max": 1.5,
        "accepted": ratio <= 1.5,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_start": None, "load_average_end": None},
    }


HEADER = (f"{'scale':>5} {'mode':>6} {'n_train':>8} {'shards':>6} {'gen s':>7} {'gen MiB':>8} "
          f"{'train s':>8} {'img/s':>7} {'epoch s*':>9} {'train MiB':>10}")


def _format_row(r: dict) -> str:
    return (f"{r['scale']:>4}x {r['mode']:>6} {r['n_train']:>8} {r['shards']:>6} {r['generate_s']:>7} "
            f"{r['generate_peak_mib']:>8} {r['train_s']:>8} {r['images_per_s']:>7} "
            f"{r['epoch_s_estimated']:>9} {r['train_peak_mib']:>10}")


def section(ctx: Any) -> Any:
    """The ``scaling`` section of ``python -m benchmarks`` (benchmarks/runner.py)."""
    from benchmarks.runner import Result

    raw = ctx.root / "data" / "raw" / "fashion-mnist"
    with tempfile.TemporaryDirectory(prefix="cnnpipe-scaling-") as tmp:
        data = run(ctx.quick, raw, Path(tmp), seed=ctx.seed)
    result = Result(data=data)
    for r in data["rows"]:
        result.row(f"{r['scale']}x {r['mode']} ({r['n_train']} scenes)",
                   f"{r['train_peak_mib']} MiB, {r['images_per_s']} img/s",
                   f"generate {r['generate_s']} s / {r['generate_peak_mib']} MiB")
    result.row("peak 8x / 1x (streamed)", f"{data['peak_ratio_8x_over_1x']:.3f}", "target <= 1.5")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data and model, for development")
    ap.add_argument("--raw", type=Path, default=ROOT / "data" / "raw" / "fashion-mnist")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/scaling[.quick].json)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the scenes go (default: a temp dir)")
    # Child-process entry points (one phase each).
    ap.add_argument("--child-generate", type=Path)
    ap.add_argument("--child-train", type=Path)
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--n-val", type=int)
    ap.add_argument("--shard-size", type=int)
    ap.add_argument("--mode", choices=("stream", "memory"))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--filters", type=str)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)

    if a.child_generate:
        print(json.dumps(child_generate(a.child_generate, a.raw, a.n_train, a.n_val, a.shard_size, a.seed)))
        return
    if a.child_train:
        filters = [int(f) for f in a.filters.split(",")]
        print(json.dumps(child_train(a.child_train, a.mode, a.steps, a.batch_size, filters, a.seed)))
        return

    if not (a.raw / "source.json").exists():
        raise SystemExit(f"{a.raw}: no Fashion-MNIST here; run the fetch stage first (`dvc repro fetch`)")
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
          f"({os.cpu_count()} CPUs)", flush=True)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="cnnpipe-scaling-", dir=a.workdir) as tmp:
        result = run(a.quick, a.raw, Path(tmp))
    load_end = os.getloadavg()
    result["machine"]["load_average_start"] = [round(v, 2) for v in load_start]
    result["machine"]["load_average_end"] = [round(v, 2) for v in load_end]
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print(f"* epoch s estimated = n_train / img/s (img/s timed after {WARMUP_STEPS} warm-up steps); "
          f"train s = {result['profile']['steps']} steps + one val pass + tracing")
    verdict = "met" if result["accepted"] else "NOT met"
    print(f"streamed training peak memory 8x / 1x = {result['peak_ratio_8x_over_1x']:.3f} "
          f"(target <= 1.5: {verdict})")
    out = a.out or ROOT / "benchmarks" / ("scaling.quick.json" if a.quick else "scaling.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
