"""Incremental rescoring (`infer.users: changed-since=DATE`): after new events for a few users, only those users
are rescored; every other user's current recommendations stay exactly as they were.

A small hand-made source through ingest -> clean -> features, and an untrained model published as the latest
checkpoint (scoring needs a model, not a good one), keep this to the Spark jobs that matter here."""
from __future__ import annotations

import numpy as np
import pytest

from socialrec.config import deep_merge
from socialrec.inference import model_store
from socialrec.inference.scoring import current_recommendations, users_since
from socialrec.io.tables import Lake
from socialrec.pipeline import run_pipeline

USERS, ITEMS, CHANGED = 30, 40, ("u3", "u17", "u25")


def test_users_option():
    assert users_since(None) is None and users_since("all") is None
    assert str(users_since("changed-since=2025-06-01")) == "2025-06-01 00:00:00"
    assert str(users_since("changed-since=2025-06-01T02:00:00+02:00")) == "2025-06-01 00:00:00"
    for bad in ("changed-since=June", "since=2025-06-01", "changed"):
        with pytest.raises(ValueError, match="infer.users"):
            users_since(bad)


def test_cli_users_flag_sets_the_config_and_rejects_a_bad_date_before_spark(capsys):
    from socialrec.cli import _load, build_parser, main

    args = build_parser().parse_args(["run", "--users", "changed-since=2025-06-01"])
    assert _load(args)["infer"]["users"] == "changed-since=2025-06-01"
    assert _load(build_parser().parse_args(["run"]))["infer"]["users"] == "all"
    assert main(["run", "--stages", "infer", "--users", "changed-since=2025-02-30"]) == 2
    assert main(["run", "--stages", "infer", "--set", "infer.users=recent"]) == 2
    assert "infer.users: expected `all` or `changed-since=YYYY-MM-DD`" in capsys.readouterr().err


def _write_source(source):
    rng = np.random.default_rng(5)
    events = ["user_id,item_id,ts,event_type"]
    for user in range(USERS):
        for step in range(int(rng.integers(4, 9))):
            day, hour = 1 + int(rng.integers(0, 28)), int(rng.integers(0, 24))
            kind = "purchase" if rng.random() < 0.3 else "view"
            events.append(f"u{user},i{int(rng.integers(1, ITEMS + 1))},2025-02-{day:02d}T{hour:02d}:00:00,{kind}")
    for table in ("events", "social", "items"):
        (source / table).mkdir(parents=True)
    (source / "events" / "part-1.csv").write_text("\n".join(events) + "\n")
    (source / "social" / "part-1.csv").write_text("src_user_id,dst_user_id\n" + "".join(
        f"u{user},u{(user + 1) % USERS}\nu{user},u{(user + 7) % USERS}\n" for user in range(USERS)))
    (source / "items" / "part-1.csv").write_text("item_id,title,category,price\n" + "".join(
        f"i{item},Item {item},cat{item % 4},{5 + item}\n" for item in range(1, ITEMS + 1)))


def _rows(df):
    frame = df.toPandas()
    frame["components"] = frame["components"].map(lambda c: tuple(sorted(c.items())))
    return frame.sort_values(["user_key", "rank"]).reset_index(drop=True)


@pytest.mark.slow
def test_changed_since_rescoring_only_touches_users_with_new_events(spark, lake_conf, tmp_path):
    conf = deep_merge(lake_conf, {"infer": {"top_k": 5, "tune_fusion": {"enabled": False}}})
    source = tmp_path / "source"
    _write_source(source)
    quiet = {"progress": lambda _: None}
    run_pipeline(conf, source=str(source), stages=["ingest", "clean", "features"], **quiet)
    lake = Lake(spark, conf)
    model_store.publish_untrained(conf, lake, "untrained")
    full = run_pipeline(conf, source=str(source), stages=["infer"], **quiet)
    users = lake.read("gold.user_sequences").select("user_key").count()
    assert full.stages["infer"]["users_scored"] == users and full.stages["infer"]["scope"] == "all"
    before = _rows(current_recommendations(lake.read("gold.recommendations")))

    # A later batch: April events (existing items, so the item index and the model still fit) for three users,
    # with a social and an items file (clean gates every table's batch: an empty one fails row_count >= 1).
    (source / "events" / "part-2.csv").write_text("user_id,item_id,ts,event_type\n" + "".join(
        f"{user},i{item},2025-04-{day:02d}T10:00:00,purchase\n"
        for user in CHANGED for day, item in ((2, 7), (3, 19), (4, 33))))
    (source / "social" / "part-2.csv").write_text(f"src_user_id,dst_user_id\n{CHANGED[0]},{CHANGED[1]}\n")
    (source / "items" / "part-2.csv").write_text("item_id,title,category,price\ni7,Item 7,cat3,12\n")
    run_pipeline(conf, source=str(source), stages=["ingest", "clean", "features"], **quiet)
    incremental = run_pipeline(deep_merge(conf, {"infer": {"users": "changed-since=2025-04-01"}}), source=str(source),
                               stages=["infer"], **quiet)
    stage = incremental.stages["infer"]
    assert stage["users_scored"] == len(CHANGED) and stage["scope"] == "changed-since=2025-04-01T00:00:00"

    recs = lake.read("gold.recommendations")
    new_rows = _rows(recs.where(recs.run_id == incremental.run_id))
    changed_keys = set(new_rows["user_key"])
    assert len(changed_keys) == len(CHANGED) and new_rows.groupby("user_key").size().eq(5).all()
    after = _rows(current_recommendations(recs))
    assert set(after["user_key"]) == set(before["user_key"])  # nobody lost their list

    unchanged_before = before[~before["user_key"].isin(changed_keys)].reset_index(drop=True)
    unchanged_after = after[~after["user_key"].isin(changed_keys)].reset_index(drop=True)
    assert len(unchanged_after) == (users - len(CHANGED)) * 5
    assert unchanged_after.equals(unchanged_before)  # every column, run_id included
    for key in changed_keys:
        old, new = before[before["user_key"] == key], after[after["user_key"] == key]
        assert (new["run_id"] == incremental.run_id).all() and (old["run_id"] == full.run_id).all()
        assert list(zip(old["item_idx"], old["score"])) != list(zip(new["item_idx"], new["score"]))
    bought = lake.read("gold.user_sequences").where("user_key in ({})".format(
        ",".join(f"'{k}'" for k in changed_keys))).select("user_key", "purchased").toPandas()
    for row in bought.itertuples():  # the new purchases are already excluded
        assert not set(after[after["user_key"] == row.user_key]["item_idx"]) & set(row.purchased)

    summary = lake.read("gold.recommendation_summary").toPandas().set_index("run_id")
    assert summary.loc[full.run_id, "scope"] == "all" and summary.loc[full.run_id, "users_scored"] == users
    assert summary.loc[incremental.run_id, "users_scored"] == len(CHANGED)

    version = lake.version("gold.recommendations")
    nothing = run_pipeline(deep_merge(conf, {"infer": {"users": "changed-since=2025-05-01"}}), source=str(source),
                           stages=["infer"], **quiet)
    assert nothing.stages["infer"]["users_scored"] == 0 and lake.version("gold.recommendations") == version
