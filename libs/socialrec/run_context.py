"""What every stage receives: config, Spark, the lake, the quality gate and the run report."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from socialrec.io.tables import Lake
from socialrec.progress import table_line


# Fault injection for recovery tests: the process exits abruptly right after committing the named table.
FAULT_AFTER_COMMIT = "SOCIALREC_FAULT_AFTER_COMMIT"


@dataclass
class RunReport:
    """The run report: `LAKE/_reports/<run_id>.json` and `latest.json`, rewritten after every stage."""

    run_id: str
    source: str
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    status: str = "running"
    stages: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    metrics_by_group: dict = field(default_factory=dict)  # {group: {model: {metric: value}}}
    comparisons: dict = field(default_factory=dict)  # {other model: {metric: model minus it, interval, p-value}}
    artifacts: dict = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}

    @classmethod
    def load(cls, path: Path) -> "RunReport":
        """Continue a run's report: each task of a multi-task job adds its stages to the same file."""
        data = json.loads(Path(path).read_text())
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def save(self, reports_dir: Path) -> Path:
        reports_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.as_dict(), indent=2, default=str)
        path = reports_dir / f"{self.run_id}.json"
        for target in (path, reports_dir / "latest.json"):
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(text)
            tmp.replace(target)
        return path


@dataclass
class RunContext:
    conf: dict
    spark: SparkSession
    lake: Lake
    report: RunReport
    gate: object  # socialrec.quality.gates.QualityGate; typed loosely to keep GX's import lazy
    progress: Callable[[str], None] | None = None  # one line per committed table (socialrec.progress.table_line)

    @property
    def run_id(self) -> str:
        return self.report.run_id

    def commit(self, table: str, df: DataFrame, merge_on: list[str] | None = None, update_existing: bool = False,
               **write_options) -> int:
        """Gate `df` with its expectation suite, then write it (or MERGE it on `merge_on`); a failed gate
        raises before anything is written.

        The frame is persisted so the gate and the write see the same rows without computing them twice. The
        seconds reported (and logged through `progress`) cover computing the frame, the gate and the write: what
        the table cost the run; `profile` splits them, so a gate's overhead can be read per table.
        """
        started = time.perf_counter()
        df = df.persist()
        try:
            rows = df.count()
            computed = time.perf_counter()
            result = self.gate.validate(table, df)
            self.record_gate(result)
            gated = time.perf_counter()
            if not result.success:
                from socialrec.quality.gates import GateFailed

                stored = self.gate.result_rows(result, self.run_id)
                raise GateFailed(table, [row for row in stored if not row["success"]], stored)
            if merge_on:
                version = self.lake.merge(table, df, merge_on, update_existing)
                metrics = self.lake.last_commit_metrics(table)
                written = (metrics.get("numTargetRowsInserted", 0) + metrics.get("numTargetRowsUpdated", 0)
                           if metrics["operation"] == "MERGE" else rows)
            else:
                version = self.lake.write(table, df, **write_options)
                written = rows
        finally:
            df.unpersist()
        full_rewrite = not merge_on and write_options.get("mode", "overwrite") == "overwrite" and not write_options.get(
            "replace_where")
        if os.environ.get(FAULT_AFTER_COMMIT) == table:
            os._exit(137)  # recovery tests: die like a killed executor right after this table's commit
        finished = time.perf_counter()
        seconds = round(finished - started, 2)
        self.report.tables[table] = {"path": self.lake.location(table), "version": version,
                                     "rows": rows if full_rewrite else self.lake.read(table).count(),
                                     "rows_written": written, "seconds": seconds,
                                     "profile": {"compute": round(computed - started, 2),
                                                 "gate": round(gated - computed, 2),
                                                 "write": round(finished - gated, 2)}}
        if self.progress:
            self.progress(table_line(table, rows, seconds, version, written if merge_on else None))
        return version

    def record_gate(self, result) -> None:
        self.report.gates[result.table] = {"success": result.success, "failed": result.failed}
        rows = self.gate.result_rows(result, self.run_id)
        if rows:
            from socialrec.quality.gates import results_schema

            self.lake.write("ops.quality_results", self.spark.createDataFrame(rows, results_schema()), mode="append")


class StageTimer:
    """Measures a stage and files its figures in the report."""

    def __init__(self, report: RunReport, stage: str):
        self.report, self.stage = report, stage

    def __enter__(self) -> dict:
        self.started = time.perf_counter()
        self.figures: dict = {"status": "running"}
        self.report.stages[self.stage] = self.figures
        return self.figures

    def __exit__(self, exc_type, exc, tb) -> None:
        self.figures["status"] = "failed" if exc_type else "ok"
        self.figures["seconds"] = round(time.perf_counter() - self.started, 2)
        if exc_type:
            self.figures["error"] = str(exc).splitlines()[0][:500] if str(exc) else exc_type.__name__
