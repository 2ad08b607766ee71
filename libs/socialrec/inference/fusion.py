"""Fusion, business rules and explanations for batch inference: pure numpy/pandas, no Spark.

`scoring.recommend` gathers the inputs with Spark and calls these per batch of users inside mapInPandas;
evaluation can call `fused_scores` on a dense model score matrix to rank the whole catalogue the same way.

Final score of an item for a user (weights in `infer.fusion.weights`; for a user without history, whose model
score is 0, `infer.fusion.cold_start_weights` override them):

    final = w_model * model + w_social * social + w_sentiment * sentiment + w_fresh * fresh + w_pop * pop

- model:     the model's score z-scored per user over the whole catalogue (mean and std streamed over item
             chunks, so it is exact however the catalogue is chunked). 0 for a user without history.
- social:    d / (1 + d) where d = sum over the user's friends who bought/liked the item of
             0.5 ** (age_days / social_half_life_days) (each friend counted once, at their latest event),
             so one fresh friend purchase gives 0.5 and many saturate towards 1.
- sentiment: `item_sentiment`: the item's mean normalised rating shrunk towards the global mean,
             minus the global mean (unrated items get 0).
- fresh:     0.5 ** (days since the item's first event / fresh_half_life_days); never-seen items get 1.
- pop:       log1p(popularity) / log1p(max popularity), in [0, 1]. A negative weight explores: it lifts the
             long tail over bestsellers the model already favours (more catalogue coverage and category
             diversity, docs/results.md); for users without history popularity is the signal, so their
             weight is positive.

Then the shown order: maximal marginal relevance on the model's item vectors (`infer.mmr_lambda`) and the
category cap (`infer.max_per_category`) re-rank the best candidates (`reranked`), in scoring and in evaluation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COMPONENTS = ("model", "social", "sentiment", "fresh", "pop")
REASON_CODES = ("social_proof", "similar_to_history", "popular_in_category", "trending", "in_session", "model")
DAY = 86400.0
# Verbs for the explanation sentence, by event type name (clean.event_types).
VERBS = {"view": "viewed", "click": "clicked", "cart": "added to your cart", "purchase": "bought",
         "rating": "rated", "review": "reviewed", "like": "liked", "share": "shared"}


# --------------------------------------------------------------------------------------------- settings
@dataclass
class FusionSettings:
    weights: dict = field(default_factory=lambda: {"model": 1.0, "social": 1.5, "sentiment": 0.5,
                                                   "fresh": 0.2, "pop": -0.3})
    cold_start_weights: dict = field(default_factory=lambda: {"pop": 0.3})
    social_half_life_days: float = 30.0
    social_event_types: tuple = ("purchase", "like")
    fresh_half_life_days: float = 30.0
    sentiment_prior_count: float = 5.0
    item_chunk: int = 4096
    candidate_pool: int = 200
    max_per_category: int | None = 5
    calibrated_cap: bool = False
    cap_max_score_loss: float | None = None
    mmr_lambda: float = 1.0
    exclude_purchased: bool = True
    repeat_purchase_categories: tuple = ()
    blocked_items: tuple = ()
    price_band: float | None = None
    cold_start_popular: int = 50

    @property
    def reranks(self) -> bool:
        """Whether the shown order differs from the fused score order (a category cap or MMR)."""
        return bool(self.max_per_category) or self.mmr_lambda < 1.0

    def weights_for(self, has_history: bool) -> dict:
        return self.weights if has_history else {**self.weights, **self.cold_start_weights}

    @classmethod
    def from_conf(cls, infer: dict) -> "FusionSettings":
        fusion = infer.get("fusion") or {}
        defaults = cls()
        weights = {**defaults.weights, **(fusion.get("weights") or {})}
        cold = fusion.get("cold_start_weights")
        cold = dict(defaults.cold_start_weights if cold is None else cold)
        for setting, given in (("weights", weights), ("cold_start_weights", cold)):
            unknown = set(given) - set(COMPONENTS)
            if unknown:
                raise ValueError(f"infer.fusion.{setting}: unknown components {sorted(unknown)}; expected {COMPONENTS}")
        return cls(
            weights={name: float(weights[name]) for name in COMPONENTS},
            cold_start_weights={name: float(value) for name, value in cold.items()},
            social_half_life_days=float(fusion.get("social_half_life_days", defaults.social_half_life_days)),
            social_event_types=tuple(fusion.get("social_event_types", defaults.social_event_types)),
            fresh_half_life_days=float(fusion.get("fresh_half_life_days", defaults.fresh_half_life_days)),
            sentiment_prior_count=float(fusion.get("sentiment_prior_count", defaults.sentiment_prior_count)),
            item_chunk=int(infer.get("item_chunk", defaults.item_chunk)),
            candidate_pool=int(infer.get("candidate_pool", defaults.candidate_pool)),
            max_per_category=infer.get("max_per_category", defaults.max_per_category),
            calibrated_cap=bool(infer.get("calibrated_cap", defaults.calibrated_cap)),
            cap_max_score_loss=checked_score_loss(infer.get("cap_max_score_loss", defaults.cap_max_score_loss)),
            mmr_lambda=checked_mmr_lambda(infer.get("mmr_lambda", defaults.mmr_lambda)),
            exclude_purchased=bool(infer.get("exclude_purchased", True)),
            repeat_purchase_categories=tuple(infer.get("repeat_purchase_categories") or ()),
            blocked_items=tuple(str(item) for item in (infer.get("blocked_items") or ())),
            price_band=infer.get("price_band"),
            cold_start_popular=int(fusion.get("cold_start_popular", defaults.cold_start_popular)),
        )


def reranking_of(settings: FusionSettings) -> dict:
    """The settings tune_fusion chooses (and the run report shows): how the fused order is re-ranked."""
    return {"mmr_lambda": settings.mmr_lambda, "max_per_category": settings.max_per_category,
            "cap_max_score_loss": settings.cap_max_score_loss}


def checked_score_loss(value) -> float | None:
    if value is None:
        return None
    if float(value) < 0:
        raise ValueError(f"infer.cap_max_score_loss: expected a number >= 0 or null (a hard cap), got {value}")
    return float(value)


def checked_mmr_lambda(value) -> float:
    value = 1.0 if value is None else float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"infer.mmr_lambda: expected a number in [0, 1] (1 turns MMR off), got {value}")
    return value


# ----------------------------------------------------------------------------------------- item features
@dataclass
class ItemFeatures:
    """Dense per-item arrays indexed by item_idx (length n_items + 1; row 0 is padding)."""

    item_id: np.ndarray                 # object
    category: np.ndarray                # object (None where unknown)
    popularity: np.ndarray              # float
    sentiment: np.ndarray               # float, centred (0 = global mean / unrated)
    first_seen: np.ndarray              # float epoch seconds, nan = never seen
    price: np.ndarray                   # float, nan = unknown
    title: np.ndarray | None = None     # object, None where unknown
    blocked: np.ndarray | None = None   # bool
    rating: np.ndarray | None = None    # float, mean rating on the rating scale (nan = unrated), for reasons

    @property
    def n_items(self) -> int:
        return len(self.item_id) - 1

    def first(self, n_items: int) -> "ItemFeatures":
        """Items 1..n_items only: the catalogue a model trained before newer items arrived can score (the rest
        become recommendable after the next training run)."""
        if n_items >= self.n_items:
            return self
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[:n_items + 1] for f in dataclasses.fields(self)
                                            if getattr(self, f.name) is not None})

    def name(self, idx: int) -> str:
        if self.title is not None and isinstance(self.title[idx], str) and self.title[idx]:
            return f'"{self.title[idx]}"'
        return str(self.item_id[idx])


def item_sentiment(item_idx: np.ndarray, ratings: np.ndarray, n_items: int, rating_range=(0.0, 5.0),
                   prior_count: float = 5.0) -> np.ndarray:
    """Item "sentiment" from the review/rating data: each item's mean rating normalised to [0, 1] by
    clean.rating_range, shrunk towards the global mean with `prior_count` pseudo-ratings, minus the global
    mean. This is a plain Bayesian-average star rating, not a text-sentiment model of the review text.
    Items without ratings get exactly 0; returns an array of length n_items + 1."""
    low, high = rating_range
    item_idx = np.asarray(item_idx, dtype=np.int64)
    normalised = (np.asarray(ratings, dtype=np.float64) - low) / max(high - low, 1e-9)
    out = np.zeros(n_items + 1)
    if len(normalised) == 0:
        return out
    global_mean = normalised.mean()
    sums = np.bincount(item_idx, weights=normalised, minlength=n_items + 1)
    counts = np.bincount(item_idx, minlength=n_items + 1)
    shrunk = (sums + prior_count * global_mean) / (counts + prior_count)
    out[:] = shrunk - global_mean
    out[0] = 0.0
    return out


def freshness(first_seen: np.ndarray, as_of: float, half_life_days: float) -> np.ndarray:
    """0.5 ** (age in days / half-life) of each item's first appearance; never-seen (new) items get 1."""
    age_days = np.maximum(as_of - np.asarray(first_seen, dtype=np.float64), 0.0) / DAY
    out = np.power(0.5, age_days / half_life_days)
    return np.where(np.isnan(out), 1.0, out)


def popularity_score(popularity: np.ndarray) -> np.ndarray:
    """log1p(popularity) scaled to [0, 1] by the most popular item."""
    logged = np.log1p(np.maximum(np.asarray(popularity, dtype=np.float64), 0.0))
    top = logged.max() if len(logged) else 0.0
    return logged / top if top > 0 else np.zeros_like(logged)


# ------------------------------------------------------------------------------------------ social proof
def social_proof(friends: np.ndarray, items: np.ndarray, ts: np.ndarray, as_of: float, half_life_days: float
                 ) -> pd.DataFrame:
    """Per item the friends' time-decayed support from (friend, item, ts) events (purchases/likes).

    Each friend counts once per item, at their latest event on it. Returns columns item_idx, decayed
    (sum of 0.5 ** (age_days / half_life) over friends), friends (how many distinct friends), and
    social = decayed / (1 + decayed).
    """
    friends, items = np.asarray(friends, dtype=np.int64), np.asarray(items, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.float64)
    order = np.lexsort((ts, friends, items))  # by item, then friend, then time (numpy: pandas cost 70% of a list)
    items, friends, ts = items[order], friends[order], ts[order]
    latest = np.r_[(items[1:] != items[:-1]) | (friends[1:] != friends[:-1]), True] if len(items) else np.zeros(0, bool)
    items, ts = items[latest], ts[latest]
    weight = np.power(0.5, np.maximum(as_of - ts, 0.0) / DAY / half_life_days)
    item_idx, first, friend_counts = np.unique(items, return_index=True, return_counts=True)
    decayed = np.add.reduceat(weight, first) if len(first) else np.zeros(0)
    return pd.DataFrame({"item_idx": item_idx, "decayed": decayed, "friends": friend_counts.astype(np.int64),
                         "social": decayed / (1.0 + decayed)})


def lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray, fill) -> np.ndarray:
    """values at the positions of `queries` in the unique `keys` (any order), `fill` where a query is absent."""
    keys, values, queries = np.asarray(keys), np.asarray(values), np.asarray(queries)
    out = np.full(len(queries), fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    if len(keys) == 0:
        return out
    order = np.argsort(keys, kind="stable")
    at = np.minimum(np.searchsorted(keys, queries, sorter=order), len(keys) - 1)
    found = keys[order[at]] == queries
    out[found] = values[order[at[found]]]
    return out


# --------------------------------------------------------------------------------------------- top-K
def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k best scores per row, best first; ties go to the lower index."""
    k = min(k, scores.shape[1])
    if k <= 0 or k == scores.shape[1] or len(scores) == 0:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(scores, order, axis=1)
    # Select in linear time (the k-th best value per row, then everything above it and the lowest-index items
    # equal to it), then sort only those k: a full sort of every chunk was most of the scoring job's top-K time.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
    above = scores > kth
    equal = scores == kth
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= k - above.sum(axis=1, keepdims=True)))
    picked = np.nonzero(chosen)[1].reshape(len(scores), k)  # ascending column index within each row
    values = np.take_along_axis(scores, picked, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(picked, order, axis=1), np.take_along_axis(values, order, axis=1)


@dataclass
class ChunkedTopK:
    items: np.ndarray   # [B, k] item_idx, best first (-inf values where fewer than k items are allowed)
    scores: np.ndarray  # [B, k] raw model scores
    mean: np.ndarray    # [B] mean of the raw scores over every item (exclusions included)
    std: np.ndarray     # [B] standard deviation likewise


def chunked_top_k(score_chunk, n_items: int, k: int, chunk: int, excluded_chunk=None) -> ChunkedTopK:
    """Exact top-k over items 1..n_items scored `chunk` items at a time, so at most [B, chunk + k] scores are
    held at once. `score_chunk(lo, hi)` returns [B, hi - lo] scores of item_idx lo..hi-1;
    `excluded_chunk(lo, hi)` (optional) a [B, hi - lo] boolean mask of items that may not be recommended.
    Also streams each user's mean and std of the raw scores over the whole catalogue (for z-scoring)."""
    best_items = best_scores = None
    total = total_sq = None
    count = 0
    for lo in range(1, n_items + 1, max(1, chunk)):
        hi = min(n_items + 1, lo + max(1, chunk))
        scores = np.asarray(score_chunk(lo, hi), dtype=np.float64)
        total = scores.sum(axis=1) if total is None else total + scores.sum(axis=1)
        total_sq = (scores ** 2).sum(axis=1) if total_sq is None else total_sq + (scores ** 2).sum(axis=1)
        count += scores.shape[1]
        if excluded_chunk is not None:
            scores = np.where(excluded_chunk(lo, hi), -np.inf, scores)
        ids = np.broadcast_to(np.arange(lo, hi, dtype=np.int64), scores.shape)
        if best_items is not None:  # earlier chunks first: a stable sort keeps ties on the lower item_idx
            scores = np.concatenate([best_scores, scores], axis=1)
            ids = np.concatenate([best_items, ids], axis=1)
        order, best_scores = top_k(scores, k)
        best_items = np.take_along_axis(ids, order, axis=1)
    if best_items is None:
        raise ValueError("chunked_top_k: the catalogue is empty")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return ChunkedTopK(best_items, best_scores, mean, std)


# --------------------------------------------------------------------------------------------- rules
def user_median_price(purchased, price: np.ndarray) -> float:
    values = price[np.asarray(purchased, dtype=np.int64)] if len(purchased) else np.zeros(0)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


def allowed_items(candidates: np.ndarray, purchased, items: ItemFeatures, settings: FusionSettings,
                  median_price: float = float("nan")) -> np.ndarray:
    """Boolean mask over `candidates`: not padding, not blocked, not already bought (unless its category is in
    repeat_purchase_categories) and, when price_band is set and the user has a median purchase price p, priced
    within [p / band, p * band] (items without a price pass)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    ok = candidates > 0
    if items.blocked is not None:
        ok &= ~items.blocked[candidates]
    if settings.exclude_purchased and len(purchased):
        bought = np.isin(candidates, np.asarray(purchased, dtype=np.int64))
        if settings.repeat_purchase_categories:
            repeatable = np.isin(items.category[candidates].astype(object),
                                 np.asarray(settings.repeat_purchase_categories, dtype=object))
            bought &= ~repeatable
        ok &= ~bought
    if settings.price_band and not np.isnan(median_price):
        price = items.price[candidates]
        band = float(settings.price_band)
        in_band = (price >= median_price / band) & (price <= median_price * band)
        ok &= in_band | np.isnan(price)
    return ok


def excluded_chunk_fn(purchased_lists, items: ItemFeatures, settings: FusionSettings, median_prices=None):
    """`excluded_chunk(lo, hi)` for chunked_top_k: the complement of allowed_items for a batch of users,
    built from item-level arrays plus a scatter of each user's purchases (no per-item Python loop)."""
    repeatable = np.zeros(items.n_items + 1, dtype=bool)
    if settings.repeat_purchase_categories:
        repeatable = np.isin(items.category.astype(object),
                             np.asarray(settings.repeat_purchase_categories, dtype=object))
    bought = [np.asarray(p if settings.exclude_purchased else [], dtype=np.int64) for p in purchased_lists]
    bought = [p[(p > 0) & (p <= items.n_items)] for p in bought]
    bought = [p[~repeatable[p]] for p in bought]
    medians = (np.asarray(median_prices, dtype=np.float64) if median_prices is not None and settings.price_band
               else None)

    def excluded(lo, hi):
        mask = np.zeros((len(bought), hi - lo), dtype=bool)
        if items.blocked is not None:
            mask |= items.blocked[lo:hi][None, :]
        for row, p in enumerate(bought):
            inside = p[(p >= lo) & (p < hi)]
            mask[row, inside - lo] = True
        if medians is not None:
            band = float(settings.price_band)
            price = items.price[lo:hi][None, :]
            out = (price < medians[:, None] / band) | (price > medians[:, None] * band)
            mask |= out & ~np.isnan(price) & ~np.isnan(medians)[:, None]
        return mask
    return excluded


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so dot products are cosine similarities."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, n: int, trade_off: float) -> np.ndarray:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998) over candidates sorted best first: each next
    pick maximises trade_off * relevance - (1 - trade_off) * its highest cosine similarity to the picks so far
    (floored at 0), with relevance min-max scaled to [0, 1] over the candidates so that one trade-off means the
    same for every user. The signal for catalogues without categories: near-duplicates of an item already shown
    (in the model's own item space) give way to the next best item that is different. `vectors` are unit rows.
    Returns positions: the first n picks in order, then the rest in their given order."""
    count = len(relevance)
    if trade_off >= 1.0 or count <= 1:
        return np.arange(count)
    relevance = np.asarray(relevance, dtype=np.float64)
    spread = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / spread if spread > 0 else np.zeros(count)
    vectors = np.asarray(vectors, dtype=np.float64)
    # Highest similarity to any pick so far, floored at 0: an opposite item is no more novel than an unrelated one.
    closest = np.zeros(count)
    available = np.ones(count, dtype=bool)
    picked = []
    for _ in range(min(n, count)):
        gain = np.where(available, trade_off * relevance - (1.0 - trade_off) * closest, -np.inf)
        best = int(np.argmax(gain))  # ties go to the better-ranked candidate
        picked.append(best)
        available[best] = False
        # einsum, not BLAS: a 200 x 64 product is too small for threads, and a busy executor's BLAS threads made
        # this one product most of a list's time (benchmarks/rank_user_latency.py).
        closest = np.maximum(closest, np.einsum("ij,j->i", vectors, vectors[best]))
    return np.concatenate([np.asarray(picked, dtype=np.int64), np.nonzero(available)[0]])


def category_caps(history_items, categories: np.ndarray, page: int, settings: FusionSettings) -> dict:
    """Per-user caps above `max_per_category` (calibrated diversity, after Steck 2018): with
    `infer.calibrated_cap` a category may take as many places of a page as its share of the user's own history
    (rounded up), so a user who only ever rated DVDs is not pushed off DVDs, while a broad user keeps the plain
    cap. Unknown categories count for nothing. Returns {category: cap} for the raised categories only."""
    if not (settings.max_per_category and settings.calibrated_cap):
        return {}  # the default: no per-user work on the scoring path
    known = [c for c in categories[np.asarray(history_items, dtype=np.int64)] if known_category(c)]
    if not known:
        return {}
    names, counts = np.unique(np.asarray(known, dtype=object), return_counts=True)
    caps = np.ceil(page * counts / len(known)).astype(int)
    return {name: int(cap) for name, cap in zip(names, caps) if cap > settings.max_per_category}


def known_category(category) -> bool:
    return category is not None and not (isinstance(category, float) and np.isnan(category))


def diversify(categories: np.ndarray, k: int, max_per_category: int | None, caps: dict | None = None,
              scores: np.ndarray | None = None, max_score_loss: float | None = None) -> np.ndarray:
    """Greedy re-rank of candidates already sorted best first: take each next candidate unless its category
    already has `max_per_category` picks (or its raised cap in `caps`; unknown categories are never capped).
    When the cap leaves fewer than k, the best skipped candidates fill the remaining places (so a user still
    gets k items if k exist). Returns positions into the candidate list, in final rank order.

    With `max_score_loss` (and the candidates' `scores`) the cap is soft: a capped candidate gives way only when
    the best candidate that could take its place scores at most that much lower. Why: where a user's next items
    lie in one or two categories (Ciao), a hard cap hands half the list to items the ranking thinks far worse;
    the soft cap still breaks up near-ties, where diversity costs little."""
    if not max_per_category:
        return np.arange(min(k, len(categories)))
    caps = caps or {}
    picked, skipped, used = [], [], {}

    def is_full(category) -> bool:
        return known_category(category) and used.get(category, 0) >= caps.get(category, max_per_category)

    def cap_costs_too_much(position: int) -> bool:
        if max_score_loss is None:
            return False
        replacement = next((later for later in range(position + 1, len(categories))
                            if not is_full(categories[later])), None)
        return replacement is None or scores[position] - scores[replacement] > max_score_loss

    for position, category in enumerate(categories):
        if len(picked) == k:
            break
        if known_category(category):
            if is_full(category) and not cap_costs_too_much(position):
                skipped.append(position)
                continue
            used[category] = used.get(category, 0) + 1
        picked.append(position)
    picked += skipped[:k - len(picked)]
    return np.asarray(picked, dtype=np.int64)


def shown_order(categories: np.ndarray, page: int, shown: int, max_per_category: int | None,
                caps: dict | None = None, scores: np.ndarray | None = None,
                max_score_loss: float | None = None) -> np.ndarray:
    """Positions into a best-first candidate list in the order a user paging through lists of `page` items sees
    them: each page is `diversify`d among the candidates still left (a soft cap with `max_score_loss` and their
    `scores`), up to `shown` positions; the rest keep their order. With shown == page this is the single list
    recommendations store."""
    categories = np.asarray(categories, dtype=object)
    remaining = np.arange(len(categories))
    picked: list[np.ndarray] = []
    count = 0
    while count < shown and len(remaining):
        taken = remaining[diversify(categories[remaining], min(page, shown - count), max_per_category, caps,
                                    None if scores is None else scores[remaining], max_score_loss)]
        picked.append(taken)
        count += len(taken)
        remaining = remaining[~np.isin(remaining, taken)]
    return np.concatenate([*picked, remaining]).astype(np.int64)


def rule_ranked(scores: np.ndarray, categories: np.ndarray, settings: FusionSettings, page: int, shown: int,
                item_vectors: np.ndarray | None = None, histories: list | None = None) -> list[np.ndarray]:
    """Per row of dense scores [B, n_items + 1] (excluded items already -inf), the `candidate_pool` best items in
    the order recommendations show them (MMR on `item_vectors` where infer.mmr_lambda < 1, then pages of `page`
    items under the category cap, calibrated to each row's history items in `histories`, up to `shown`
    positions), so an evaluation ranks what users are actually shown rather than the raw fused order."""
    pool = max(settings.candidate_pool, shown)
    best, values = top_k(np.asarray(scores, dtype=np.float64), pool)
    categories = np.asarray(categories, dtype=object)
    finite = np.isfinite(values)
    histories = histories if histories is not None else [np.zeros(0, np.int64)] * len(best)
    return [reranked(items[keep], row_values[keep], categories, settings, page, shown, item_vectors,
                     category_caps(history, categories, page, settings))
            for items, row_values, keep, history in zip(best, values, finite, histories)]


def reranked(items: np.ndarray, scores: np.ndarray, categories: np.ndarray, settings: FusionSettings, page: int,
             shown: int, item_vectors: np.ndarray | None, caps: dict | None = None) -> np.ndarray:
    """Candidates sorted best first, in the order they are shown: MMR (when configured and item vectors exist),
    then the category cap (raised per category by `caps`, soft under infer.cap_max_score_loss) per page of `page`
    items, up to `shown` positions; the rest keep their order."""
    scores = np.asarray(scores, dtype=np.float64)
    if item_vectors is not None and settings.mmr_lambda < 1.0:
        order = mmr_order(scores, item_vectors[items], shown, settings.mmr_lambda)
        items, scores = items[order], scores[order]
    return items[shown_order(categories[items], page, shown, settings.max_per_category, caps, scores,
                             settings.cap_max_score_loss)]


def cold_start_candidates(friend_items: np.ndarray, items: ItemFeatures, n: int) -> np.ndarray:
    """Popular items in the categories of the friends' items, or globally popular items when friends give no
    category: the candidates of a user without history beside the friends' own items."""
    categories = {c for c in items.category[np.asarray(friend_items, dtype=np.int64)] if c is not None}
    ids = np.arange(1, items.n_items + 1)
    if categories:
        in_category = np.isin(items.category[1:].astype(object), np.asarray(sorted(categories), dtype=object))
        ids = ids[in_category]
    order = np.argsort(-items.popularity[ids], kind="stable")
    return ids[order[:n]]


# ------------------------------------------------------------------------------------------ explanation
def explain(weighted: dict, *, has_history: bool, friends: int = 0, friend_verb: str = "bought",
            category: str | None = None, similar_item: str | None = None, similar_verb: str = "viewed",
            rating: float | None = None, age_days: float | None = None,
            session_category: str | None = None) -> tuple[str, str]:
    """(reason_code, reason): a concrete social fact whenever friends bought or liked the item (the reason people
    act on, even where the model's score weighs more), otherwise the component with the largest weighted
    contribution. model -> similar_to_history (user with history) or model (without); social -> social_proof;
    pop -> popular_in_category; fresh -> trending; sentiment -> model ("well rated ...": no code of its own).
    Live scores (socialrec.inference.live_context) add request-time terms: session -> in_session ("matches what
    you are browsing now"); hour and device explain nothing on their own.
    The weights of every component stay in `components`, so the numbers behind a sentence remain auditable.
    """
    names = list(COMPONENTS) + [name for name in weighted if name not in COMPONENTS]
    component = max(names, key=lambda name: (weighted.get(name, 0.0), -names.index(name)))
    if friends > 0 and weighted.get("social", 0.0) > 0:
        return "social_proof", f"{friends} friend{'s' if friends != 1 else ''} {friend_verb} this"
    if component == "model" and has_history and similar_item:
        return "similar_to_history", f"similar to {similar_item} you {similar_verb}"
    if component == "pop":
        return "popular_in_category", f"popular in {category}" if category else "popular right now"
    if component == "fresh":
        return "trending", ("new and trending" if age_days is None or np.isnan(age_days)
                            else f"new and trending (first seen {age_days:.0f} days ago)")
    if component == "session" and weighted["session"] > 0:
        return "in_session", (f"matches what you are browsing now ({session_category})" if session_category
                              else "matches what you are browsing now")
    if component == "sentiment" and rating is not None:
        return "model", f"well rated by buyers ({rating:.1f} of 5 on average)"
    return "model", "recommended for you"


# ------------------------------------------------------------------------------------------ per user
@dataclass
class UserContext:
    """One user's inputs. history_* are time ordered (empty for a user without history); friend_* are the
    friends' purchase/like events (friend user_idx, item_idx, event type name, epoch seconds)."""

    user_key: str
    history_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    history_types: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    purchased: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    friend_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    friend_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    friend_types: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    friend_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class ItemPriors:
    """Item-level components computed once per run: sentiment, fresh and pop arrays (length n_items + 1)."""

    sentiment: np.ndarray
    fresh: np.ndarray
    pop: np.ndarray

    @classmethod
    def build(cls, items: ItemFeatures, as_of: float, settings: FusionSettings) -> "ItemPriors":
        return cls(items.sentiment.astype(np.float64),
                   freshness(items.first_seen, as_of, settings.fresh_half_life_days),
                   popularity_score(items.popularity))


def rank_user(user: UserContext, items: ItemFeatures, priors: ItemPriors, settings: FusionSettings, k: int,
              as_of: float, pool_items=None, pool_scores=None, mean: float = 0.0, std: float = 1.0,
              model_scores_of=None, item_vectors=None, context_parts: dict | None = None) -> pd.DataFrame:
    """The user's fused, rule-checked, diversified top-k with components and explanations.

    pool_items/pool_scores: the model's best allowed items and raw scores (from chunked_top_k), mean/std the
    user's raw score moments; model_scores_of(items) gives raw model scores of extra candidates (friends' items);
    item_vectors ([n_items + 1, d] unit rows, the model's item space) drive MMR where infer.mmr_lambda < 1.
    context_parts: weighted request-time terms, dense over items (live_context.context_parts), added to the sum.
    A user without history (or without a model pool) gets model = 0 and cold-start candidates.
    Columns: item_idx, score, model_score, components (dict of weighted components), reason_code, reason.
    """
    has_history = len(user.history_items) > 0
    social = social_proof(user.friend_ids, user.friend_items, user.friend_ts, as_of, settings.social_half_life_days)
    pool_items = np.zeros(0, np.int64) if pool_items is None else np.asarray(pool_items, dtype=np.int64)
    pool_scores = np.zeros(0) if pool_scores is None else np.asarray(pool_scores, dtype=np.float64)
    finite = np.isfinite(pool_scores)
    pool_items, pool_scores = pool_items[finite], pool_scores[finite]
    extra = [social["item_idx"].to_numpy()]
    if not has_history or len(pool_items) == 0:
        extra.append(cold_start_candidates(user.friend_items, items, settings.cold_start_popular))
    candidates = np.unique(np.concatenate([pool_items, *extra]).astype(np.int64))
    median = user_median_price(user.purchased, items.price) if settings.price_band else float("nan")
    candidates = candidates[allowed_items(candidates, user.purchased, items, settings, median)]
    if len(candidates) == 0:
        return pd.DataFrame(columns=["item_idx", "score", "model_score", "components", "reason_code", "reason"])

    raw = lookup(pool_items, pool_scores, candidates, np.nan)
    missing = np.isnan(raw)
    if missing.any() and model_scores_of is not None and has_history:
        raw[missing] = np.asarray(model_scores_of(candidates[missing]), dtype=np.float64)
    model_z = (raw - mean) / std if std > 0 else raw - mean
    model_z = np.where(np.isfinite(model_z), model_z, 0.0) if has_history else np.zeros(len(candidates))
    social_score = lookup(social["item_idx"].to_numpy(), social["social"].to_numpy(), candidates, 0.0)
    friend_counts = lookup(social["item_idx"].to_numpy(), social["friends"].to_numpy(), candidates, 0)
    parts = {"model": model_z, "social": social_score, "sentiment": priors.sentiment[candidates],
             "fresh": priors.fresh[candidates], "pop": priors.pop[candidates]}
    weights = settings.weights_for(has_history)
    weighted = {name: weights[name] * values for name, values in parts.items()}
    weighted.update({name: np.asarray(values, dtype=np.float64)[candidates]
                     for name, values in (context_parts or {}).items()})
    final = np.sum(list(weighted.values()), axis=0)

    order = np.argsort(-final, kind="stable")
    caps = category_caps(user.history_items, items.category, k, settings)
    order = reranked(order, final[order], items.category[candidates], settings, k, k,
                     None if item_vectors is None else item_vectors[candidates], caps)[:k]
    rows = []
    for position in order:
        item = int(candidates[position])
        contributions = {name: float(values[position]) for name, values in weighted.items()}
        friend_rows = user.friend_items == item
        types = set(np.asarray(user.friend_types)[friend_rows]) if friend_rows.any() else set()
        verb = " or ".join(VERBS.get(t, str(t)) for t in sorted(types)) if types else "bought"
        similar, similar_verb = similar_history_item(user, item, items)
        age = (as_of - items.first_seen[item]) / DAY
        code, reason = explain(
            contributions, has_history=has_history, friends=int(friend_counts[position]), friend_verb=verb,
            category=items.category[item], similar_item=similar, similar_verb=similar_verb,
            rating=float(items.rating[item]) if items.rating is not None and np.isfinite(items.rating[item]) else None,
            age_days=age, session_category=items.category[item])
        rows.append({"item_idx": item, "score": float(final[position]),
                     "model_score": float(raw[position]) if np.isfinite(raw[position]) else 0.0,
                     "components": contributions, "reason_code": code, "reason": reason})
    return pd.DataFrame(rows)


def similar_history_item(user: UserContext, item: int, items: ItemFeatures) -> tuple[str | None, str]:
    """The most recent history item in the recommended item's category (else the most recent one)."""
    if len(user.history_items) == 0:
        return None, "viewed"
    history = np.asarray(user.history_items, dtype=np.int64)
    same = np.nonzero(items.category[history] == items.category[item])[0] if items.category[item] is not None else []
    position = int(same[-1]) if len(same) else len(history) - 1
    kind = user.history_types[position] if len(user.history_types) > position else "view"
    return items.name(int(history[position])), VERBS.get(kind, "viewed")


# ------------------------------------------------------------------------------------- dense, for evaluation
def fused_scores(model_scores: np.ndarray, users: list[UserContext], items: ItemFeatures,
                 settings: FusionSettings, as_of: float) -> tuple[np.ndarray, dict]:
    """Dense fused scores [B, n_items + 1] (column 0 is -inf) for a full-catalogue ranking, e.g. Recall/NDCG of
    the fused ranking in evaluation; the same components and weights as recommendations, but no rules:
    apply the evaluation's own exclusions to the result, then `rule_ranked` for the category cap. Returns the
    scores and the weighted components {name: [B, n_items + 1]}. For a leak-free evaluation pass friend events cut
    before the user's test step (and histories cut likewise)."""
    model_scores = np.asarray(model_scores, dtype=np.float64)
    body = model_scores[:, 1:]
    mean = body.mean(axis=1, keepdims=True)
    std = body.std(axis=1, keepdims=True)
    z = (body - mean) / np.where(std > 0, std, 1.0)
    priors = ItemPriors.build(items, as_of, settings)
    social = np.zeros_like(body)
    for row, user in enumerate(users):
        proof = social_proof(user.friend_ids, user.friend_items, user.friend_ts, as_of, settings.social_half_life_days)
        social[row, proof["item_idx"].to_numpy() - 1] = proof["social"].to_numpy()
        if len(user.history_items) == 0:
            z[row] = 0.0
    has_history = [len(user.history_items) > 0 for user in users]
    # Per row, the weights of that user (cold-start weights where there is no history): [B, 1] columns.
    w = {name: np.array([[settings.weights_for(h)[name]] for h in has_history]).reshape(len(users), 1)
         for name in COMPONENTS}
    components = {"model": w["model"] * z, "social": w["social"] * social,
                  "sentiment": w["sentiment"] * priors.sentiment[1:], "fresh": w["fresh"] * priors.fresh[1:],
                  "pop": w["pop"] * priors.pop[1:]}
    fused = np.sum([components[name] for name in COMPONENTS], axis=0)
    pad = np.full((len(body), 1), -np.inf)
    return (np.concatenate([pad, fused], axis=1),
            {name: np.concatenate([pad, np.asarray(values)], axis=1) for name, values in components.items()})
