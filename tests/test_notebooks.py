"""The notebooks, run locally cell by cell (socialrec.ops.notebook_runner) on a small finished run: every cell
runs, the figures are saved as PNG and the key values appear in the output."""
import re
import shutil

import pytest

from conftest_pipeline import pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.config import PROJECT_ROOT
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


@pytest.mark.slow
def test_analyst_notebook(pipeline_lake, spark, tmp_path):
    conf, report = pipeline_lake
    run = run_notebook(NOTEBOOKS / "analyst_recommendations.py", tmp_path, spark=spark, params=_params(conf))
    out = run.output
    assert len(run.figures) == 2 and all(p.read_bytes()[:8] == PNG for p in run.figures)
    k = conf["infer"]["top_k"]
    assert f"recommendations: {k} (model" in out and f"run {report.run_id})" in out
    user = run.namespace["user_key"]
    assert re.search(rf"user: {re.escape(user)} \(user_idx \d+, \d+ steps", out)
    assert f"ndcg@10={report.metrics['model']['ndcg@10']:.4f}" in out  # metrics per run, from gold.metrics
    assert f"run {report.run_id}: " in out
    assert re.search(r"quality checks: \d+ over 1 run\(s\), 0 failed", out)
    assert re.search(r"social graph: \d+ friends", out)
    recs = run.namespace["recs"]
    assert list(recs["rank"]) == list(range(1, k + 1))
    assert not set(recs["item_idx"]) & set(run.namespace["user"]["purchased"] or [])


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
    assert f"<- this training run" in out and "vs best baseline" in out
    assert len(run.figures) == 1 and run.figures[0].read_bytes()[:8] == PNG
