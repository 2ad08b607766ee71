"""The synthetic source: raw events, a friendship graph and an item catalogue in the generic input format,
with structure a recommender can learn (Zipf popularity, user interests, homophily, friends' influence, a
purchase funnel, item quality, category-specific text) and planted dirt for the cleaning step to catch.

Every random draw is a hash of (seed, stream name, ids), never a sequential generator, so each row can be
made by any Spark task in any order: the data scales with the cluster and a seed always yields the same
content whatever the partitioning.
"""
from __future__ import annotations

import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


class CategorySpec(NamedTuple):
    words: tuple[str, ...]           # titles, descriptions and reviews of the category use only these nouns
    price_range: tuple[float, float]


# Vocabularies are disjoint, so an item's text identifies its category (what the text encoder must pick up).
CATEGORIES: dict[str, CategorySpec] = {
    "electronics": CategorySpec(("charger", "cable", "tablet", "laptop", "monitor", "keyboard", "router", "adapter",
                                 "battery", "camera", "smartwatch", "projector"), (20.0, 1500.0)),
    "audio": CategorySpec(("headphones", "speaker", "bass", "earbuds", "microphone", "amplifier", "soundbar",
                           "stereo", "vinyl", "turntable", "subwoofer", "headset"), (15.0, 800.0)),
    "books": CategorySpec(("novel", "paperback", "hardcover", "thriller", "biography", "poetry", "anthology",
                           "memoir", "fiction", "chapter", "author", "edition"), (5.0, 60.0)),
    "beauty": CategorySpec(("lipstick", "mascara", "serum", "moisturizer", "perfume", "eyeliner", "foundation",
                            "blush", "cleanser", "toner", "nail", "lotion"), (4.0, 120.0)),
    "kitchen": CategorySpec(("skillet", "blender", "knife", "saucepan", "kettle", "spatula", "toaster", "whisk",
                             "colander", "ladle", "grater", "wok"), (8.0, 400.0)),
    "toys": CategorySpec(("puzzle", "doll", "blocks", "plush", "robot", "kite", "marbles", "yoyo", "teddy",
                          "rattle", "figurine", "playset"), (5.0, 150.0)),
    "sports": CategorySpec(("dumbbell", "yoga", "treadmill", "racket", "jersey", "sneakers", "helmet", "bicycle",
                            "kettlebell", "goggles", "tennis", "football"), (10.0, 1200.0)),
    "garden": CategorySpec(("shovel", "rake", "hose", "planter", "seeds", "fertilizer", "trowel", "pruner", "lawn",
                            "mower", "compost", "sprinkler"), (5.0, 500.0)),
    "fashion": CategorySpec(("jacket", "dress", "scarf", "denim", "sweater", "blouse", "boots", "handbag", "belt",
                             "hoodie", "skirt", "sunglasses"), (10.0, 400.0)),
    "grocery": CategorySpec(("coffee", "pasta", "olive", "cereal", "honey", "chocolate", "tea", "rice", "spices",
                             "granola", "almonds", "snack"), (2.0, 40.0)),
    "pets": CategorySpec(("leash", "collar", "kibble", "litter", "aquarium", "catnip", "kennel", "chew", "harness",
                          "birdseed", "scratcher", "treats"), (3.0, 200.0)),
    "games": CategorySpec(("console", "controller", "joystick", "cartridge", "gamepad", "arcade", "multiplayer",
                           "quest", "dungeon", "strategy", "chess", "dice"), (10.0, 600.0)),
    "office": CategorySpec(("stapler", "notebook", "pen", "binder", "folder", "envelope", "printer", "paperclip",
                            "highlighter", "desk", "calendar", "marker"), (1.0, 300.0)),
    "automotive": CategorySpec(("tire", "wiper", "dashcam", "headlight", "bumper", "antifreeze", "wrench",
                                "carwash", "seatcover", "floormat", "coolant", "jumpstarter"), (5.0, 400.0)),
    "health": CategorySpec(("vitamins", "bandage", "thermometer", "supplement", "protein", "probiotic", "inhaler",
                            "massager", "ointment", "pillbox", "sanitizer", "capsules"), (3.0, 150.0)),
    "home": CategorySpec(("candle", "pillow", "blanket", "curtain", "lamp", "rug", "vase", "mirror", "towel",
                          "duvet", "shelf", "clock"), (8.0, 600.0)),
}
BRANDS = ("Acme", "Nordwind", "Solara", "Kestrel", "Lumen", "Orbis", "Vantage", "Pinewood", "Helix", "Brightline",
          "Cobalt", "Everly", "Juniper", "Quillon", "Zenith", "Marlowe")
# Review wording by rating: positive for 4-5, negative for 1-2, mixed for 3 (disjoint, so sentiment is learnable).
SENTIMENT_WORDS = {
    "positive": ("excellent", "great", "perfect", "amazing", "superb", "fantastic", "wonderful", "brilliant"),
    "negative": ("terrible", "broken", "disappointing", "awful", "useless", "poor", "flimsy", "horrible"),
    "mixed": ("okay", "average", "decent", "mediocre", "acceptable", "ordinary", "passable", "middling"),
}
FUNNEL_STEPS = ("view", "click", "cart", "purchase")
EVENT_TYPES = (*FUNNEL_STEPS, "rating", "review")
# Planted dirt: values the cleaning step must reject.
UNKNOWN_EVENT_TYPES = ("teleport", "levitate", "unknown")
BAD_TIMESTAMPS = ("not-a-date", "2025-13-45T25:61:00", "yesterday", "N/A")
FUTURE_YEARS = (5, 30)  # far-future timestamps land this many years after the true time
SECONDS_PER_DAY = 86_400

SESSION_SCHEMA = "user long, session_no int, start_ts long, purchase_ts long, item long, depth int, influenced boolean"
EVENT_SCHEMA = ("user_id string, item_id string, ts string, event_type string, rating int, review_text string, "
                "session_id string")
SOCIAL_SCHEMA = "src_user_id string, dst_user_id string, relation string, ts string"
ITEM_SCHEMA = "item_id string, title string, description string, category string, brand string, price double"
PARTITION_KEYS = {"events": "session_id", "social": "src_user_id", "items": "item_id"}  # rows -> part files


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stable_hash(seed: int, stream: str, *keys) -> np.ndarray:
    """A 64-bit hash of (seed, stream, keys...), broadcast over array keys; the stream name keeps draws apart."""
    with np.errstate(over="ignore"):
        h = _splitmix64(_splitmix64(np.uint64(seed % 2**64)) ^ np.uint64(zlib.crc32(stream.encode())))
        for key in keys:
            h = _splitmix64(h ^ np.asarray(key, dtype=np.int64).view(np.uint64))
    return h


def uniform(seed: int, stream: str, *keys) -> np.ndarray:
    """Uniform [0, 1) draws, one per broadcast key combination."""
    return (stable_hash(seed, stream, *keys) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _standard_normal(seed: int, stream: str, *keys) -> np.ndarray:
    u1, u2 = uniform(seed, stream + ".r", *keys), uniform(seed, stream + ".theta", *keys)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.asarray(idx, dtype=np.int64).astype(str), width))


def _iso(epoch_seconds: np.ndarray) -> np.ndarray:
    """Naive ISO-8601 text (2025-03-01T12:34:56), independent of any session time zone."""
    return np.datetime_as_string(np.asarray(epoch_seconds, dtype="datetime64[s]"), unit="s")


def _poisson_cdf(mean: float) -> np.ndarray:
    """Table for inverse-CDF Poisson draws (a few dozen entries, whatever the data size)."""
    top = int(mean + 10 * math.sqrt(mean) + 10)
    pmf = np.array([math.exp(k * math.log(mean) - mean - math.lgamma(k + 1)) if mean > 0 else float(k == 0)
                    for k in range(top + 1)])
    return np.cumsum(pmf) / pmf.sum()


@dataclass(frozen=True)
class SyntheticWorld:
    """Everything rows are drawn from: the config plus small per-category and per-item lookup tables.

    Items are dealt round-robin to categories in a hashed order; inside a category each item has a popularity
    rank, and a session picks rank r with probability proportional to r^-zipf_exponent.
    """

    conf: dict
    category_names: tuple[str, ...]
    item_category: np.ndarray     # per item
    items_by_rank: np.ndarray     # items grouped by category, most popular first inside each group
    rank_cdf_stacked: np.ndarray  # per-category popularity CDFs, category c shifted into (c, c + 1]
    item_quality: np.ndarray      # per item: mean rating
    vocabulary: np.ndarray        # (category, word) nouns of each category
    session_count_cdf: np.ndarray
    user_width: int
    item_width: int
    start_epoch: int

    @classmethod
    def from_conf(cls, gen_conf: dict) -> SyntheticWorld:
        n_categories, n_items, seed = gen_conf["categories"], gen_conf["items"], gen_conf["seed"]
        if n_categories > len(CATEGORIES):
            raise ValueError(f"generator.categories={n_categories}: only {len(CATEGORIES)} vocabularies exist")
        if not 1 <= gen_conf["interests_per_user"] < n_categories:
            raise ValueError("generator.interests_per_user must be at least 1 and below generator.categories")
        if n_items < n_categories:
            raise ValueError("generator.items must be at least generator.categories (no empty category)")
        item_idx = np.arange(n_items)
        item_category = np.empty(n_items, dtype=np.int64)
        item_category[np.argsort(uniform(seed, "item_category", item_idx), kind="stable")] = item_idx % n_categories
        popularity_order = np.argsort(uniform(seed, "item_rank", item_idx), kind="stable")
        items_by_rank = popularity_order[np.argsort(item_category[popularity_order], kind="stable")]
        cdfs = []
        for category in range(n_categories):
            weights = np.arange(1, np.count_nonzero(item_category == category) + 1) ** -gen_conf["zipf_exponent"]
            cdf = np.cumsum(weights) / weights.sum()
            cdf[-1] = 1.0
            cdfs.append(category + cdf)
        # Skewed towards good items, as real catalogues are; the noise around it is generator.rating_noise.
        item_quality = 5.0 - 4.0 * uniform(seed, "item_quality", item_idx) ** 2
        start = datetime.fromisoformat(gen_conf["start"]).replace(tzinfo=timezone.utc)
        return cls(
            conf=gen_conf,
            category_names=tuple(CATEGORIES)[:n_categories],
            item_category=item_category,
            items_by_rank=items_by_rank,
            rank_cdf_stacked=np.concatenate(cdfs),
            item_quality=item_quality,
            vocabulary=np.array([CATEGORIES[name].words for name in tuple(CATEGORIES)[:n_categories]]),
            session_count_cdf=_poisson_cdf(gen_conf["sessions_per_user_mean"] - 1),
            # Wide enough for the dangling ids (users .. 2 * users - 1) to look like real ones.
            user_width=max(6, len(str(2 * gen_conf["users"]))),
            item_width=max(5, len(str(n_items - 1))),
            start_epoch=int(start.timestamp()),
        )

    @property
    def seed(self) -> int:
        return self.conf["seed"]

    def draw(self, stream: str, *keys) -> np.ndarray:
        return uniform(self.seed, stream, *keys)

    def user_ids(self, users: np.ndarray) -> np.ndarray:
        return _ids("u", users, self.user_width)

    def item_ids(self, items: np.ndarray) -> np.ndarray:
        return _ids("i", items, self.item_width)

    # -- users ----------------------------------------------------------------------------------------------
    def user_interests(self, users: np.ndarray) -> np.ndarray:
        """(n, interests_per_user) distinct favourite categories per user, ascending; the ground truth."""
        users = np.asarray(users, dtype=np.int64)
        scores = self.draw("interest", users[:, None], np.arange(len(self.category_names))[None, :])
        return np.sort(np.argsort(scores, axis=1)[:, : self.conf["interests_per_user"]], axis=1)

    def friendship_proposals(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Each user proposes half its mean degree in mutual friendships: a `homophily` share with a uniform
        member of one of its interest categories, the rest with anyone.

        A category member is found by rejection: hashed candidates are tried until one holds the interest
        (interests are a function of the user id, so any worker can check any candidate without a join);
        enough candidates are tried that a proposal goes unmatched, and is dropped, at most once in a million.
        """
        half_degree = self.conf["friends_per_user_mean"] / 2
        n_users, n_interests = self.conf["users"], self.conf["interests_per_user"]
        tries = math.ceil(math.log(1e-6) / math.log(1 - n_interests / len(self.category_names)))
        for batch in batches:
            users = batch["id"].to_numpy()
            extra = self.draw("proposal_count", users) < half_degree - math.floor(half_degree)
            counts = math.floor(half_degree) + extra.astype(np.int64)
            user = np.repeat(users, counts)
            proposal = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)
            rows = np.arange(len(user))
            shared = self.user_interests(user)[
                rows, (self.draw("partner_interest", user, proposal) * n_interests).astype(np.int64)]
            candidates = (self.draw("partner_candidate", user[:, None], proposal[:, None], np.arange(tries)[None, :])
                          * n_users).astype(np.int64)
            holds_interest = (self.user_interests(candidates.ravel()).reshape(len(user), tries, n_interests)
                              == shared[:, None, None]).any(axis=2) & (candidates != user[:, None])
            member = candidates[rows, holds_interest.argmax(axis=1)]
            anyone = (self.draw("random_partner", user, proposal) * n_users).astype(np.int64)
            homophilous = self.draw("homophilous", user, proposal) < self.conf["homophily"]
            partner = np.where(homophilous, member, anyone)
            keep = (partner != user) & (~homophilous | holds_interest.any(axis=1))
            yield pd.DataFrame({"low": np.minimum(user, partner)[keep], "high": np.maximum(user, partner)[keep]})

    # -- sessions -------------------------------------------------------------------------------------------
    def step_offsets(self, users: np.ndarray, session_no: np.ndarray) -> np.ndarray:
        """(n, len(EVENT_TYPES)) seconds from session start to each step; log-uniform gaps in step_seconds."""
        low, high = self.conf["step_seconds"]
        steps = np.arange(1, len(EVENT_TYPES))[None, :]
        gaps = np.floor(low * (high / low) ** self.draw("step_gap", users[:, None], session_no[:, None], steps))
        return np.concatenate([np.zeros((len(users), 1)), np.cumsum(gaps, axis=1)], axis=1).astype(np.int64)

    def _session_items(self, user: np.ndarray, session_no: np.ndarray) -> np.ndarray:
        """Interest category with prob interest_strength (else another one), then a Zipf-ranked item in it."""
        interests = self.user_interests(user)
        n_interests, n_categories = interests.shape[1], len(self.category_names)
        in_interest = self.draw("in_interest", user, session_no) < self.conf["interest_strength"]
        favourite = interests[np.arange(len(user)),
                              (self.draw("which_interest", user, session_no) * n_interests).astype(np.int64)]
        # The k-th category outside the (ascending) interests: skip over each interest at or below it.
        other = (self.draw("other_category", user, session_no) * (n_categories - n_interests)).astype(np.int64)
        for column in range(n_interests):
            other = other + (other >= interests[:, column])
        category = np.where(in_interest, favourite, other)
        position = np.searchsorted(self.rank_cdf_stacked, category + self.draw("popularity", user, session_no),
                                   side="right")
        return self.items_by_rank[position]

    def user_sessions(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """1 + Poisson(mean - 1) sessions per user, spread over `days` in increasing, non-overlapping time."""
        span = self.conf["days"] * SECONDS_PER_DAY
        longest_session = len(EVENT_TYPES) * self.conf["step_seconds"][1] + 1
        funnel = self.conf["funnel"]
        for batch in batches:
            users = batch["id"].to_numpy()
            counts = 1 + np.searchsorted(self.session_count_cdf, self.draw("session_count", users), side="right")
            user = np.repeat(users, counts)
            session_no = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)
            # Sorted uniforms on the span left after reserving one longest session per slot, then the slots.
            time_draws = self.draw("session_time", user, session_no)
            sorted_draws = time_draws[np.lexsort((time_draws, user))]
            free_span = np.maximum(span - np.repeat(counts, counts) * longest_session, 0)
            start_ts = (self.start_epoch + np.floor(sorted_draws * free_span).astype(np.int64)
                        + session_no * longest_session)
            click = self.draw("click", user, session_no) < funnel["click"]
            cart = click & (self.draw("cart", user, session_no) < funnel["cart"])
            purchase = cart & (self.draw("purchase", user, session_no) < funnel["purchase"])
            purchase_offset = self.step_offsets(user, session_no)[:, FUNNEL_STEPS.index("purchase")]
            yield pd.DataFrame({
                "user": user,
                "session_no": session_no.astype(np.int32),
                "start_ts": start_ts,
                "purchase_ts": np.where(purchase, start_ts + purchase_offset, -1),
                "item": self._session_items(user, session_no),
                "depth": (click.astype(np.int32) + cart + purchase),
                "influenced": self.draw("influenced", user, session_no) < self.conf["friend_influence"],
            })

    # -- output rows ----------------------------------------------------------------------------------------
    def _review_text(self, item: np.ndarray, rating: np.ndarray, keys: tuple) -> pd.Series:
        sentiment = np.where(rating >= 4, "positive", np.where(rating <= 2, "negative", "mixed"))
        first, second = (pd.Series(np.empty(len(item), dtype=object)) for _ in range(2))
        for name, words in SENTIMENT_WORDS.items():
            rows = sentiment == name
            pool = np.array(words)
            first[rows] = pool[(self.draw("review_word_1", *keys) * len(pool)).astype(np.int64)[rows]]
            second[rows] = pool[(self.draw("review_word_2", *keys) * len(pool)).astype(np.int64)[rows]]
        noun = (self.draw("review_noun", *keys) * self.vocabulary.shape[1]).astype(np.int64)
        return first.str.capitalize() + " " + pd.Series(self.vocabulary[self.item_category[item], noun]) + ", " \
            + second + " overall."

    def session_events(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Explode sessions into funnel events (+ rating and review for rated purchases) and plant dirt."""
        dirty = self.conf["dirty"]
        for batch in batches:
            user, session_no = batch["user"].to_numpy(), batch["session_no"].to_numpy().astype(np.int64)
            item, depth = batch["item"].to_numpy(), batch["depth"].to_numpy()
            purchased = depth == FUNNEL_STEPS.index("purchase")
            rated = purchased & (self.draw("rated", user, session_no) < self.conf["rating_rate"])
            offsets = self.step_offsets(user, session_no)
            present = np.column_stack([depth >= step for step in range(len(FUNNEL_STEPS))] + [rated, rated])
            row, step = np.nonzero(present)
            keys = (user[row], session_no[row])
            rating = np.clip(np.rint(self.item_quality[item[row]]
                                     + self.conf["rating_noise"] * _standard_normal(self.seed, "rating", *keys)), 1, 5)
            is_rating, is_review = step == EVENT_TYPES.index("rating"), step == EVENT_TYPES.index("review")
            ts = batch["start_ts"].to_numpy()[row] + offsets[row, step]
            events = pd.DataFrame({
                "user_id": pd.Series(self.user_ids(user[row]), dtype=object),
                "item_id": self.item_ids(item[row]),
                "ts": _iso(ts),
                "event_type": np.array(EVENT_TYPES)[step],
                "rating": pd.array(np.where(is_rating, rating, np.nan), dtype="Int32"),
                "review_text": None,
                "session_id": pd.Series(stable_hash(self.seed, "session_id", *keys)).map("s{:016x}".format),
            })
            reviews = np.flatnonzero(is_review)
            events.loc[reviews, "review_text"] = self._review_text(
                item[row][reviews], rating[reviews], (keys[0][reviews], keys[1][reviews])).to_numpy()
            # One draw per event picks at most one corruption; duplicates are extra exact copies.
            corruption = self.draw("event_dirt", *keys, step)
            bounds = np.cumsum([dirty["null_user"], dirty["unknown_event_type"], dirty["bad_timestamp"],
                                dirty["future_timestamp"]])
            kind = np.searchsorted(bounds, corruption, side="right")
            pick = self.draw("dirt_value", *keys, step)
            events.loc[kind == 0, "user_id"] = None
            unknown_types = np.array(UNKNOWN_EVENT_TYPES)[(pick * len(UNKNOWN_EVENT_TYPES)).astype(np.int64)]
            events["event_type"] = np.where(kind == 1, unknown_types, events["event_type"])
            bad_ts = np.array(BAD_TIMESTAMPS)[(pick * len(BAD_TIMESTAMPS)).astype(np.int64)]
            low_years, high_years = FUTURE_YEARS
            years_ahead = low_years + pick * (high_years - low_years)
            future_ts = _iso(ts + (years_ahead * 365.25 * SECONDS_PER_DAY).astype(np.int64))
            events["ts"] = np.where(kind == 2, bad_ts, np.where(kind == 3, future_ts, events["ts"]))
            copies = 1 + (self.draw("duplicate", *keys, step) < dirty["duplicate"])
            yield events.loc[events.index.repeat(copies)]

    def social_rows(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Both directions of each friendship (formed in the `days` before start), plus dangling edges to ids
        that appear nowhere and self-loops."""
        dirty, users = self.conf["dirty"], self.conf["users"]
        for batch in batches:
            low, high = batch["low"].to_numpy(), batch["high"].to_numpy()
            formed = self.start_epoch - 1 - np.floor(
                self.draw("friendship_ts", low, high) * self.conf["days"] * SECONDS_PER_DAY).astype(np.int64)
            src, dst, ts = np.concatenate([low, high]), np.concatenate([high, low]), np.concatenate([formed, formed])
            dirt = self.draw("edge_dirt", src, dst)
            dangling = dirt < dirty["dangling_edge"]
            self_loop = (dirt >= dirty["dangling_edge"]) & (dirt < dirty["dangling_edge"] + dirty["self_loop"])
            ghost = users + (self.draw("ghost_user", src, dst) * users).astype(np.int64)
            src, dst, ts = (np.concatenate([src, src[dangling], src[self_loop]]),
                            np.concatenate([dst, ghost[dangling], src[self_loop]]),
                            np.concatenate([ts, ts[dangling], ts[self_loop]]))
            yield pd.DataFrame({"src_user_id": self.user_ids(src), "dst_user_id": self.user_ids(dst),
                                "relation": "friend", "ts": _iso(ts)})

    def item_rows(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Title and description from the category's vocabulary, a brand, a log-uniform price in its range."""
        vocabulary = self.vocabulary
        capitalised = np.char.capitalize(vocabulary)
        price_ranges = np.array([CATEGORIES[name].price_range for name in self.category_names])
        for batch in batches:
            item = batch["id"].to_numpy()
            category = self.item_category[item]
            word_draws = self.draw("item_words", item[:, None], np.arange(vocabulary.shape[1])[None, :])
            words = np.argsort(word_draws, axis=1)
            title_words = capitalised[category[:, None], words[:, :3]]
            text_words = vocabulary[category[:, None], words[:, 2:6]]
            brand = np.array(BRANDS)[(self.draw("brand", item) * len(BRANDS)).astype(np.int64)]
            low, high = price_ranges[category].T
            price = np.round(low * (high / low) ** self.draw("price", item), 2)
            column = lambda matrix, j: pd.Series(matrix[:, j])  # noqa: E731
            yield pd.DataFrame({
                "item_id": self.item_ids(item),
                "title": column(title_words, 0) + " " + column(title_words, 1) + " " + column(title_words, 2),
                "description": (pd.Series(brand) + " " + column(text_words, 0) + " " + column(text_words, 1) + " with "
                                + column(text_words, 2) + " and " + column(text_words, 3) + "."),
                "category": np.array(self.category_names)[category],
                "brand": brand,
                "price": price,
            })


# -- Spark assembly ---------------------------------------------------------------------------------------------
def _apply_friend_influence(sessions: DataFrame, friendships: DataFrame) -> DataFrame:
    """An influenced session switches to an item a friend bought before the session started (the pick is a
    hash, so deterministic); with no such purchase it keeps its own item. Only purchases of uninfluenced
    sessions spread, so influence is one hop and needs a single join."""
    friends = friendships.select(F.col("low").alias("user"), F.col("high").alias("friend")).unionByName(
        friendships.select(F.col("high").alias("user"), F.col("low").alias("friend")))
    purchases = sessions.where((F.col("purchase_ts") >= 0) & ~F.col("influenced")).select(
        F.col("user").alias("friend"), F.col("item").alias("friend_item"), F.col("purchase_ts").alias("bought_at"))
    picks = (
        sessions.where("influenced").select("user", "session_no", "start_ts")
        .join(friends, "user")
        .join(purchases, "friend")
        .where(F.col("bought_at") < F.col("start_ts"))
        .groupBy("user", "session_no")
        .agg(F.min(F.struct(F.xxhash64("user", "session_no", "friend", "friend_item", "bought_at"),
                            F.col("friend_item"))).friend_item.alias("friend_item"))
    )
    return (
        sessions.join(picks, ["user", "session_no"], "left")
        .withColumn("item", F.coalesce("friend_item", "item"))
        .drop("friend_item")
    )


@contextmanager
def source_tables(spark: SparkSession, gen_conf: dict) -> Iterator[dict[str, DataFrame]]:
    """The three raw tables as DataFrames; friendships and sessions, which several tables read, stay cached
    (memory and disk) until the block exits."""
    world = SyntheticWorld.from_conf(gen_conf)
    users = spark.range(gen_conf["users"])
    friendships = users.mapInPandas(world.friendship_proposals, "low long, high long").distinct().persist()
    sessions = users.mapInPandas(world.user_sessions, SESSION_SCHEMA).persist()
    try:
        yield {
            "events": _apply_friend_influence(sessions, friendships).mapInPandas(world.session_events, EVENT_SCHEMA),
            "social": friendships.mapInPandas(world.social_rows, SOCIAL_SCHEMA),
            "items": spark.range(gen_conf["items"]).mapInPandas(world.item_rows, ITEM_SCHEMA),
        }
    finally:
        friendships.unpersist()
        sessions.unpersist()


def generate_source(spark: SparkSession, gen_conf: dict, out_dir: str) -> dict[str, int]:
    """Write events/, social/ and items/ under out_dir as gzip CSV with a header, `files` parts each, and
    return the rows written per table. Parts are hash-partitioned and sorted on every column, so the same
    seed gives the same file contents however Spark scheduled the work."""
    counts = {}
    with source_tables(spark, gen_conf) as tables:
        for table, frame in tables.items():
            path = f"{out_dir.rstrip('/')}/{table}"
            (frame.repartition(gen_conf["files"], PARTITION_KEYS[table]).sortWithinPartitions(*frame.columns)
             .write.mode("overwrite").option("header", True).option("escape", '"').option("compression", "gzip")
             .csv(path))
            counts[table] = spark.read.option("header", True).option("escape", '"').csv(path).count()
    return counts
