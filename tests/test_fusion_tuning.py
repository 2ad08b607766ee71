"""The tune_fusion stage: the grid it ranks, the rule that picks a setting, the record infer and evaluate follow,
and the clear error when that record is missing."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest_pipeline import lake_folder, pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.evaluation import fusion_tuning as ft
from socialrec.inference import fusion as fu
from socialrec.inference import model_store
from socialrec.inference.scoring import tuned_settings


def _figures(model_ndcg: float, variants: dict) -> dict:
    """{name: (ndcg@10, low end of its paired change, diversity@10 or None, coverage@10)} as grid_metrics gives."""
    figures = {"model": {"ndcg@10": model_ndcg}}
    for name, (ndcg, low, diversity, coverage) in variants.items():
        figures[name] = {"ndcg@10": ndcg, "coverage@10": coverage, "change": {"low": low}}
        if diversity is not None:
            figures[name]["diversity@10"] = diversity
    return figures


def test_the_most_diverse_setting_within_the_tolerance_is_chosen():
    figures = _figures(0.100, {
        "weights only": (0.101, +0.0005, 0.30, 0.10),
        "mild": (0.100, -0.0015, 0.40, 0.09),     # low end −1.5% of 0.100: inside 2%
        "strong": (0.099, -0.0030, 0.50, 0.12),   # low end −3%: outside, though its point estimate is −1%
    })
    assert ft.choose(figures, tolerance=0.02) == ("mild", True)
    assert ft.choose(figures, tolerance=0.05) == ("strong", True)


def test_without_categories_coverage_decides_and_without_any_safe_setting_accuracy_does():
    no_categories = _figures(0.100, {"a": (0.100, -0.001, None, 0.10), "b": (0.100, -0.001, None, 0.20)})
    assert ft.choose(no_categories, tolerance=0.02) == ("b", True)
    all_costly = _figures(0.100, {"a": (0.090, -0.015, 0.5, 0.1), "b": (0.095, -0.010, 0.4, 0.1)})
    assert ft.choose(all_costly, tolerance=0.02) == ("b", False)  # the least costly, flagged as outside


def test_the_grid_crosses_mmr_with_no_cap_and_each_cap_budget():
    base = fu.FusionSettings(max_per_category=5, cap_max_score_loss=1.0, mmr_lambda=0.8)
    grid = ft.candidate_settings(base, [1.0, 0.8], [0.5, None])
    assert list(grid) == ["mmr 1, no cap", "mmr 1, soft cap 0.5", "mmr 1, hard cap",
                          "mmr 0.8, no cap", "mmr 0.8, soft cap 0.5", "mmr 0.8, hard cap"]
    assert grid["mmr 1, no cap"].max_per_category is None and not grid["mmr 1, no cap"].reranks
    assert grid["mmr 0.8, hard cap"].cap_max_score_loss is None and grid["mmr 0.8, hard cap"].max_per_category == 5
    assert grid["mmr 1, soft cap 0.5"].weights == base.weights  # one fused score, ranked several ways
    uncapped = ft.candidate_settings(fu.FusionSettings(max_per_category=None), [1.0, 0.9], [0.5])
    assert list(uncapped) == ["mmr 1, no cap", "mmr 0.9, no cap"]  # no configured cap: only MMR varies
    assert list(ft.candidate_settings(base, [1.0, 0.9], [0.5], has_categories=False)) == list(uncapped)
    with pytest.raises(ValueError, match="mmr_lambda"):
        ft.candidate_settings(base, [1.5], [])
    with pytest.raises(ValueError, match="cap_max_score_loss"):
        ft.candidate_settings(base, [1.0], [-1])


def test_the_validation_step_drops_the_test_step_and_targets_the_one_before():
    frame = pd.DataFrame({"user_key": ["a", "b"], "items": [[4, 5, 6], [7, 8]], "event_types": [[1, 1, 2], [1, 1]],
                          "hours": [[1, 2, 3], [4, 5]], "gaps": [[0, 1, 1], [0, 1]], "ts": [[10, 20, 30], [5, 6]],
                          "test_item": [6, 8]})
    valid = ft.validation_step(frame)
    assert valid["user_key"].tolist() == ["a"]  # b has one step left: nothing to rank it on
    row = valid.iloc[0]
    assert list(row["items"]) == [4, 5] and row["test_item"] == 5 and list(row["ts"]) == [10, 20]


def test_scoring_a_model_without_its_tuned_settings_fails_clearly(tmp_path):
    model_store.publish(tmp_path, "r1", str(tmp_path / "ckpt"), {"best_epoch": 3})
    with pytest.raises(RuntimeError, match="model r1-e3 has no tuned fusion settings: run the tune_fusion stage"):
        tuned_settings(fu.FusionSettings(), tmp_path)
    model_store.publish_fusion_choice(tmp_path, {"model_version": "r1-e3", "settings": {
        "mmr_lambda": 0.9, "max_per_category": 5, "cap_max_score_loss": 0.5}})
    chosen = tuned_settings(fu.FusionSettings(weights={**fu.FusionSettings().weights, "pop": 0.7}), tmp_path)
    assert (chosen.mmr_lambda, chosen.max_per_category, chosen.cap_max_score_loss) == (0.9, 5, 0.5)
    assert chosen.weights["pop"] == 0.7  # only the re-ranking is tuned; the configured weights stay


@pytest.mark.slow
def test_infer_and_evaluate_rerank_as_tune_fusion_chose(pipeline_lake):
    conf, report = pipeline_lake
    stage = report.stages["tune_fusion"]
    checkpoints = model_store.latest(lake_folder(conf, "checkpoints_dir"))
    record = model_store.fusion_choice(lake_folder(conf, "checkpoints_dir"), checkpoints["model_version"])
    assert record is not None and json.loads(json.dumps(record)) == record
    assert record["run_id"] == report.run_id and record["chosen"] == stage["chosen"]
    tuning = conf["infer"]["tune_fusion"]
    assert set(record["figures"]) == {"model", *ft.candidate_settings(  # the generator's items have categories
        fu.FusionSettings.from_conf(conf["infer"]), tuning["mmr_lambda"], tuning["cap_max_score_loss"])}
    assert ft.choose(record["figures"], tuning["tolerance"]) == (record["chosen"], record["within_tolerance"])
    assert record["users"] == stage["users"] > 0
    assert report.stages["infer"]["fusion_reranking"] == record["settings"]
    assert report.stages["evaluate"]["fusion_reranking"] == record["settings"]
    # the stage ranked the validation step: its model NDCG@10 is not the test step's
    assert not np.isclose(record["figures"]["model"]["ndcg@10"], report.metrics["model"]["ndcg@10"])

