"""raw -> bronze: the source files as they are (text columns), stamped with batch, source file and time."""
from __future__ import annotations

from pyspark.sql import functions as F

from socialrec.io.sources import read_table, require_source
from socialrec.run_context import RunContext

TABLES = ("events", "social", "items")


def ingest(ctx: RunContext, source_dir: str) -> dict:
    """Write every table the source has to bronze; a table absent from the source is left out, not faked."""
    require_source(source_dir)
    figures = {"rows_in": 0, "tables": {}}
    for table in TABLES:
        raw = read_table(ctx.spark, source_dir, table)
        if raw is None:
            continue
        bronze = raw.withColumn("_ingested_at", F.current_timestamp()).withColumn("_batch_id", F.lit(ctx.run_id))
        ctx.commit(f"bronze.{table}", bronze)
        rows = ctx.report.tables[f"bronze.{table}"]["rows"]
        figures["tables"][table] = rows
        figures["rows_in"] += rows
    figures["rows_out"] = figures["rows_in"]
    return figures
