"""The markdown the Prefect flows publish as artifacts: a pipeline run's stage outcomes, MLflow
links and metrics, and a promotion run's decisions. Redacted: no credential reaches Prefect."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnnpipe.io import read_json
from cnnpipe.security import redact
from cnnpipe.tracking.runs import numeric_metrics

# The status of a stale stage the flow did not run because a stage it depends on failed.
UPSTREAM_FAILED = "not run: upstream failed"


def pipeline_report(
    statuses: Mapping[str, str],
    metrics_dir: str | Path,
    *,
    parent_url: str | None = None,
    stage_urls: Mapping[str, str] | None = None,
    error: str | None = None,
) -> str:
    """Markdown: each stage's DVC outcome with its MLflow run link, the stages a failure kept
    from running, then every metric in ``metrics_dir/*.json`` and ``metrics_dir/register/*.json``."""
    stage_urls = stage_urls or {}
    lines = ["# cnnpipe pipeline run", ""]
    if parent_url:
        lines += [f"MLflow run of this pipeline run: [{parent_url}]({parent_url})", ""]
    if error:
        lines += ["**Failed:**", "", "```", error, "```", ""]
    if not any(status not in ("skipped", "probed") for status in statuses.values()):
        lines += ["Every stage is up to date: nothing ran.", ""]
    lines += ["| stage | DVC | MLflow run |", "|---|---|---|"]
    for stage, status in statuses.items():
        url = stage_urls.get(stage)
        lines.append(f"| {stage} | {status} | {f'[run]({url})' if url else '-'} |")
    blocked = [stage for stage, status in statuses.items() if status.startswith(UPSTREAM_FAILED)]
    if blocked:
        lines += ["", "## Skipped because of a failure", "",
                  *[f"- {stage}: {statuses[stage]}" for stage in blocked]]
    lines += ["", "## Metrics", "", "| file | metric | value |", "|---|---|---|"]
    metrics_dir = Path(metrics_dir)
    # The test metrics (<task>.json) and the register@<task> decisions (register/<task>.json).
    for path in [*sorted(metrics_dir.glob("*.json")), *sorted(metrics_dir.glob("register/*.json"))]:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue  # a half-written or foreign file must not sink the report
        values = numeric_metrics(data) if isinstance(data, Mapping) else {}
        name = path.relative_to(metrics_dir).as_posix()
        lines += [f"| {name} | {k} | {v:.4g} |" for k, v in values.items()]
    return redact("\n".join(lines) + "\n")  # a stage's error output may quote a URL with credentials


def promotion_report(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: model, its @challenger version, promoted or kept, and the gate's reason."""
    rows = [f"| {n} | {r['version'] or '-'} | {'promoted' if r['promoted'] else 'kept'} | {r['reason']} |"
            for n, r in results.items()]
    return redact("\n".join(["| model | challenger | decision | reason |", "|---|---|---|---|", *rows]) + "\n")
