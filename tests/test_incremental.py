"""Incremental, idempotent loads: a batch applied twice changes nothing, new files are appended without
re-reading old ones, bad input of every kind is kept (quarantined or reported), and a run killed between two
table writes is completed by the next run."""
import gzip
import os
import subprocess
import sys

import pytest

from socialrec.config import PROJECT_ROOT, deep_merge
from socialrec.io.tables import Lake
from socialrec.pipeline import run_pipeline

BATCH_1 = """user_id,item_id,ts,event_type,rating,review_text
u1,i1,2025-01-01T10:00:00,view,,
u1,i2,2025-01-01T11:00:00,purchase,4,nice
u2,i1,2025-01-02T10:00:00,purchase,5,great
u2,i3,2025-01-02T11:00:00,view,,
u3,i2,2025-01-03T10:00:00,view,,
"""
# A later batch: a new column (schema change), a late event, a cross-batch duplicate, a malformed line,
# a wrong-typed rating and a gigantic review.
BATCH_2 = """user_id,item_id,ts,event_type,rating,review_text,device
u3,i3,2025-01-03T11:00:00,purchase,5,ok,mobile
u1,i3,2024-12-31T09:00:00,view,,,web
u1,i1,2025-01-01T10:00:00,view,,,web
u4,i1,2025-01-04T10:00:00,view,,,web,surplus,fields
u4,i2,2025-01-04T11:00:00,rating,abc,,web
u4,i3,2025-01-04T12:00:00,review,3,""" + "x" * 6000 + """,web
"""


def _silver_rows(lake: Lake, table: str):
    return sorted(map(tuple, lake.read(table).drop("_batch_id").toPandas().astype(str).values.tolist()))


def _run(conf, source):
    return run_pipeline(conf, source=str(source), stages=["ingest", "clean"], progress=lambda _: None)


@pytest.fixture()
def batch_conf(lake_conf):
    return deep_merge(lake_conf, {"quality": {"max_quarantine_fraction": 0.5}})


def test_batches_are_appended_once_and_bad_rows_kept(spark, batch_conf, tmp_path):
    source = tmp_path / "source" / "events"
    source.mkdir(parents=True)
    (source / "part-1.csv").write_text(BATCH_1)
    first = _run(batch_conf, source.parent)
    lake = Lake(spark, batch_conf)
    assert first.stages["clean"]["tables"]["events"]["rows_out"] == 5
    versions = {t: lake.version(t) for t in ("bronze.events", "silver.events")}
    silver_before = _silver_rows(lake, "silver.events")

    again = _run(batch_conf, source.parent)  # the same batch once more: nothing changes
    assert again.stages["ingest"]["files_already_ingested"] == 1 and again.stages["ingest"]["rows_in"] == 0
    assert again.stages["clean"]["batches"] == []
    assert {t: lake.version(t) for t in versions} == versions
    assert _silver_rows(lake, "silver.events") == silver_before

    (source / "part-2.csv").write_text(BATCH_2)
    (source / "part-1-copy.csv").write_text(BATCH_1)  # a renamed duplicate file
    (source / "part-3.csv").write_text("user_id,item_id,ts\n")  # an empty file (header only)
    with gzip.open(source / "part-4.csv.gz", "wb") as handle:  # non-UTF-8 bytes in an id
        handle.write(b"user_id,item_id,ts\nu\xff\xfe9,i1,2025-01-05T10:00:00\n")
    second = _run(batch_conf, source.parent)
    ingest, clean = second.stages["ingest"], second.stages["clean"]
    assert ingest["files_already_ingested"] == 2 and ingest["files_new"] == 3  # part-1 and its copy skipped
    assert [p.endswith("part-3.csv") for p in ingest["files_empty"]] == [True]
    assert ingest["rows_in"] == 7
    events = clean["tables"]["events"]
    assert events["rows_in"] == 7 == events["rows_out"] + events["rows_quarantined"] + events["rows_duplicates"]
    assert clean["quarantine_by_rule"] == {"events.malformed_row": 1, "events.invalid_rating": 1,
                                           "events.invalid_encoding": 1}
    assert events["rows_duplicates"] == 1 and events["rows_out"] == 3  # the cross-batch duplicate is dropped
    silver = lake.read("silver.events").toPandas()
    assert len(silver) == 8
    assert silver["review_text"].str.len().max() == batch_conf["clean"]["max_text_chars"]
    bronze = lake.read("bronze.events").toPandas()
    assert bronze.loc[bronze["item_id"] == "i3", "_extra"].dropna().str.contains('"device":"web"').any()
    assert bronze["review_text"].str.len().max() == 6000  # bronze keeps the raw text whole


def test_missing_required_column_is_a_clear_error_and_bronze_is_untouched(spark, batch_conf, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "events.csv").write_text("user_id,ts\nu1,2025-01-01T00:00:00\n")
    with pytest.raises(ValueError, match=r"events: required column\(s\) \['item_id'\] missing"):
        _run(batch_conf, source)
    assert not Lake(spark, batch_conf).exists("bronze.events")


@pytest.mark.slow
def test_a_run_killed_between_two_table_writes_is_completed_by_the_next(spark, batch_conf, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "events.csv").write_text(BATCH_1)
    (source / "social.csv").write_text("src_user_id,dst_user_id\nu1,u2\nu2,u1\nu1,u1\n")
    lake_root = batch_conf["lake"]["root"]
    command = [sys.executable, "-m", "socialrec.cli", "run", "--conf", str(PROJECT_ROOT / "conf" / "test.yml"),
               "--lake", lake_root, "--source", str(source), "--stages", "ingest,clean",
               "--set", "quality.max_quarantine_fraction=0.5"]
    env = {**os.environ, "SOCIALREC_FAULT_AFTER_COMMIT": "silver.events"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    lake = Lake(spark, batch_conf)
    assert lake.exists("silver.events") and not lake.exists("silver.social")  # half way
    assert not lake.exists("ops.batches")  # the batch is not marked done

    report = _run(batch_conf, source)  # the next run completes the batch
    assert report.stages["clean"]["batches"] and lake.exists("silver.social")
    reference_conf = deep_merge(batch_conf, {"lake": {"root": str(tmp_path / "reference")}})
    _run(reference_conf, source)
    reference = Lake(spark, reference_conf)
    for table in ("silver.events", "silver.social", "silver.quarantine"):
        got = _silver_rows(lake, table) if table != "silver.quarantine" else sorted(
            lake.read(table).select("table", "rule", "record").toPandas().values.tolist())
        want = _silver_rows(reference, table) if table != "silver.quarantine" else sorted(
            reference.read(table).select("table", "rule", "record").toPandas().values.tolist())
        assert got == want, table


def test_a_later_batch_with_events_only_leaves_social_and_items_as_they_are(spark, batch_conf, tmp_path):
    source = tmp_path / "source"
    for table, text in (("events", BATCH_1), ("social", "src_user_id,dst_user_id\nu1,u2\nu2,u3\n"),
                        ("items", "item_id,title,category\ni1,Red mug,kitchen\ni2,Blue mug,kitchen\n")):
        (source / table).mkdir(parents=True)
        (source / table / "part-1.csv").write_text(text)
    _run(batch_conf, source)
    lake = Lake(spark, batch_conf)
    versions = {t: lake.version(t) for t in ("silver.social", "silver.items")}
    rows = {t: _silver_rows(lake, t) for t in versions}

    (source / "events" / "part-2.csv").write_text("user_id,item_id,ts\nu3,i1,2025-01-05T10:00:00\n")
    clean = _run(batch_conf, source).stages["clean"]
    assert clean["tables"]["events"]["rows_out"] == 1
    assert clean["tables"]["social"]["rows_in"] == 0 == clean["tables"]["items"]["rows_in"]
    assert {t: lake.version(t) for t in versions} == versions  # not even an empty commit
    assert {t: _silver_rows(lake, t) for t in versions} == rows
