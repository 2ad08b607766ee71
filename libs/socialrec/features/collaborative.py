"""Collaborative item factors: implicit ALS (Spark MLlib) on the training steps, fitted once per training run
and given to the recommender as a frozen item feature (model.use_cf), as the text embeddings are.

Why: on sparse, order-free catalogues (Yelp check-ins, Ciao and FilmTrust ratings: a dozen steps per user, most
items seen by a handful of users) a free id vector per item is learned from too few next-item targets and
memorised; factors fitted on every user's whole training set at once carry the co-occurrence structure that
the transformer then combines with order, text, context and friends. The same fit serves the ALS baseline.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def fit_als(pairs: DataFrame, n_items: int, params: dict):
    """Implicit ALS on the training interactions.

    Returns (user factors as a DataFrame `user_idx`, `als_factors`; item factors as an [n_items + 1, rank]
    array with NaN rows for items ALS never saw).
    """
    from pyspark.ml.recommendation import ALS

    blocks = params.get("blocks")
    if not blocks:  # null: one block per core Spark offers (2 locally, the cluster's cores on Databricks)
        try:
            blocks = pairs.sparkSession.sparkContext.defaultParallelism
        except Exception:  # Spark Connect has no SparkContext
            blocks = 10  # MLlib's default
    blocks = int(blocks)
    als = ALS(rank=int(params["rank"]), regParam=float(params["reg"]), alpha=float(params["alpha"]),
              maxIter=int(params["iterations"]), implicitPrefs=True, userCol="user_idx", itemCol="item_idx",
              ratingCol="strength", seed=int(params.get("seed", 7)), numUserBlocks=blocks, numItemBlocks=blocks)
    model = als.fit(pairs)
    factors = model.itemFactors.toPandas()
    items = np.full((n_items + 1, int(params["rank"])), np.nan)
    ids = factors["id"].to_numpy(dtype=np.int64)
    inside = (ids > 0) & (ids <= n_items)
    if inside.any():
        items[ids[inside]] = np.stack(factors["features"].to_numpy()[inside]).astype(np.float64)
    users = model.userFactors.select(F.col("id").cast("int").alias("user_idx"), F.col("features").alias("als_factors"))
    return users, items


def interaction_pairs(sequences: DataFrame, held_out_steps: int) -> DataFrame:
    """(user_idx, item_idx, strength = occurrences) of each gold.user_sequences user's steps before their last
    `held_out_steps` (the whole history for users without a holdout; a re-visit after other items is a new
    step). 1 holds out the test step: what the baselines fit on. 2 holds out the validation step too: what the
    model trains on, so early stopping scores an item the factors never saw."""
    before_holdout = F.slice("items", 1, F.size("items") - held_out_steps)
    kept = F.when(F.col("test_item") > 0, before_holdout).otherwise(F.col("items"))
    return (
        sequences.select("user_idx", F.explode(kept).alias("item_idx"))
        .where(F.col("item_idx") > 0)
        .groupBy("user_idx", "item_idx").agg(F.count("*").cast("float").alias("strength"))
    )


def search_als_params(sequences: DataFrame, n_items: int, params: dict, candidates: list[dict],
                      valid: "pd.DataFrame", k: int) -> tuple[dict, list[dict]]:
    """The ALS settings, among `params` updated by each of `candidates`, whose scores rank the validation item of
    the `valid` users (`user_idx`, `items`, `valid_item`) best by NDCG@k, the steps before it masked; fitted on
    those steps only, as the model's factors are, so the choice never sees a test step. Returns (the chosen
    settings, one row per candidate with its NDCG@k).

    Why: the factors' rank and regularisation suit one catalogue and not another (1.9k LastFM listeners over
    17.6k artists, 22k Epinions users over 296k products), and the ALS term carries the model on order-free
    data; the published baselines are tuned per dataset too.
    """
    from socialrec.evaluation.metrics import per_user, target_ranks

    pairs = interaction_pairs(sequences, held_out_steps=2).persist()
    try:
        trials = []
        for overrides in candidates:
            trial = {**params, **overrides}
            users, items = fit_als(pairs, n_items, trial)
            wanted = users.where(F.col("user_idx").isin([int(u) for u in valid["user_idx"]])).toPandas()
            by_user = dict(zip(wanted["user_idx"], wanted["als_factors"]))
            factors = np.nan_to_num(items)
            user_matrix = np.stack([np.asarray(by_user.get(u, np.zeros(factors.shape[1]))) for u in valid["user_idx"]])
            seen = [np.asarray(history[:-2]) for history in valid["items"]]
            ranks = target_ranks(user_matrix @ factors.T, valid["valid_item"].to_numpy(np.int64), seen)
            trials.append({"settings": dict(overrides), f"ndcg@{k}": round(float(per_user(ranks, f"ndcg@{k}").mean()), 5)})
    finally:
        pairs.unpersist()
    best = max(range(len(trials)), key=lambda i: trials[i][f"ndcg@{k}"])  # the first of equals: the grid's order
    return {**params, **candidates[best]}, trials


def item_factor_table(sequences: DataFrame, n_items: int, params: dict) -> np.ndarray:
    """[n_items + 1, rank] float32 ALS item factors as fitted, zero rows for padding and items ALS never saw.
    Fitted on the steps before validation, or with `with_validation` on every step before the test step, as the
    ALS baseline is (early stopping then sees the validation item in the factors, as it sees training items)."""
    pairs = interaction_pairs(sequences, held_out_steps=1 if params.get("with_validation") else 2)
    _, factors = fit_als(pairs, n_items, params)
    factors = np.nan_to_num(factors, nan=0.0)
    factors[0] = 0.0
    return factors.astype(np.float32)
