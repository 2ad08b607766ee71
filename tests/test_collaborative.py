"""Collaborative item factors, the model's frozen cf feature: fitted on the steps before validation only,
and they carry the co-occurrence structure (real Spark MLlib ALS on the shared local session)."""
from __future__ import annotations

import numpy as np
import torch

import pandas as pd

from socialrec.features.collaborative import fit_als, interaction_pairs, item_factor_table, search_als_params
from socialrec.model.recommender import SocialSequenceRecommender

SEQUENCES = "user_idx int, items array<int>, valid_item int, test_item int"


def test_pairs_hold_neither_the_validation_nor_the_test_item(spark):
    sequences = spark.createDataFrame([
        (1, [3, 4, 3, 5, 6], 5, 6),   # holdout: valid 5, test 6; item 3 twice
        (2, [7, 8], 0, 0),            # no holdout: the whole history trains
    ], SEQUENCES)
    pairs = {(r.user_idx, r.item_idx): r.strength for r in interaction_pairs(sequences, held_out_steps=2).collect()}
    assert pairs == {(1, 3): 2.0, (1, 4): 1.0, (2, 7): 1.0, (2, 8): 1.0}
    with_validation = {(r.user_idx, r.item_idx) for r in interaction_pairs(sequences, held_out_steps=1).collect()}
    assert with_validation == {*pairs, (1, 5)}


def test_only_with_validation_do_validation_items_get_factors(spark, conf):
    """Item 9 occurs only as a validation item: the model's default fit leaves it without factors, the fit
    `with_validation` (the ALS baseline's pairs) gives it some; the test item 10 never gets any."""
    sequences = spark.createDataFrame([(user, [1 + user % 4, 2 + user % 4, 9, 10], 9, 10) for user in range(1, 9)],
                                      SEQUENCES)
    params = {**conf["model"]["cf_factors"], "rank": 3, "blocks": 2}
    before = item_factor_table(sequences, n_items=10, params={**params, "with_validation": False})
    after = item_factor_table(sequences, n_items=10, params={**params, "with_validation": True})
    assert not before[9].any() and after[9].any()
    assert not before[10].any() and not after[10].any()


def test_factors_separate_taste_clusters_and_leave_unseen_items_empty(spark, conf):
    """Odd users touch items 1-6, even users 7-12 (item 13 is never touched; each user's last two steps are the
    holdout). Every item must be closer on average to its own cluster's items than to the other cluster's."""
    rng = np.random.default_rng(5)
    rows = []
    for user in range(1, 81):
        cluster = np.arange(1, 7) if user % 2 else np.arange(7, 13)
        items = [int(i) for i in rng.permutation(cluster)]
        rows.append((user, items, items[-2], items[-1]))
    sequences = spark.createDataFrame(rows, SEQUENCES)
    params = {**conf["model"]["cf_factors"], "rank": 4, "blocks": 2}
    table = item_factor_table(sequences, n_items=13, params=params)
    assert table.shape == (14, 4) and table.dtype == np.float32
    assert not table[0].any() and not table[13].any()  # padding and the untouched item: no factors
    unit = table[1:13] / np.linalg.norm(table[1:13], axis=1, keepdims=True)
    cosine = unit @ unit.T
    own_cluster = np.kron(np.eye(2), np.ones((6, 6))).astype(bool)
    within = np.where(own_cluster & ~np.eye(12, dtype=bool), cosine, 0).sum(axis=1) / 5
    across = np.where(~own_cluster, cosine, 0).sum(axis=1) / 6
    assert (within > across + 0.2).all(), (within, across)  # every item is closer to its own cluster


def test_the_als_search_keeps_the_settings_that_rank_the_validation_items_best(spark, conf):
    """Two taste clusters; each user's validation item is from their own cluster. Factors regularised to nothing
    (reg 1e4) tie every item, so the validation item ranks last (NDCG 0); sensible factors find it. The search
    must score both on the validation items alone and keep the better one."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, 61):
        cluster = np.arange(1, 9) if user % 2 else np.arange(9, 17)
        items = [int(i) for i in rng.permutation(cluster)[:6]]
        rows.append((user, items, items[-2], items[-1]))
    sequences = spark.createDataFrame(rows, SEQUENCES)
    valid = pd.DataFrame(rows, columns=["user_idx", "items", "valid_item", "test_item"])
    params = {**conf["model"]["cf_factors"], "rank": 4, "blocks": 2}
    candidates = [{"rank": 2, "reg": 1e4}, {"rank": 4, "reg": 0.05}]
    chosen, trials = search_als_params(sequences, 16, params, candidates, valid, k=10)
    assert [trial["settings"] for trial in trials] == candidates
    assert trials[0]["ndcg@10"] == 0.0 and trials[1]["ndcg@10"] > 0.3
    assert chosen == {**params, **candidates[1]}


def test_the_models_fold_in_reproduces_the_users_als_factors(spark, conf):
    """The model's fold-in solves MLlib's implicit normal equations from a user's items and the item factors:
    on the users ALS was fitted on, it must give back MLlib's own user factors (so u·y is the ALS score)."""
    rng = np.random.default_rng(9)
    rows = [(user, int(item), float(rng.integers(1, 3)))
            for user in range(1, 41) for item in rng.choice(np.arange(1, 21), size=5, replace=False)]
    pairs = spark.createDataFrame(rows, "user_idx int, item_idx int, strength float")
    params = {**conf["model"]["cf_factors"], "rank": 4, "blocks": 2}
    user_factors, item_factors = fit_als(pairs, n_items=20, params=params)
    table = np.nan_to_num(item_factors).astype(np.float32)
    model_conf = {"hidden": 8, "layers": 1, "heads": 2, "dropout": 0.0, "use_text": False, "use_context": False,
                  "use_social": False, "use_cf": True, "cf_factors": params}
    model = SocialSequenceRecommender(model_conf, 20, 12, None, cf_factors=table).eval()
    expected = {r.user_idx: np.asarray(r.als_factors) for r in user_factors.collect()}
    for user in (1, 2, 3, 17):
        steps = [item for u, item, strength in rows if u == user for _ in range(int(strength))]
        items = torch.tensor([[0] * (12 - len(steps)) + steps])
        with torch.no_grad():
            folded = model.fold_in(items)[0, -1].numpy()
        np.testing.assert_allclose(folded, expected[user], rtol=1e-3, atol=1e-4)
