"""Bots and a mega-item on top of the synthetic source: the bots' events are quarantined as `bot_rate`, a forged
session as `impossible_funnel`, everybody else (the generator's users, a fast human, the mega-item's shoppers)
lands in silver exactly as without the bots, the counts reconcile, and the rate computation's per-user window
sees at most one row per active second, whatever a bot's event count."""
import hashlib
import hmac
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from socialrec.config import deep_merge
from socialrec.etl.clean import peak_events_per_minute
from socialrec.etl.generate import generate_source
from socialrec.io.tables import Lake
from socialrec.pipeline import run_pipeline

BOTS = {f"bot-{n}": (25_000, 20.0) for n in range(4)} | {"bot-slow": (2_000, 2.5)}  # events, events per second
SHOPPERS, SHOPPER_EVENTS = 2_000, 5
START = pd.Timestamp("2025-03-01T00:00:00")


def _extra_events() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frames = []
    for n, (user, (count, per_second)) in enumerate(BOTS.items()):
        ts = START + pd.to_timedelta(n * 3_600 + np.arange(count) / per_second, unit="s")
        items = np.where(rng.random(count) < 0.8, "mega", "i" + pd.Series(rng.integers(0, 200, count)).astype(str))
        frames.append(pd.DataFrame({"user_id": user, "item_id": items, "ts": ts, "event_type": "view"}))
    # 100 views in one minute: fast, but under the 120 per minute limit.
    frames.append(pd.DataFrame({"user_id": "human-fast", "item_id": "mega", "event_type": "view",
                                "ts": START + pd.to_timedelta(np.arange(100) * 0.6, unit="s")}))
    shopper = np.repeat(np.arange(SHOPPERS), SHOPPER_EVENTS)
    frames.append(pd.DataFrame({"user_id": [f"shopper-{s}" for s in shopper], "item_id": "mega", "event_type": "view",
                                "ts": START + pd.to_timedelta(shopper * 7 + np.tile(np.arange(SHOPPER_EVENTS), SHOPPERS)
                                                              * 600, unit="s")}))
    frames.append(pd.DataFrame({  # bought before it was ever viewed, in session s-forged; s-ok is a normal session
        "user_id": "forger", "item_id": ["mega", "mega", "mega", "mega"],
        "event_type": ["purchase", "view", "view", "purchase"], "session_id": ["s-forged", "s-forged", "s-ok", "s-ok"],
        "ts": START + pd.to_timedelta([60, 300, 900, 1200], unit="s")}))
    events = pd.concat(frames, ignore_index=True)
    events["ts"] = events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3]
    return events[["user_id", "item_id", "ts", "event_type", "session_id"]]


@pytest.fixture(scope="module")
def lakes(spark, conf, tmp_path_factory):
    """The generator's source cleaned alone (baseline) and with the extra events (skewed)."""
    root = tmp_path_factory.mktemp("skew")
    generate_source(spark, conf["generator"], str(root / "plain"))
    shutil.copytree(root / "plain", root / "skewed")
    extra = _extra_events()
    extra.to_csv(root / "skewed" / "events" / "part-extra.csv", index=False)
    runs = {}
    for name in ("plain", "skewed"):
        lake_conf = deep_merge(conf, {"lake": {"root": str(root / f"lake-{name}")},
                                      "quality": {"max_quarantine_fraction": {"events": 0.95}}})
        report = run_pipeline(lake_conf, source=str(root / name), stages=["ingest", "clean"], progress=lambda _: None)
        runs[name] = (report, Lake(spark, lake_conf))
    return runs, extra


def _key(conf, user: str) -> str:
    return hmac.new(conf["clean"]["pseudonymisation"]["dev_key"].encode(), user.encode(), hashlib.sha256).hexdigest()


def _rows(frame: pd.DataFrame):
    return sorted(map(tuple, frame.drop(columns="_batch_id").astype(str).values.tolist()))


def test_bots_and_forged_sessions_are_quarantined_with_their_rule(lakes):
    runs, extra = lakes
    (plain, _), (skewed, lake) = runs["plain"], runs["skewed"]
    for report in (plain, skewed):
        events = report.stages["clean"]["tables"]["events"]
        assert events["rows_in"] == events["rows_out"] + events["rows_quarantined"] + events["rows_duplicates"]
    assert not {r for r in plain.stages["clean"]["quarantine_by_rule"] if r.split(".")[1] in
                ("bot_rate", "impossible_funnel")}, "the generator's users must not look like bots"
    by_rule = skewed.stages["clean"]["quarantine_by_rule"]
    assert by_rule["events.bot_rate"] == sum(count for count, _ in BOTS.values())
    assert by_rule["events.impossible_funnel"] == 2
    extra_rows = len(extra)
    assert (skewed.stages["clean"]["tables"]["events"]["rows_in"]
            == plain.stages["clean"]["tables"]["events"]["rows_in"] + extra_rows)
    records = lake.read("silver.quarantine").where("rule IN ('bot_rate', 'impossible_funnel')").toPandas()
    parsed = pd.DataFrame([json.loads(r) for r in records["record"]]).assign(rule=records["rule"].to_numpy())
    assert set(parsed.loc[parsed["rule"] == "bot_rate", "user_id"]) == set(BOTS)
    assert set(parsed.loc[parsed["rule"] == "impossible_funnel", "session_id"]) == {"s-forged"}
    print(f"\nclean seconds: plain {plain.stages['clean']['seconds']:.1f}, "
          f"skewed {skewed.stages['clean']['seconds']:.1f} (+{extra_rows:,} rows); quarantine by rule {by_rule}")


def test_everybody_else_is_untouched(lakes, conf):
    runs, _ = lakes
    plain = runs["plain"][1].read("silver.events").toPandas()
    skewed = runs["skewed"][1].read("silver.events").toPandas()
    extra_humans = {_key(conf, u): u for u in ["human-fast", "forger", *(f"shopper-{s}" for s in range(SHOPPERS))]}
    added = skewed[skewed["user_key"].isin(extra_humans)]
    assert _rows(skewed[~skewed["user_key"].isin(extra_humans)]) == _rows(plain)
    assert (added["user_key"] == _key(conf, "human-fast")).sum() == 100
    assert (added["user_key"].map(extra_humans).str.startswith("shopper-")).sum() == SHOPPERS * SHOPPER_EVENTS
    assert set(added.loc[added["user_key"] == _key(conf, "forger"), "session_id"]) == {"s-ok"}
    assert (skewed["item_id"] == "mega").sum() == 100 + SHOPPERS * SHOPPER_EVENTS + 2  # the mega-item's humans


def test_rate_window_sees_one_row_per_active_second(spark, lakes):
    """What keeps a bot from stalling the stage: the per-user window's input is bounded by time, not events."""
    _, extra = lakes
    frame = spark.createDataFrame(extra[["user_id", "ts"]]).selectExpr(
        "user_id AS _user", "CAST(CAST(ts AS TIMESTAMP) AS LONG) AS _second")
    per_user = {r["_user"]: r["count"] for r in frame.groupBy("_user", "_second").count().groupBy("_user").count()
                .collect()}
    assert per_user["bot-0"] == 25_000 / 20.0  # 25,000 events, 1,250 window rows
    peaks = {r["_user"]: r["_peak"] for r in peak_events_per_minute(frame).collect()}
    assert peaks["bot-0"] == 1_200 and peaks["bot-slow"] in (150, 151) and peaks["human-fast"] == 100
    assert peaks["shopper-0"] == 1
