"""Maintenance on a small lake of many small files: OPTIMIZE packs them (Z-ordered where configured) without
changing a row, deliberate layouts are left alone, VACUUM keeps the configured retention (168 h: nothing young
is deleted) and, where short retention is explicitly allowed, deletes the compacted-away files. (One test: a
full VACUUM lists the table's folder in several Spark jobs, the slowest step here.)"""
from pathlib import Path

import pytest

from socialrec.cli import main
from socialrec.config import PROJECT_ROOT, deep_merge
from socialrec.io.tables import Lake
from socialrec.ops.maintenance import maintain

APPENDS, FILES_PER_APPEND = 4, 2


@pytest.fixture()
def small_lake(spark, lake_conf):
    lake = Lake(spark, lake_conf)
    for n in range(APPENDS):  # one append per batch, as ingest and MERGE leave them
        batch = spark.range(n * 200, (n + 1) * 200).selectExpr(
            "sha2(CAST(id AS STRING), 256) AS event_id", "CONCAT('user-', id % 37) AS user_key",
            "CONCAT('i', id % 50) AS item_id", "TIMESTAMP_SECONDS(1735689600 + id * 97) AS ts", f"'b{n}' AS _batch_id")
        lake.write("silver.events", batch, mode="append", files=FILES_PER_APPEND)
    lake.write("gold.train_examples", spark.range(100).selectExpr("id AS user_idx"), files=4)
    lake.write("silver.items", spark.range(10).selectExpr("CONCAT('i', id) AS item_id"), files=1)
    return lake


def _rows(lake: Lake, name: str):
    return sorted(map(tuple, lake.read(name).collect()))


def test_optimize_packs_small_files_keeps_every_row_and_vacuum_keeps_retention(small_lake, lake_conf, capsys):
    tables = ("silver.events", "gold.train_examples", "silver.items")
    before = {name: _rows(small_lake, name) for name in tables}
    small = APPENDS * FILES_PER_APPEND
    code = main(["maintain", "--conf", str(PROJECT_ROOT / "conf" / "test.yml"), "--lake", lake_conf["lake"]["root"]])
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + out)
    assert code == 0, out
    assert f"silver.events: zorder(ts, user_key), files {small} -> 1, vacuum deleted 0\n" in out  # 168 h kept
    assert "gold.train_examples: skipped (config), files 4 -> 4, vacuum deleted 0\n" in out  # petastorm's shards
    assert "silver.items: skipped (one file), files 1 -> 1, vacuum deleted 0\n" in out
    assert "gold.metrics: absent\n" in out
    assert f"total files {small + 5} -> 6 (vacuum retention 168 h)" in out
    assert {name: _rows(small_lake, name) for name in tables} == before
    assert small_lake.last_commit_metrics("silver.events")["operation"] == "VACUUM END"

    # Below Delta's safe retention only when the config says so; then the compacted-away files go.
    short = deep_merge(lake_conf, {"maintenance": {"vacuum_retention_hours": 0}})
    with pytest.raises(ValueError, match="below Delta's safe 168 hours"):
        maintain(small_lake.spark, short)
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['silver.nope'\]"):
        maintain(small_lake.spark, lake_conf, ["silver.nope"])
    allowed = deep_merge(short, {"maintenance": {"allow_short_retention": True}})
    figures = maintain(small_lake.spark, allowed, ["silver.events"])
    assert figures["tables"]["silver.events"]["vacuum_deleted_files"] == small
    assert len(list(Path(small_lake.location("silver.events")).glob("*.parquet"))) == 1
    assert _rows(small_lake, "silver.events") == before["silver.events"]
    # The safety check is back on for whoever uses the session next.
    assert small_lake.spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled", "true") == "true"


def test_maintain_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["maintain", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: socialrec maintain" in out and "--tables" in out and "vacuum_retention_hours" in out
