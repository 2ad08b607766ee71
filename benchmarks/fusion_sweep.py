"""Fusion settings side by side: the fused ranking's NDCG@10, Recall@20, coverage@10 and diversity@10 beside the
model's, for a grid of MMR trade-offs × category caps (none, hard, soft budgets), same trained model, same users.

    .venv/bin/python benchmarks/fusion_sweep.py --conf conf/realdata-orderless.yml --lake /tmp/rd/ciao
        [--users 2000] [--split valid|test] [--mmr 1.0 0.9 0.8] [--soft 0.5 1 2]

--split valid (the default) makes each user's second-to-last item the target, the last one unseen, so settings
chosen here leave the test step out-of-sample; --split test measures the test step. Ranking and fusion are the
evaluate stage's own (`rank_partitions`), so the figures are what `metrics.fused` would report for these users.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd
from pyspark.sql import functions as F

from socialrec.config import load_config
from socialrec.evaluation.evaluate import rank_partitions, summarise, users_per_batch
from socialrec.inference import model_store
from socialrec.inference.scoring import fusion_inputs
from socialrec.pipeline import make_context

SHOWN = ("ndcg@10", "recall@20", "coverage@10", "diversity@10")


def validation_step(frame: pd.DataFrame) -> pd.DataFrame:
    """Each user's history without the test step, its last item the target."""
    frame = frame.copy()
    for column in ("items", "event_types", "hours", "gaps", "ts"):
        frame[column] = frame[column].map(lambda values: values[:-1])
    frame = frame[frame["items"].map(len) >= 2]
    frame["test_item"] = frame["items"].map(lambda values: values[-1])
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--mmr", type=float, nargs="+", default=[1.0, 0.9, 0.8])
    parser.add_argument("--soft", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()

    conf = load_config(args.conf, {"lake": {"root": args.lake}})
    ctx = make_context(conf, args.lake)
    sequences = ctx.lake.read("gold.user_sequences")
    settings, as_of, items, social = fusion_inputs(ctx, sequences)
    users = sequences.where(F.col("test_item") > 0).select(
        "user_key", "user_idx", "items", "event_types", "hours", "gaps", "ts", "test_item", "friend_items")
    if social is not None:
        users = users.join(social, "user_key", "left")
    frame = users.orderBy(F.xxhash64("user_key", F.lit(conf["train"]["seed"]))).limit(args.users).toPandas()
    if args.split == "valid":
        frame = validation_step(frame)
    checkpoint = model_store.latest(ctx.lake.directory("checkpoints_dir"))["checkpoint"]
    n_items = items.n_items
    batch = users_per_batch(conf["infer"]["batch_size"], n_items, int(conf["evaluate"]["max_batch_cells"]))
    cap = settings.max_per_category or 5
    caps = [("no cap", None, None), ("hard cap", cap, None)] + [(f"soft cap {loss:g}", cap, loss) for loss in args.soft]
    print(f"{len(frame):,} users ({args.split} step), {n_items:,} items, checkpoint {checkpoint}")

    model_metrics = None
    for trade_off in args.mmr:
        for cap_name, max_per_category, max_score_loss in caps:
            variant = dataclasses.replace(settings, mmr_lambda=trade_off, max_per_category=max_per_category,
                                          cap_max_score_loss=max_score_loss)
            fusion = {"items": items, "settings": variant, "as_of": as_of,
                      "event_names": conf["clean"]["event_types"], "page": int(conf["infer"]["top_k"])}
            started = time.perf_counter()
            ranks = pd.concat(rank_partitions({"model": checkpoint}, {}, conf["features"]["max_seq_len"], batch,
                                              conf["infer"]["torch_threads"], 20, fusion)(iter([frame])))
            if model_metrics is None:
                model_metrics = summarise(ranks["model"].to_numpy(), ranks["model_top"], [10, 20], n_items,
                                          items.category)
                print("model: " + ", ".join(f"{name} {model_metrics.get(name, float('nan')):.4f}" for name in SHOWN))
            fused = summarise(ranks["fused"].to_numpy(), ranks["fused_top"], [10, 20], n_items, items.category)
            change = 100 * (fused["ndcg@10"] / model_metrics["ndcg@10"] - 1) if model_metrics["ndcg@10"] else 0.0
            print(f"MMR {trade_off:g}, {cap_name}: " + ", ".join(f"{name} {fused.get(name, float('nan')):.4f}"
                                                                for name in SHOWN)
                  + f" (NDCG@10 {change:+.1f}% vs model) [{time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
