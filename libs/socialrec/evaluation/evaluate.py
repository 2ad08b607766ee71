"""The evaluate stage: full-ranking metrics on the test split for the model and the baselines (popularity,
item-KNN, implicit ALS), computed per user inside Spark (only ranks and top-K lists come back to the driver),
plus catalogue coverage, the same metrics per user group (cold/warm, with/without friends), and the model's
paired difference to every other row with its confidence interval (`comparisons`)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

from socialrec.evaluation import baselines as bl
from socialrec.evaluation.metrics import (category_diversity, list_ranks, metrics_from_ranks, paired_difference,
                                         target_ranks)
from socialrec.features.collaborative import fit_als, interaction_pairs
from socialrec.inference import fusion as fu
from socialrec.inference import model_store
from socialrec.inference.scoring import fusion_inputs, user_context
from socialrec.run_context import RunContext

BASELINES = bl.KNOWN_BASELINES
FUSED_SCORE = "fused"  # the fused score's key among a batch's scores; its rankings are the `variants`


class _Local:
    """Stands in for a Spark broadcast where none can be made (the value then travels with the closure)."""

    def __init__(self, value):
        self.value = value

    def unpersist(self) -> None:
        pass


def _share(spark, value):
    try:
        return spark.sparkContext.broadcast(value)
    except Exception:  # e.g. Spark Connect, which has no SparkContext: ship it in the closure instead
        return _Local(value)


def rank_partitions(checkpoints: dict[str, str], baselines: dict, max_len: int, batch_size: int, threads: int,
                    k: int, fusion: dict | None = None):
    """Rank of each user's test item among all items not seen before it, and each top-k list, for every trained
    model in `checkpoints` ({name: checkpoint dir}: `model` and its variants) and every baseline in `baselines`
    ({name: shared value}: popularity vector, item-KNN matrix + settings, ALS item factors). With `fusion`
    ({items, settings, as_of, event_names, page}) also `fused`: the model's scores fused with social proof,
    sentiment, freshness and popularity, from friends' events before the user's test step only, and ranked as
    recommendations are shown (MMR where infer.mmr_lambda < 1, pages of `page` items under
    infer.max_per_category). `fusion["variants"]` ({column: settings}, same weights, other re-ranking) ranks one
    fused score several ways at the cost of one: the tune_fusion stage's grid."""
    variants = fused_variants(fusion)

    def run(frames):
        import torch

        torch.set_num_threads(threads)
        # A variant that is the model itself (an ablation of an input the lake lacks) shares its checkpoint.
        models = {path: model_store.load_model(path)[0] for path in set(checkpoints.values())}
        item_vectors = None
        if any(variant.mmr_lambda < 1.0 for variant in variants.values()):
            with torch.inference_mode():
                item_vectors = fu.unit_vectors(models[checkpoints["model"]].item_representations().float().numpy())
        for frame in frames:
            for start in range(0, len(frame), batch_size):
                chunk = frame.iloc[start:start + batch_size]
                records = chunk.to_dict("records")
                targets = chunk["test_item"].to_numpy(dtype=np.int64)
                seen = [np.asarray(r["items"])[:-1] for r in records]
                by_path = {path: model_store.score_histories(model, records, "valid", max_len)
                           for path, model in models.items()}
                scores = {name: by_path[path] for name, path in checkpoints.items()}
                if fusion is not None:
                    contexts = [user_context(before_test_step(record), fusion["event_names"]) for record in records]
                    fused, _ = fu.fused_scores(scores["model"], contexts, fusion["items"], fusion["settings"],
                                               fusion["as_of"])
                    scores[FUSED_SCORE] = fused
                if "popularity" in baselines:
                    scores["popularity"] = np.tile(baselines["popularity"].value, (len(chunk), 1))
                if "itemknn" in baselines:
                    knn = baselines["itemknn"].value
                    scores["itemknn"] = bl.knn_scores(knn["matrix"], seen, knn["history"], knn["decay"])
                if "als" in baselines:
                    scores["als"] = bl.als_scores(chunk["als_factors"].tolist(), baselines["als"].value)
                out = {
                    "user_key": chunk["user_key"].to_numpy(),
                    "n_steps": np.array([len(r["items"]) for r in records], dtype=np.int32),
                    "n_friend_items": np.array([int((np.asarray(r["friend_items"] if r["friend_items"] is not None
                                                                else [], dtype=np.int64) > 0).sum())
                                                for r in records], dtype=np.int32),
                }
                for name, values in scores.items():
                    values = bl.mask_seen(np.array(values, dtype=np.float64), seen)
                    ranks = target_ranks(values, targets)  # once per score, however many ways it is re-ranked
                    for column, setting in (variants.items() if name == FUSED_SCORE else [(name, None)]):
                        if setting is not None and setting.reranks:
                            shown = fu.rule_ranked(values, fusion["items"].category, setting, fusion["page"], k,
                                                   item_vectors, seen)
                            out[column] = list_ranks(shown, targets, ranks).astype(np.int32)
                            out[f"{column}_top"] = [items[:k].astype(np.int32) for items in shown]
                        else:
                            out[column] = ranks.astype(np.int32)
                            out[f"{column}_top"] = bl.top_items(values, k)
                yield pd.DataFrame(out)

    return run


def fused_variants(fusion: dict | None) -> dict:
    """{column: settings} of the fused rankings `rank_partitions` produces: `fused` alone unless a grid is given."""
    if fusion is None:
        return {}
    return fusion.get("variants") or {FUSED_SCORE: fusion["settings"]}


def rank_schema(models) -> StructType:
    """`rank_partitions`' output: per user the rank of the target and the top-k list under every model."""
    return StructType(
        [StructField("user_key", StringType()), StructField("n_steps", IntegerType()),
         StructField("n_friend_items", IntegerType())]
        + [field for name in models
           for field in (StructField(name, IntegerType()), StructField(f"{name}_top", ArrayType(IntegerType())))]
    )


def users_per_batch(batch_size: int, n_items: int, max_cells: int) -> int:
    """Users ranked together: the configured batch, or fewer where one [users, catalogue] score matrix (one per
    model and baseline, float64) would exceed `max_cells` entries: 512 users x Ciao's 105k items is 430 MB a
    matrix, and with every baseline and two tasks that outgrew a 24 GiB machine."""
    return max(1, min(batch_size, max_cells // (n_items + 1)))


def before_test_step(record: dict) -> dict:
    """The user's history and friends' events as they stood just before the test step."""
    test_ts = record["ts"][-1]
    friend_events = record.get("friend_events")
    return {**record, "items": record["items"][:-1], "event_types": record["event_types"][:-1], "purchased": [],
            "friend_events": [e for e in (friend_events if friend_events is not None else []) if e["ts"] < test_ts]}


def summarise(ranks: np.ndarray, tops, ks, n_items: int, categories: np.ndarray) -> dict[str, float]:
    """Ranking metrics plus catalogue coverage@K and, where items have categories, diversity@K (mean share of
    distinct categories in a top-K list) for one model over one set of users."""
    values = metrics_from_ranks(ranks, ks)
    for k in ks:
        values[f"coverage@{k}"] = bl.catalogue_coverage(tops, n_items, k)
        diversity = category_diversity(tops, categories, k)
        if diversity is not None:
            values[f"diversity@{k}"] = diversity
    return values


def evaluate(ctx: RunContext) -> dict:
    conf, lake, spark = ctx.conf, ctx.lake, ctx.spark
    settings = conf["evaluate"]
    ks = list(settings["ks"])
    names = list(settings.get("baselines", ["popularity"]))
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown} in evaluate.baselines; known: {', '.join(BASELINES)}")
    timings: dict[str, float] = {}
    model_info = model_store.latest(lake.directory("checkpoints_dir"))
    checkpoints = {"model": model_info["checkpoint"],
                   **{name: path for name, path in (model_info.get("variants") or {}).items() if name != "model"}}
    index = lake.read("gold.item_index").select("item_idx", "popularity", "category").toPandas()
    n_items = int(index["item_idx"].max())
    categories = np.full(n_items + 1, None, dtype=object)
    categories[index["item_idx"].to_numpy()] = index["category"].to_numpy()
    catalogue = len(index)
    sequences = lake.read("gold.user_sequences")
    users = sequences.where(F.col("test_item") > 0).select(
        "user_key", "user_idx", "items", "event_types", "hours", "gaps", "ts", "test_item", "friend_items")
    fusion = None
    if settings.get("fused", True):
        fusion_settings, as_of, items, social = fusion_inputs(ctx, sequences)
        fusion = {"items": items, "settings": fusion_settings, "as_of": as_of,
                  "event_names": conf["clean"]["event_types"], "page": int(conf["infer"]["top_k"])}
        if social is not None:
            users = users.join(social, "user_key", "left")

    shared: dict = {}
    figures: dict = {"fusion_reranking": fu.reranking_of(fusion["settings"])} if fusion else {}
    if "popularity" in names:
        popularity = np.zeros(n_items + 1, dtype=np.float64)
        # A tiny id-based tie-break keeps the ranking deterministic without favouring the target.
        popularity[index["item_idx"].to_numpy()] = (index["popularity"].to_numpy()
                                                    - index["item_idx"].to_numpy() * 1e-9)
        shared["popularity"] = _share(spark, popularity)
    pairs = None
    if "itemknn" in names or "als" in names:
        pairs = interaction_pairs(sequences, held_out_steps=1).persist()
    if "itemknn" in names:
        started = time.perf_counter()
        knn_conf = settings.get("itemknn") or {}
        neighbours = int(knn_conf.get("neighbours", 50))
        n_pairs = pairs.count()
        if bl.sparse is not None and n_pairs <= int(knn_conf.get("driver_max_pairs", 2_000_000)):
            local = pairs.select("user_idx", "item_idx").toPandas()
            rows, cols, vals = bl.cosine_neighbours_local(local["user_idx"], local["item_idx"], n_items, neighbours,
                                                          int(knn_conf.get("block_entries", 20_000_000)))
            figures["itemknn_similarity"] = "driver"
        else:
            sims = bl.cosine_neighbours_spark(pairs, neighbours).toPandas()
            rows, cols, vals = sims["item_i"], sims["item_j"], sims["sim"]
            figures["itemknn_similarity"] = "spark"
        figures["itemknn_neighbour_pairs"] = int(len(rows))
        shared["itemknn"] = _share(spark, {
            "matrix": bl.similarity_matrix(rows, cols, vals, n_items),
            "history": int(knn_conf.get("history", conf["features"]["max_seq_len"])),
            "decay": float(knn_conf.get("recency_decay", 1.0)),
        })
        timings["itemknn_fit"] = round(time.perf_counter() - started, 2)
    if "als" in names:
        started = time.perf_counter()
        user_factors, item_factors = fit_als(pairs, n_items, settings["als"])
        users = users.join(user_factors, "user_idx", "left")
        shared["als"] = _share(spark, item_factors)
        timings["als_fit"] = round(time.perf_counter() - started, 2)

    models = (*checkpoints, *(["fused"] if fusion else []), *[name for name in BASELINES if name in names])
    schema = rank_schema(models)
    started = time.perf_counter()
    try:
        ranks = users.mapInPandas(
            rank_partitions(checkpoints, shared, conf["features"]["max_seq_len"],
                            users_per_batch(conf["infer"]["batch_size"], n_items, int(settings["max_batch_cells"])),
                            conf["infer"]["torch_threads"], max(ks), fusion),
            schema,
        ).toPandas()
    finally:
        for value in shared.values():
            value.unpersist()
        if pairs is not None:
            pairs.unpersist()
    timings["ranking"] = round(time.perf_counter() - started, 2)

    metrics = {name: summarise(ranks[name].to_numpy(), ranks[f"{name}_top"], ks, catalogue, categories)
               for name in models}
    rows = [(ctx.run_id, name, metric, float(value), len(ranks))
            for name, values in metrics.items() for metric, value in values.items()]
    groups = bl.user_groups(ranks["n_steps"].to_numpy(), ranks["n_friend_items"].to_numpy(),
                            int(settings.get("cold_max_steps", 5)))
    by_group: dict[str, dict] = {}
    group_sizes: dict[str, int] = {}
    for group, mask in groups.items():
        group_sizes[group] = int(mask.sum())
        if not mask.any():
            continue  # an empty group has no metrics (zeros would read as a result)
        members = ranks[mask]
        by_group[group] = {name: summarise(members[name].to_numpy(), members[f"{name}_top"], ks, catalogue,
                                           categories)
                           for name in models}
        rows += [(ctx.run_id, f"{name}|{group}", metric, float(value), len(members))
                 for name, values in by_group[group].items() for metric, value in values.items()]
    table = spark.createDataFrame(rows, "run_id string, model string, metric string, value double, users long")
    ctx.commit("gold.metrics", table, mode="overwrite", replace_where=f"run_id = '{ctx.run_id}'")
    ctx.report.metrics.update(metrics)  # {model_name: {metric: value}} only
    ctx.report.comparisons.update(compare_with_model(ranks, models, settings["compare"]))
    ctx.report.metrics_by_group.update(by_group)
    return {"users_evaluated": len(ranks), "rows_out": len(rows), "models": list(models),
            "group_sizes": group_sizes, "metrics_by_group": by_group, "timings": timings, **figures}


def compare_with_model(ranks: pd.DataFrame, models, compare_conf: dict) -> dict:
    """{other model: {metric: paired_difference of `model` minus it}} over the same users, for every other row
    of the table (variants, fused, baselines), so a lead or a gap is read with its confidence interval."""
    if "model" not in ranks:
        return {}
    confidence = float(compare_conf["confidence"])
    return {other: {metric: paired_difference(ranks["model"].to_numpy(), ranks[other].to_numpy(), metric, confidence)
                    for metric in compare_conf["metrics"]}
            for other in models if other != "model"}
