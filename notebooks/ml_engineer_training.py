# Databricks notebook source
# MAGIC %md
# MAGIC # socialrec: launch a training run and compare runs
# MAGIC
# MAGIC Trains a new model on an existing lake (features already built) with
# MAGIC `run_pipeline(stages=["train", "tune_fusion", "evaluate"])`, then compares every run recorded in `gold.metrics`. Parameters (widgets on Databricks;
# MAGIC `SOCIALREC_NB_<NAME>` env vars or defaults elsewhere): `conf`, `lake`, `set` (config overrides such as
# MAGIC `train.epochs=2,model.hidden=32`), `train` (`false` only compares the runs already there).
# MAGIC
# MAGIC On Databricks the cluster needs the project's wheel (`databricks bundle deploy` builds it into
# MAGIC `dist/`; attach it as a library or `%pip install` it).

# COMMAND ----------

import matplotlib.pyplot as plt
from pyspark.sql import functions as F

from socialrec.evaluation.metrics import format_comparison
from socialrec.io.tables import Lake
from socialrec.ops.widgets import notebook_conf, param, param_bool

conf = notebook_conf(param("conf", "", "config file"), param("lake", "", "lake root (empty: the config's)"),
                     param("set", "", "overrides key=value,key=value"))
launch = param_bool("train", True, "launch a training run")
lake = Lake(spark, conf)
missing = [t for t in ("gold.train_examples", "gold.user_sequences", "gold.item_index") if not lake.exists(t)]
if missing:
    raise RuntimeError(f"the lake at {lake.root} has no {missing}: run the pipeline up to `features` first")
print(f"lake: {lake.root}; epochs={conf['train']['epochs']} hidden={conf['model']['hidden']} "
      f"layers={conf['model']['layers']} use_text={conf['model']['use_text']} use_social={conf['model']['use_social']}")

# COMMAND ----------

# MAGIC %md ## Launch: train, tune its fusion, then evaluate against the baselines

# COMMAND ----------

from socialrec.pipeline import run_pipeline

if launch:
    report = run_pipeline(conf, stages=["train", "tune_fusion", "evaluate"])
    train_figures = report.stages["train"]
    print(f"training run {report.run_id}: {report.status}; epochs {train_figures.get('epochs')}, "
          f"best epoch {train_figures.get('best_epoch')}, {train_figures.get('seconds')}s")
    new_run = report.run_id
else:
    new_run = None
    print("train=false: comparing the runs already in gold.metrics")

# COMMAND ----------

# MAGIC %md ## Compare runs (`gold.metrics`)

# COMMAND ----------

metrics = lake.read("gold.metrics").toPandas()
groups = metrics[metrics["model"].str.contains("|", regex=False)]  # per user group: `model|cold`, ...
metrics = metrics.drop(groups.index)
wide = metrics.pivot_table(index=["run_id", "model"], columns="metric", values="value").reset_index()
display(wide)
runs = sorted(metrics["run_id"].unique())
print(f"runs in gold.metrics: {len(runs)}")
model = metrics[metrics["model"] == "model"].pivot_table(index="run_id", columns="metric", values="value")
for run_id, row in model.iterrows():
    marker = "  <- this training run" if run_id == new_run else ""
    print(f"run {run_id}: model ndcg@10={row.get('ndcg@10', float('nan')):.4f} "
          f"recall@20={row.get('recall@20', float('nan')):.4f}{marker}")

# COMMAND ----------

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, metric in zip(axes, ("ndcg@10", "recall@20")):
    table = metrics[metrics["metric"] == metric].pivot_table(index="run_id", columns="model", values="value")
    table.plot(kind="bar", ax=ax, title=f"{metric} per run")
    ax.set_xlabel("run")
    ax.tick_params(axis="x", labelrotation=15, labelsize=7)
fig.tight_layout()
plt.show()

# COMMAND ----------

# MAGIC %md ## The latest run beside its best baseline

# COMMAND ----------

latest = new_run or runs[-1]
this = metrics[(metrics["run_id"] == latest) & (metrics["metric"] == "ndcg@10")].set_index("model")["value"]
# Baselines: the configured ones and the trained variants (sasrec), not ablations nor the model's fused ranking.
baselines = this[this.index.isin([*conf["evaluate"]["baselines"], *(conf["train"].get("variants") or {})])]
if "model" in this and len(baselines):
    best = baselines.idxmax()
    print(f"run {latest}: model ndcg@10={this['model']:.4f} vs best baseline {best}={baselines[best]:.4f} "
          f"({'ahead' if this['model'] > baselines[best] else 'behind'})")
    # A run launched here carries the paired test of the model against each row (evaluate.compare).
    paired = (report.comparisons.get(best) or {}).get("ndcg@10") if launch and latest == new_run else None
    if paired:
        print(f"  model minus {best}, paired over the same users: ndcg@10 {format_comparison(paired)}")
cold = groups[(groups["run_id"] == latest) & (groups["metric"] == "ndcg@10")].set_index("model")["value"]
if len(cold):
    print("by user group (ndcg@10): " + ", ".join(f"{k}={v:.4f}" for k, v in cold.sort_index().items()))

# COMMAND ----------

# MAGIC %md ## The ablation table (`socialrec ablate`: the model with social, text or context switched off)

# COMMAND ----------

ablations = sorted(lake.directory("reports_dir").glob("ablation-*.md"))
print(ablations[-1].read_text() if ablations else
      f"no ablation under {lake.directory('reports_dir')} yet: `socialrec ablate --lake {lake.root}` writes one")
