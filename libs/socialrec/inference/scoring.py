"""gold.user_sequences -> gold.recommendations: top-K per user from the trained model, in a Spark
iterator UDF (mapInPandas) so the model is loaded once per worker and users stream through in batches."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from socialrec.inference import model_store
from socialrec.run_context import RunContext

RANKED_SCHEMA = StructType([
    StructField("user_key", StringType()),
    StructField("rank", IntegerType()),
    StructField("item_idx", IntegerType()),
    StructField("score", FloatType()),
])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k best scores per row, best first (finite scores only)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


def recommend_partitions(checkpoint_dir: str, max_len: int, k: int, batch_size: int, threads: int,
                         exclude_purchased: bool):
    def run(frames):
        import torch

        torch.set_num_threads(threads)
        model, _ = model_store.load_model(checkpoint_dir)
        for frame in frames:
            for start in range(0, len(frame), batch_size):
                chunk = frame.iloc[start:start + batch_size]
                scores = model_store.score_histories(model, chunk.to_dict("records"), "full", max_len)
                if exclude_purchased:
                    for row, bought in enumerate(chunk["purchased"]):
                        scores[row, np.asarray(bought, dtype=np.int64)] = -np.inf
                items, values = top_k(scores, k)
                finite = np.isfinite(values)
                users = np.repeat(chunk["user_key"].to_numpy(), items.shape[1])
                ranks = np.tile(np.arange(1, items.shape[1] + 1, dtype=np.int32), len(chunk))
                keep = finite.ravel()
                yield pd.DataFrame({"user_key": users[keep], "rank": ranks[keep],
                                    "item_idx": items.ravel()[keep].astype(np.int32),
                                    "score": values.ravel()[keep].astype(np.float32)})
    return run


def recommend(ctx: RunContext) -> dict:
    conf, lake = ctx.conf, ctx.lake
    model_info = model_store.latest(lake.directory("checkpoints_dir"))
    infer = conf["infer"]
    histories = lake.read("gold.user_sequences").select(
        "user_key", "items", "event_types", "hours", "gaps", "test_item", "purchased", "friend_items")
    ranked = histories.mapInPandas(
        recommend_partitions(model_info["checkpoint"], conf["features"]["max_seq_len"], infer["top_k"],
                             infer["batch_size"], infer["torch_threads"], infer["exclude_purchased"]),
        RANKED_SCHEMA,
    )
    run_date = datetime.now(timezone.utc).date().isoformat()
    recommendations = (
        ranked.join(lake.read("gold.item_index").select("item_idx", "item_id"), "item_idx")
        .select("user_key", "rank", "item_id", "item_idx", "score",
                F.lit(model_info["model_version"]).alias("model_version"), F.lit(ctx.run_id).alias("run_id"),
                F.lit(run_date).cast("date").alias("run_date"))
    )
    ctx.commit("gold.recommendations", recommendations, mode="overwrite", partition_by=["run_date"],
               replace_where=f"run_id = '{ctx.run_id}'")
    rows = ctx.report.tables["gold.recommendations"]["rows_written"]
    return {"rows_out": rows, "model_version": model_info["model_version"]}
