"""The streaming job (socialrec.stream.job): new event files dropped into a watched folder update the touched
users' recommendations, and only theirs; a stream killed mid-batch and restarted neither loses nor duplicates.

A small hand-made lake (ingest -> clean -> features) and an untrained model published as the latest checkpoint
(scoring needs a model, not a good one) keep this to the streaming path."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from socialrec.config import PROJECT_ROOT, deep_merge
from socialrec.inference import model_store
from socialrec.inference.scoring import current_recommendations
from socialrec.io.tables import Lake
from socialrec.pipeline import make_context, run_pipeline
from socialrec.stream.job import StreamConfigError, start_stream

USERS, ITEMS, TOP_K = 30, 40, 5
HEADER = "user_id,item_id,ts,event_type,session_id,device\n"


def _write_lake_source(source):
    rng = np.random.default_rng(11)
    rows = []
    for user in range(USERS):
        for step in range(int(rng.integers(4, 9))):
            day, hour = 1 + int(rng.integers(0, 28)), int(rng.integers(0, 24))
            kind = "purchase" if rng.random() < 0.3 else "view"
            device = ("web", "mobile")[int(rng.integers(0, 2))]
            rows.append(f"u{user},i{int(rng.integers(1, ITEMS + 1))},2025-02-{day:02d}T{hour:02d}:00:00,{kind},"
                        f"s{user}-{day},{device}\n")
    for table in ("events", "social", "items"):
        (source / table).mkdir(parents=True)
    (source / "events" / "part-1.csv").write_text(HEADER + "".join(rows))
    (source / "social" / "part-1.csv").write_text("src_user_id,dst_user_id\n" + "".join(
        f"u{user},u{(user + 1) % USERS}\nu{user},u{(user + 7) % USERS}\n" for user in range(USERS)))
    (source / "items" / "part-1.csv").write_text("item_id,title,category,price\n" + "".join(
        f"i{item},Item {item},cat{item % 4},{5 + item}\n" for item in range(1, ITEMS + 1)))


def _events_file(user_items: dict[str, list[int]], day: int) -> str:
    """A landed file: each user's session of views ending in a purchase, on a later day (existing items)."""
    lines = [HEADER]
    for user, items in user_items.items():
        for step, item in enumerate(items):
            kind = "purchase" if step == len(items) - 1 else "view"
            lines.append(f"{user},i{item},2025-04-{day:02d}T18:{10 + step:02d}:00,{kind},{user}-live,mobile\n")
    return "".join(lines)


@pytest.fixture()
def stream_lake(spark, lake_conf, tmp_path):
    conf = deep_merge(lake_conf, {"infer": {"top_k": TOP_K, "tune_fusion": {"enabled": False}},
                                  "stream": {"path": str(tmp_path / "landing"), "trigger_seconds": 1}})
    source = tmp_path / "source"
    _write_lake_source(source)
    run_pipeline(conf, source=str(source), stages=["ingest", "clean", "features"], progress=lambda _: None)
    lake = Lake(spark, conf)
    model_store.publish_untrained(conf, lake, "untrained")
    run_pipeline(conf, source=str(source), stages=["infer"], progress=lambda _: None)
    (tmp_path / "landing").mkdir()
    return conf, lake, tmp_path / "landing"


def _current(lake):
    frame = current_recommendations(lake.read("gold.recommendations")).toPandas()
    frame["components"] = frame["components"].map(lambda c: tuple(sorted(c.items())))
    return frame.sort_values(["user_key", "rank"]).reset_index(drop=True)


def _user_key(spark, conf, user_id):
    from pyspark.sql import functions as F

    from socialrec.etl.pseudonymise import hmac_sha256_hex, pseudonymisation_key

    key = pseudonymisation_key(conf["clean"]["pseudonymisation"])
    return spark.range(1).select(hmac_sha256_hex(F.lit(user_id), key)).first()[0]


def _wait_for_stream_runs(lake, count, query, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query.exception() is not None:
            raise AssertionError(f"stream failed: {query.exception()}")
        if lake.exists("gold.recommendation_summary"):
            runs = lake.read("gold.recommendation_summary").where("scope LIKE 'stream:%'").count()
            if runs >= count:
                return
        time.sleep(1)
    raise AssertionError(f"the stream did not commit {count} micro-batch run(s) in {timeout} s")


@pytest.mark.slow
def test_stream_rescoring_only_the_users_each_landed_file_touches(spark, stream_lake):
    conf, lake, landing = stream_lake
    before = _current(lake)
    silver_before = lake.read("silver.events").count()
    query = start_stream(make_context(conf, "stream:files"), progress=lambda _: None)
    try:
        first = {"u3": [2, 6, 10], "u17": [5, 9]}   # u3's session is all in category cat2, u17's in cat1
        (landing / "a.csv").write_text(_events_file(first, 2))
        _wait_for_stream_runs(lake, 1, query)
        after_first = _current(lake)
        (landing / "b.csv").write_text(_events_file({"u25": [12, 16, 20]}, 3))
        _wait_for_stream_runs(lake, 2, query)
    finally:
        query.stop()
    after = _current(lake)
    keys = {user: _user_key(spark, conf, user) for user in ("u3", "u17", "u25")}

    # The first file changed u3 and u17 only, the second u25 only; every other user's list is as it was.
    runs_first = after_first.groupby("user_key")["run_id"].first()
    runs_before = before.groupby("user_key")["run_id"].first()
    assert set(runs_first.index[runs_first != runs_before[runs_first.index]]) == {keys["u3"], keys["u17"]}
    untouched = ~after["user_key"].isin(keys.values())
    assert after[untouched].reset_index(drop=True).equals(before[~before["user_key"].isin(keys.values())]
                                                          .reset_index(drop=True))
    assert set(after["user_key"]) == set(before["user_key"])
    stream_runs = lake.read("gold.recommendation_summary").where("scope LIKE 'stream:%'").toPandas()
    assert sorted(stream_runs["users_scored"]) == [1, 2]
    for user in keys.values():
        rows = after[after["user_key"] == user]
        assert len(rows) == TOP_K and rows["run_id"].isin(stream_runs["run_id"]).all()
        names = {name for components in rows["components"] for name, _ in components}
        assert {"session", "hour", "device"} <= names   # the live terms are part of the score

    # The new events are in silver once each and in the touched users' sequences, their purchases excluded.
    assert lake.read("silver.events").count() == silver_before + 8
    index = lake.read("gold.item_index").toPandas().set_index("item_id")["item_idx"]
    sequences = lake.read("gold.user_sequences").toPandas().set_index("user_key")
    for user, items in {**first, "u25": [12, 16, 20]}.items():
        history = list(sequences.loc[keys[user], "items"])
        assert history[-1] == index[f"i{items[-1]}"]
        assert index[f"i{items[-1]}"] in set(sequences.loc[keys[user], "purchased"])
        assert index[f"i{items[-1]}"] not in set(after[after["user_key"] == keys[user]]["item_idx"])
    # u3's session was all cat2 (items 2, 6, 10): the session term lifts cat2 items and no other.
    u3 = after[after["user_key"] == keys["u3"]]
    categories = lake.read("gold.item_index").toPandas().set_index("item_idx")["category"]
    session_terms = {categories[item]: dict(components)["session"] for item, components
                     in zip(u3["item_idx"], u3["components"])}
    assert all(value > 0 for category, value in session_terms.items() if category == "cat2")
    assert all(value == 0 for category, value in session_terms.items() if category != "cat2")


@pytest.mark.slow
def test_stream_killed_mid_batch_restarts_without_losing_or_duplicating(spark, stream_lake):
    conf, lake, landing = stream_lake
    silver_before, bronze_before = lake.read("silver.events").count(), lake.read("bronze.events").count()
    (landing / "a.csv").write_text(_events_file({"u4": [3, 7], "u9": [11, 15, 19]}, 5))
    command = [sys.executable, "-m", "socialrec.cli", "stream", "--available-now", "--conf",
               str(PROJECT_ROOT / "conf" / "test.yml"), "--lake", conf["lake"]["root"], "--events", str(landing),
               "--set", f"infer.top_k={TOP_K}", "--set", "infer.tune_fusion.enabled=false"]
    killed = subprocess.run(command, env={**os.environ, "SOCIALREC_FAULT_AFTER_COMMIT": "silver.events"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert lake.read("silver.events").count() == silver_before + 5   # the batch reached silver, then the kill
    summary = lake.read("gold.recommendation_summary")
    assert summary.where("scope LIKE 'stream:%'").count() == 0        # ... before it reached recommendations

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert lake.read("silver.events").count() == silver_before + 5   # replayed: nothing lost, nothing twice
    assert lake.read("bronze.events").count() == bronze_before + 5
    runs = lake.read("gold.recommendation_summary").where("scope LIKE 'stream:%'").toPandas()
    assert len(runs) == 1 and runs["users_scored"].iloc[0] == 2
    recs = lake.read("gold.recommendations").where(f"run_id = '{runs['run_id'].iloc[0]}'").toPandas()
    assert len(recs) == 2 * TOP_K and recs.groupby("user_key").size().eq(TOP_K).all()
    assert set(lake.read("bronze.events").where(f"_batch_id = '{runs['run_id'].iloc[0]}'").toPandas()["user_id"]) \
        == {"u4", "u9"}   # the killed attempt's run id was reused by the replay

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)   # nothing new: nothing changes
    assert again.returncode == 0 and lake.read("silver.events").count() == silver_before + 5
    assert lake.read("gold.recommendation_summary").where("scope LIKE 'stream:%'").count() == 1


def test_stream_refuses_a_lake_the_batch_pipeline_has_not_built(spark, lake_conf, tmp_path):
    (tmp_path / "landing").mkdir()
    conf = deep_merge(lake_conf, {"stream": {"path": str(tmp_path / "landing")}})
    with pytest.raises(StreamConfigError, match="run the batch pipeline on this lake first"):
        start_stream(make_context(conf, "stream:files"))


def test_stream_cli_names_a_missing_events_folder(tmp_path, capsys):
    from socialrec.cli import main

    assert main(["stream", "--lake", str(tmp_path / "lake"), "--events", str(tmp_path / "nowhere")]) == 2
    assert "folder of new event files not found" in capsys.readouterr().err
