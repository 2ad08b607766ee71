"""ingest + clean on a hand-made dirty source: every bad row quarantined under its rule, counts reconcile,
users pseudonymised, and a failed check leaves silver untouched."""
import hashlib
import hmac
import json

import pytest

from socialrec.config import deep_merge
from socialrec.pipeline import run_pipeline

EVENTS = """user_id,item_id,ts,event_type,rating,review_text
alice,i1,2025-01-01T10:00:00,view,,
alice,i1,2025-01-01T10:00:00,view,,
alice,i2,1735725600,purchase,5,great! mail me at alice@example.com
bob,i2,1735725600000,add_to_cart,,
bob,i3,2025-01-02T10:00:00,,,
,i1,2025-01-01T10:00:00,view,,
carol,,2025-01-01T10:00:00,view,,
carol,i1,not-a-date,view,,
carol,i1,2999-01-01T00:00:00,view,,
carol,i2,2025-01-03T10:00:00,teleport,,
carol,i3,2025-01-03T11:00:00,rating,11,
"""
SOCIAL = """src_user_id,dst_user_id
alice,bob
bob,alice
alice,alice
alice,mallory
"""
ITEMS = """item_id,title,category,price
i1,Red shoes,fashion,10
i2,Blue shirt,fashion,-3
i3,Novel,books,5
i3,Novel,books,5
"""


@pytest.fixture()
def permissive_conf(lake_conf):
    """This source is mostly dirt on purpose: let the batch through to inspect the quarantine."""
    return deep_merge(lake_conf, {"quality": {"max_quarantine_fraction": 0.9}})


@pytest.fixture()
def dirty_source(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "events.csv").write_text(EVENTS)
    (source / "social.csv").write_text(SOCIAL)
    (source / "items.csv").write_text(ITEMS)
    return source


def test_dirty_rows_are_quarantined_with_their_rule_and_counts_reconcile(spark, permissive_conf, dirty_source,
                                                                        cached_rdds):
    cached_before = cached_rdds()
    report = run_pipeline(permissive_conf, source=str(dirty_source), stages=["ingest", "clean"], progress=lambda _: None)
    assert cached_rdds() <= cached_before  # the batch cached while cleaning is released
    clean = report.stages["clean"]
    assert clean["rows_in"] == clean["rows_out"] + clean["rows_quarantined"] + clean["rows_duplicates"]
    assert clean["tables"]["events"] == {"rows_in": 11, "rows_out": 4, "rows_quarantined": 6, "rows_duplicates": 1}
    assert clean["quarantine_by_rule"] == {
        "events.missing_user_id": 1, "events.missing_item_id": 1, "events.unparsable_timestamp": 1,
        "events.timestamp_out_of_range": 1, "events.unknown_event_type": 1, "events.invalid_rating": 1,
        "social.self_loop": 1, "social.dangling_edge": 1, "items.invalid_price": 1,
    }
    quarantine = spark.read.format("delta").load(report.tables["silver.quarantine"]["path"])
    bad_ts = quarantine.where("rule = 'unparsable_timestamp'").first()
    assert json.loads(bad_ts["record"])["ts"] == "not-a-date"  # the raw row is kept for inspection
    assert report.gates["silver.events"]["success"]


def test_silver_is_pseudonymised_normalised_and_scrubbed(spark, permissive_conf, dirty_source):
    report = run_pipeline(permissive_conf, source=str(dirty_source), stages=["ingest", "clean"], progress=lambda _: None)
    events = spark.read.format("delta").load(report.tables["silver.events"]["path"]).toPandas()
    key = permissive_conf["clean"]["pseudonymisation"]["dev_key"].encode()
    expected = {hmac.new(key, name.encode(), hashlib.sha256).hexdigest() for name in ("alice", "bob")}
    assert set(events["user_key"]) == expected
    assert sorted(events["event_type"]) == ["cart", "purchase", "purchase", "view"]  # alias + default type
    assert events["ts"].dt.year.eq(2025).all()  # ISO, epoch seconds and epoch milliseconds all parsed
    review = events.loc[events["review_text"].notna(), "review_text"].iloc[0]
    assert "alice@example.com" not in review and "[email]" in review
    for column in events.columns:
        assert not events[column].astype(str).isin(["alice", "bob", "carol"]).any()


def test_too_much_quarantine_stops_the_run_before_silver_is_written(spark, lake_conf, dirty_source, cached_rdds):
    strict = deep_merge(lake_conf, {"quality": {"max_quarantine_fraction": 0.1}})
    cached_before = cached_rdds()
    with pytest.raises(RuntimeError, match=r"silver.events: .* quarantined, above the limit"):
        run_pipeline(strict, source=str(dirty_source), stages=["ingest", "clean"], progress=lambda _: None)
    assert cached_rdds() <= cached_before  # released on failure too
    from socialrec.io.tables import Lake

    lake = Lake(spark, strict)
    assert lake.exists("bronze.events")  # what came in is kept
    assert not lake.exists("silver.events") and not lake.exists("silver.quarantine")
    report = json.loads((lake.directory("reports_dir") / "latest.json").read_text())
    assert report["status"] == "failed" and report["stages"]["clean"]["status"] == "failed"


def test_failed_gate_names_table_and_expectation_and_writes_nothing_downstream(spark, permissive_conf, dirty_source,
                                                                               tmp_path):
    from socialrec.config import PROJECT_ROOT
    from socialrec.io.tables import Lake
    from socialrec.quality.gates import GateFailed

    suites = (PROJECT_ROOT / "conf" / "quality.yml").read_text()
    strict_suites = tmp_path / "quality.yml"
    # silver.events must hold item ids from a set the dirty source does not use.
    strict_suites.write_text(suites.replace(
        "silver.events:\n", "silver.events:\n  - {expect: in_set, column: item_id, value_set: [i9]}\n", 1))
    conf = deep_merge(permissive_conf, {"quality": {"suites_file": str(strict_suites)}})
    with pytest.raises(GateFailed) as failure:
        run_pipeline(conf, source=str(dirty_source), stages=["ingest", "clean", "features"], progress=lambda _: None)
    message = str(failure.value)
    assert "silver.events" in message and "in_set" in message and "item_id" in message and "i1" in message
    lake = Lake(spark, conf)
    assert lake.exists("bronze.events")
    assert not lake.exists("silver.events") and not lake.exists("gold.user_sequences")
    stored = lake.read("ops.quality_results").where("table = 'silver.events' AND NOT success").count()
    assert stored == 1


def test_silver_events_rows_sit_together_per_user_in_time_order_and_commits_are_profiled(spark, permissive_conf,
                                                                                         dirty_source):
    """What keeps silver.events small (a user's rows in one run, compressing the pseudonym) and the run report's
    split of every commit into computing the frame, its gate and its write."""
    import pyarrow.parquet as pq

    from socialrec.io.tables import Lake

    report = run_pipeline(permissive_conf, source=str(dirty_source), stages=["ingest", "clean"], progress=lambda _: None)
    for path in Lake(spark, permissive_conf).snapshot_files("silver.events"):
        rows = pq.read_table(path.removeprefix("file://"), columns=["user_key", "ts", "event_id"]).to_pandas()
        assert list(zip(rows["user_key"], rows["ts"])) == sorted(zip(rows["user_key"], rows["ts"]))
        assert str(rows["event_id"].dtype) == "int64"
    events = spark.read.format("delta").load(report.tables["silver.events"]["path"]).toPandas()
    assert events["event_id"].is_unique
    for table in ("bronze.events", "silver.events", "silver.quarantine"):
        figures = report.tables[table]
        assert set(figures["profile"]) == {"compute", "gate", "write"}
        assert sum(figures["profile"].values()) == pytest.approx(figures["seconds"], abs=0.05)
