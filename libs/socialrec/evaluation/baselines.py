"""Baselines for the evaluate stage, on the same split and the same full ranking as the model.

- popularity: training interactions per item (gold.item_index.popularity).
- itemknn: item-item cosine similarity of the training co-occurrence (which users touched both items), the
  `neighbours` most similar items kept per item; a user's score for item j is the (optionally recency-weighted)
  sum over the user's most recent history items i of sim(i, j).
- als: Spark MLlib implicit ALS on (user_idx, item_idx, strength = occurrences) of the training interactions;
  the score is user factors · item factors; users or items ALS never saw score -inf (ranked last).

Training interactions are each user's steps before the test item (the whole history when the user has no
holdout): exactly what popularity counts and what the model sees at test time, so no baseline sees a test item.

Also here: catalogue coverage of the top-K lists and the user groups metrics are broken down by. Everything
but the Spark builders is pure numpy (scipy.sparse when importable, dense numpy otherwise).
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

try:  # scipy is not pinned in requirements.txt; it arrives with other packages but is optional here
    import scipy.sparse as sparse
except ImportError:  # pragma: no cover - exercised only where scipy is absent
    sparse = None

KNOWN_BASELINES = ("popularity", "itemknn", "als")
GROUPS = ("cold", "warm", "friends", "no_friends")


# ---------------------------------------------------------------------------------------------- training data

def training_items(items, test_item: int) -> np.ndarray:
    """A user's training interactions: the steps before the test item (all of them when there is no holdout)."""
    items = np.asarray(items, dtype=np.int64)
    return items[:-1] if test_item and len(items) else items


# ---------------------------------------------------------------------------------------------- item-KNN

def top_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int):
    """Keep the n largest values of each row (ties: smaller column first), as (rows, cols, vals)."""
    rows, cols, vals = (np.asarray(a) for a in (rows, cols, vals))
    if len(rows) == 0:
        return rows.astype(np.int64), cols.astype(np.int64), vals.astype(np.float64)
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    lengths = np.diff(np.r_[starts, len(rows)])
    position = np.arange(len(rows)) - np.repeat(starts, lengths)
    keep = position < n
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64), vals[keep].astype(np.float64)


def cosine_neighbours_local(user_idx, item_idx, n_items: int, neighbours: int, block_entries: int = 20_000_000):
    """Top-`neighbours` cosine neighbours per item from (user, item) pairs, by a sparse product on the driver.

    sim(i, j) = |users with i and j| / sqrt(|users with i| · |users with j|), i != j. Needs scipy.
    XᵀX is built a block of item rows at a time, each block holding at most about `block_entries` co-occurrence
    entries before its top neighbours are kept: a few heavy users (Epinions has raters of thousands of items) make
    the whole product far larger than the pairs (up to Σ deg² entries).
    """
    if sparse is None:
        raise RuntimeError("scipy is not importable: build the item similarity with cosine_neighbours_spark")
    user_idx, item_idx = np.asarray(user_idx, dtype=np.int64), np.asarray(item_idx, dtype=np.int64)
    _, user_pos = np.unique(user_idx, return_inverse=True)
    x = sparse.csr_matrix((np.ones(len(item_idx)), (user_pos, item_idx)),
                          shape=(int(user_pos.max(initial=-1)) + 1, n_items + 1))
    x.sum_duplicates()
    x.data[:] = 1.0  # a user either touched an item or not
    counts = np.asarray(x.sum(axis=0)).ravel()
    # Entries of item i's row of XᵀX: at most the sum of its users' item counts.
    row_entries = x.T @ np.asarray(x.sum(axis=1)).ravel()
    items_by_user = x.T.tocsr()
    parts = []
    for lo, hi in blocks_of(row_entries, block_entries):
        both = (items_by_user[lo:hi] @ x).tocoo()
        rows = both.row.astype(np.int64) + lo
        off_diagonal = rows != both.col
        rows, cols, common = rows[off_diagonal], both.col[off_diagonal], both.data[off_diagonal]
        parts.append(top_per_row(rows, cols, common / np.sqrt(counts[rows] * counts[cols]), neighbours))
    return tuple(np.concatenate([part[column] for part in parts]) for column in range(3))


def blocks_of(costs: np.ndarray, budget: int):
    """Contiguous [lo, hi) ranges over `costs` whose sums stay within `budget` (a single costlier row is a block
    of its own)."""
    lo, total = 0, 0.0
    for position, cost in enumerate(costs):
        if position > lo and total + cost > budget:
            yield lo, position
            lo, total = position, 0.0
        total += cost
    yield lo, len(costs)


def cosine_neighbours_spark(pairs: DataFrame, neighbours: int) -> DataFrame:
    """The same similarity as `cosine_neighbours_local`, by a self-join of (user, item) pairs in Spark:
    (item_i, item_j, sim), at most `neighbours` rows per item_i."""
    seen = pairs.select("user_idx", "item_idx").distinct()
    counts = seen.groupBy("item_idx").agg(F.count("*").cast("double").alias("n"))
    left = seen.select("user_idx", F.col("item_idx").alias("item_i"))
    right = seen.select("user_idx", F.col("item_idx").alias("item_j"))
    common = (left.join(right, "user_idx").where(F.col("item_i") != F.col("item_j"))
              .groupBy("item_i", "item_j").agg(F.count("*").cast("double").alias("both")))
    sims = (
        common.join(F.broadcast(counts.select(F.col("item_idx").alias("item_i"), F.col("n").alias("n_i"))), "item_i")
        .join(F.broadcast(counts.select(F.col("item_idx").alias("item_j"), F.col("n").alias("n_j"))), "item_j")
        .select("item_i", "item_j", (F.col("both") / F.sqrt(F.col("n_i") * F.col("n_j"))).alias("sim"))
    )
    best = Window.partitionBy("item_i").orderBy(F.desc("sim"), "item_j")
    return sims.withColumn("_r", F.row_number().over(best)).where(F.col("_r") <= neighbours).drop("_r")


def similarity_matrix(rows, cols, vals, n_items: int):
    """[n_items + 1, n_items + 1] matrix S with S[i, j] = sim(i, j) for the kept neighbours (row = history item)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    if sparse is not None:
        return sparse.csr_matrix((vals, (rows, cols)), shape=(n_items + 1, n_items + 1))
    dense = np.zeros((n_items + 1, n_items + 1))
    dense[rows, cols] = vals
    return dense


def history_weights(histories, n_items: int, history: int, decay: float):
    """[users, n_items + 1] weights of each user's last `history` items; the i-th most recent weighs decay**i
    (an item occurring twice adds up)."""
    rows, cols, vals = [], [], []
    for row, items in enumerate(histories):
        tail = np.asarray(items, dtype=np.int64)[-history:] if history else np.zeros(0, np.int64)
        weights = float(decay) ** np.arange(len(tail) - 1, -1, -1, dtype=np.float64)
        keep = tail > 0
        rows.append(np.full(int(keep.sum()), row))
        cols.append(tail[keep])
        vals.append(weights[keep])
    rows, cols, vals = (np.concatenate(a) if a else np.zeros(0) for a in (rows, cols, vals))
    shape = (len(histories), n_items + 1)
    if sparse is not None:
        return sparse.csr_matrix((vals, (rows.astype(np.int64), cols.astype(np.int64))), shape=shape)
    dense = np.zeros(shape)
    np.add.at(dense, (rows.astype(np.int64), cols.astype(np.int64)), vals)
    return dense


def knn_scores(similarity, histories, history: int = 50, decay: float = 1.0) -> np.ndarray:
    """score[u, j] = sum over the user's recent history items i of weight(i) · sim(i, j), as a dense array."""
    n_items = similarity.shape[0] - 1
    scores = history_weights(histories, n_items, history, decay) @ similarity
    return scores.toarray() if hasattr(scores, "toarray") else np.asarray(scores)


# ---------------------------------------------------------------------------------------------- ALS

def als_scores(user_factors, item_factors: np.ndarray) -> np.ndarray:
    """[users, items] dot products; a user without factors (None / NaN) or an item without factors gets -inf."""
    item_factors = np.asarray(item_factors, dtype=np.float64)
    rank = item_factors.shape[1]
    users = np.zeros((len(user_factors), rank))
    known_user = np.zeros(len(user_factors), dtype=bool)
    for row, factors in enumerate(user_factors):
        if factors is not None and len(factors) == rank and np.all(np.isfinite(factors)):
            users[row] = np.asarray(factors, dtype=np.float64)
            known_user[row] = True
    known_item = np.all(np.isfinite(item_factors), axis=1)
    scores = users @ np.where(known_item[:, None], item_factors, 0.0).T
    scores[~known_user, :] = -np.inf
    scores[:, ~known_item] = -np.inf
    return scores


# ---------------------------------------------------------------------------------------------- ranking helpers

def mask_seen(scores: np.ndarray, seen) -> np.ndarray:
    """In place: padding and each user's already-seen items (a seen target too) to -inf, as target_ranks does."""
    scores[:, 0] = -np.inf
    for row, items in enumerate(seen):
        items = np.asarray(items, dtype=np.int64)
        scores[row, items[items > 0]] = -np.inf
    return scores


def top_items(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Each row's k best items, best first; only finite scores (an unscorable user has an empty list)."""
    k = min(k, scores.shape[1])
    if k <= 0 or len(scores) == 0:
        return [np.zeros(0, dtype=np.int32) for _ in range(len(scores))]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=1)  # best first, ties by item id
    part, values = np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)
    return [row[np.isfinite(vals)].astype(np.int32) for row, vals in zip(part, values)]


def catalogue_coverage(top_lists, n_items: int, k: int | None = None) -> float:
    """Share of the catalogue's n_items items that appear in at least one user's top-k list."""
    if n_items <= 0:
        return 0.0
    shown: set[int] = set()
    for items in top_lists:
        items = np.asarray(items if items is not None else [], dtype=np.int64)
        shown.update(int(i) for i in (items[:k] if k is not None else items) if i > 0)
    return len(shown) / n_items


def user_groups(n_steps, n_friend_items, cold_max_steps: int) -> dict[str, np.ndarray]:
    """Boolean masks of the user groups: `cold` (at most cold_max_steps steps, test item included) and `warm`
    (the rest); `friends` (some friend item as social input) and `no_friends`."""
    n_steps = np.asarray(n_steps, dtype=np.int64)
    n_friend_items = np.asarray(n_friend_items, dtype=np.int64)
    cold = n_steps <= cold_max_steps
    friends = n_friend_items > 0
    return {"cold": cold, "warm": ~cold, "friends": friends, "no_friends": ~friends}
