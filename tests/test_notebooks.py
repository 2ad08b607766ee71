"""The notebooks, run locally cell by cell (socialrec.ops.notebook_runner) on a small finished run: every cell
runs, the figures are saved as PNG and the key values appear in the output. The analyst notebook runs on Spark
SQL and, with no Spark session at all, on delta-rs + DuckDB (socialrec.io.lake_sql), with the same results."""
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest_pipeline import pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.config import PROJECT_ROOT
from socialrec.io.lake_sql import LakeSQL, TableMissing, choose_engine, parameters, rewrite, view_name
from socialrec.ops.notebook_runner import HEADER, SEPARATOR, run_notebook, split_cells

NOTEBOOKS = PROJECT_ROOT / "notebooks"
PNG = b"\x89PNG\r\n\x1a\n"


def _params(conf) -> dict:
    return {"conf": "conf/test.yml", "lake": conf["lake"]["root"]}


@pytest.mark.parametrize("name", ["analyst_recommendations.py", "ml_engineer_training.py"])
def test_notebooks_are_databricks_source_format(name):
    text = (NOTEBOOKS / name).read_text()
    assert text.splitlines()[0] == HEADER and SEPARATOR in text
    cells = split_cells(text)
    assert len(cells) >= 5
    for cell in cells:
        compile(cell, name, "exec")


def test_split_cells_and_magic():
    from socialrec.ops.notebook_runner import is_magic

    cells = split_cells(f"{HEADER}\n# MAGIC %md # title\n\n{SEPARATOR}\n\nx = 1\n{SEPARATOR}\nprint(x)\n")
    assert cells[1].strip() == "x = 1" and is_magic(cells[0]) and not is_magic(cells[2])
    with pytest.raises(ValueError):
        split_cells("x = 1\n")


def test_lake_sql_rewrites_only_known_table_names():
    tables = ["gold.recommendations", "gold.item_index", "ops.quality_results"]
    query = ("SELECT r.user_key, `table`, 'gold.item_index' AS s, x::INT, gold.recommendations.rank\n"
             "-- ops.quality_results\n"
             "FROM gold.recommendations r JOIN gold.item_index i ON r.item_idx = i.item_idx /* gold.metrics */\n"
             "WHERE r.user_key = :user AND c.gold.recommendations.x = \"gold.item_index\" AND gold.metrics.v = 1")
    text, used = rewrite(query, tables)
    assert used == ["gold.recommendations", "gold.item_index"]  # gold.metrics is not in `tables`
    assert text == query.replace("FROM gold.recommendations r", "FROM gold__recommendations r").replace(
        "JOIN gold.item_index i", "JOIN gold__item_index i").replace(
        "gold.recommendations.rank", "gold__recommendations.rank")
    duck, _ = rewrite(query, tables, "duckdb")  # DuckDB: double-quoted identifiers and $name parameters
    assert '"table"' in duck and "$user" in duck and "x::INT" in duck and "'gold.item_index' AS s" in duck
    assert parameters(query) == ["user"] and view_name("ops.quality_results") == "ops__quality_results"


def test_lake_sql_engines_and_missing_table(lake_conf):
    assert choose_engine("auto", spark=object()) == "spark"
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine("presto")
    sql = LakeSQL(lake_conf, spark=None, engine="deltalake")  # an empty lake: nothing written yet
    path = str(Path(lake_conf["lake"]["root"]).resolve() / "gold" / "metrics")
    with pytest.raises(TableMissing, match=re.escape(f"table gold.metrics not found at {path}")) as missing:
        sql.query("SELECT count(*) AS n FROM gold.metrics")
    assert (missing.value.name, missing.value.location) == ("gold.metrics", path)
    with pytest.raises(KeyError, match=":run"):
        sql.query("SELECT * FROM gold.metrics WHERE run_id = :run")


def test_lake_sql_missing_table_on_spark(lake_conf, spark):
    sql = LakeSQL(lake_conf, spark=spark, engine="spark")
    path = Path(lake_conf["lake"]["root"]).resolve() / "gold" / "recommendations"
    with pytest.raises(TableMissing, match=re.escape(f"table gold.recommendations not found at {path}")):
        sql.query("SELECT * FROM gold.recommendations")


def test_deltalake_engine_applies_deletion_vectors_and_column_mapping(lake_conf, spark):
    """Delta Lake 4.x tables whose Parquet files alone are not the snapshot (the pipeline keeps deletion vectors
    off, other writers may not): delta-rs must give Spark's rows, not deleted rows or NULL renamed columns."""
    from pyspark.sql import functions as F

    from socialrec.config import deep_merge

    root = Path(lake_conf["lake"]["root"]) / "features"
    features = {"dv": "'delta.enableDeletionVectors' = 'true'",
                "cm": "'delta.columnMapping.mode' = 'name', 'delta.minReaderVersion' = '2', "
                      "'delta.minWriterVersion' = '5'"}
    for name, properties in features.items():
        path = root / name
        spark.range(0, 1000).withColumn("g", F.col("id") % 7).write.format("delta").save(str(path))
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({properties})")
        spark.sql(f"DELETE FROM delta.`{path}` WHERE g = 3")
    spark.sql(f"ALTER TABLE delta.`{root / 'cm'}` RENAME COLUMN g TO grp")
    assert list((root / "dv").glob("deletion_vector_*.bin"))  # the DELETE wrote a deletion vector
    conf = deep_merge(lake_conf, {"lake": {"tables": {"test.dv": "features/dv", "test.cm": "features/cm"}}})
    query = ("SELECT 'dv' AS t, count(*) AS n, CAST(sum(id) AS BIGINT) AS ids, CAST(sum(g) AS BIGINT) AS gs "
             "FROM test.dv UNION ALL "
             "SELECT 'cm' AS t, count(*) AS n, CAST(sum(id) AS BIGINT) AS ids, CAST(sum(grp) AS BIGINT) AS gs "
             "FROM test.cm ORDER BY t")
    on_spark = LakeSQL(conf, spark=spark, engine="spark").query(query)
    on_deltalake = LakeSQL(conf, spark=None, engine="deltalake").query(query)
    pd.testing.assert_frame_equal(on_deltalake, on_spark)
    expected_gs = sum(i % 7 for i in range(1000) if i % 7 != 3)
    assert list(on_spark["n"]) == [857, 857] and list(on_spark["gs"]) == [expected_gs, expected_gs]


@pytest.mark.slow
def test_deltalake_reads_every_table_spark_wrote(pipeline_lake, spark):
    """delta-rs reads every table of the pipeline's Delta Lake 4.x lake (as Arrow datasets for DuckDB) with the
    rows Spark sees."""
    conf, _ = pipeline_lake
    on_spark = LakeSQL(conf, spark=spark, engine="spark")
    on_deltalake = LakeSQL(conf, spark=None, engine="deltalake")
    written = [name for name in conf["lake"]["tables"] if on_spark.lake.exists(name)]
    assert {"gold.recommendations", "gold.metrics", "ops.quality_results", "silver.events"} <= set(written)
    union = " UNION ALL ".join(f"SELECT '{name}' AS name, count(*) AS n FROM {name}" for name in written)
    counts = {engine.engine: dict(engine.query(union + " ORDER BY name").itertuples(index=False))
              for engine in (on_spark, on_deltalake)}
    assert counts["deltalake"] == counts["spark"] and all(counts["spark"].values())


@pytest.fixture(scope="module")
def analyst_on_spark(pipeline_lake, spark, tmp_path_factory):
    """The analyst notebook as the runner runs it by default (Spark session given, engine auto)."""
    conf, _ = pipeline_lake
    return run_notebook(NOTEBOOKS / "analyst_recommendations.py", tmp_path_factory.mktemp("analyst_spark"),
                        spark=spark, params=_params(conf))


def _check_analyst_run(run, conf, report):
    out = run.output
    assert len(run.figures) == 3 and all(p.read_bytes()[:8] == PNG for p in run.figures)
    k = conf["infer"]["top_k"]
    assert f"recommendations: {k} (model" in out and f"run {report.run_id})" in out
    user = run.namespace["user_key"]
    assert re.search(rf"user: {re.escape(user)} \(user_idx \d+, \d+ steps", out)
    assert f"ndcg@10={report.metrics['model']['ndcg@10']:.4f}" in out  # metrics per run, from gold.metrics
    assert f"run {report.run_id}: " in out
    sizes = sorted((group, n) for group, n in report.stages["evaluate"]["group_sizes"].items() if n)
    assert f"user groups in run {report.run_id}: " + ", ".join(f"{g} {n:,} users" for g, n in sizes) in out
    assert re.search(r"quality checks: \d+ over 1 run\(s\), 0 failed", out)
    assert re.search(r"social graph: \d+ friends", out)
    recs = run.namespace["recs"]
    assert list(recs["rank"]) == list(range(1, k + 1))
    assert not set(recs["item_idx"]) & set(run.namespace["user"]["purchased"] or [])


@pytest.mark.slow
def test_analyst_notebook(pipeline_lake, analyst_on_spark):
    conf, report = pipeline_lake
    assert "engine: spark" in analyst_on_spark.output
    _check_analyst_run(analyst_on_spark, conf, report)


@pytest.mark.slow
def test_analyst_notebook_without_spark(pipeline_lake, analyst_on_spark, tmp_path):
    """engine=deltalake and no Spark session: the same user, list, metrics, quality and graph, the same PNGs."""
    conf, report = pipeline_lake
    run = run_notebook(NOTEBOOKS / "analyst_recommendations.py", tmp_path, spark=None,
                       params={**_params(conf), "engine": "deltalake"})
    assert run.namespace["spark"] is None and run.namespace["sql"].engine == "deltalake"
    _check_analyst_run(run, conf, report)
    on_spark = analyst_on_spark
    assert run.namespace["user_key"] == on_spark.namespace["user_key"]
    assert run.namespace["user"] == on_spark.namespace["user"]
    columns = ["user_key", "run_id", "rank", "item_idx", "item_id", "score", "category", "popularity"]
    pd.testing.assert_frame_equal(run.namespace["recs"][columns], on_spark.namespace["recs"][columns])
    # Every printed line but the engine's is the same (tables printed by display() included).
    assert ([line for line in run.output.splitlines() if not line.startswith("engine: ")]
            == [line for line in on_spark.output.splitlines() if not line.startswith("engine: ")])
    assert [p.name for p in run.figures] == [p.name for p in on_spark.figures]
    assert [p.read_bytes() for p in run.figures] == [p.read_bytes() for p in on_spark.figures]


@pytest.mark.slow
def test_ml_engineer_notebook_trains_and_compares(pipeline_lake, spark, tmp_path):
    conf, report = pipeline_lake
    lake = tmp_path / "lake"  # a copy: the shared lake keeps its single run for the other tests
    shutil.copytree(conf["lake"]["root"], lake)
    params = {"conf": "conf/test.yml", "lake": str(lake),
              "set": "train.epochs=1,train.valid_users=200,evaluate.baselines=[popularity]"}
    run = run_notebook(NOTEBOOKS / "ml_engineer_training.py", tmp_path / "figures", spark=spark, params=params)
    out = run.output
    new_run = run.namespace["new_run"]
    assert new_run and new_run != report.run_id
    assert f"training run {new_run}: ok; epochs 1" in out
    assert "runs in gold.metrics: 2" in out
    assert f"run {report.run_id}: model ndcg@10={report.metrics['model']['ndcg@10']:.4f}" in out
    assert "<- this training run" in out and "vs best baseline" in out
    assert "paired over the same users: ndcg@10 " in out and " p=" in out
    assert len(run.figures) == 1 and run.figures[0].read_bytes()[:8] == PNG
