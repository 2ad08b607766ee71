# Databricks notebook source
# MAGIC %md
# MAGIC # socialrec: recommendations for a user, model quality per run, data quality, social graph
# MAGIC
# MAGIC Parameters (widgets on Databricks; `SOCIALREC_NB_<NAME>` env vars or defaults elsewhere):
# MAGIC `conf` (config file), `lake` (lake root override), `user_key` (a pseudonymised user; empty picks the user
# MAGIC with the longest history), `engine` (`auto`: Spark SQL when a SparkSession is there, else `deltalake`;
# MAGIC `spark`; `deltalake`: delta-rs + DuckDB, no JVM). Every read is one SQL query over the lake's logical table
# MAGIC names (`socialrec.io.lake_sql`), the same text on both engines. Run locally with
# MAGIC `python -m socialrec.ops.notebook_runner notebooks/analyst_recommendations.py --out /tmp/nb --param lake=./lake`
# MAGIC (add `--no-spark --param engine=deltalake` to run it without Spark).
# MAGIC
# MAGIC On Databricks the cluster needs the project's wheel (`databricks bundle deploy` builds it into
# MAGIC `dist/`; attach it as a library or `%pip install` it).

# COMMAND ----------

import matplotlib.pyplot as plt
import pandas as pd

from socialrec.io.lake_sql import LakeSQL, current_recommendations_sql
from socialrec.ops.widgets import notebook_conf, param

conf = notebook_conf(param("conf", "", "config file"), param("lake", "", "lake root (empty: the config's)"))
user_key = param("user_key", "", "user (pseudonymised key; empty: the longest history)").strip()
engine = param("engine", "auto", "query engine: auto | spark | deltalake")
sql = LakeSQL(conf, spark=spark, engine=engine)  # `spark`: Databricks' session, or the local runner's (or None)
lake = sql.lake
print(f"lake: {lake.root}")
print(f"engine: {sql.engine}")

# COMMAND ----------

# MAGIC %md ## The user and their recommendations

# COMMAND ----------

if not user_key:
    user_key = sql.first("""
        SELECT s.user_key FROM gold.user_sequences s
        WHERE s.user_key IN (SELECT user_key FROM gold.recommendations)
        ORDER BY s.n_steps DESC, s.user_key LIMIT 1""")["user_key"]
user = sql.first("SELECT * FROM gold.user_sequences WHERE user_key = :user_key LIMIT 1", user_key=user_key)
if user is None:
    raise ValueError(f"user {user_key!r} not found in gold.user_sequences")
print(f"user: {user_key} (user_idx {user['user_idx']}, {user['n_steps']} steps, "
      f"{len(user['purchased'] or [])} purchased items)")

items = sql.query("SELECT item_idx, item_id, category, popularity FROM gold.item_index")
# The user's current list: the latest run that scored them (incremental runs rescore only some users).
current = current_recommendations_sql("(SELECT * FROM gold.recommendations WHERE user_key = :user_key)")
recs = sql.query(f"""
    SELECT c.*, i.category, i.popularity
    FROM ({current}) c LEFT JOIN gold.item_index i ON c.item_idx = i.item_idx
    ORDER BY c.rank""", user_key=user_key)
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
history = history.merge(items, on="item_idx", how="left")
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

metrics = sql.query("SELECT * FROM gold.metrics")
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

# MAGIC %md ## Per user group in the latest run (cold users with few events, users with and without friends)

# COMMAND ----------

latest_run = max(groups["run_id"]) if len(groups) else None
if latest_run:
    latest_groups = groups[(groups["run_id"] == latest_run) & (groups["metric"] == "ndcg@10")].copy()
    latest_groups[["model", "group"]] = latest_groups["model"].str.split("|", n=1, expand=True)
    per_group = latest_groups.pivot_table(index="group", columns="model", values="value")
    ax = per_group.plot(kind="bar", figsize=(8, 3.5), title=f"NDCG@10 per user group, run {latest_run}")
    ax.set_ylabel("NDCG@10 (test split)")
    plt.xticks(rotation=0)
    plt.tight_layout()
    plt.show()
    users = latest_groups.drop_duplicates("group").set_index("group")["users"].sort_index()
    print(f"user groups in run {latest_run}: " + ", ".join(f"{group} {n:,} users" for group, n in users.items()))

# COMMAND ----------

# MAGIC %md ## Data-quality history (`ops.quality_results`)

# COMMAND ----------

by_run = sql.query("""
    SELECT run_id, `table`, count(*) AS expectations,
           CAST(sum(CASE WHEN success THEN 0 ELSE 1 END) AS BIGINT) AS failed, max(validated_at) AS validated_at
    FROM ops.quality_results
    GROUP BY run_id, `table`
    ORDER BY validated_at, run_id, `table`""")
display(by_run)
print(f"quality checks: {int(by_run['expectations'].sum())} over {by_run['run_id'].nunique()} run(s), "
      f"{int(by_run['failed'].sum())} failed")
failures = sql.query("""
    SELECT run_id, `table`, expectation, `column`, unexpected_sample FROM ops.quality_results
    WHERE NOT success ORDER BY validated_at, `table`, expectation LIMIT 20""")
display(failures)

# COMMAND ----------

# MAGIC %md ## The social graph around the user (friends and friends of friends)

# COMMAND ----------

import math

friends = list(user["friends"] or []) if "friends" in user else []
if not friends:
    row = sql.first("SELECT friends FROM gold.social_neighbours WHERE user_idx = :user_idx",
                    user_idx=user["user_idx"])
    friends = list(row["friends"] or []) if row else []
second = (sql.query("SELECT user_idx, friends FROM gold.social_neighbours WHERE array_contains(:friends, user_idx) "
                    "ORDER BY user_idx", friends=friends) if friends
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
