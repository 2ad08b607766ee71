"""ETL throughput: synthetic events -> bronze -> silver -> gold with the real jobs (gates included), beside
the core of the same cleaning (parse, validate, dedupe, hashed pseudonym; no quarantine table, no gates, no
Delta commits) in DuckDB on one machine. The ratio compares Spark's clean stage with that DuckDB query.

    .venv/bin/python benchmarks/etl_throughput.py --events 1000000 12000000 [--work /tmp/bench]

Prints one line per size, the profile of every committed table (computing the frame, its quality gate, the
Delta write) with each stage's gate share, the bytes a silver.events row takes on disk, and a Markdown table
to paste into docs/benchmarks.md. The generated source is kept under --work and reused by the next run of the
same size (generation is not what is measured). Absolute times on a shared 2-core machine are noisy: read the
Spark/DuckDB ratio measured in the same run.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from socialrec.config import PROJECT_ROOT, deep_merge, load_config
from socialrec.io.spark_session import get_spark
from socialrec.io.tables import Lake
from socialrec.pipeline import run_pipeline

EVENTS_PER_USER = 33  # what the generator's default funnel and session count produce (measured: 828k for 25k users)

DUCKDB_CLEAN = """
CREATE OR REPLACE TABLE silver AS
WITH raw AS (
  SELECT * FROM read_csv('{events}/*.csv.gz', header = true, all_varchar = true)
), typed AS (
  SELECT trim(user_id) AS user_id, trim(item_id) AS item_id, lower(trim(event_type)) AS event_type,
         try_cast(ts AS TIMESTAMP) AS ts, try_cast(rating AS DOUBLE) AS rating, review_text, session_id
  FROM raw
), valid AS (
  SELECT * FROM typed
  WHERE coalesce(user_id, '') <> '' AND coalesce(item_id, '') <> '' AND ts IS NOT NULL
    AND ts BETWEEN TIMESTAMP '1995-01-01' AND now()::TIMESTAMP + INTERVAL 1 DAY
    AND event_type IN ('view', 'click', 'cart', 'purchase', 'rating', 'review', 'like', 'share')
)
SELECT DISTINCT ON (event_id) *, sha256('{key}' || user_id) AS user_key
FROM (SELECT *, sha256(concat_ws(chr(31), user_id, item_id, ts::VARCHAR, event_type)) AS event_id FROM valid)
"""


STAGE_TABLES = {"ingest": "bronze.", "clean": "silver.", "features": "gold."}


def run_spark(conf: dict, source: Path) -> tuple[float, dict, dict]:
    started = time.perf_counter()
    report = run_pipeline(conf, source=str(source), stages=["ingest", "clean", "features"], progress=lambda _: None)
    return time.perf_counter() - started, report.stages, report.tables


def print_profile(stages: dict, tables: dict) -> None:
    """Per table: seconds computing the frame, in its gate and in the Delta write; per stage: the gates' share."""
    for stage, prefix in STAGE_TABLES.items():
        mine = {name: figures for name, figures in tables.items() if name.startswith(prefix)}
        gates = sum(figures["profile"]["gate"] for figures in mine.values())
        print(f"  {stage}: {stages[stage]['seconds']:.1f}s, gates {gates:.1f}s "
              f"({gates / stages[stage]['seconds']:.0%} of the stage)")
        for name, figures in mine.items():
            profile = figures["profile"]
            print(f"    {name:26s} {figures['rows_written']:>12,} rows  compute {profile['compute']:7.1f}s  "
                  f"gate {profile['gate']:6.1f}s  write {profile['write']:6.1f}s")


def bytes_per_row(conf: dict, table: str, rows: int) -> float:
    """Bytes on disk of the table's current snapshot files (its Delta log and removed files excluded) per row."""
    lake = Lake(get_spark(conf), conf)
    size = sum(Path(url.removeprefix("file://")).stat().st_size for url in lake.snapshot_files(table))
    return size / max(rows, 1)


def generated_source(conf: dict, work: Path) -> tuple[Path, int]:
    """The synthetic source of this size: generated once, then reused (its event count kept beside it)."""
    source, count_file = work / "source", work / "source.events"
    if not count_file.is_file():
        shutil.rmtree(source, ignore_errors=True)
        report = run_pipeline(conf, source=None, stages=["generate"], progress=lambda _: None)
        shutil.move(report.source, source)
        count_file.write_text(str(report.stages["generate"]["tables"]["events"]))
    return source, int(count_file.read_text())


def run_duckdb(source: Path, key: str) -> tuple[float, int]:
    import duckdb

    started = time.perf_counter()
    connection = duckdb.connect()
    connection.execute(DUCKDB_CLEAN.format(events=source / "events", key=key))
    rows = connection.execute("SELECT count(*) FROM silver").fetchone()[0]
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--work", default="/tmp/socialrec-bench")
    parser.add_argument("--conf", default=str(PROJECT_ROOT / "conf" / "local.yml"))
    args = parser.parse_args()
    rows_out = []
    for target in args.events:
        work = Path(args.work) / f"n{target}"
        shutil.rmtree(work / "lake", ignore_errors=True)
        users = max(100, target // EVENTS_PER_USER)
        conf = deep_merge(load_config(args.conf), {
            "lake": {"root": str(work / "lake")},
            "generator": {"users": users, "items": max(500, users // 4), "files": 8},
        })
        source, events = generated_source(conf, work)
        spark_seconds, stages, tables = run_spark(conf, source)
        key = conf["clean"]["pseudonymisation"]["dev_key"]
        duck_seconds, duck_rows = run_duckdb(source, key)
        stage_seconds = {name: stages[name]["seconds"] for name in ("ingest", "clean", "features")}
        silver_rows = stages["clean"]["tables"]["events"]["rows_out"]
        silver_bytes = bytes_per_row(conf, "silver.events", tables["silver.events"]["rows"])
        line = (f"events={events:,} spark ingest->gold {spark_seconds:.1f}s ({events / spark_seconds:,.0f} ev/s; "
                f"{stage_seconds}) | silver rows {silver_rows:,} | duckdb clean {duck_seconds:.1f}s "
                f"({events / duck_seconds:,.0f} ev/s, rows {duck_rows:,}) | spark clean / duckdb clean time ratio "
                f"{stage_seconds['clean'] / duck_seconds:.1f} | silver.events {silver_bytes:.0f} bytes/row")
        print(line, flush=True)
        print_profile(stages, tables)
        rows_out.append((events, spark_seconds, stage_seconds, duck_seconds, silver_bytes))
    print("\n| events | Spark ingest→gold (s) | events/s | ingest / clean / features (s) | DuckDB clean (s) | "
          "clean ratio Spark/DuckDB | silver.events bytes/row |")
    print("|---|---|---|---|---|---|---|")
    for events, spark_seconds, stage_seconds, duck_seconds, silver_bytes in rows_out:
        print(f"| {events:,} | {spark_seconds:.1f} | {events / spark_seconds:,.0f} | "
              f"{stage_seconds['ingest']} / {stage_seconds['clean']} / {stage_seconds['features']} | "
              f"{duck_seconds:.1f} | {stage_seconds['clean'] / duck_seconds:.1f} | {silver_bytes:.0f} |")


if __name__ == "__main__":
    main()
