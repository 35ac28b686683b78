"""The benchmark runner: one function per section, registered in ``SECTIONS``, run in order;
each returns its table rows and its raw figures, printed as one table and written as JSON.

A section is ``fn(ctx) -> Result``. To add one, write the function and append a
``Section`` to ``SECTIONS``; ``--only NAME`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Context:
    """What every section gets: the mode and where the project's real data and models are."""

    quick: bool
    root: Path = ROOT
    seed: int = 42

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in the quick mode, else ``full``."""
        return quick if self.quick else full


@dataclass
class Result:
    """Rows for the printed table (item, value, note) and the raw figures for the JSON."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def row(self, item: str, value: str, note: str = "") -> None:
        self.rows.append((item, value, note))


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Context], Result]
    about: str


def _sections() -> list[Section]:
    from benchmarks import inference, orchestration, scaling, training

    return [
        Section("overhead", training.overhead, "training images/s: pipeline fit routine vs plain Keras"),
        Section("limit", training.limit, "classifier training GFLOP/s vs measured matmul peak"),
        Section("tuning", training.tuning, "CPU settings and input pipeline, classifier training images/s"),
        Section("time_to_accuracy", training.time_to_accuracy, "default classifier recipe to a test accuracy"),
        Section("scaling", scaling.section, "training time and peak memory at 1x-8x the scenes (streamed shards)"),
        Section("orchestration", orchestration.run, "no-op dvc repro, no-op Prefect flow, MLflow per epoch"),
        Section("inference", inference.run, "latency and throughput: Keras, predict, TFLite (with parity)"),
    ]


SECTIONS: list[Section] = []  # filled on first use (imports TensorFlow lazily)


def machine() -> dict[str, Any]:
    """The machine and the settings the figures were taken with."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    from cnnpipe.training.precision import cpu_has_native_bf16

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16_native": cpu_has_native_bf16(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TF default (all cores)
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "load_average_start": os.getloadavg(),
    }


def format_table(results: dict[str, Result]) -> str:
    rows = [(name, *row) for name, result in results.items() for row in result.rows]
    header = ("section", "item", "value", "note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")),
                        help="small sizes, about 2 minutes (also BENCH_QUICK=1)")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""), help="comma-separated section names (also BENCH_ONLY)")
    parser.add_argument("--skip", default=os.environ.get("BENCH_SKIP", ""), help="comma-separated sections to leave out (also BENCH_SKIP)")
    parser.add_argument("--out", help="JSON output (default benchmarks/results.json, quick: results.quick.json)")
    parser.add_argument("--threads", type=int, default=0, help="TF intra- and inter-op threads (0: TF default)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var, value in (("DVC_NO_ANALYTICS", "1"), ("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "1"),
                       ("GX_ANALYTICS_ENABLED", "False"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
        os.environ.setdefault(var, value)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if not SECTIONS:
        SECTIONS.extend(_sections())
    wanted = [s for s in args.only.split(",") if s]
    skipped = [s for s in args.skip.split(",") if s]
    unknown = set(wanted + skipped) - {s.name for s in SECTIONS}
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from: {', '.join(s.name for s in SECTIONS)}")
    ctx = Context(quick=args.quick)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / ("results.quick.json" if args.quick else "results.json")
    report: dict[str, Any] = {"mode": "quick" if args.quick else "full", "machine": machine(), "sections": {}}
    results: dict[str, Result] = {}
    failed = False
    for section in SECTIONS:
        if (wanted and section.name not in wanted) or section.name in skipped:
            continue
        print(f"== {section.name}: {section.about}", flush=True)
        start = time.perf_counter()
        try:
            result = section.run(ctx)
        except Exception as err:  # one broken section must not lose the others' figures
            traceback.print_exc()
            failed = True
            result = Result()
            result.row("error", f"{type(err).__name__}", str(err)[:120])
            result.data["error"] = f"{type(err).__name__}: {err}"
        result.data["seconds"] = round(time.perf_counter() - start, 1)
        results[section.name] = result
        report["sections"][section.name] = result.data
        print(format_table({section.name: result}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # each section's figures, kept as they come
    report["machine"]["load_average_end"] = os.getloadavg()
    table = format_table(results)
    report["table"] = table
    print(f"\n# cnnpipe benchmarks ({report['mode']}) on {report['machine']['cpu']}, "
          f"{report['machine']['cores']} cores, TF {report['machine']['tensorflow']}")
    print(f"# load average (1, 5, 15 min): start {report['machine']['load_average_start']}, "
          f"end {report['machine']['load_average_end']}")
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten: {out}", file=sys.stderr)
    return 1 if failed else 0
