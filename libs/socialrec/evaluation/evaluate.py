"""The evaluate stage: full-ranking metrics on the test split for the model and the baselines, computed
per user inside Spark (only one rank per user and model comes back to the driver)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from socialrec.evaluation.metrics import metrics_from_ranks, target_ranks
from socialrec.inference import model_store
from socialrec.run_context import RunContext

BASELINES = ("popularity",)


def rank_partitions(checkpoint_dir: str, popularity: np.ndarray, max_len: int, batch_size: int, threads: int):
    """Rank of each user's test item among all items not seen before it, for the model and popularity."""

    def run(frames):
        import torch

        torch.set_num_threads(threads)
        model, _ = model_store.load_model(checkpoint_dir)
        for frame in frames:
            for start in range(0, len(frame), batch_size):
                chunk = frame.iloc[start:start + batch_size]
                records = chunk.to_dict("records")
                targets = chunk["test_item"].to_numpy(dtype=np.int64)
                seen = [np.asarray(r["items"])[:-1] for r in records]
                model_scores = model_store.score_histories(model, records, "valid", max_len)
                popular = np.broadcast_to(popularity, (len(chunk), len(popularity)))
                yield pd.DataFrame({
                    "user_key": chunk["user_key"].to_numpy(),
                    "model": target_ranks(model_scores, targets, seen).astype(np.int32),
                    "popularity": target_ranks(popular, targets, seen).astype(np.int32),
                })

    return run


def evaluate(ctx: RunContext) -> dict:
    conf, lake = ctx.conf, ctx.lake
    model_info = model_store.latest(lake.directory("checkpoints_dir"))
    index = lake.read("gold.item_index").select("item_idx", "popularity").toPandas()
    popularity = np.zeros(int(index["item_idx"].max()) + 1, dtype=np.float64)
    # A tiny id-based tie-break keeps the ranking deterministic without favouring the target.
    popularity[index["item_idx"].to_numpy()] = index["popularity"].to_numpy() - index["item_idx"].to_numpy() * 1e-9
    schema = StructType([StructField("user_key", StringType())]
                        + [StructField(name, IntegerType()) for name in ("model", *BASELINES)])
    users = lake.read("gold.user_sequences").where(F.col("test_item") > 0).select(
        "user_key", "items", "event_types", "hours", "gaps", "test_item", "friend_items")
    ranks = users.mapInPandas(
        rank_partitions(model_info["checkpoint"], popularity, conf["features"]["max_seq_len"],
                        conf["infer"]["batch_size"], conf["infer"]["torch_threads"]),
        schema,
    ).toPandas()
    ks = conf["evaluate"]["ks"]
    metrics = {name: metrics_from_ranks(ranks[name].to_numpy(), ks) for name in ("model", *BASELINES)}
    rows = [(ctx.run_id, name, metric, float(value), len(ranks))
            for name, values in metrics.items() for metric, value in values.items()]
    table = ctx.spark.createDataFrame(rows, "run_id string, model string, metric string, value double, users long")
    ctx.commit("gold.metrics", table, mode="overwrite", replace_where=f"run_id = '{ctx.run_id}'")
    ctx.report.metrics.update(metrics)
    return {"users_evaluated": len(ranks), "rows_out": len(rows)}
