"""Full-ranking metrics from the rank of each user's held-out item (no sampled negatives).

Each user has one held-out item (leave-last-out), so Recall@K is the hit rate, NDCG@K is 1/log2(rank+2)
when the item ranks inside K, and MRR is the mean reciprocal rank over the whole catalogue.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: list | None = None) -> np.ndarray:
    """0-based rank of each target among all items, after removing each user's excluded items.

    `scores` is [users, items] (column 0, the padding id, never counts); `excluded[u]` holds item ids the user
    already interacted with. A target among them is excluded too and counts as a miss for every model alike:
    sparing it alone would single it out among the user's history (a leak worth ~0.13 NDCG@10 to any model that
    scores seen items high). Ties count against the target, so a model that scores everything equally does not
    look good.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[:, 0] = -np.inf
    rows = np.arange(len(targets))
    if excluded is not None:
        for row, items in enumerate(excluded):
            items = np.asarray(items, dtype=np.int64)
            scores[row, items[items > 0]] = -np.inf
    target_scores = scores[rows, targets]
    return (scores >= target_scores[:, None]).sum(axis=1) - 1  # an excluded target ties with all: the last rank


def list_ranks(lists, targets: np.ndarray, score_ranks: np.ndarray) -> np.ndarray:
    """0-based rank of each target when users see `lists[u]` (a re-ranked head of the ranking, e.g. under the
    category cap) followed by the remaining items in score order: the position in the list when the target is
    in it, else its rank by score (`score_ranks`, from target_ranks), which the head cannot reach."""
    ranks = np.asarray(score_ranks, dtype=np.int64).copy()
    for row, (items, target) in enumerate(zip(lists, np.asarray(targets, dtype=np.int64))):
        hit = np.nonzero(np.asarray(items, dtype=np.int64) == target)[0]
        if len(hit):
            ranks[row] = int(hit[0])
    return ranks


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's value of `metric` (recall@K, ndcg@K or mrr) from the 0-based rank of their held-out item."""
    ranks = np.asarray(ranks, dtype=np.float64)
    name, _, cutoff = metric.partition("@")
    if name == "mrr" and not cutoff:
        return 1.0 / (ranks + 1.0)
    if name in ("recall", "ndcg") and cutoff.isdigit():
        hit = ranks < int(cutoff)
        return hit.astype(np.float64) if name == "recall" else np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    raise ValueError(f"unknown metric {metric!r}: expected recall@K, ndcg@K or mrr")


def metrics_from_ranks(ranks: np.ndarray, ks=(10, 20)) -> dict[str, float]:
    """Recall@K, NDCG@K for each K, and MRR, averaged over users."""
    names = [*(name for k in ks for name in (f"recall@{k}", f"ndcg@{k}")), "mrr"]
    if len(ranks) == 0:
        return dict.fromkeys(names, 0.0)
    return {name: float(per_user(ranks, name).mean()) for name in names}


def paired_difference(ranks: np.ndarray, other_ranks: np.ndarray, metric: str, confidence: float = 0.95) -> dict:
    """How far one model leads another on `metric` over the same users, and whether that lead is more than noise
    (paired_values on each user's value of `metric` from the rank of their held-out item)."""
    return paired_values(per_user(ranks, metric), per_user(other_ranks, metric), confidence)


def paired_values(values: np.ndarray, other_values: np.ndarray, confidence: float = 0.95) -> dict:
    """The mean per-user difference of two models' values over the same users, its `confidence` interval and the
    two-sided p-value of a paired test (normal approximation: the mean of thousands of per-user differences;
    hits are rare, so a single percentage such as "ALS leads by 4%" can be a handful of users)."""
    differences = np.asarray(values, dtype=np.float64) - np.asarray(other_values, dtype=np.float64)
    n = len(differences)
    mean = float(differences.mean()) if n else 0.0
    se = float(differences.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * se
    p = math.erfc(abs(mean) / se / math.sqrt(2)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"difference": mean, "low": mean - half, "high": mean + half, "p_value": p, "users": n}


def format_comparison(comparison: dict) -> str:
    """'+0.0012 [-0.0003, +0.0027] p=0.12': a paired_difference as one cell of a table."""
    return (f"{comparison['difference']:+.4f} [{comparison['low']:+.4f}, {comparison['high']:+.4f}] "
            f"p={comparison['p_value']:.2g}")


def category_diversity(top_lists, categories: np.ndarray, k: int) -> float | None:
    """Mean share of distinct categories among each top-k list's items of known category (1.0: every item from
    another category), over lists with at least two such items; None where items carry no categories."""
    categories = np.asarray(categories, dtype=object)
    shares = []
    for items in top_lists:
        items = np.asarray(items if items is not None else [], dtype=np.int64)[:k]
        known = [c for c in categories[items[items > 0]] if isinstance(c, str)]
        if len(known) >= 2:
            shares.append(len(set(known)) / len(known))
    return float(np.mean(shares)) if shares else None


# ------------------------------------------------------------------ several test items per user (published splits)

TOPK_METRICS = ("recall", "ndcg", "precision", "hit", "mrr")


def hit_matrix(top_lists: np.ndarray, test_sets: list) -> np.ndarray:
    """[users, K] booleans: whether the item at each position of a user's top-K list is one of their test items."""
    top_lists = np.asarray(top_lists, dtype=np.int64)
    return np.stack([np.isin(row, np.asarray(items, dtype=np.int64)) for row, items in zip(top_lists, test_sets)]) \
        if len(top_lists) else np.zeros((0, top_lists.shape[1] if top_lists.ndim == 2 else 0), dtype=bool)


def per_user_topk(hits: np.ndarray, n_relevant: np.ndarray, metric: str) -> np.ndarray:
    """Each user's value of `metric` at K (recall@K, ndcg@K, precision@K, hit@K or mrr@K) from their hit matrix
    and number of test items, with RecBole's definitions: recall divides the hits by the user's test items,
    precision by K; NDCG's ideal DCG fills min(test items, K) positions; MRR@K is the reciprocal position of the
    first hit inside K (0 without one)."""
    name, _, cutoff = metric.partition("@")
    if name not in TOPK_METRICS or not cutoff.isdigit():
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(TOPK_METRICS)} at K, e.g. ndcg@10")
    k = int(cutoff)
    if hits.shape[1] < k:
        raise ValueError(f"{metric} needs top-{k} lists, got {hits.shape[1]} items a user")
    hits = hits[:, :k].astype(np.float64)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    found = hits.sum(axis=1)
    if name == "recall":
        return found / n_relevant
    if name == "precision":
        return found / k
    if name == "hit":
        return (found > 0).astype(np.float64)
    positions = np.arange(1, k + 1, dtype=np.float64)
    if name == "mrr":
        first = hits.argmax(axis=1)
        return np.where(found > 0, 1.0 / (first + 1.0), 0.0)
    discounts = 1.0 / np.log2(positions + 1.0)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k).astype(np.int64) - 1]
    return (hits * discounts).sum(axis=1) / ideal


def topk_metrics(top_lists: np.ndarray, test_sets: list, ks=(10, 20), names=TOPK_METRICS) -> dict[str, float]:
    """Every `names` metric at every K, averaged over the users with at least one test item (the published
    full-ranking convention: a user's test items are ranked together, their train items masked before the cut)."""
    n_relevant = np.array([len(items) for items in test_sets], dtype=np.int64)
    keep = n_relevant > 0
    hits = hit_matrix(np.asarray(top_lists)[keep], [items for items, kept in zip(test_sets, keep) if kept])
    return {f"{name}@{k}": float(per_user_topk(hits, n_relevant[keep], f"{name}@{k}").mean()) if keep.any() else 0.0
            for k in ks for name in names}
