"""`socialrec ablate`: the Markdown table from hand-made metrics, and one real ablation run (train + evaluate
with a component switched off) on a copy of the shared small lake."""
import json
import shutil

import pytest
from pyspark.sql import functions as F

from conftest_pipeline import pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.cli import main
from socialrec.config import deep_merge
from socialrec.evaluation.ablation import ablation_conf, ablation_markdown, data_label, stages_to_run

ABLATIONS = {"no_social": {"use_social": False}, "no_text": {"use_text": False}}


def values(ndcg: float) -> dict:
    return {"ndcg@10": ndcg, "recall@20": 2 * ndcg, "mrr": ndcg / 2, "coverage@10": 0.5}


def test_markdown_lists_the_full_model_first_then_each_ablation_with_its_change():
    metrics = {"model": values(0.2), "no_text": values(0.15), "popularity": values(0.05), "no_social": values(0.25)}
    lines = ablation_markdown(metrics, ABLATIONS, "demo").splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model |")]
    assert [row.split("|")[1].strip() for row in rows] == ["**model** (full)", "no_social", "no_text", "popularity"]
    assert "| social |" in rows[1] and "+0.0500 (+25.0%)" in rows[1]   # social off scored higher: shown, not hidden
    assert "| text |" in rows[2] and "-0.0500 (-25.0%)" in rows[2]
    assert "| baseline |" in rows[3]
    assert "0.2000 | 0.4000 | 0.1000 | 0.5000" in rows[0]


def test_markdown_gives_the_paired_p_value_of_each_change_when_the_evaluation_has_one():
    metrics = {"model": values(0.2), "no_text": values(0.15)}
    comparisons = {"no_text": {"ndcg@10": {"difference": 0.05, "low": 0.03, "high": 0.07, "p_value": 0.00012}}}
    rows = ablation_markdown(metrics, ABLATIONS, "demo", comparisons).splitlines()
    assert any("| text |" in row and "-0.0500 (-25.0%), p=0.00012 |" in row for row in rows)


def test_an_ablation_of_an_input_the_lake_lacks_is_shown_as_the_model_itself():
    metrics = {"model": values(0.2), "no_social": values(0.2), "no_text": values(0.15)}
    train = {"absent_inputs": {"use_social": "no user has friends' items"},
             "variants": {"model": {}, "no_social": {"same_as": "model"}, "no_text": {}}}
    rows = ablation_markdown(metrics, ABLATIONS, "beauty", train_figures=train).splitlines()
    inert = next(row for row in rows if row.startswith("| no_social |"))
    assert "social (inert: no user has friends' items, so the same model as `model`, not trained again)" in inert
    assert "inert" not in next(row for row in rows if row.startswith("| no_text |"))


def test_an_inert_row_names_only_the_input_its_ablation_switches_off():
    metrics = {"model": values(0.2), "no_social": values(0.2), "no_text": values(0.2)}
    train = {"absent_inputs": {"use_text": "no item has text", "use_social": "no user has friends' items"},
             "variants": {"model": {}, "no_social": {"same_as": "model"}, "no_text": {"same_as": "model"}}}
    rows = ablation_markdown(metrics, ABLATIONS, "filmtrust", train_figures=train).splitlines()
    assert "(inert: no user has friends' items, so" in next(row for row in rows if row.startswith("| no_social |"))
    assert "(inert: no item has text, so" in next(row for row in rows if row.startswith("| no_text |"))


def test_ablations_become_training_variants_beside_the_configured_ones(conf):
    merged = ablation_conf(conf)
    assert set(merged["train"]["variants"]) == {"sasrec", "no_social", "no_text", "no_context"}
    assert merged["train"]["variants"]["no_text"] == {"use_text": False}
    assert stages_to_run(merged, source=None)[0] == "generate"  # an empty lake: the pipeline up to evaluate
    assert "infer" not in stages_to_run(merged, source=None)


def test_the_table_names_what_it_was_computed_on(conf):
    lake = {**conf, "lake": {**conf["lake"], "root": "/data/lake"}}
    assert data_label("/data/ciao", ["ingest", "train"], lake) == "/data/ciao"
    assert data_label(None, ["generate", "ingest"], lake) == "synthetic"
    assert data_label(None, ["train", "evaluate"], lake) == "the lake /data/lake"  # gold built by an earlier run


@pytest.mark.slow
def test_ablate_command_trains_each_variant_once_and_flags_the_inert_one(pipeline_lake, spark, tmp_path, capsys):
    """The shared lake has friends' items (nothing absent); its copy has them cleared, as a source without a
    social graph would: `no_social` is then the model itself, evaluated without being trained again, while
    `no_context` is trained."""
    conf, report = pipeline_lake
    assert report.stages["train"]["absent_inputs"] == {}
    lake = tmp_path / "lake"
    shutil.copytree(conf["lake"]["root"], lake)  # the shared lake stays as the other tests expect it
    sequences = str(lake / conf["lake"]["tables"]["gold.user_sequences"])
    (spark.read.format("delta").load(sequences).withColumn("friend_items", F.array().cast("array<int>"))
     .write.format("delta").mode("overwrite").save(sequences))
    code = main(["ablate", "--conf", "conf/test.yml", "--lake", str(lake), "--out", str(tmp_path / "out"),
                 "--set", "train.epochs=1", "--set", "evaluate.baselines=[popularity]",
                 "--set", "evaluate.ablations={no_social: {use_social: false}, no_context: {use_context: false}}"])
    out = capsys.readouterr().out
    assert code == 0, out
    markdown_path = next((tmp_path / "out").glob("ablation-*.md"))
    markdown = markdown_path.read_text()
    assert next((tmp_path / "out").glob("ablation-*.png")).stat().st_size > 5000
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == ["**model** (full)", "no_social", "no_context", "sasrec", "fused", "popularity"]
    assert "inert: no user has friends' items, so the same model as `model`, not trained again" in rows[1]
    assert "inert" not in rows[2]
    assert markdown.startswith(f"Ablation on `the lake {lake}`")
    assert markdown in out

    run_id = markdown_path.stem.removeprefix("ablation-")
    run = json.loads((lake / conf["lake"]["reports_dir"] / f"{run_id}.json").read_text())
    train = run["stages"]["train"]
    assert train["absent_inputs"] == {"use_social": "no user has friends' items"}
    assert train["variants"]["no_social"]["same_as"] == "model"
    assert not train["variants"]["model"]["use_social"] and "same_as" not in train["variants"]["no_context"]
    assert run["metrics"]["no_social"] == run["metrics"]["model"]
    trained = {path.name for path in (lake / conf["lake"]["checkpoints_dir"] / run_id).iterdir()}
    assert "no_social" not in trained and {"model", "no_context", "sasrec"} <= trained
