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
    """How far one model leads another on `metric` over the same users, and whether that lead is more than noise:
    the mean per-user difference, its `confidence` interval and the two-sided p-value of a paired test
    (normal approximation: the mean of thousands of per-user differences; hits are rare, so a single
    percentage such as "ALS leads by 4%" can be a handful of users)."""
    differences = per_user(ranks, metric) - per_user(other_ranks, metric)
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
