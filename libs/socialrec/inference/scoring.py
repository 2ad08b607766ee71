"""gold.user_sequences -> gold.recommendations + gold.recommendation_summary.

Every user is scored by the trained model in a Spark iterator UDF (mapInPandas): the model is loaded once per
Python worker (model_store caches per process), users stream through in batches, and items are scored in
chunks of `infer.item_chunk` with an exact top-`infer.candidate_pool` merged across chunks, so memory stays
bounded for huge catalogues. The pool (plus the friends' items, and popular items for users without history)
is then fused with social proof, rating sentiment, freshness and popularity, filtered by the business rules,
diversified by category and explained (socialrec.inference.fusion holds all of that as pure functions).

`infer.approximate.enabled` swaps the exact chunked top-K for an IVF index (socialrec.inference.ann) where
scanning the catalogue for every user is too slow; its recall against exact is measured, not assumed.

`infer.users` (or `socialrec run --users`): `all` (the default) rescores everyone; `changed-since=YYYY-MM-DD`
rescores only the users with a silver.events row at or after that UTC date. Each run appends its own rows to
gold.recommendations (partition run_date, key run_id), so after an incremental run a user's current list is the
one of the latest run that scored them: `current_recommendations` selects exactly that, and the run's summary
row says which users it covered (`scope`).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (DoubleType, FloatType, IntegerType, LongType, MapType, StringType, StructField,
                               StructType)

from socialrec.evaluation.metrics import category_diversity
from socialrec.inference import ann
from socialrec.inference import fusion as fu
from socialrec.inference import live_context
from socialrec.inference import model_store
from socialrec.run_context import RunContext

RANKED_SCHEMA = StructType([
    StructField("user_key", StringType()),
    StructField("rank", IntegerType()),
    StructField("item_idx", IntegerType()),
    StructField("score", FloatType()),
    StructField("model_score", FloatType()),
    StructField("components", MapType(StringType(), FloatType())),
    StructField("reason_code", StringType()),
    StructField("reason", StringType()),
])

SUMMARY_SCHEMA = StructType([
    StructField("run_id", StringType()),
    StructField("model_version", StringType()),
    StructField("users_scored", LongType()),
    StructField("coverage", DoubleType()),
    StructField("mean_category_diversity", DoubleType()),
    StructField("reason_share", MapType(StringType(), DoubleType())),
    StructField("scope", StringType()),  # infer.users of the run: `all` or `changed-since=<UTC timestamp>`
])

top_k = fu.top_k  # kept importable from here

_REPRESENTATIONS: dict = {}
_INDEXES: dict = {}


def _item_representations(checkpoint_dir: str, model):
    """[n_items + 1, hidden] item vectors, computed once per worker process beside the cached model."""
    if checkpoint_dir not in _REPRESENTATIONS:
        import torch

        with torch.inference_mode():
            _REPRESENTATIONS[checkpoint_dir] = model.item_representations().float().cpu().numpy()
    return _REPRESENTATIONS[checkpoint_dir]


def _ann_index(checkpoint_dir: str, representations: np.ndarray, lists) -> ann.IVFIndex:
    """Built once per worker process, like the item matrix it indexes (deterministic, so equal everywhere)."""
    key = (checkpoint_dir, lists)
    if key not in _INDEXES:
        n_items = len(representations) - 1
        _INDEXES[key] = ann.build(representations[1:], np.arange(1, n_items + 1), lists)
    return _INDEXES[key]


def approximate_top_k(index: ann.IVFIndex, vectors: np.ndarray, pool: int, probes: int, allowed,
                      over_fetch: int) -> fu.ChunkedTopK:
    """What fusion.chunked_top_k returns, from the index: the best `pool` allowed items among the probed cells.
    The rules (`allowed(row, ids)`, a boolean mask) apply after retrieval, so retrieval fetches `over_fetch`
    more items than the pool (the most a user of the batch can lose to purchases and blocks), and a user whose
    cells still hold fewer than `pool` allowed items (most of them bought, a narrow price band) probes twice as
    many cells, up to all of them, which is exact. Mean and std are exact (ann.score_moments)."""
    best_items = np.zeros((len(vectors), pool), dtype=np.int64)
    best_scores = np.full((len(vectors), pool), -np.inf)
    rows = np.arange(len(vectors))
    while len(rows):
        ids, scores = ann.search(index, vectors[rows], pool + over_fetch, probes)
        short = []
        for found, row in enumerate(rows):
            keep = np.nonzero(ids[found] >= 0)[0]
            keep = keep[allowed(row, ids[found, keep])][:pool]
            best_items[row, :len(keep)] = ids[found, keep]
            best_scores[row, :len(keep)] = scores[found, keep]
            if len(keep) < pool:
                short.append(row)
        if probes >= index.lists:
            break
        rows, probes = np.asarray(short, dtype=np.int64), min(2 * probes, index.lists)
    mean, std = ann.score_moments(index, vectors)
    return fu.ChunkedTopK(best_items, best_scores, mean, std)


def _user_vectors(model, histories: list[dict], max_len: int) -> np.ndarray:
    import torch

    from socialrec.features.windows import build_inputs

    inputs = build_inputs(histories, "full", max_len)
    for name in ("items", "friend_items"):  # items newer than the model: padding until the next training run
        inputs[name][inputs[name] > model.n_items] = 0
    with torch.inference_mode():
        device = model_store.model_device(model)
        batch = {name: torch.from_numpy(values).to(device) for name, values in inputs.items()}
        return model.user_vectors(batch).float().cpu().numpy()


def _as_array(values, dtype) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=dtype)


def user_context(row: dict, event_names: list[str], n_items: int | None = None) -> fu.UserContext:
    """A fusion.UserContext from a row of the UDF input (history arrays plus `friend_events`); with `n_items`,
    items above it (newer than the model) are left out."""
    def name(code):
        return event_names[code - 1] if 0 < code <= len(event_names) else "view"

    limit = np.iinfo(np.int64).max if n_items is None else n_items
    friend_events = row.get("friend_events")
    friend_events = [e for e in (friend_events if friend_events is not None else []) if e["item_idx"] <= limit]
    history = _as_array(row["items"], np.int64)
    known = history <= limit
    purchased = _as_array(row["purchased"], np.int64)
    return fu.UserContext(
        user_key=row["user_key"],
        history_items=history[known],
        history_types=np.asarray([name(int(c)) for c in _as_array(row["event_types"], np.int64)],
                                 dtype=object)[known],
        purchased=purchased[purchased <= limit],
        friend_ids=np.asarray([e["friend_idx"] for e in friend_events], dtype=np.int64),
        friend_items=np.asarray([e["item_idx"] for e in friend_events], dtype=np.int64),
        friend_types=np.asarray([name(int(e["event_type"])) for e in friend_events], dtype=object),
        friend_ts=np.asarray([e["ts"] for e in friend_events], dtype=np.float64),
    )


def request_context(row: dict) -> live_context.RequestContext:
    """The live columns of a UDF input row (LiveInputs.requests) as a live_context.RequestContext."""
    hour = row.get("live_hour")
    return live_context.RequestContext(hour=int(hour) if hour is not None and hour == hour else 0,
                                       device=row.get("live_device"),
                                       session_items=_as_array(row.get("session_items"), np.int64))


def approximate_settings(infer: dict) -> dict | None:
    """infer.approximate as {lists, probes}, or None when exact top-K is asked for (the default)."""
    approximate = infer.get("approximate") or {}
    if not approximate.get("enabled"):
        return None
    return {"lists": approximate.get("lists"), "probes": int(approximate.get("probes") or 16)}


def recommend_partitions(checkpoint_dir: str, max_len: int, k: int, batch_size: int, threads: int,
                         items: fu.ItemFeatures, settings: fu.FusionSettings, as_of: float, event_names: list[str],
                         approximate: dict | None = None, device: str = "cpu", live: "LiveScoring | None" = None):
    """The mapInPandas function. `items` is the catalogue the model knows (ItemFeatures.first); with `live`, each
    row's request-time context (live_hour, live_device, session_items) adds the live_context terms."""
    priors = fu.ItemPriors.build(items, as_of, settings)
    pool = max(settings.candidate_pool, k)
    blocked = int(items.blocked.sum()) if items.blocked is not None else 0

    def run(frames):
        import torch

        torch.set_num_threads(threads)
        on = model_store.executor_device(device)
        model, _ = model_store.load_model(checkpoint_dir, on)
        representations = _item_representations(checkpoint_dir, model)
        # Item products in torch rather than numpy, so infer.torch_threads bounds them too (numpy's BLAS
        # would take every core of the executor whatever the config says), and so they run on the GPU there is.
        item_matrix = torch.from_numpy(representations).to(on)
        index = _ann_index(checkpoint_dir, representations, approximate["lists"]) if approximate else None
        item_vectors = fu.unit_vectors(representations) if settings.mmr_lambda < 1.0 else None
        for frame in frames:
            for start in range(0, len(frame), batch_size):
                records = frame.iloc[start:start + batch_size].to_dict("records")
                vectors = _user_vectors(model, records, max_len)
                users = [user_context(row, event_names, items.n_items) for row in records]
                medians = ([fu.user_median_price(u.purchased, items.price) for u in users]
                           if settings.price_band else None)
                if index is None:
                    queries = torch.from_numpy(vectors).to(on)
                    best = fu.chunked_top_k(lambda lo, hi: (queries @ item_matrix[lo:hi].T).cpu().numpy(),
                                            items.n_items, pool, settings.item_chunk,
                                            fu.excluded_chunk_fn([u.purchased for u in users], items, settings,
                                                                 medians))
                else:
                    best = approximate_top_k(
                        index, vectors, pool, approximate["probes"],
                        lambda row, ids: fu.allowed_items(ids, users[row].purchased, items, settings,
                                                          medians[row] if medians else float("nan")),
                        over_fetch=blocked + max((len(u.purchased) for u in users), default=0))
                frames_out = []
                for row, user in enumerate(users):
                    ranked = fu.rank_user(
                        user, items, priors, settings, k, as_of, pool_items=best.items[row],
                        pool_scores=best.scores[row], mean=float(best.mean[row]), std=float(best.std[row]),
                        model_scores_of=lambda ids, v=vectors[row]: representations[ids] @ v,
                        item_vectors=item_vectors,
                        context_parts=None if live is None else live_context.context_parts(
                            request_context(records[row]), live.tables, items.category, live.settings))
                    if len(ranked):
                        ranked.insert(0, "user_key", user.user_key)
                        ranked.insert(1, "rank", np.arange(1, len(ranked) + 1, dtype=np.int32))
                        frames_out.append(ranked)
                if frames_out:
                    out = pd.concat(frames_out, ignore_index=True)
                    out["item_idx"] = out["item_idx"].astype(np.int32)
                    out["score"] = out["score"].astype(np.float32)
                    out["model_score"] = out["model_score"].astype(np.float32)
                    yield out[[f.name for f in RANKED_SCHEMA.fields]]
    return run


def item_features(ctx: RunContext, settings: fu.FusionSettings, as_of: float) -> fu.ItemFeatures:
    """Dense per-item arrays on the driver (shipped to the workers in the UDF's closure): category and
    popularity from gold.item_index, title and price from silver.items, rating sentiment and first appearance
    from silver.events."""
    conf, lake = ctx.conf, ctx.lake
    index = lake.read("gold.item_index").select("item_idx", "item_id", "category", "popularity")
    events = lake.read("silver.events")
    first_seen = events.groupBy("item_id").agg(F.min(F.col("ts").cast("long")).alias("first_seen"))
    frame = index.join(first_seen, "item_id", "left")
    if lake.exists("silver.items"):
        frame = frame.join(lake.read("silver.items").select("item_id", "title", "price"), "item_id", "left")
    else:
        frame = frame.withColumn("title", F.lit(None).cast("string")).withColumn("price", F.lit(None).cast("double"))
    table = frame.toPandas().sort_values("item_idx")
    n_items = int(table["item_idx"].max()) if len(table) else 0

    def dense(column, fill, dtype):
        out = np.full(n_items + 1, fill, dtype=dtype)
        out[table["item_idx"].to_numpy()] = table[column].to_numpy()
        return out

    ratings = (events.where(F.col("rating").isNotNull()).join(index.select("item_id", "item_idx"), "item_id")
               .select("item_idx", F.col("rating").cast("double").alias("rating")).toPandas())
    rating_range = tuple(conf["clean"]["rating_range"])
    sentiment = fu.item_sentiment(ratings["item_idx"].to_numpy(), ratings["rating"].to_numpy(), n_items,
                                  rating_range, settings.sentiment_prior_count)
    rating = np.full(n_items + 1, np.nan)
    if len(ratings):
        means = ratings.groupby("item_idx")["rating"].mean()
        rating[means.index.to_numpy()] = means.to_numpy()
    item_id = dense("item_id", None, object)
    return fu.ItemFeatures(
        item_id=item_id,
        category=np.where(pd.isna(dense("category", None, object)), None, dense("category", None, object)),
        popularity=dense("popularity", 0.0, np.float64),
        sentiment=sentiment,
        first_seen=np.asarray(pd.to_numeric(dense("first_seen", np.nan, object), errors="coerce"), dtype=np.float64),
        price=np.asarray(pd.to_numeric(dense("price", np.nan, object), errors="coerce"), dtype=np.float64),
        title=dense("title", None, object),
        blocked=np.isin(item_id.astype(object), np.asarray(settings.blocked_items, dtype=object)),
        rating=rating,
    )


def friend_events(ctx: RunContext, histories, settings: fu.FusionSettings):
    """Per user the friends' purchase/like steps: array<struct<friend_idx, item_idx, event_type, ts>>."""
    lake, names = ctx.lake, ctx.conf["clean"]["event_types"]
    codes = [names.index(t) + 1 for t in settings.social_event_types if t in names]
    if not lake.exists("gold.social_neighbours") or not codes:
        return None
    edges = lake.read("gold.social_neighbours").select("user_key", F.explode("friends").alias("friend_idx"))
    steps = histories.select(
        F.col("user_idx").alias("friend_idx"),
        F.explode(F.arrays_zip(F.col("items").alias("item_idx"), F.col("event_types").alias("event_type"),
                               F.col("ts").alias("ts"))).alias("e"),
    ).where(F.col("e.event_type").isin(codes)).select(
        "friend_idx", F.col("e.item_idx").alias("item_idx"), F.col("e.event_type").alias("event_type"),
        F.col("e.ts").alias("ts"))
    return (edges.join(steps, "friend_idx")
            .groupBy("user_key")
            .agg(F.collect_list(F.struct("friend_idx", "item_idx", "event_type", "ts")).alias("friend_events")))


def summary_row(recs: pd.DataFrame, categories: np.ndarray, n_items: int, run_id: str, model_version: str,
                scope: str = "all") -> dict:
    """gold.recommendation_summary for one run from its recommendations (user_key, item_idx, reason_code)."""
    users = recs["user_key"].nunique()
    lists = recs.groupby("user_key")["item_idx"].apply(lambda items: items.to_numpy())
    diversity = category_diversity(lists.tolist(), categories, len(recs)) if users else None
    shares = recs["reason_code"].value_counts(normalize=True)
    return {
        "run_id": run_id, "model_version": model_version, "users_scored": int(users),
        "coverage": float(recs["item_idx"].nunique() / n_items) if n_items else 0.0,
        "mean_category_diversity": diversity if diversity is not None else 0.0,
        "reason_share": {code: float(shares.get(code, 0.0)) for code in fu.REASON_CODES},
        "scope": scope,
    }


def users_since(spec) -> datetime | None:
    """infer.users -> None for `all`, else the UTC cut-off of `changed-since=YYYY-MM-DD[THH:MM:SS]`."""
    if spec is None or str(spec).strip() in ("", "all"):
        return None
    key, _, value = str(spec).partition("=")
    try:
        if key.strip() != "changed-since":
            raise ValueError(spec)
        since = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"infer.users: expected `all` or `changed-since=YYYY-MM-DD`, got {spec!r}") from None
    return since.astimezone(timezone.utc).replace(tzinfo=None) if since.tzinfo else since


def changed_users(ctx: RunContext, since: datetime) -> DataFrame:
    """user_key of every user with a silver.events row at or after `since` (UTC; the session time zone)."""
    cutoff = F.lit(since.isoformat(sep=" ")).cast("timestamp")
    return ctx.lake.read("silver.events").where(F.col("ts") >= cutoff).select("user_key").distinct()


def current_recommendations(recommendations: DataFrame) -> DataFrame:
    """Each user's rows of the latest run that scored them (by run_date, then run_id, which starts with the
    run's UTC start time): what the user sees now when incremental runs rescored only some users. The query is
    socialrec.io.lake_sql's, which the analyst notebook also runs without Spark."""
    from socialrec.io.lake_sql import current_recommendations_sql

    return recommendations.sparkSession.sql(current_recommendations_sql("{recommendations}"),
                                            recommendations=recommendations)


class FusionInputs(NamedTuple):
    settings: fu.FusionSettings
    as_of: float                     # the latest event time: "now" for social decay and freshness
    items: fu.ItemFeatures
    friend_events: DataFrame | None  # user_key -> friends' purchase/like steps (None without a social graph)


def fusion_inputs(ctx: RunContext, sequences: DataFrame, tuned: bool = True) -> FusionInputs:
    """What fusion needs beside the model's scores, for recommendations and for the evaluation's fused ranking.
    With infer.tune_fusion enabled the re-ranking settings are those tune_fusion chose for the current model
    (`tuned=False`: the configured ones, which the tuning starts from)."""
    settings = fu.FusionSettings.from_conf(ctx.conf["infer"])
    if tuned and (ctx.conf["infer"].get("tune_fusion") or {}).get("enabled"):
        settings = tuned_settings(settings, ctx.lake.directory("checkpoints_dir"))
    as_of = float(sequences.select(F.max(F.array_max("ts"))).first()[0] or 0.0)
    return FusionInputs(settings, as_of, item_features(ctx, settings, as_of), friend_events(ctx, sequences, settings))


def tuned_settings(settings: fu.FusionSettings, checkpoints_dir) -> fu.FusionSettings:
    """`settings` with the re-ranking the tune_fusion stage chose for the latest model; a clear error where that
    stage has not run for it (scoring with settings tuned for another model would be silently off)."""
    version = model_store.latest(checkpoints_dir)["model_version"]
    record = model_store.fusion_choice(checkpoints_dir, version)
    if record is None:
        raise RuntimeError(f"infer.tune_fusion is enabled but model {version} has no tuned fusion settings: run the "
                           "tune_fusion stage first (socialrec run --stages tune_fusion) or set "
                           "infer.tune_fusion.enabled: false to use the configured ones")
    return dataclasses.replace(settings, **record["settings"])


class LiveScoring(NamedTuple):
    """What the scoring function needs for request-time context (shipped to the workers with it)."""
    tables: live_context.ContextTables
    settings: live_context.LiveSettings


class LiveInputs(NamedTuple):
    requests: DataFrame       # user_key, live_hour, live_device, session_items: one row per user to rescore
    scoring: LiveScoring


class ScoringInputs(NamedTuple):
    histories: DataFrame      # the UDF input: one row per selected user, history arrays plus friends' events
    udf: Callable             # the mapInPandas function (recommend_partitions)
    items: fu.ItemFeatures
    model_info: dict
    settings: fu.FusionSettings


def model_catalogue_size(model_info: dict) -> int:
    """Items the published model was trained on (its checkpoint's meta.json)."""
    import json
    from pathlib import Path

    from socialrec.model.recommender import META_FILE

    return int(json.loads((Path(model_info["checkpoint"]) / META_FILE).read_text())["n_items"])


def scoring_inputs(ctx: RunContext, selected: DataFrame | None = None, live: LiveInputs | None = None
                   ) -> ScoringInputs:
    """What the infer stage feeds mapInPandas, so a benchmark can run the same function without Spark. Items
    that reached gold.item_index after the model was trained are left out until the next training run."""
    conf, lake, infer = ctx.conf, ctx.lake, ctx.conf["infer"]
    model_info = model_store.latest(lake.directory("checkpoints_dir"))
    sequences = lake.read("gold.user_sequences")
    settings, as_of, items, social = fusion_inputs(ctx, sequences)
    items = items.first(model_catalogue_size(model_info))
    histories = sequences.select("user_key", "items", "event_types", "hours", "gaps", "test_item", "purchased",
                                 "friend_items")
    if selected is not None:
        histories = histories.join(selected, "user_key", "left_semi")  # friends' events still come from everyone
    if social is not None:
        histories = histories.join(social, "user_key", "left")
    if live is not None:
        histories = histories.join(live.requests, "user_key", "left")
    udf = recommend_partitions(model_info["checkpoint"], conf["features"]["max_seq_len"], infer["top_k"],
                               infer["batch_size"], infer["torch_threads"], items, settings, as_of,
                               conf["clean"]["event_types"], approximate_settings(infer), infer.get("device", "cpu"),
                               live.scoring if live is not None else None)
    return ScoringInputs(histories, udf, items, model_info, settings)


def recommend(ctx: RunContext, selected: DataFrame | None = None, scope: str | None = None,
              live: LiveInputs | None = None) -> dict:
    """Score the users of infer.users (all by default) into gold.recommendations as this run's rows; or the users
    of `selected` (user_key, e.g. a stream micro-batch's), named `scope` in the summary, with their request-time
    context `live`."""
    lake = ctx.lake
    if selected is None:
        since = users_since(ctx.conf["infer"].get("users"))
        scope = "all" if since is None else f"changed-since={since.isoformat()}"
        everyone = lake.read("gold.user_sequences").select("user_key")
        selected = everyone if since is None else everyone.join(changed_users(ctx, since), "user_key", "left_semi")
        subset = since is not None
    else:
        subset = True
    if subset and selected.count() == 0:  # nothing changed: every user's current list stays as it is
        version = model_store.latest(lake.directory("checkpoints_dir"))["model_version"]
        return {"rows_out": 0, "model_version": version, "users_scored": 0, "scope": scope}
    histories, udf, items, model_info, settings = scoring_inputs(ctx, selected if subset else None, live)
    ranked = histories.mapInPandas(udf, RANKED_SCHEMA)
    run_date = datetime.now(timezone.utc).date().isoformat()
    recommendations = (
        ranked.join(lake.read("gold.item_index").select("item_idx", "item_id"), "item_idx")
        .select("user_key", "rank", "item_id", "item_idx", "score", "model_score", "components", "reason_code",
                "reason", F.lit(model_info["model_version"]).alias("model_version"),
                F.lit(ctx.run_id).alias("run_id"), F.lit(run_date).cast("date").alias("run_date"))
    ).persist()
    try:
        compact = recommendations.select("user_key", "item_idx", "reason_code").toPandas()
        expected = selected.count()  # the output gate: every selected user scored (all users by default)
        scored = compact["user_key"].nunique()
        if scored != expected:
            missing = (selected.join(recommendations.select("user_key").distinct(), "user_key", "left_anti")
                       .limit(5).toPandas()["user_key"].tolist())
            raise RuntimeError(
                f"gold.recommendations: {scored} of {expected} selected users ({scope}) in gold.user_sequences "
                f"got recommendations (every selected user must be scored); e.g. missing: {missing}")
        summary = summary_row(compact, items.category, items.n_items, ctx.run_id, model_info["model_version"], scope)
        _commit_evolving(ctx, "gold.recommendations", recommendations, mode="overwrite", partition_by=["run_date"],
                         replace_where=f"run_id = '{ctx.run_id}'")
    finally:
        recommendations.unpersist()
    _commit_evolving(ctx, "gold.recommendation_summary", ctx.spark.createDataFrame([summary], SUMMARY_SCHEMA),
                     mode="overwrite", replace_where=f"run_id = '{ctx.run_id}'")
    rows = ctx.report.tables["gold.recommendations"]["rows_written"]
    return {"rows_out": rows, "model_version": model_info["model_version"], "users_scored": summary["users_scored"],
            "scope": scope, "coverage": round(summary["coverage"], 4), "fusion_reranking": fu.reranking_of(settings),
            "reason_share": {code: round(share, 4) for code, share in summary["reason_share"].items()}}


def _commit_evolving(ctx: RunContext, table: str, df, **options) -> None:
    """Commit with Delta schema auto-merge on, so a lake written before these columns existed gains them
    (a replaceWhere overwrite does not overwrite the schema)."""
    key = "spark.databricks.delta.schema.autoMerge.enabled"
    previous = ctx.spark.conf.get(key, None)
    ctx.spark.conf.set(key, "true")
    try:
        ctx.commit(table, df, **options)
    finally:
        if previous is None:
            ctx.spark.conf.unset(key)
        else:
            ctx.spark.conf.set(key, previous)
