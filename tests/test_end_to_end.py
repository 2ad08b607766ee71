"""The whole pipeline on a small synthetic source, as `make demo` runs it, checked from the outside:
the run report's contract, the Delta outputs (read by Spark and by the `deltalake` package in another
process), the business rule on purchases, and the model learning something."""
import json
import subprocess
import sys

import pytest
import torch

from conftest_pipeline import lake_folder, pipeline_lake, progress_lines  # noqa: F401  (the shared session fixture)
from socialrec.pipeline import STAGES

METRIC_KEYS = {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "coverage@10"}
BASELINES = {"popularity", "itemknn", "als", "sasrec"}  # sasrec: the model with text, context and social off
RANKED = {"model", "fused", *BASELINES}


@pytest.fixture(scope="module")
def finished_run(pipeline_lake):
    lake_conf, report = pipeline_lake
    return lake_conf, report, progress_lines()


@pytest.mark.slow
def test_every_stage_runs_and_reports(finished_run):
    conf, report, lines = finished_run
    assert report.status == "ok"
    assert list(report.stages) == list(STAGES)
    assert all(stage["status"] == "ok" and stage["seconds"] > 0 for stage in report.stages.values())
    assert sum("ok in" in line for line in lines) == len(STAGES)  # one progress line per finished stage
    clean = report.stages["clean"]
    assert clean["rows_quarantined"] > 0 and clean["rows_duplicates"] > 0  # the generator plants dirt
    assert clean["rows_in"] == clean["rows_out"] + clean["rows_quarantined"] + clean["rows_duplicates"]
    assert report.gates and all(gate["success"] for gate in report.gates.values())
    assert set(report.metrics) == RANKED
    assert all(set(values) >= METRIC_KEYS for values in report.metrics.values())

    saved = json.loads((lake_folder(conf, "reports_dir") / "latest.json").read_text())
    assert saved["run_id"] == report.run_id and saved["status"] == "ok"
    for key in ("source", "stages", "gates", "tables", "metrics"):
        assert key in saved
    assert saved["tables"]["silver.events"]["rows"] == clean["tables"]["events"]["rows_out"]


@pytest.mark.slow
def test_recommendations_are_top_k_and_never_already_bought(spark, finished_run):
    conf, report, _ = finished_run
    recs = spark.read.format("delta").load(report.tables["gold.recommendations"]["path"]).toPandas()
    users = spark.read.format("delta").load(report.tables["gold.user_sequences"]["path"]).toPandas()
    k = conf["infer"]["top_k"]
    assert recs.groupby("user_key").size().eq(k).all()
    assert set(recs["user_key"]) == set(users["user_key"])  # every user scored
    assert (recs["run_id"] == report.run_id).all() and recs["model_version"].notna().all()
    bought = {row.user_key: set(row.purchased) for row in users.itertuples()}
    assert not any(item in bought[user] for user, item in zip(recs["user_key"], recs["item_idx"]))


@pytest.mark.slow
def test_model_learns_beyond_chance(finished_run):
    conf, report, _ = finished_run
    n_items = conf["generator"]["items"]
    chance_recall = 10 / n_items
    assert report.metrics["model"]["recall@10"] > 3 * chance_recall


@pytest.mark.slow
def test_the_cf_model_is_calibrated_then_its_als_term_refitted_on_the_validation_steps(finished_run):
    from socialrec.model.recommender import load_checkpoint

    conf, report, _ = finished_run
    calibration = report.stages["train"]["variants"]["model"]["cf_weight"]
    assert calibration["multiple"] in conf["train"]["cf_weight_grid"]
    model, meta = load_checkpoint(report.stages["train"]["checkpoint"])
    assert meta["als_term_refit"] and meta["cf_weight_calibration"] == calibration
    assert model.cf_log_weight.exp().item() == pytest.approx(calibration["weight"])
    # The transformer keeps the factors it was trained on; the ALS term's saw the validation steps too.
    assert model.als_term_factors.shape == model.cf_embeddings.shape
    assert not torch.equal(model.als_term_factors, model.cf_embeddings)
    # The ALS settings were chosen on validation among model.cf_factors.search, and the model was built with them.
    trials = report.stages["train"]["cf_search"]
    assert [trial["settings"] for trial in trials] == conf["model"]["cf_factors"]["search"]
    chosen = max(trials, key=lambda trial: trial["ndcg@10"])["settings"]
    assert model.cf_embeddings.shape[1] == chosen["rank"] == meta["model_conf"]["cf_factors"]["rank"]
    assert meta["model_conf"]["cf_factors"]["reg"] == chosen["reg"]


@pytest.mark.slow
def test_baselines_and_user_groups_are_evaluated_on_the_same_users(spark, finished_run):
    conf, report, _ = finished_run
    assert set(report.metrics) == RANKED  # {model_name: {metric: value}}: never a group in here
    n_items = conf["generator"]["items"]
    assert report.metrics["itemknn"]["recall@10"] > 3 * 10 / n_items  # co-occurrence finds the planted structure
    for values in report.metrics.values():
        assert 0 < values["coverage@10"] <= values["coverage@20"] <= 1
    stage = report.stages["evaluate"]
    users, sizes, by_group = stage["users_evaluated"], stage["group_sizes"], stage["metrics_by_group"]
    assert sizes["cold"] + sizes["warm"] == users and sizes["friends"] + sizes["no_friends"] == users
    assert set(by_group) == {group for group, size in sizes.items() if size > 0}
    assert all(set(models) == RANKED and all(set(v) >= METRIC_KEYS for v in models.values())
               for models in by_group.values())

    # The model against every other row, paired over the same users: the mean difference is the table's.
    assert set(report.comparisons) == RANKED - {"model"}
    for other, by_metric in report.comparisons.items():
        for metric, comparison in by_metric.items():
            expected = report.metrics["model"][metric] - report.metrics[other][metric]
            assert comparison["difference"] == pytest.approx(expected, abs=1e-9) and comparison["users"] == users
            assert comparison["low"] <= comparison["difference"] <= comparison["high"] and 0 <= comparison["p_value"] <= 1

    metrics = spark.read.format("delta").load(report.tables["gold.metrics"]["path"]).toPandas()
    metrics = metrics[metrics["run_id"] == report.run_id]
    overall = metrics[~metrics["model"].str.contains("|", regex=False)]
    assert set(overall["model"]) == RANKED and (overall["users"] == users).all()
    for group, models in by_group.items():
        for name, values in models.items():
            rows = metrics[metrics["model"] == f"{name}|{group}"].set_index("metric")
            assert (rows["users"] == sizes[group]).all()
            assert rows["value"].to_dict() == pytest.approx(values)


@pytest.mark.slow
def test_tables_are_readable_from_another_process_without_spark(finished_run):
    _, report, _ = finished_run
    path = report.tables["gold.recommendations"]["path"]
    code = ("import sys, deltalake, pyarrow; t = deltalake.DeltaTable(sys.argv[1]); "
            "q = deltalake.QueryBuilder().register('recs', t).execute('SELECT count(*) AS n FROM recs'); "
            "print(t.version(), pyarrow.table(q.read_all()).to_pydict()['n'][0])")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    version, rows = out.stdout.split()
    assert int(version) == report.tables["gold.recommendations"]["version"]
    assert int(rows) == report.tables["gold.recommendations"]["rows"]


@pytest.mark.slow
def test_no_raw_user_id_reaches_gold(spark, finished_run):
    """Pseudonymisation happens before silver: scan every string column of every gold table for raw ids."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, StringType

    _, report, _ = finished_run
    raw_id = r"^u[0-9]{6,}$"  # the generator's raw user ids
    for name, info in report.tables.items():
        if not name.startswith("gold."):
            continue
        table = spark.read.format("delta").load(info["path"])
        for field in table.schema.fields:
            if isinstance(field.dataType, StringType):
                leaks = table.where(F.col(field.name).rlike(raw_id)).count()
            elif isinstance(field.dataType, ArrayType) and isinstance(field.dataType.elementType, StringType):
                leaks = table.where(F.exists(field.name, lambda v: v.rlike(raw_id))).count()
            else:
                continue
            assert leaks == 0, f"{name}.{field.name} holds raw user ids"
