"""Batch-inference fusion, rules and explanations on tiny hand-made inputs (pure numpy/pandas; no Spark)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.inference import fusion as fu

DAY = 86400.0
AS_OF = 1_000 * DAY


def catalogue(n=8, categories=("shoes", "shoes", "books", "books", "toys", "toys", "food", "food"), **overrides):
    """Items 1..n; categories by position; no ratings, all seen long ago, equal popularity, price 10."""
    fields = dict(
        item_id=np.array([None] + [f"i{i}" for i in range(1, n + 1)], dtype=object),
        category=np.array([None, *categories[:n]], dtype=object),
        popularity=np.r_[0.0, np.full(n, 5.0)],
        sentiment=np.zeros(n + 1),
        first_seen=np.r_[np.nan, np.full(n, 0.0)],
        price=np.r_[np.nan, np.full(n, 10.0)],
    )
    fields.update(overrides)
    return fu.ItemFeatures(**fields)


def settings(**overrides):
    base = fu.FusionSettings(max_per_category=None, cold_start_popular=10)
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


# ------------------------------------------------------------------------------------------- chunked top-K
@pytest.mark.parametrize("chunk", [1, 3, 7, 50, 1000])
def test_chunked_top_k_equals_unchunked(chunk):
    rng = np.random.default_rng(0)
    n_items, k = 50, 6
    scores = rng.normal(size=(5, n_items + 1))
    purchased = [[1, 2, 3], [], [50], list(range(1, 45)), [7]]
    items = catalogue(n_items, categories=tuple("abcde" * 10))
    excluded = fu.excluded_chunk_fn(purchased, items, settings())

    result = fu.chunked_top_k(lambda lo, hi: scores[:, lo:hi], n_items, k, chunk, excluded)
    full = fu.chunked_top_k(lambda lo, hi: scores[:, lo:hi], n_items, k, n_items, excluded)

    masked = scores.copy()
    masked[:, 0] = -np.inf
    for row, bought in enumerate(purchased):
        masked[row, bought] = -np.inf
    expected_items, expected_scores = fu.top_k(masked, k)
    np.testing.assert_array_equal(result.items, full.items)
    np.testing.assert_array_equal(result.items, expected_items)
    np.testing.assert_allclose(result.scores, expected_scores)
    np.testing.assert_allclose(result.mean, scores[:, 1:].mean(axis=1))
    np.testing.assert_allclose(result.std, scores[:, 1:].std(axis=1))


def test_chunked_top_k_when_fewer_items_are_allowed_than_k():
    scores = np.arange(12, dtype=float).reshape(2, 6)
    items = catalogue(5, categories=tuple("abcde"))
    excluded = fu.excluded_chunk_fn([[1, 2, 3], []], items, settings())
    result = fu.chunked_top_k(lambda lo, hi: scores[:, lo:hi], 5, 4, 2, excluded)
    assert list(result.items[0][np.isfinite(result.scores[0])]) == [5, 4]
    assert list(result.items[1]) == [5, 4, 3, 2]


# ---------------------------------------------------------------------------------------------- components
def test_sentiment_is_a_shrunk_mean_rating_centred_on_the_global_mean():
    # item 1: two 5-star ratings, item 2: one 0-star, item 3 unrated; range 0..5 normalises to 0..1
    sentiment = fu.item_sentiment(np.array([1, 1, 2]), np.array([5.0, 5.0, 0.0]), 3, (0.0, 5.0), prior_count=1.0)
    global_mean = 2 / 3
    assert sentiment[1] == pytest.approx((2 + global_mean) / 3 - global_mean)
    assert sentiment[2] == pytest.approx((0 + global_mean) / 2 - global_mean)
    assert sentiment[3] == 0.0 and sentiment[0] == 0.0
    assert sentiment[1] > 0 > sentiment[2]


def test_freshness_halves_every_half_life_and_unseen_items_are_new():
    fresh = fu.freshness(np.array([np.nan, AS_OF, AS_OF - 30 * DAY, AS_OF - 60 * DAY, np.nan]), AS_OF, 30.0)
    np.testing.assert_allclose(fresh, [1.0, 1.0, 0.5, 0.25, 1.0])


def test_popularity_is_log_scaled_to_one():
    pop = fu.popularity_score(np.array([0.0, 0.0, 9.0, 99.0]))
    np.testing.assert_allclose(pop, [0, 0, np.log(10) / np.log(100), 1.0])


def test_social_proof_counts_each_friend_once_with_time_decay():
    proof = fu.social_proof(
        friends=np.array([1, 1, 2, 3, 3]), items=np.array([7, 7, 7, 8, 7]),
        ts=np.array([AS_OF - 60 * DAY, AS_OF, AS_OF - 30 * DAY, AS_OF, AS_OF - 30 * DAY]),
        as_of=AS_OF, half_life_days=30.0).set_index("item_idx")
    # item 7: friend 1 at its latest event (weight 1), friend 2 (0.5), friend 3 (0.5)
    assert proof.loc[7, "friends"] == 3 and proof.loc[7, "decayed"] == pytest.approx(2.0)
    assert proof.loc[7, "social"] == pytest.approx(2 / 3)
    assert proof.loc[8, "friends"] == 1 and proof.loc[8, "social"] == pytest.approx(0.5)


def test_social_proof_without_friend_events_and_lookup_of_absent_items():
    assert fu.social_proof(np.zeros(0), np.zeros(0), np.zeros(0), AS_OF, 30.0).empty
    values = fu.lookup(np.array([9, 2, 5]), np.array([0.9, 0.2, 0.5]), np.array([5, 7, 9, 2]), np.nan)
    np.testing.assert_array_equal(values, [0.5, np.nan, 0.9, 0.2])
    assert list(fu.lookup(np.zeros(0, np.int64), np.zeros(0, np.int64), np.array([1, 2]), 0)) == [0, 0]


# --------------------------------------------------------------------------------------------------- rules
def test_purchased_items_are_excluded_unless_their_category_repeats():
    items = catalogue()
    candidates = np.arange(1, 9)
    ok = fu.allowed_items(candidates, [1, 3, 7], items, settings())
    assert list(candidates[ok]) == [2, 4, 5, 6, 8]
    ok = fu.allowed_items(candidates, [1, 3, 7], items, settings(repeat_purchase_categories=("food",)))
    assert list(candidates[ok]) == [2, 4, 5, 6, 7, 8]


def test_blocked_items_are_never_allowed():
    items = catalogue(blocked=np.array([False, False, True, False, False, False, False, False, True]))
    ok = fu.allowed_items(np.arange(1, 9), [], items, settings())
    assert list(np.arange(1, 9)[ok]) == [1, 3, 4, 5, 6, 7]


def test_price_band_keeps_items_near_the_median_purchase_price():
    price = np.array([np.nan, 10.0, 10.0, 30.0, 4.0, 25.0, 5.0, np.nan, 100.0])
    items = catalogue(price=price)
    median = fu.user_median_price([1, 2, 3], price)
    assert median == 10.0
    off = fu.allowed_items(np.arange(4, 9), [1, 2, 3], items, settings(), median)
    assert off.all()  # off by default
    on = fu.allowed_items(np.arange(4, 9), [1, 2, 3], items, settings(price_band=2.5), median)
    assert list(np.arange(4, 9)[on]) == [4, 5, 6, 7]  # 4..25 in band, unknown price passes, 100 out
    mask = fu.excluded_chunk_fn([[1, 2, 3]], items, settings(price_band=2.5), [median])(1, 9)
    np.testing.assert_array_equal(~mask[0], fu.allowed_items(np.arange(1, 9), [1, 2, 3], items,
                                                             settings(price_band=2.5), median))


def test_category_cap_with_greedy_rerank_and_fill():
    categories = np.array(["a", "a", "a", "b", "a", "c"], dtype=object)
    assert list(fu.diversify(categories, 4, 2)) == [0, 1, 3, 5]
    assert list(fu.diversify(categories, 5, 1)) == [0, 3, 5, 1, 2]  # only 3 categories: best skipped fill
    assert list(fu.diversify(categories, 3, None)) == [0, 1, 2]


def test_soft_cap_gives_way_only_to_a_close_replacement():
    categories = np.array(["a", "a", "a", "b", "a", "c"], dtype=object)
    scores = np.array([9.0, 8.5, 8.0, 7.9, 5.0, 4.8])
    # Item 2 (8.0) is over a's cap of 2; the best replacement, item 3 (7.9), is 0.1 lower: it gives way.
    # Item 4 (5.0) is over the cap too, but its replacement (item 5, 4.8) is only 0.2 lower: it gives way too.
    assert list(fu.diversify(categories, 4, 2, scores=scores, max_score_loss=0.5)) == [0, 1, 3, 5]
    # A loss budget below 0.1: item 2 keeps its place, the hard cap's pick order no longer applies.
    assert list(fu.diversify(categories, 4, 2, scores=scores, max_score_loss=0.05)) == [0, 1, 2, 3]
    # No replacement in the list at all: the capped item keeps its place.
    assert list(fu.diversify(np.array(["a"] * 3, dtype=object), 3, 1, scores=np.array([3.0, 2.0, 1.0]),
                             max_score_loss=10.0)) == [0, 1, 2]
    # Without a budget the cap is hard, whatever the scores.
    assert list(fu.diversify(categories, 4, 2, scores=scores)) == [0, 1, 3, 5]
    with pytest.raises(ValueError, match="cap_max_score_loss"):
        fu.FusionSettings.from_conf({"cap_max_score_loss": -1})
    assert fu.FusionSettings.from_conf({"cap_max_score_loss": 0.5}).cap_max_score_loss == 0.5


def test_soft_cap_in_the_shown_order_of_a_ranked_user():
    scores = np.array([[-np.inf, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]])
    hard = settings(max_per_category=1, candidate_pool=8)
    soft = settings(max_per_category=1, candidate_pool=8, cap_max_score_loss=0.5)
    categories = catalogue().category
    assert list(fu.rule_ranked(scores, categories, soft, page=4, shown=4)[0][:4]) == [1, 2, 3, 4]
    assert list(fu.rule_ranked(scores, categories, hard, page=4, shown=4)[0][:4]) != [1, 2, 3, 4]


def test_calibrated_caps_follow_the_users_own_category_shares():
    s = settings(max_per_category=2, calibrated_cap=True)
    categories = np.array([None, "dvd", "book", "toy", None], dtype=object)  # item ids 1..4
    history = np.array([1] * 8 + [2, 2, 4])  # unknown categories (item 4) count for nothing
    assert fu.category_caps(history, categories, 10, s) == {"dvd": 8}  # 8 of 10 known; books' 2 is no raise
    assert fu.category_caps(np.array([1, 2, 3]), categories, 10, s) == {
        "dvd": 4, "book": 4, "toy": 4}  # ceil(10/3)
    assert fu.category_caps(np.array([4]), categories, 10, s) == {}
    assert fu.category_caps(history, categories, 10, settings(max_per_category=2, calibrated_cap=False)) == {}
    assert fu.category_caps(history, categories, 10, settings(max_per_category=None, calibrated_cap=True)) == {}
    categories = np.array(["dvd", "dvd", "dvd", "book", "dvd"], dtype=object)
    assert list(fu.diversify(categories, 4, 1)) == [0, 3, 1, 2]
    assert list(fu.diversify(categories, 4, 1, {"dvd": 3})) == [0, 1, 2, 3]


def test_rule_ranked_calibrates_the_cap_to_each_rows_history():
    scores = np.array([[-np.inf, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]] * 2)
    s = settings(max_per_category=1, candidate_pool=8, calibrated_cap=True)
    histories = [np.array([1, 2, 1]), np.array([1, 3, 5, 7])]  # all shoes; one of each category
    shown = fu.rule_ranked(scores, catalogue().category, s, page=4, shown=4, histories=histories)
    assert list(shown[0][:4]) == [1, 2, 3, 5]  # shoes may take the whole page (only two exist)
    assert list(shown[1][:4]) == [1, 3, 5, 7]  # a broad user keeps the plain cap


def test_shown_order_diversifies_each_page_among_the_candidates_left():
    categories = np.array(["a", "a", "a", "b", "a", "c", "a", "b"], dtype=object)
    # Page 1 (3 items, at most 1 per category): a, b, c; page 2 from what is left: a, b, then the best skipped a.
    order = fu.shown_order(categories, page=3, shown=6, max_per_category=1)
    assert list(order) == [0, 3, 5, 1, 7, 2, 4, 6]
    assert sorted(order) == list(range(8))  # a permutation: nothing lost, nothing repeated
    assert list(fu.shown_order(categories, 3, 3, None)) == list(range(8))


def test_rule_ranked_lists_follow_the_cap_and_skip_excluded_items():
    scores = np.array([[-np.inf, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, -np.inf]])  # item 8 excluded (-inf)
    s = settings(max_per_category=1, candidate_pool=8)
    shown = fu.rule_ranked(scores, catalogue().category, s, page=4, shown=8)
    # Best by score 1,2,3,...; item categories: shoes 1,2; books 3,4; toys 5,6; food 7,8.
    assert list(shown[0]) == [1, 3, 5, 7, 2, 4, 6]


def test_mmr_hand_case_puts_a_near_duplicate_below_a_different_item():
    # Candidates best first: 0 and 1 point the same way, 2 is orthogonal to both, 3 is the opposite of 0.
    vectors = fu.unit_vectors(np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 3.0], [-1.0, 0.0]]))
    relevance = np.array([1.0, 0.95, 0.6, 0.2])  # min-max: 1, 0.9375, 0.5, 0
    assert list(fu.mmr_order(relevance, vectors, 4, 1.0)) == [0, 1, 2, 3]  # lambda 1: the score order
    # lambda 0.5: after 0, item 2 gains 0.5*0.5 - 0; item 3 0.5*0 - 0 (opposite counts as unrelated, not as a
    # bonus); item 1 0.5*0.9375 - 0.5*0.999 < 0, so the near-duplicate comes last.
    assert list(fu.mmr_order(relevance, vectors, 4, 0.5)) == [0, 2, 3, 1]
    assert list(fu.mmr_order(relevance, vectors, 2, 0.5)) == [0, 2, 1, 3]  # the rest keep their order
    assert list(fu.mmr_order(relevance, vectors, 4, 0.9)) == [0, 1, 2, 3]  # a mild lambda keeps close calls
    assert list(fu.mmr_order(np.full(4, 0.3), vectors, 4, 0.0)) == [0, 2, 3, 1]  # pure novelty, ties by rank


@pytest.mark.parametrize("trade_off", [0.0, 0.3, 0.7, 0.99])
def test_mmr_order_is_a_permutation_that_starts_with_the_best(trade_off):
    rng = np.random.default_rng(7)
    relevance = np.sort(rng.normal(size=40))[::-1]
    order = fu.mmr_order(relevance, fu.unit_vectors(rng.normal(size=(40, 5))), 10, trade_off)
    assert sorted(order) == list(range(40)) and order[0] == 0
    assert list(order[10:]) == sorted(order[10:])


def test_mmr_lambda_must_be_a_share():
    assert fu.FusionSettings.from_conf({"mmr_lambda": 0.7}).mmr_lambda == 0.7
    assert fu.FusionSettings.from_conf({}).mmr_lambda == 1.0 and not fu.FusionSettings.from_conf(
        {"max_per_category": None}).reranks
    with pytest.raises(ValueError, match=r"infer.mmr_lambda: expected a number in \[0, 1\]"):
        fu.FusionSettings.from_conf({"mmr_lambda": 1.5})


def test_mmr_diversifies_a_catalogue_without_categories_in_lists_and_in_evaluation():
    items = catalogue(categories=(None,) * 8)
    # Items 1-4 are near-duplicates of one another; 5-8 each point their own way.
    vectors = np.zeros((9, 5))
    vectors[1:5, 0] = 1.0
    vectors[1:5, 1] = np.linspace(0.0, 0.1, 4)
    vectors[5:9, 1:5] = np.eye(4)
    vectors = fu.unit_vectors(vectors)
    scores = np.arange(8, 0, -1.0)  # the model's order: 1, 2, ..., 8
    user = fu.UserContext("u", history_items=np.array([8]), history_types=np.array(["view"]))
    plain = settings(weights={**settings().weights, "pop": 0.0, "fresh": 0.0, "sentiment": 0.0})
    mmr = settings(weights=plain.weights, mmr_lambda=0.5)
    priors = fu.ItemPriors.build(items, AS_OF, plain)
    kwargs = dict(pool_items=np.arange(1, 9), pool_scores=scores, mean=4.5, std=2.0, item_vectors=vectors)
    assert list(fu.rank_user(user, items, priors, plain, 4, AS_OF, **kwargs)["item_idx"]) == [1, 2, 3, 4]
    out = fu.rank_user(user, items, priors, mmr, 4, AS_OF, **kwargs)
    assert list(out["item_idx"]) == [1, 5, 6, 7]  # one of the look-alikes, then the different items
    assert out["reason"].notna().all() and (out["components"].map(len) == len(fu.COMPONENTS)).all()
    dense = np.r_[-np.inf, scores][None, :]
    assert list(fu.rule_ranked(dense, items.category, mmr, 4, 4, vectors)[0][:4]) == [1, 5, 6, 7]
    assert list(fu.rule_ranked(dense, items.category, mmr, 4, 4)[0][:4]) == [1, 2, 3, 4]  # no vectors: no MMR


def test_rank_user_applies_every_rule_and_the_cap():
    items = catalogue(blocked=np.array([False] * 8 + [True]))
    priors = fu.ItemPriors.build(items, AS_OF, settings())
    user = fu.UserContext("u", history_items=np.array([1, 3]), history_types=np.array(["view", "purchase"]),
                          purchased=np.array([3]))
    pool = np.array([8, 3, 1, 2, 4, 5, 6, 7])  # the model's best first
    plain_cap = settings(max_per_category=1, calibrated_cap=False)
    out = fu.rank_user(user, items, priors, plain_cap, 4, AS_OF,
                       pool_items=pool, pool_scores=np.arange(8, 0, -1.0), mean=4.5, std=2.0)
    assert list(out["item_idx"]) == [1, 4, 5, 7]  # 8 blocked, 3 bought, 2 second shoe, 6 second toy
    assert out["score"].is_monotonic_decreasing
    # Calibrated: half of this user's history is shoes, so shoes may take ceil(4 * 1/2) = 2 of the 4 places.
    out = fu.rank_user(user, items, priors, settings(max_per_category=1, calibrated_cap=True), 4, AS_OF,
                       pool_items=pool, pool_scores=np.arange(8, 0, -1.0), mean=4.5, std=2.0)
    assert list(out["item_idx"]) == [1, 2, 4, 5]


# ------------------------------------------------------------------------------------- fusion + explanations
def test_three_friends_bought_this():
    items = catalogue()
    priors = fu.ItemPriors.build(items, AS_OF, settings())
    user = fu.UserContext(
        "u", history_items=np.array([1]), history_types=np.array(["view"]),
        friend_ids=np.array([11, 12, 13]), friend_items=np.array([5, 5, 5]),
        friend_types=np.array(["purchase"] * 3), friend_ts=np.full(3, AS_OF))
    out = fu.rank_user(user, items, priors, settings(), 3, AS_OF, pool_items=np.array([2, 3, 4]),
                       pool_scores=np.array([1.0, 0.5, 0.2]), mean=0.0, std=1.0,
                       model_scores_of=lambda ids: np.zeros(len(ids)))
    top = out.iloc[0]
    assert top["item_idx"] == 5 and top["reason_code"] == "social_proof"
    assert top["reason"] == "3 friends bought this"
    assert top["components"]["social"] == pytest.approx(1.5 * 3 / 4)  # w_social * d / (1 + d), d = 3
    assert top["score"] == pytest.approx(sum(top["components"].values()))
    second = out.iloc[1]
    assert second["item_idx"] == 2 and second["reason_code"] == "similar_to_history"
    assert second["reason"] == "similar to i1 you viewed"  # same category (shoes) as the recommendation
    assert set(out["reason_code"]) <= set(fu.REASON_CODES)


def test_a_social_fact_is_the_reason_even_when_the_model_weighs_more():
    weighted = {"model": 2.4, "social": 0.75, "sentiment": 0.1, "fresh": 0.0, "pop": 0.2}
    assert fu.explain(weighted, has_history=True, friends=1, similar_item="i1") == (
        "social_proof", "1 friend bought this")
    assert fu.explain(weighted, has_history=True, friends=0, similar_item="i1") == (
        "similar_to_history", "similar to i1 you viewed")


def test_explanations_for_popularity_freshness_and_ratings():
    weighted = {"model": 0.1, "social": 0.0, "sentiment": 0.0, "fresh": 0.0, "pop": 0.3}
    assert fu.explain(weighted, has_history=True, category="books") == ("popular_in_category", "popular in books")
    assert fu.explain({**weighted, "fresh": 0.9}, has_history=True, age_days=2.0) == (
        "trending", "new and trending (first seen 2 days ago)")
    assert fu.explain({**weighted, "sentiment": 0.9}, has_history=True, rating=4.5)[0] == "model"
    assert fu.explain({**weighted, "model": 0.9}, has_history=False) == ("model", "recommended for you")
    titled = catalogue(title=np.array([None, "Red Shoe", None, None, None, None, None, None, None], dtype=object))
    user = fu.UserContext("u", history_items=np.array([1, 3]), history_types=np.array(["purchase", "view"]))
    assert fu.similar_history_item(user, 2, titled) == ('"Red Shoe"', "bought")


def test_fusion_weights_combine_components():
    items = catalogue(sentiment=np.r_[0.0, 0.2, np.zeros(7)], popularity=np.r_[0.0, 99.0, np.full(7, 9.0)],
                      first_seen=np.r_[np.nan, AS_OF - 30 * DAY, np.full(7, 0.0)])
    weights = {"model": 1.0, "social": 0.0, "sentiment": 2.0, "fresh": 1.0, "pop": 0.5}
    s = settings(weights=weights)
    priors = fu.ItemPriors.build(items, AS_OF, s)
    user = fu.UserContext("u", history_items=np.array([3]), history_types=np.array(["view"]))
    out = fu.rank_user(user, items, priors, s, 8, AS_OF, pool_items=np.arange(1, 9),
                       pool_scores=np.zeros(8), mean=-1.0, std=2.0).set_index("item_idx")
    components = out.loc[1, "components"]
    assert components == pytest.approx({"model": 0.5, "social": 0.0, "sentiment": 0.4, "fresh": 0.5, "pop": 0.5})
    assert out.loc[1, "score"] == pytest.approx(1.9)
    assert out.index[0] == 1


def test_dense_fused_scores_match_the_per_user_ranking():
    rng = np.random.default_rng(3)
    items = catalogue(sentiment=rng.normal(scale=0.1, size=9), popularity=rng.integers(0, 50, 9).astype(float))
    s = settings()
    model_scores = np.c_[np.full(2, -np.inf), rng.normal(size=(2, 8))]
    users = [fu.UserContext("a", history_items=np.array([1]), history_types=np.array(["view"]),
                            friend_ids=np.array([5]), friend_items=np.array([4]), friend_types=np.array(["like"]),
                            friend_ts=np.array([AS_OF - 10 * DAY])),
             fu.UserContext("b", history_items=np.array([2]), history_types=np.array(["view"])),
             fu.UserContext("c")]  # no history: the cold-start weights
    model_scores = np.r_[model_scores, np.zeros((1, 9))]
    dense, components = fu.fused_scores(model_scores, users, items, s, AS_OF)
    assert dense.shape == (3, 9) and np.isneginf(dense[:, 0]).all()
    priors = fu.ItemPriors.build(items, AS_OF, s)
    body = model_scores[:, 1:]
    for row, user in enumerate(users):
        out = fu.rank_user(user, items, priors, s, 8, AS_OF, pool_items=np.arange(1, 9), pool_scores=body[row],
                           mean=body[row].mean(), std=body[row].std()).set_index("item_idx")
        np.testing.assert_allclose(out["score"].sort_index().to_numpy(), dense[row, 1:])
    assert components["social"][0, 4] > 0 and components["social"][1].max() == 0
    assert (components["pop"][0, 1:] <= 0).all() and (components["pop"][2, 1:] >= 0).all()


def test_popularity_explores_for_users_with_history_and_guides_users_without():
    items = catalogue(popularity=np.array([0.0, 50, 1, 50, 1, 50, 1, 50, 1]))
    s = settings()
    assert s.weights["pop"] < 0 < s.cold_start_weights["pop"]
    priors = fu.ItemPriors.build(items, AS_OF, s)
    warm = fu.UserContext("warm", history_items=np.array([1]), history_types=np.array(["view"]))
    ranked = fu.rank_user(warm, items, priors, s, 4, AS_OF, pool_items=np.arange(2, 9), pool_scores=np.zeros(7))
    assert set(ranked["item_idx"]) == {2, 4, 6, 8}  # equal model scores: the long tail first
    cold = fu.rank_user(fu.UserContext("cold"), items, priors, s, 4, AS_OF)
    assert set(cold["item_idx"]) == {1, 3, 5, 7}  # no history: the popular items
    own = fu.FusionSettings.from_conf({"fusion": {"weights": {"pop": 0.5}, "cold_start_weights": {"pop": 2.0}}})
    assert own.weights_for(True)["pop"] == 0.5 and own.weights_for(False)["pop"] == 2.0
    with pytest.raises(ValueError, match="infer.fusion.cold_start_weights: unknown components"):
        fu.FusionSettings.from_conf({"fusion": {"cold_start_weights": {"hype": 1.0}}})


# ----------------------------------------------------------------------------------------------- cold start
def test_cold_start_user_gets_friends_purchases_and_popular_items_of_their_categories():
    items = catalogue(popularity=np.array([0.0, 50, 40, 1, 2, 30, 20, 9, 8]))
    priors = fu.ItemPriors.build(items, AS_OF, settings())
    user = fu.UserContext("new", friend_ids=np.array([1, 2]), friend_items=np.array([6, 6]),
                          friend_types=np.array(["purchase", "purchase"]), friend_ts=np.full(2, AS_OF))
    out = fu.rank_user(user, items, priors, settings(), 3, AS_OF)
    assert list(out["item_idx"]) == [6, 5]  # the friends' item first, then popular in its category (toys)
    assert out.iloc[0]["reason"] == "2 friends bought this"
    assert out.iloc[1]["reason_code"] == "popular_in_category" and out.iloc[1]["reason"] == "popular in toys"
    assert all(c["model"] == 0.0 for c in out["components"])

    lonely = fu.rank_user(fu.UserContext("alone"), items, priors, settings(), 3, AS_OF)
    assert list(lonely["item_idx"]) == [1, 2, 5]  # no friends: globally popular
    assert set(lonely["reason_code"]) == {"popular_in_category"}


def test_never_interacted_item_with_text_reaches_the_top_k():
    """A new item (no interactions, untrained id embedding) is scored through its text representation, so
    text close to what the user's state looks for puts it into the fused top-K."""
    torch = pytest.importorskip("torch")
    from socialrec.features.windows import build_inputs
    from socialrec.model.recommender import SocialSequenceRecommender

    n_items, max_len, text_dim = 20, 6, 16
    torch.manual_seed(0)
    text = np.random.default_rng(0).normal(size=(n_items + 1, text_dim)).astype(np.float32)
    text[0] = 0
    model = SocialSequenceRecommender({"hidden": 8, "layers": 1, "heads": 2, "dropout": 0.0, "use_text": True,
                                       "use_context": True, "use_social": False}, n_items, max_len, text).eval()
    history = {"items": [1, 2, 3], "event_types": [1, 1, 4], "hours": [3, 4, 5], "gaps": [1, 2, 2], "test_item": 0}
    with torch.inference_mode():
        batch = {k: torch.from_numpy(v) for k, v in build_inputs([history], "full", max_len).items()}
        user_vector = model.user_vectors(batch)[0]
        # The new item's text: whatever the frozen projection maps onto the user's direction.
        weight, bias = model.text_projection.weight, model.text_projection.bias
        new_text = torch.linalg.pinv(weight) @ (3 * user_vector / user_vector.norm() - bias)
        model.text_embeddings[n_items] = new_text
        model.has_text[n_items] = True
        reps = model.item_representations().numpy()
        vector = model.user_vectors(batch)[0].numpy()

    items = catalogue(n_items, categories=tuple("ab" * 10), popularity=np.r_[0.0, np.full(n_items - 1, 10.0), 0.0],
                      first_seen=np.r_[np.nan, np.zeros(n_items - 1), np.nan])
    best = fu.chunked_top_k(lambda lo, hi: vector[None, :] @ reps[lo:hi].T, n_items, 10, 4,
                            fu.excluded_chunk_fn([[3]], items, settings()))
    s = settings()
    user = fu.UserContext("u", history_items=np.array([1, 2, 3]), history_types=np.array(["view", "view", "purchase"]),
                          purchased=np.array([3]))
    out = fu.rank_user(user, items, fu.ItemPriors.build(items, AS_OF, s), s, 5, AS_OF, pool_items=best.items[0],
                       pool_scores=best.scores[0], mean=float(best.mean[0]), std=float(best.std[0]))
    assert n_items in set(out["item_idx"])
    assert items.popularity[n_items] == 0 and np.isnan(items.first_seen[n_items])


# ---------------------------------------------------------------------------------------- config + summary
def test_settings_come_from_the_infer_section(conf):
    s = fu.FusionSettings.from_conf(conf["infer"])
    assert set(s.weights) == set(fu.COMPONENTS)
    assert s.item_chunk == conf["infer"]["item_chunk"] and s.candidate_pool >= conf["infer"]["top_k"]
    assert s.exclude_purchased and s.price_band is None
    with pytest.raises(ValueError, match="unknown components"):
        fu.FusionSettings.from_conf({"fusion": {"weights": {"vibes": 1.0}}})


def test_summary_row():
    from socialrec.inference.scoring import summary_row

    recs = pd.DataFrame({"user_key": ["a", "a", "b", "b"], "item_idx": [1, 2, 1, 3],
                         "reason_code": ["social_proof", "model", "model", "model"]})
    row = summary_row(recs, np.array([None, "x", "x", "y", "y"], dtype=object), 4, "r1", "v1")
    assert row["users_scored"] == 2 and row["coverage"] == 0.75
    assert row["mean_category_diversity"] == pytest.approx((0.5 + 1.0) / 2)
    assert row["reason_share"]["model"] == 0.75 and row["reason_share"]["social_proof"] == 0.25
    assert set(row["reason_share"]) == set(fu.REASON_CODES)


def test_top_k_selection_equals_a_stable_full_sort_with_ties_and_minus_inf():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, size=(50, 40)).astype(np.float64)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    for k in (1, 3, 10, 39, 40, 60):
        items, values = fu.top_k(scores, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :min(k, 40)]
        assert np.array_equal(items, expected), k
        assert np.array_equal(values, np.take_along_axis(scores, expected, axis=1)), k
