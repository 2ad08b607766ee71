"""raw -> bronze, incrementally: only files whose content was never ingested are read, and each table's new
rows are appended in one Delta commit together with their file checksums. Re-running a batch therefore
adds nothing, a renamed copy of an ingested file is recognised as a duplicate, and a run killed before the
commit leaves bronze as it was (the next run ingests the same files again)."""
from __future__ import annotations

from pyspark.sql import functions as F

from socialrec.etl.adapters import prepare_source
from socialrec.io.sources import file_checksums, find_files, read_files, require_source, with_checksums
from socialrec.run_context import RunContext

TABLES = ("events", "social", "items")


def _ingested_checksums(ctx: RunContext, table: str) -> set[str]:
    if not ctx.lake.exists(table):
        return set()
    return {row[0] for row in ctx.lake.read(table).select("_source_checksum").distinct().collect()}


def ingest(ctx: RunContext, source_dir: str) -> dict:
    """Append every table's new files to bronze; a table absent from the source is left out, not faked."""
    source_dir = str(prepare_source(source_dir, ctx.lake.directory("staging_dir")))
    require_source(source_dir)
    figures = {"rows_in": 0, "rows_out": 0, "tables": {}, "files_new": 0, "files_already_ingested": 0,
               "files_duplicate": [], "files_empty": []}
    for table in TABLES:
        fmt, files = find_files(source_dir, table)
        if not files:
            continue
        checksums = file_checksums(ctx.spark, files)
        seen = _ingested_checksums(ctx, f"bronze.{table}")
        new, batch_checksums = [], set()
        for path in files:
            if checksums[path] in seen:
                figures["files_already_ingested"] += 1
            elif checksums[path] in batch_checksums:
                figures["files_duplicate"].append(path)  # same bytes as another file of this batch
            else:
                batch_checksums.add(checksums[path])
                new.append(path)
        figures["files_new"] += len(new)
        non_empty = []
        for path in new:
            if _is_empty(path):
                figures["files_empty"].append(path)
            else:
                non_empty.append(path)
        if not non_empty:
            figures["tables"][table] = 0
            continue
        bronze = (
            with_checksums(read_files(ctx.spark, fmt, non_empty, table), {path: checksums[path] for path in non_empty})
            .withColumn("_ingested_at", F.current_timestamp())
            .withColumn("_batch_id", F.lit(ctx.run_id))
        )
        ctx.commit(f"bronze.{table}", bronze, mode="append")
        rows = ctx.report.tables[f"bronze.{table}"]["rows_written"]
        figures["tables"][table] = rows
        figures["rows_in"] += rows
    figures["rows_out"] = figures["rows_in"]
    figures["source"] = source_dir
    return figures


def _is_empty(path: str) -> bool:
    """A file with no data rows (zero bytes, or a CSV header alone) adds nothing and is reported, not read."""
    import gzip
    from pathlib import Path

    opener = gzip.open if path.endswith((".gz", ".gzip")) else open
    with opener(path, "rb") as handle:
        head = handle.read(1 << 16)
    lines = [line for line in head.splitlines() if line.strip()]
    header_only = ".csv" in Path(path).suffixes and len(lines) == 1
    return not lines or header_only
