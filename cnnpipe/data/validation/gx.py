"""Great Expectations plumbing shared by every suite: run expectations on a DataFrame in an
in-memory (ephemeral) GX context, summarize the failures, write the report.

A :class:`SuiteRun` validates one or more tables (the manifest, derived tables such as class
balance) in one context. Its :class:`ValidationReport` holds a short list of failures for
people and error messages, and the GX results as a JSON-able dict stripped of run times and
random ids, so equal data gives equal bytes. :func:`write_report` adds GX Data Docs (static
HTML) next to ``results.json``; :func:`save_report` writes a whole report directory atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from cnnpipe.data.validation.manifest import save_manifest
from cnnpipe.errors import ValidationFailed
from cnnpipe.io import atomic_dir, write_json

# Rows GX keeps per failed expectation (values and their split/index), and how many of
# them a failure message quotes.
_PARTIAL_COUNT = 20
_QUOTED = 5
# Keys whose values change on every run (timestamps, uuids): dropped from results.json.
_VOLATILE_KEYS = frozenset({"id", "ge_load_time", "run_id", "validation_time", "checkpoint_id"})


@dataclass(frozen=True)
class Failure:
    """One failed expectation: what was expected of which column, and what was observed."""

    expectation: str
    column: str | None
    table: str  # "manifest" or a derived table such as "class_balance"
    observed: str  # one-line summary, e.g. "3 unexpected values, e.g. [12]"
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        table = "" if self.table == "manifest" else f" on {self.table}"
        return f"{self.expectation}{where}{table}: {self.observed}"


@dataclass
class ValidationReport:
    """Outcome of one validation: ``results`` is JSON-able; ``gx_run`` keeps the GX objects for Data Docs."""

    name: str
    success: bool
    failures: list[Failure]
    results: dict[str, Any]  # suite name -> GX result dict, volatile keys stripped
    observed: dict[str, Any] = field(default_factory=dict)  # e.g. class shares per split
    gx_run: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "observed": self.observed,
            "gx_results": self.results,
        }


def import_gx() -> ModuleType:
    """Import great_expectations lazily (it takes seconds), its import-time INFO chatter muted."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def _context() -> Any:
    """A fresh in-memory GX context: no analytics, no progress bars."""
    gx = import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    # A new context is a few ms (the import is the slow part), and a fresh one per run keeps
    # one report's suites and results out of another's Data Docs.
    return gx.get_context(mode="ephemeral", project_config=config)


def store_key(name: str) -> str:
    """``name`` as a GX store key: GX's file stores refuse ``/`` and ``\\`` in keys (an own data
    set's name carries its path), so every run of characters other than letters, digits, ``.``,
    ``_`` and ``-`` becomes one ``_``."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "suite"


class SuiteRun:
    """The suites of one validation, run in one context, kept for Data Docs. ``name`` is the
    human one (reports, messages); GX sees its :func:`store_key`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = store_key(name)
        self.context = _context()
        self.source = self.context.data_sources.add_pandas(name=self.key)
        self.results: list[tuple[str, Any]] = []  # (table, ExpectationSuiteValidationResult)

    def validate(self, table: str, df: pd.DataFrame, expectations: Sequence[Any], index_columns: list[str]) -> None:
        gx = import_gx()
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        suite = self.context.suites.add(gx.ExpectationSuite(name=f"{self.key}.{table}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = (
            self.source.add_dataframe_asset(name=table)
            .add_batch_definition_whole_dataframe(name="all")
            .get_batch(batch_parameters={"dataframe": df})
        )
        result_format = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": _PARTIAL_COUNT,
            "unexpected_index_column_names": index_columns,
        }
        result = batch.validate(suite, result_format=result_format)
        self.results.append((table, result))
        # Stored now, once, so every write_report renders exactly this run's results.
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
            run_id=RunIdentifier(run_name=self.key),
            batch_identifier=table,
        )
        self.context.validation_results_store.set(key, result)

    def report(self, observed: dict[str, Any]) -> ValidationReport:
        failures: list[Failure] = []
        results: dict[str, Any] = {}
        for table, result in self.results:
            failures += [_failure(table, r) for r in result.results if not r.success]
            results[result.suite_name] = _plain(result.to_json_dict())
        success = all(result.success for _, result in self.results)
        return ValidationReport(self.name, success, failures, results, observed, gx_run=self)


def _plain(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN to None, volatile keys dropped."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items() if k not in _VOLATILE_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    return obj


def _failure(table: str, r: Any) -> Failure:
    """Summarize one failed ExpectationValidationResult."""
    config = r.expectation_config
    column = config.kwargs.get("column")
    res = _plain(r.result or {})
    if r.exception_info and r.exception_info.get("raised_exception"):
        observed = f"raised {r.exception_info.get('exception_message')}"
        return Failure(config.type, column, table, observed)
    if "unexpected_count" in res:
        count = res["unexpected_count"]
        values = [c["value"] for c in res.get("partial_unexpected_counts", [])][:_QUOTED]
        rows = [_row_name(row, column) for row in res.get("partial_unexpected_index_list", [])[:_QUOTED]]
        observed = f"{count} unexpected values, e.g. {values}"
        if rows:
            observed += f" at {', '.join(rows)}"
        return Failure(config.type, column, table, observed, count, values)
    mismatch = res.get("details", {}).get("mismatched")
    observed = f"observed {res.get('observed_value')!r}"
    if mismatch:
        observed += f" ({', '.join(f'{k}: {v}' for k, v in sorted(mismatch.items()))})"
    return Failure(config.type, column, table, observed)


def _row_name(row: Any, column: str | None) -> str:
    """``train[3]`` for a manifest row, ``split=train label=3`` for other tables."""
    if not isinstance(row, Mapping):
        return str(row)
    keys = {k: v for k, v in row.items() if k != column}
    if set(keys) == {"split", "index"}:
        return f"{keys['split']}[{keys['index']}]"
    return " ".join(f"{k}={v}" for k, v in keys.items())


def write_report(report: ValidationReport, out_dir: str | Path) -> None:
    """Write ``out_dir/results.json`` and GX Data Docs (``out_dir/data_docs/index.html``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", report.to_dict())
    run: SuiteRun | None = report.gx_run
    if run is None:  # a report rebuilt from JSON has no GX objects to render
        return
    context = run.context
    site = "cnnpipe"
    context.add_data_docs_site(
        site,
        {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str((out_dir / "data_docs").resolve()),
            },
        },
    )
    try:
        context.build_data_docs(site_names=[site])
    finally:
        context.delete_data_docs_site(site)


def raise_if_failed(report: ValidationReport, what: str) -> None:
    """Raise :class:`ValidationFailed` naming each failed expectation, its column and observation."""
    if report.success:
        return
    lines = "\n".join(f"  - {f.describe()}" for f in report.failures)
    raise ValidationFailed(f"{what}: {len(report.failures)} expectation(s) failed:\n{lines}")


def save_report(report: ValidationReport, out_dir: Path, manifest: pd.DataFrame | None = None) -> None:
    """Replace ``out_dir`` atomically with the report (and ``manifest.csv`` when given)."""
    with atomic_dir(out_dir) as tmp:
        if manifest is not None:
            save_manifest(manifest, tmp / "manifest.csv")
        write_report(report, tmp)
