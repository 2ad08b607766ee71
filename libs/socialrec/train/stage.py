"""The train stage: gather the gold inputs (training files, validation sample, text vectors) and hand them
to Ray Train; publish the best checkpoint for scoring."""
from __future__ import annotations

import numpy as np
from pyspark.sql import functions as F

from socialrec.config import deep_merge
from socialrec.features.windows import build_inputs
from socialrec.inference import model_store
from socialrec.run_context import RunContext


def text_matrix(ctx: RunContext, n_items: int) -> np.ndarray | None:
    """[n_items + 1, dim] pretrained text vectors, zero rows for items without text."""
    if not ctx.conf["model"]["use_text"] or not ctx.lake.exists("gold.item_embeddings"):
        return None
    vectors = ctx.lake.read("gold.item_embeddings").toPandas()
    if vectors.empty:
        return None
    matrix = np.zeros((n_items + 1, len(vectors["embedding"].iloc[0])), dtype=np.float32)
    matrix[vectors["item_idx"].to_numpy()] = np.stack(vectors["embedding"].to_numpy())
    return matrix


def train(ctx: RunContext) -> dict:
    from socialrec.train.trainer import train_recommender

    conf, lake = ctx.conf, ctx.lake
    n_items = int(lake.read("gold.item_index").agg(F.max("item_idx")).first()[0])
    valid = (
        lake.read("gold.user_sequences").where(F.col("test_item") > 0)
        .orderBy(F.xxhash64("user_key", F.lit(conf["train"]["seed"])))
        .limit(conf["train"]["valid_users"])
        .select("items", "event_types", "hours", "gaps", "test_item", "valid_item", "friend_items")
        .toPandas()
    )
    valid_inputs = build_inputs(valid.to_dict("records"), "train", conf["features"]["max_seq_len"])
    output_dir = lake.directory("checkpoints_dir") / ctx.run_id
    text = text_matrix(ctx, n_items)
    if text is None and conf["model"]["use_text"]:
        conf = deep_merge(conf, {"model": {"use_text": False}})  # a source without item text: ids only
    result = train_recommender(
        conf, lake.snapshot_files("gold.train_examples"), valid_inputs, valid["valid_item"].to_numpy(np.int64),
        n_items, text, str(output_dir),
    )
    best = result.history[result.best_epoch] if result.history else {}
    published = model_store.publish(lake.directory("checkpoints_dir"), ctx.run_id, result.checkpoint_dir,
                                    {"best_epoch": result.best_epoch, "valid": best})
    ctx.report.artifacts["model"] = published
    return {"epochs": len(result.history), "best_epoch": result.best_epoch, "use_text": conf["model"]["use_text"],
            "samples_per_second": round(result.samples_per_second, 1), "valid": best,
            "checkpoint": result.checkpoint_dir}
