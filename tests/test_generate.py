"""The synthetic source: format, determinism, and a statistic for every planted structure and dirt rate."""
from __future__ import annotations

import gzip
import math
import re
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from socialrec.etl.generate import (BRANDS, CATEGORIES, EVENT_TYPES, SENTIMENT_WORDS, SyntheticWorld,
                                    generate_source, source_tables)

TABLES = ("events", "social", "items")
COLUMNS = {
    "events": ["user_id", "item_id", "ts", "event_type", "rating", "review_text", "session_id"],
    "social": ["src_user_id", "dst_user_id", "relation", "ts"],
    "items": ["item_id", "title", "description", "category", "brand", "price"],
}
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S"


@pytest.fixture(scope="module")
def gen_conf(conf):
    return conf["generator"]


@pytest.fixture(scope="module")
def world(gen_conf):
    return SyntheticWorld.from_conf(gen_conf)


@pytest.fixture(scope="module")
def written(spark, gen_conf, tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    return out, generate_source(spark, gen_conf, str(out))


@pytest.fixture(scope="module")
def raw(spark, written):
    out, _ = written
    return {table: spark.read.csv(str(out / table), header=True).toPandas() for table in TABLES}


@pytest.fixture(scope="module")
def events(raw, gen_conf):
    return valid_events(raw["events"], gen_conf)


@pytest.fixture(scope="module")
def events_without_influence(spark, gen_conf):
    """Same seed with friend_influence 0: same users, graph and sessions, so differences are the influence."""
    with source_tables(spark, {**gen_conf, "friend_influence": 0.0}) as tables:
        return valid_events(tables["events"].toPandas(), gen_conf)


@pytest.fixture(scope="module")
def directed_friendships(raw, gen_conf):
    """Clean social rows (no self-loop, no dangling user) as (src, dst) user index arrays."""
    src, dst = user_index(raw["social"]["src_user_id"]), user_index(raw["social"]["dst_user_id"])
    keep = (src != dst) & (dst < gen_conf["users"])
    return src[keep], dst[keep]


@pytest.fixture(scope="module")
def friendships(directed_friendships):
    """Undirected friendships as (low, high) user index arrays."""
    src, dst = directed_friendships
    return src[src < dst], dst[src < dst]


def user_index(user_ids: pd.Series) -> np.ndarray:
    return user_ids.str[1:].astype(np.int64).to_numpy()


def parse_ts(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format=ISO_FORMAT, errors="coerce")


def window_end(gen_conf) -> datetime:
    return datetime.fromisoformat(gen_conf["start"]) + timedelta(days=gen_conf["days"] + 1)


def valid_events(raw_events: pd.DataFrame, gen_conf) -> pd.DataFrame:
    """The events a cleaning step would keep, with parsed ts and integer ratings."""
    events = raw_events.drop_duplicates().reset_index(drop=True)
    ts = parse_ts(events["ts"])
    keep = events["user_id"].notna() & events["event_type"].isin(EVENT_TYPES) & ts.notna() & (ts < window_end(gen_conf))
    return events[keep].assign(ts=ts[keep], rating=pd.to_numeric(events["rating"][keep]).astype("Int64"))


def within_binomial(observed: int, trials: int, rate: float) -> bool:
    expected = trials * rate
    return abs(observed - expected) <= 4 * math.sqrt(expected * (1 - rate)) + 2


def share_in_interests(events: pd.DataFrame, items: pd.DataFrame, world: SyntheticWorld) -> float:
    views = events[events["event_type"] == "view"]
    category_index = {name: i for i, name in enumerate(world.category_names)}
    category = views["item_id"].map(items.set_index("item_id")["category"]).map(category_index).to_numpy()
    return (world.user_interests(user_index(views["user_id"])) == category[:, None]).any(axis=1).mean()


def friend_copurchase_rate(events: pd.DataFrame, low: np.ndarray, high: np.ndarray) -> float:
    """Share of user pairs who bought at least one item in common."""
    purchases = events[events["event_type"] == "purchase"]
    bought = purchases.groupby(user_index(purchases["user_id"]))["item_id"].agg(set)
    return float(np.mean([bool(bought.get(a, set()) & bought.get(b, set())) for a, b in zip(low, high)]))


def test_writes_generic_input_format(written, raw, gen_conf):
    out, counts = written
    assert set(counts) == set(TABLES)
    for table in TABLES:
        assert list(raw[table].columns) == COLUMNS[table]
        assert counts[table] == len(raw[table]) > 0
        assert len(list((out / table).glob("part-*.csv.gz"))) == gen_conf["files"]
    events, social, items = raw["events"], raw["social"], raw["items"]
    assert events["user_id"].dropna().str.fullmatch(r"u\d{6}").all()
    assert events["item_id"].str.fullmatch(r"i\d{5}").all()
    assert set(events["item_id"]) <= set(items["item_id"])
    assert items["item_id"].is_unique and len(items) == gen_conf["items"]
    assert (social["relation"] == "friend").all()
    assert parse_ts(social["ts"]).notna().all()


def test_same_seed_same_content_other_seed_differs(spark, written, gen_conf, tmp_path):
    def contents(folder):
        return {table: [gzip.decompress(part.read_bytes()) for part in sorted((folder / table).glob("part-*"))]
                for table in TABLES}

    first = contents(written[0])
    generate_source(spark, gen_conf, str(tmp_path / "again"))
    generate_source(spark, {**gen_conf, "seed": gen_conf["seed"] + 1}, str(tmp_path / "reseeded"))
    assert contents(tmp_path / "again") == first
    reseeded = contents(tmp_path / "reseeded")
    assert all(reseeded[table] != first[table] for table in TABLES)


def test_item_popularity_is_zipf_within_category(events, raw, gen_conf):
    views = events[events["event_type"] == "view"]
    counts = views["item_id"].value_counts()
    assert counts.iloc[: gen_conf["items"] // 10].sum() / counts.sum() > 0.4
    category = views["item_id"].map(raw["items"].set_index("item_id")["category"])
    slopes = []
    for _, items in views.groupby(category)["item_id"]:
        top = items.value_counts().to_numpy()[:10]
        slopes.append(-np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0])
    assert abs(np.mean(slopes) - gen_conf["zipf_exponent"]) < 0.2
    assert np.all(np.abs(np.array(slopes) - gen_conf["zipf_exponent"]) < 0.4)


def test_sessions_favour_user_interests(events, events_without_influence, raw, gen_conf, world):
    random_share = gen_conf["interests_per_user"] / gen_conf["categories"]
    assert abs(share_in_interests(events_without_influence, raw["items"], world) - gen_conf["interest_strength"]) < 0.03
    # Friends steer some sessions elsewhere, but interests stay the dominant signal.
    assert share_in_interests(events, raw["items"], world) > random_share + 0.3


def test_friendships_mutual_homophilous_with_configured_degree(directed_friendships, friendships, gen_conf, world):
    directed = set(zip(*directed_friendships))
    assert all((dst, src) in directed for src, dst in directed)
    mean_degree = len(directed) / gen_conf["users"]
    assert abs(mean_degree - gen_conf["friends_per_user_mean"]) < 0.1 * gen_conf["friends_per_user_mean"]

    def share_sharing_interest(a, b):
        return (world.user_interests(a)[:, :, None] == world.user_interests(b)[:, None, :]).any(axis=(1, 2)).mean()

    low, high = friendships
    pairs = np.random.default_rng(0).integers(0, gen_conf["users"], size=(2, 20_000))
    baseline = share_sharing_interest(*pairs)
    homophilous = share_sharing_interest(low, high)
    assert homophilous >= gen_conf["homophily"] - 0.03
    assert homophilous > baseline + 0.2


def test_friends_influence_purchases(events, events_without_influence, friendships, gen_conf):
    low, high = friendships
    influenced = friend_copurchase_rate(events, low, high)
    strangers = np.random.default_rng(0).integers(0, gen_conf["users"], size=(2, len(low)))
    assert influenced > 1.5 * friend_copurchase_rate(events_without_influence, low, high)
    assert influenced > 2 * friend_copurchase_rate(events, *strangers)


def test_funnel_in_order_in_time_and_at_configured_rates(events, gen_conf):
    counts = events["event_type"].value_counts()
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"]
    funnel = gen_conf["funnel"]
    assert abs(counts["click"] / counts["view"] - funnel["click"]) < 0.05
    assert abs(counts["cart"] / counts["click"] - funnel["cart"]) < 0.05
    assert abs(counts["purchase"] / counts["cart"] - funnel["purchase"]) < 0.06
    assert abs(counts["rating"] / counts["purchase"] - gen_conf["rating_rate"]) < 0.07
    assert events["ts"].min() >= datetime.fromisoformat(gen_conf["start"])

    step = events["event_type"].map({name: i for i, name in enumerate(EVENT_TYPES)})
    ordered = events.assign(step=step).sort_values(["session_id", "ts"])
    assert (ordered.groupby("session_id")["step"].diff().dropna() > 0).all()
    assert (ordered.groupby("session_id")["item_id"].nunique() == 1).all()
    low_gap, high_gap = gen_conf["step_seconds"]
    gaps = ordered.groupby("session_id")["ts"].diff().dropna().dt.total_seconds()
    assert gaps.between(low_gap, high_gap * len(EVENT_TYPES)).all()  # a corrupted step may be missing

    sessions = events.groupby(["user_id", "session_id"])["ts"].agg(["min", "max"]).sort_values(["user_id", "min"])
    next_start = sessions.groupby("user_id")["min"].shift(-1)
    assert (sessions["max"][next_start.notna()] < next_start.dropna()).all()


def test_reviews_match_ratings_and_quality_varies_by_item(events):
    ratings = events[events["event_type"] == "rating"]
    assert ratings["rating"].between(1, 5).all() and ratings["rating"].nunique() == 5
    assert events["rating"][events["event_type"] != "rating"].isna().all()
    reviews = events[events["event_type"] == "review"].merge(
        ratings[["session_id", "rating"]], on="session_id", suffixes=("_unused", ""))
    assert len(reviews) > 0.9 * len(ratings)
    sentiment = {word: name for name, words in SENTIMENT_WORDS.items() for word in words}
    for text, rating in zip(reviews["review_text"], reviews["rating"]):
        expected = "positive" if rating >= 4 else "negative" if rating <= 2 else "mixed"
        found = {sentiment[w] for w in re.findall(r"[a-z]+", text.lower()) if w in sentiment}
        assert found == {expected}, (text, rating)

    def item_share_of_variance(frame):
        values = frame["rating"].astype(float)
        item_means = values.groupby(frame["item_id"]).transform("mean")
        return ((item_means - values.mean()) ** 2).sum() / ((values - values.mean()) ** 2).sum()

    shuffled = ratings.assign(rating=np.random.default_rng(0).permutation(ratings["rating"].to_numpy()))
    assert item_share_of_variance(ratings) > item_share_of_variance(shuffled) + 0.3


def test_item_text_and_price_match_category(raw, gen_conf):
    items = raw["items"]
    assert set(items["category"]) == set(list(CATEGORIES)[: gen_conf["categories"]])
    owner = {word: name for name, spec in CATEGORIES.items() for word in spec.words}
    assert len(owner) == sum(len(spec.words) for spec in CATEGORIES.values()), "vocabularies must be disjoint"
    for item in items.itertuples():
        title_words = item.title.lower().split()
        assert len(title_words) == 3 and {owner.get(w) for w in title_words} == {item.category}, item
        described = [owner[w] for w in re.findall(r"[a-z]+", item.description.lower()) if w in owner]
        assert len(described) >= 4 and set(described) == {item.category}, item
        low, high = CATEGORIES[item.category].price_range
        assert low <= float(item.price) <= high and item.brand in BRANDS


def test_dirty_rows_at_configured_rates(raw, gen_conf):
    dirty, events, social = gen_conf["dirty"], raw["events"], raw["social"]
    distinct = events.drop_duplicates()
    assert within_binomial(len(events) - len(distinct), len(distinct), dirty["duplicate"])
    ts, unknown_type = parse_ts(distinct["ts"]), ~distinct["event_type"].isin(EVENT_TYPES)
    assert within_binomial(distinct["user_id"].isna().sum(), len(distinct), dirty["null_user"])
    assert within_binomial(unknown_type.sum(), len(distinct), dirty["unknown_event_type"])
    assert within_binomial(ts.isna().sum(), len(distinct), dirty["bad_timestamp"])
    far_future = ts > pd.Timestamp(window_end(gen_conf)) + pd.DateOffset(years=4)
    assert within_binomial(far_future.sum(), len(distinct), dirty["future_timestamp"])

    seen = set(events["user_id"].dropna())
    dangling = ~social["dst_user_id"].isin(seen | set(social["src_user_id"]))
    self_loop = social["src_user_id"] == social["dst_user_id"]
    clean_edges = len(social) - dangling.sum() - self_loop.sum()
    assert within_binomial(dangling.sum(), clean_edges, dirty["dangling_edge"])
    assert within_binomial(self_loop.sum(), clean_edges, dirty["self_loop"])
    assert social["dst_user_id"][dangling].str.fullmatch(r"u\d{6}").all()


def test_rejects_configs_it_cannot_honour(gen_conf):
    with pytest.raises(ValueError, match="vocabularies"):
        SyntheticWorld.from_conf({**gen_conf, "categories": len(CATEGORIES) + 1})
    with pytest.raises(ValueError, match="interests_per_user"):
        SyntheticWorld.from_conf({**gen_conf, "interests_per_user": gen_conf["categories"]})
