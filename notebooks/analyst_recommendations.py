# Databricks notebook source
# MAGIC %md
# MAGIC # socialrec: recommendations for a user, model quality per run, data quality, social graph
# MAGIC
# MAGIC Parameters (widgets on Databricks; `SOCIALREC_NB_<NAME>` env vars or defaults elsewhere):
# MAGIC `conf` (config file), `lake` (lake root override), `user_key` (a pseudonymised user; empty picks the user
# MAGIC with the longest history). Run locally with
# MAGIC `python -m socialrec.ops.notebook_runner notebooks/analyst_recommendations.py --out /tmp/nb --param lake=./lake`.
# MAGIC
# MAGIC On Databricks the cluster needs the project's wheel (`databricks bundle deploy` builds it into
# MAGIC `dist/`; attach it as a library or `%pip install` it).

# COMMAND ----------

import matplotlib.pyplot as plt
import pandas as pd
from pyspark.sql import functions as F

from socialrec.inference.scoring import current_recommendations
from socialrec.io.tables import Lake
from socialrec.ops.widgets import notebook_conf, param

conf = notebook_conf(param("conf", "", "config file"), param("lake", "", "lake root (empty: the config's)"))
lake = Lake(spark, conf)
user_key = param("user_key", "", "user (pseudonymised key; empty: the longest history)").strip()
print(f"lake: {lake.root}")

# COMMAND ----------

# MAGIC %md ## The user and their recommendations

# COMMAND ----------

sequences = lake.read("gold.user_sequences")
if not user_key:
    recommended = lake.read("gold.recommendations").select("user_key").distinct()
    user_key = (sequences.join(recommended, "user_key").orderBy(F.desc("n_steps"), "user_key")
                .select("user_key").first()["user_key"])
user = sequences.where(F.col("user_key") == user_key).first()
if user is None:
    raise ValueError(f"user {user_key!r} not found in gold.user_sequences")
print(f"user: {user_key} (user_idx {user['user_idx']}, {user['n_steps']} steps, "
      f"{len(user['purchased'] or [])} purchased items)")

items = lake.read("gold.item_index").select("item_idx", "item_id", "category", "popularity")
# The user's current list: the latest run that scored them (incremental runs rescore only some users).
recs = (current_recommendations(lake.read("gold.recommendations").where(F.col("user_key") == user_key))
        .join(items.select("item_idx", "category", "popularity"), "item_idx", "left")
        .orderBy("rank").toPandas())
print(f"recommendations: {len(recs)} (model {recs['model_version'].iloc[0] if len(recs) else '-'}, "
      f"run {recs['run_id'].iloc[0] if len(recs) else '-'})")
display(recs[["rank", "item_id", "category", "score", "popularity"]])

# COMMAND ----------

# MAGIC %md ## Their history (collapsed steps, oldest first)

# COMMAND ----------

event_names = ["pad", *conf["clean"]["event_types"]]
history = pd.DataFrame({"item_idx": list(user["items"]),
                        "event": [event_names[code] for code in user["event_types"]],
                        "ts": pd.to_datetime(list(user["ts"]), unit="s")})
history = history.merge(items.toPandas(), on="item_idx", how="left")
history["split"] = "train"
if user["test_item"]:
    history.loc[history.index[-1], "split"] = "test"
    if len(history) > 1:
        history.loc[history.index[-2], "split"] = "validation"
print(f"history: {len(history)} steps, categories {history['category'].value_counts().to_dict()}")
display(history[["ts", "item_id", "category", "event", "split"]].tail(20))
overlap = set(recs["category"]) & set(history["category"])
print(f"recommended categories seen in the history: {sorted(overlap)}")

# COMMAND ----------

# MAGIC %md ## Model quality per run (`gold.metrics`)

# COMMAND ----------

metrics = lake.read("gold.metrics").toPandas()
groups = metrics[metrics["model"].str.contains("|", regex=False)]  # per user group: `model|cold`, ...
metrics = metrics.drop(groups.index)
per_run = metrics.pivot_table(index=["run_id", "model"], columns="metric", values="value").reset_index()
display(per_run)
ndcg = metrics[metrics["metric"] == "ndcg@10"].pivot_table(index="run_id", columns="model", values="value")
ax = ndcg.plot(kind="bar", figsize=(8, 3.5), title="NDCG@10 per run and model")
ax.set_ylabel("NDCG@10 (test split)")
plt.xticks(rotation=0)
plt.tight_layout()
plt.show()
for run_id, row in ndcg.iterrows():
    print(f"run {run_id}: " + ", ".join(f"{model} ndcg@10={value:.4f}" for model, value in row.dropna().items()))

# COMMAND ----------

# MAGIC %md ## Data-quality history (`ops.quality_results`)

# COMMAND ----------

quality = lake.read("ops.quality_results")
by_run = (quality.groupBy("run_id", "table")
          .agg(F.count("*").alias("expectations"), F.sum(F.when(F.col("success"), 0).otherwise(1)).alias("failed"),
               F.max("validated_at").alias("validated_at"))
          .orderBy("validated_at").toPandas())
display(by_run)
print(f"quality checks: {int(by_run['expectations'].sum())} over {by_run['run_id'].nunique()} run(s), "
      f"{int(by_run['failed'].sum())} failed")
failures = quality.where(~F.col("success")).select("run_id", "table", "expectation", "column",
                                                     "unexpected_sample").limit(20)
display(failures)

# COMMAND ----------

# MAGIC %md ## The social graph around the user (friends and friends of friends)

# COMMAND ----------

import math

neighbours = lake.read("gold.social_neighbours").select("user_idx", "friends")
friends = list(user["friends"] if "friends" in user.asDict() else [])
if not friends:
    row = neighbours.where(F.col("user_idx") == user["user_idx"]).first()
    friends = list(row["friends"] or []) if row else []
second = (neighbours.where(F.col("user_idx").isin(friends or [-1])).toPandas() if friends
          else pd.DataFrame(columns=["user_idx", "friends"]))
edges = [(user["user_idx"], f) for f in friends]
outer = []
for row in second.itertuples():
    for g in list(row.friends)[:5]:  # a few friends of each friend keep the picture readable
        edges.append((row.user_idx, g))
        if g != user["user_idx"] and g not in friends and g not in outer:
            outer.append(g)
print(f"social graph: {len(friends)} friends, {len(outer)} friends of friends shown")

position = {user["user_idx"]: (0.0, 0.0)}
for ring, members in ((1.0, friends), (2.0, outer)):
    for i, node in enumerate(members):
        angle = 2 * math.pi * i / max(1, len(members))
        position[node] = (ring * math.cos(angle), ring * math.sin(angle))
fig, ax = plt.subplots(figsize=(6, 6))
for a, b in edges:
    if a in position and b in position:
        ax.plot(*zip(position[a], position[b]), color="#bbbbbb", linewidth=0.7, zorder=1)
for members, colour, size in (([user["user_idx"]], "#d62728", 160), (friends, "#1f77b4", 70), (outer, "#aec7e8", 30)):
    if members:
        ax.scatter([position[n][0] for n in members], [position[n][1] for n in members], s=size, color=colour,
                   zorder=2)
ax.set_title(f"user {user['user_idx']}: friends (blue), friends of friends (light)")
ax.set_axis_off()
plt.show()
