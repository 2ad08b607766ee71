"""Weekly table maintenance: OPTIMIZE (bin-packing, Z-ordered on the columns later reads filter on) and VACUUM
for every table of `lake.tables`, settings in the `maintenance` section of the config.

Incremental MERGEs and appends leave many small files per batch; compaction brings reads back to a few
large files, and Z-ordering clusters rows by the filter column so Delta's min/max statistics skip files.
VACUUM then deletes the files no longer referenced by any version inside the retention window (time travel
and readers of older snapshots, such as a petastorm reader mid-epoch, need them until then).
"""
from __future__ import annotations

from contextlib import contextmanager

from pyspark.sql import SparkSession

from socialrec.io.tables import Lake

# Delta's default `delta.deletedFileRetentionDuration`: shorter retention can delete files that a running
# reader or writer still needs, which is why Delta refuses it unless its safety check is switched off.
DELTA_SAFE_RETENTION_HOURS = 168


@contextmanager
def _session_conf(spark: SparkSession, settings: dict[str, str]):
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def _files(lake: Lake, name: str) -> int:
    return int(lake.delta(name).detail().select("numFiles").first()[0])


def maintain_table(lake: Lake, name: str, settings: dict) -> dict:
    """OPTIMIZE then VACUUM one table; the file counts are those of the current snapshot."""
    table, zorder = lake.delta(name), settings["zorder"].get(name) or []
    before = _files(lake, name)
    if name in settings["skip_optimize"]:
        layout = "skipped (config)"
    elif before < 2:
        layout = "skipped (one file)"  # nothing to pack, and Z-ordering within one file skips nothing
    elif zorder:
        table.optimize().executeZOrderBy(*zorder)
        layout = f"zorder({', '.join(zorder)})"
    else:
        table.optimize().executeCompaction()
        layout = "compaction"
    after = _files(lake, name)
    table.vacuum(float(settings["vacuum_retention_hours"]))
    history = table.history(1).select("operation", "operationMetrics").first()
    logged = history["operation"] == "VACUUM END"  # only with vacuum logging on
    deleted = int(history["operationMetrics"].get("numDeletedFiles", 0)) if logged else None
    return {"files_before": before, "files_after": after, "optimize": layout, "vacuum_deleted_files": deleted,
            "version": lake.version(name)}


def maintain(spark: SparkSession, conf: dict, tables: list[str] | None = None) -> dict:
    """Maintain the named tables (default: every table of lake.tables; absent ones are reported and skipped)."""
    settings = conf["maintenance"]
    hours, allow_short = settings["vacuum_retention_hours"], settings["allow_short_retention"]
    if hours < DELTA_SAFE_RETENTION_HOURS and not allow_short:
        raise ValueError(f"maintenance.vacuum_retention_hours={hours} is below Delta's safe "
                         f"{DELTA_SAFE_RETENTION_HOURS} hours: set maintenance.allow_short_retention to true if no "
                         "reader or writer can be running")
    lake = Lake(spark, conf)
    names = tables or list(lake.tables)
    unknown = [name for name in names if name not in lake.tables]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; tables are {', '.join(lake.tables)}")
    target = str(int(settings["target_file_size_mb"] * 1024 * 1024))
    delta = "spark.databricks.delta."
    figures = {"retention_hours": hours, "files_before": 0, "files_after": 0, "tables": {}}
    with _session_conf(spark, {delta + "optimize.maxFileSize": target,
                               delta + "optimize.minFileSize": target,  # smaller files get packed
                               delta + "retentionDurationCheck.enabled": str(not allow_short).lower(),
                               delta + "vacuum.logging.enabled": str(settings["vacuum_logging"]).lower()}):
        for name in names:
            if not lake.exists(name):
                figures["tables"][name] = {"optimize": "absent"}
                continue
            result = figures["tables"][name] = maintain_table(lake, name, settings)
            figures["files_before"] += result["files_before"]
            figures["files_after"] += result["files_after"]
    return figures


def format_figures(figures: dict) -> str:
    lines = [f"{name}: {t['optimize']}" + (f", files {t['files_before']} -> {t['files_after']}, vacuum deleted "
                                           f"{t['vacuum_deleted_files']}" if "files_before" in t else "")
             for name, t in figures["tables"].items()]
    lines.append(f"total files {figures['files_before']} -> {figures['files_after']} "
                 f"(vacuum retention {figures['retention_hours']} h)")
    return "\n".join(lines)
