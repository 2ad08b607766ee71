"""Baselines of the evaluate stage against hand-computed values: item-KNN cosine similarity and scores,
catalogue coverage, user groups, and implicit ALS finding a planted item (real Spark)."""
import math

import numpy as np
import pytest

from socialrec.evaluation import baselines as bl
from socialrec.evaluation.metrics import target_ranks
from socialrec.features.collaborative import fit_als, interaction_pairs

# Three users; the last step of each is the held-out test item, so the training histories are
# u1 = [1, 2, 3], u2 = [1, 2], u3 = [2, 3, 4]. Users per item: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 1.
# Co-occurrence: (1,2) 2, (1,3) 1, (2,3) 2, (2,4) 1, (3,4) 1, (1,4) 0.
USERS = [(1, [1, 2, 3, 5], 5), (2, [1, 2, 2], 2), (3, [2, 3, 4, 1], 1)]
N_ITEMS = 5
S12 = S23 = 2 / math.sqrt(2 * 3)   # 0.8165
S13 = 1 / math.sqrt(2 * 2)         # 0.5
S24 = 1 / math.sqrt(3 * 1)         # 0.5774
S34 = 1 / math.sqrt(2 * 1)         # 0.7071


def training_pairs():
    users, items = [], []
    for user, history, test in USERS:
        train = bl.training_items(history, test)
        users += [user] * len(train)
        items += train.tolist()
    return np.array(users), np.array(items)


def as_dict(rows, cols, vals):
    return {(int(i), int(j)): float(v) for i, j, v in zip(rows, cols, vals)}


def test_training_items_hold_out_the_test_item_only():
    assert bl.training_items([1, 2, 3, 5], 5).tolist() == [1, 2, 3]
    assert bl.training_items([1, 2, 2], 2).tolist() == [1, 2]   # the earlier occurrence stays
    assert bl.training_items([4, 6], 0).tolist() == [4, 6]      # no holdout: the whole history


def test_cosine_similarity_matches_hand_computed_values():
    users, items = training_pairs()
    sims = as_dict(*bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=10))
    expected = {(1, 2): S12, (1, 3): S13, (2, 3): S23, (2, 4): S24, (3, 4): S34}
    expected.update({(j, i): v for (i, j), v in list(expected.items())})
    assert sims.keys() == expected.keys()  # no self-similarity, nothing for never co-occurring pairs
    assert all(sims[key] == pytest.approx(value) for key, value in expected.items())
    assert not any(5 in key for key in sims)  # u1's test item never leaks into the similarity


def test_top_neighbours_keep_the_most_similar_with_ties_by_item_id():
    users, items = training_pairs()
    sims = as_dict(*bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=2))
    # item 2's candidates: 1 (0.8165), 3 (0.8165), 4 (0.5774) -> the tie between 1 and 3 keeps both, 4 drops
    assert {j for i, j in sims if i == 2} == {1, 3}
    assert {j for i, j in sims if i == 3} == {2, 4}   # 2 (0.8165), 4 (0.7071) beat 1 (0.5)
    assert {j for i, j in sims if i == 4} == {3, 2}
    rows, cols, vals = bl.top_per_row([7, 7, 7], [3, 1, 2], [0.5, 0.5, 0.9], 2)
    assert cols.tolist() == [2, 1] and vals.tolist() == [0.9, 0.5]


def test_item_similarity_built_in_blocks_equals_the_whole_product():
    rng = np.random.default_rng(5)
    users, items = rng.integers(0, 40, 600), rng.integers(1, 81, 600)
    whole = bl.cosine_neighbours_local(users, items, 80, neighbours=7)
    blocked = bl.cosine_neighbours_local(users, items, 80, neighbours=7, block_entries=50)  # dozens of blocks
    assert as_dict(*blocked) == pytest.approx(as_dict(*whole)) and len(blocked[0]) == len(whole[0])
    assert list(bl.blocks_of(np.array([3, 3, 9, 1, 1]), 6)) == [(0, 2), (2, 3), (3, 5)]


def test_item_knn_scores_sum_similarities_of_the_history():
    users, items = training_pairs()
    matrix = bl.similarity_matrix(*bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=2), N_ITEMS)
    scores = bl.knn_scores(matrix, [[1, 3]], history=50, decay=1.0)[0]
    # row 1 keeps {2: S12, 3: S13}; row 3 keeps {2: S23, 4: S34}
    assert scores.tolist() == pytest.approx([0.0, 0.0, S12 + S23, S13, S34, 0.0])
    # recency: the most recent item (3) weighs 1, the one before (1) weighs 0.5
    recent = bl.knn_scores(matrix, [[1, 3]], history=50, decay=0.5)[0]
    assert recent.tolist() == pytest.approx([0.0, 0.0, 0.5 * S12 + S23, 0.5 * S13, S34, 0.0])
    # only the last `history` items vote
    assert bl.knn_scores(matrix, [[1, 3]], history=1, decay=1.0)[0].tolist() == pytest.approx(
        [0.0, 0.0, S23, 0.0, S34, 0.0])
    # an empty history scores nothing
    assert bl.knn_scores(matrix, [[]])[0].tolist() == [0.0] * 6


def test_item_knn_without_scipy_scores_the_same(monkeypatch):
    users, items = training_pairs()
    neighbours = bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=2)
    histories = [[1, 3], [2], [4, 4, 1]]
    with_scipy = bl.knn_scores(bl.similarity_matrix(*neighbours, N_ITEMS), histories, 50, 0.7)
    monkeypatch.setattr(bl, "sparse", None)  # dense numpy fallback
    dense = bl.similarity_matrix(*neighbours, N_ITEMS)
    assert isinstance(dense, np.ndarray)
    assert bl.knn_scores(dense, histories, 50, 0.7) == pytest.approx(with_scipy)
    with pytest.raises(RuntimeError, match="scipy"):
        bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=2)


def test_seen_items_are_masked_and_top_lists_skip_them():
    scores = np.array([[9.0, 1.0, 5.0, 4.0, 3.0], [9.0, 1.0, 2.0, 3.0, 4.0]])
    masked = bl.mask_seen(scores.copy(), [[3], [4]])
    assert masked[0].tolist() == [-np.inf, 1.0, 5.0, -np.inf, 3.0]
    assert target_ranks(masked, np.array([2, 3])).tolist() == [0, 0]
    assert [t.tolist() for t in bl.top_items(masked, 2)] == [[2, 4], [3, 2]]
    # A target the user had already seen is masked like any seen item: the last rank, a miss for every model.
    assert target_ranks(masked, np.array([3, 4])).tolist() == [4, 4]
    flat = np.full((1, 4), -np.inf)
    flat[0, 2] = 1.0
    assert [t.tolist() for t in bl.top_items(flat, 3)] == [[2]]  # -inf items are never listed


def test_catalogue_coverage():
    lists = [np.array([1, 2, 3]), np.array([2, 3, 7]), np.array([], dtype=np.int32)]
    assert bl.catalogue_coverage(lists, n_items=10) == pytest.approx(4 / 10)
    assert bl.catalogue_coverage(lists, n_items=10, k=1) == pytest.approx(2 / 10)   # items 1 and 2
    assert bl.catalogue_coverage([], n_items=10) == 0.0


def test_user_groups():
    groups = bl.user_groups(n_steps=[3, 5, 6, 40], n_friend_items=[0, 4, 0, 1], cold_max_steps=5)
    assert groups["cold"].tolist() == [True, True, False, False]
    assert groups["warm"].tolist() == [False, False, True, True]
    assert groups["friends"].tolist() == [False, True, False, True]
    assert groups["no_friends"].tolist() == [True, False, True, False]


def test_als_scores_rank_unknown_users_and_items_last():
    items = np.array([[np.nan, np.nan], [1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])  # item 3 unknown
    scores = bl.als_scores([np.array([2.0, 1.0]), None], items)
    assert scores[0].tolist() == [-np.inf, 2.0, 1.0, -np.inf]
    assert np.isneginf(scores[1]).all()
    # an unknown user ties every item at -inf: the target is ranked last
    assert target_ranks(scores, np.array([1, 1])).tolist() == [0, 3]


def test_spark_similarity_matches_the_driver_one(spark):
    users, items = training_pairs()
    pairs = spark.createDataFrame([(int(u), int(i)) for u, i in zip(users, items)], "user_idx int, item_idx int")
    rows = bl.cosine_neighbours_spark(pairs, neighbours=2).collect()
    got = {(r.item_i, r.item_j): r.sim for r in rows}
    expected = as_dict(*bl.cosine_neighbours_local(users, items, N_ITEMS, neighbours=2))
    assert got.keys() == expected.keys()
    assert all(got[key] == pytest.approx(value) for key, value in expected.items())


def test_interactions_count_repeated_steps_before_the_test_item(spark):
    users = spark.createDataFrame([(1, [1, 2, 1, 3], 3), (2, [4, 5], 0)], "user_idx int, items array<int>, test_item int")
    got = {(r.user_idx, r.item_idx): r.strength for r in interaction_pairs(users, held_out_steps=1).collect()}
    assert got == {(1, 1): 2.0, (1, 2): 1.0, (2, 4): 1.0, (2, 5): 1.0}


def test_implicit_als_ranks_the_planted_item_first(spark, conf):
    """Two taste clusters (items 1-6 and 7-12); every user touches five items of their cluster, leaving one
    out. Among the items a user has not seen, ALS must put the left-out item of their own cluster first."""
    rng = np.random.default_rng(3)
    rows, planted, seen = [], {}, {}
    for user in range(1, 61):
        cluster = np.arange(1, 7) if user % 2 else np.arange(7, 13)
        left_out = int(rng.choice(cluster))
        planted[user] = left_out
        seen[user] = [int(i) for i in cluster if i != left_out]
        rows += [(user, item, float(rng.integers(1, 4))) for item in seen[user]]
    pairs = spark.createDataFrame(rows, "user_idx int, item_idx int, strength float")
    params = {**conf["evaluate"]["als"], "rank": 4, "blocks": 2}  # the configured reg, alpha, iterations
    user_factors, item_factors = fit_als(pairs, n_items=13, params=params)  # item 13: in no interaction
    assert item_factors.shape == (14, 4) and np.isnan(item_factors[13]).all()
    factors = {r.user_idx: r.als_factors for r in user_factors.collect()}
    users = sorted(planted)
    scores = bl.als_scores([factors.get(u) for u in users], item_factors)
    targets = np.array([planted[u] for u in users])
    masked = bl.mask_seen(scores, [seen[u] for u in users])
    ranks = target_ranks(masked, targets)
    assert (ranks == 0).mean() >= 0.8, ranks
    assert np.isneginf(scores[:, 13]).all()
