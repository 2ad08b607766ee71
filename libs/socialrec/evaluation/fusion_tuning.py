"""The tune_fusion stage: choose, per trained model, how strongly recommendations are diversified.

MMR and the category cap buy coverage and diversity with accuracy, and the price differs by catalogue: nothing on
the demo, 16% NDCG@10 on Ciao with a hard cap (docs/results.md). One fixed setting either wastes diversity on one
catalogue or breaks the accuracy tolerance on another. This stage ranks a fixed sample of users' *validation*
step (each user's second-to-last item; the test step stays unseen) under a grid of MMR trade-offs × cap budgets,
with the same fused score and the evaluate stage's own ranking, and keeps the most diversifying setting whose
NDCG@10 loss against the model stays within `tolerance` even at the lower end of its paired confidence
interval (a point estimate on a few thousand users is noise of a few percent: Ciao's validation promised −1.2%
for a setting that cost 4.3% on the test step). The choice is stored beside the model (model_store), and infer
and evaluate re-rank with it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from socialrec.evaluation.evaluate import rank_partitions, rank_schema, summarise, users_per_batch
from socialrec.evaluation.metrics import paired_difference
from socialrec.inference import fusion as fu
from socialrec.inference import model_store
from socialrec.inference.scoring import FusionInputs, fusion_inputs
from socialrec.run_context import RunContext

HISTORY_COLUMNS = ("items", "event_types", "hours", "gaps", "ts")
SHOWN = ("ndcg@10", "recall@20", "coverage@10", "diversity@10")


def validation_step(frame: pd.DataFrame) -> pd.DataFrame:
    """Each user's history without the test step, its last item the target (users left with two steps or more)."""
    frame = frame.copy()
    for column in HISTORY_COLUMNS:
        frame[column] = frame[column].map(lambda values: values[:-1])
    frame = frame[frame["items"].map(len) >= 2]
    frame["test_item"] = frame["items"].map(lambda values: values[-1])
    return frame


def variant_name(mmr_lambda: float, cap: str) -> str:
    return f"mmr {mmr_lambda:g}, {cap}"


def candidate_settings(base: fu.FusionSettings, mmr_lambdas, cap_budgets,
                       has_categories: bool = True) -> dict[str, fu.FusionSettings]:
    """The grid: every MMR trade-off × (no cap, and the configured category cap under each budget: a number is a
    soft cap's largest score loss, null the hard cap). Without a configured cap, or items without categories
    (where every cap ranks as no cap does), only MMR varies."""
    caps: list[tuple[str, int | None, float | None]] = [("no cap", None, None)]
    if base.max_per_category and has_categories:
        caps += [(f"soft cap {budget:g}" if budget is not None else "hard cap", base.max_per_category,
                  fu.checked_score_loss(budget)) for budget in cap_budgets]
    return {variant_name(fu.checked_mmr_lambda(trade_off), cap): dataclasses.replace(
                base, mmr_lambda=float(trade_off), max_per_category=per_category, cap_max_score_loss=budget)
            for trade_off in mmr_lambdas for cap, per_category, budget in caps}


def has_categories(items: fu.ItemFeatures) -> bool:
    return any(isinstance(category, str) for category in items.category)


def grid_metrics(ranks: pd.DataFrame, names, n_items: int, categories, confidence: float) -> dict[str, dict]:
    """{name: metrics} for the model and every variant, each variant with its paired NDCG@10 difference to the
    model (`change`: difference, low, high, p_value)."""
    model = summarise(ranks["model"].to_numpy(), ranks["model_top"], [10, 20], n_items, categories)
    out = {"model": model}
    for name in names:
        out[name] = summarise(ranks[name].to_numpy(), ranks[f"{name}_top"], [10, 20], n_items, categories)
        out[name]["change"] = paired_difference(ranks[name].to_numpy(), ranks["model"].to_numpy(), "ndcg@10",
                                                confidence)
    return out


def choose(figures: dict[str, dict], tolerance: float) -> tuple[str, bool]:
    """The variant with the widest lists (diversity@10 where items have categories, else coverage@10; then
    NDCG@10) among those whose NDCG@10 loss against the model is within `tolerance` (a share of the model's
    NDCG@10) at the low end of its interval; the most accurate variant, flagged as outside, when none is."""
    variants = {name: values for name, values in figures.items() if name != "model"}
    allowed = -tolerance * figures["model"]["ndcg@10"]
    within = [name for name, values in variants.items() if values["change"]["low"] >= allowed]
    if not within:
        return max(variants, key=lambda name: (variants[name]["ndcg@10"], name)), False
    spread = "diversity@10" if all("diversity@10" in variants[name] for name in within) else "coverage@10"
    return max(within, key=lambda name: (variants[name][spread], variants[name]["coverage@10"],
                                         variants[name]["ndcg@10"])), True


class Grid(NamedTuple):
    variants: dict[str, fu.FusionSettings]
    figures: dict[str, dict]   # grid_metrics: the model and every variant
    users: int


def ranked_grid(ctx: RunContext, checkpoint: str, mmr_lambdas, cap_budgets, limit: int | None, confidence: float,
                at_validation: bool = True) -> Grid:
    """The grid's figures for a fixed sample of users (`limit`; None: all), at their validation step (the test step
    with `at_validation=False`): one model score and one fused score per user, ranked once per setting in Spark."""
    conf = ctx.conf
    sequences = ctx.lake.read("gold.user_sequences")
    inputs = fusion_inputs(ctx, sequences, tuned=False)
    variants = candidate_settings(inputs.settings, mmr_lambdas, cap_budgets, has_categories(inputs.items))
    users = sampled_users(ctx, inputs, sequences, limit)
    if at_validation:
        users = users.mapInPandas(at_validation_step, users.schema)
    fusion = {"items": inputs.items, "settings": inputs.settings, "as_of": inputs.as_of,
              "event_names": conf["clean"]["event_types"], "page": int(conf["infer"]["top_k"]), "variants": variants}
    batch = users_per_batch(conf["infer"]["batch_size"], inputs.items.n_items, int(conf["evaluate"]["max_batch_cells"]))
    ranked = rank_partitions({"model": checkpoint}, {}, conf["features"]["max_seq_len"], batch,
                             conf["infer"]["torch_threads"], 20, fusion)
    ranks = (users.repartition(ctx.spark.sparkContext.defaultParallelism)
             .mapInPandas(ranked, rank_schema(["model", *variants])).toPandas())
    if ranks.empty:
        raise RuntimeError("tune_fusion: no user to rank (a validation step needs two steps before the test step)")
    return Grid(variants, grid_metrics(ranks, variants, inputs.items.n_items, inputs.items.category, confidence),
                len(ranks))


def sampled_users(ctx: RunContext, inputs: FusionInputs, sequences: DataFrame, limit: int | None) -> DataFrame:
    """A fixed sample (hash of user key and seed) of the users with a test step, with what ranking reads."""
    users = sequences.where(F.col("test_item") > 0).select(
        "user_key", "user_idx", *HISTORY_COLUMNS, "test_item", "friend_items")
    if inputs.friend_events is not None:
        users = users.join(inputs.friend_events, "user_key", "left")
    users = users.orderBy(F.xxhash64("user_key", F.lit(ctx.conf["train"]["seed"])))
    return users.limit(int(limit)) if limit else users


def at_validation_step(frames):
    for frame in frames:
        yield validation_step(frame)


def tune_fusion(ctx: RunContext) -> dict:
    tuning = ctx.conf["infer"].get("tune_fusion") or {}
    if not tuning.get("enabled"):
        return {"skipped": "infer.tune_fusion.enabled is false: infer and evaluate use the configured settings"}
    checkpoints_dir = ctx.lake.directory("checkpoints_dir")
    model_info = model_store.latest(checkpoints_dir)
    tolerance, confidence = float(tuning["tolerance"]), float(tuning["confidence"])
    started = time.perf_counter()
    variants, figures, users = ranked_grid(ctx, model_info["checkpoint"], tuning["mmr_lambda"],
                                           tuning["cap_max_score_loss"], tuning.get("users"), confidence)
    chosen, within = choose(figures, tolerance)
    setting = variants[chosen]
    record = {"model_version": model_info["model_version"], "run_id": ctx.run_id, "chosen": chosen,
              "within_tolerance": within, "tolerance": tolerance, "confidence": confidence, "users": users,
              "settings": fu.reranking_of(setting),
              "figures": figures}
    path = model_store.publish_fusion_choice(checkpoints_dir, record)
    return {"rows_out": users, "chosen": chosen, "within_tolerance": within, "settings": record["settings"],
            "model_version": model_info["model_version"], "users": users, "record": str(path),
            "grid": {name: {metric: round(values[metric], 4) for metric in SHOWN if metric in values}
                     | ({"ndcg@10 change low": round(values["change"]["low"], 5)} if "change" in values else {})
                     for name, values in figures.items()},
            "timings": {"ranking": round(time.perf_counter() - started, 2)}}
