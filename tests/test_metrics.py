"""Full-ranking metrics against hand-computed values."""
import math

import numpy as np
import pytest

from socialrec.evaluation.metrics import (category_diversity, list_ranks, metrics_from_ranks, paired_difference,
                                         per_user, target_ranks)
from socialrec.inference.scoring import top_k


def test_metrics_match_hand_computed_values():
    ranks = np.array([0, 1, 10, 25])
    got = metrics_from_ranks(ranks, ks=(10, 20))
    assert got["recall@10"] == pytest.approx(0.5)
    assert got["recall@20"] == pytest.approx(0.75)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert got["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(12)) / 4)
    assert got["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 26) / 4)


def test_per_user_values_average_to_the_metrics_and_unknown_metrics_are_refused():
    ranks = np.array([0, 1, 10, 25])
    assert per_user(ranks, "ndcg@10").tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.0, 0.0])
    assert per_user(ranks, "recall@20").tolist() == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="unknown metric 'hit@10'"):
        per_user(ranks, "hit@10")


def test_paired_difference_matches_a_hand_computed_paired_test():
    ours, theirs = np.array([0, 0, 0, 5, 30, 30]), np.array([30, 0, 30, 30, 0, 30])
    got = paired_difference(ours, theirs, "recall@10")
    differences = np.array([1, 0, 1, 1, -1, 0], dtype=float)  # hits: ours 4 users, theirs 2
    se = differences.std(ddof=1) / math.sqrt(6)
    assert got["difference"] == pytest.approx(1 / 3) and got["users"] == 6
    assert got["low"] == pytest.approx(1 / 3 - 1.959964 * se) and got["high"] == pytest.approx(1 / 3 + 1.959964 * se)
    assert got["p_value"] == pytest.approx(math.erfc((1 / 3) / se / math.sqrt(2)))
    assert 0.05 < got["p_value"] < 0.5  # 4 hits against 2 among six users: a lead, not a significant one


def test_a_consistent_lead_over_many_users_is_significant_and_identical_rankings_are_not():
    rng = np.random.default_rng(0)
    theirs = rng.integers(0, 100, size=5000)
    better = np.maximum(theirs - rng.integers(0, 10, size=5000), 0)
    assert paired_difference(better, theirs, "ndcg@10")["p_value"] < 1e-6
    assert paired_difference(theirs, theirs, "ndcg@10") == {"difference": 0.0, "low": 0.0, "high": 0.0,
                                                              "p_value": 1.0, "users": 5000}


def test_target_rank_ignores_padding_and_excluded_items_and_an_excluded_target_is_a_miss():
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0]])  # column 0 is padding and must not count
    assert target_ranks(scores, np.array([3]))[0] == 2
    assert target_ranks(scores, np.array([3]), excluded=[[1]])[0] == 1  # item 1 removed
    # Sparing a seen target alone would reveal it among the history: it is excluded too, ranked last.
    assert target_ranks(scores, np.array([3]), excluded=[[1, 3]])[0] == 4  # below all 4 real items
    assert metrics_from_ranks(target_ranks(scores, np.array([3]), excluded=[[3]]), ks=(3,))["recall@3"] == 0.0


def test_ties_count_against_the_target():
    flat = np.ones((1, 6))
    assert target_ranks(flat, np.array([2]))[0] == 4  # all 5 real items tie: the target is ranked last


def test_empty_input_gives_zero_metrics():
    assert metrics_from_ranks(np.array([]), ks=(10,)) == {"recall@10": 0.0, "ndcg@10": 0.0, "mrr": 0.0}


def test_top_k_is_sorted_and_skips_nothing_finite():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [3.0, 2.0, 1.0, 0.0]])
    items, values = top_k(scores, 2)
    assert items.tolist() == [[1, 3], [0, 1]]
    assert values.tolist() == [[0.9, 0.5], [3.0, 2.0]]


def test_list_ranks_use_the_shown_position_and_fall_back_to_the_score_rank():
    lists = [np.array([5, 3, 9]), np.array([4, 2]), np.array([], dtype=np.int64)]
    ranks = list_ranks(lists, np.array([9, 7, 1]), np.array([1, 40, 12]))
    assert list(ranks) == [2, 40, 12]


def test_category_diversity():
    categories = np.array([None, "a", "a", "b", "c", None], dtype=object)
    lists = [np.array([1, 2, 3, 4]), np.array([1, 2]), np.array([5, 1])]  # 3/4, 1/2, one known item: skipped
    assert category_diversity(lists, categories, 10) == pytest.approx((0.75 + 0.5) / 2)
    assert category_diversity(lists, categories, 2) == pytest.approx((0.5 + 0.5) / 2)
    assert category_diversity(lists, np.full(6, None, dtype=object), 10) is None


def test_ranking_batches_shrink_on_large_catalogues():
    from socialrec.evaluation.evaluate import users_per_batch

    assert users_per_batch(512, 1_500, 20_000_000) == 512  # small catalogue: the configured batch
    assert users_per_batch(512, 105_114, 20_000_000) == 190  # Ciao: 190 x 105,115 scores <= 20M per matrix
    assert users_per_batch(512, 50_000_000, 20_000_000) == 1  # never zero users
