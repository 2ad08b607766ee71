"""Ray Train + petastorm end to end on a tiny gold.train_examples-shaped dataset: a real local Ray, two
workers on uneven shards, a pattern the model must learn, and a best checkpoint that scores as reported."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch

from socialrec.config import deep_merge
from socialrec.evaluation.metrics import metrics_from_ranks, target_ranks
from socialrec.features.windows import build_inputs, pad_left
from socialrec.model.recommender import SocialSequenceRecommender, load_checkpoint
from socialrec.train.trainer import (FAULT_ENV, calibrate_cf_weight, epoch_line, latest_checkpoint,
                                     train_recommender)

N_ITEMS = 50
MAX_HISTORY = 12  # short next to the catalogue: excluding seen items still leaves most of it to rank
TEXT_DIM = 16
FILE_ROWS = (1500, 1100)  # unequal on purpose: the two workers get shards of different sizes


def successor_history(rng: np.random.Generator) -> dict:
    """Item k is always followed by k + 1 (wrapping), with random context codes and friends."""
    length = int(rng.integers(4, MAX_HISTORY + 1))
    items = (int(rng.integers(0, N_ITEMS)) + np.arange(length)) % N_ITEMS + 1
    return {"items": items, "event_types": rng.integers(1, 9, length), "hours": rng.integers(1, 25, length),
            "gaps": rng.integers(1, 22, length), "test_item": int(items[-1]), "valid_item": int(items[-2]),
            "friend_items": rng.integers(0, N_ITEMS + 1, int(rng.integers(0, 6)))}


def write_train_examples(directory, conf, rng) -> list[str]:
    """gold.train_examples rows (history before the validation item) as one Parquet file per FILE_ROWS."""
    max_len, max_friends = conf["features"]["max_seq_len"], conf["features"]["max_friends"]
    files, user_idx = [], 1
    for part, rows in enumerate(FILE_ROWS):
        histories = [successor_history(rng) for _ in range(rows)]
        windows = build_inputs(histories, "train", max_len)
        table = pa.table({
            "user_idx": np.arange(user_idx, user_idx + rows),
            **{name: list(windows[name]) for name in ("items", "event_types", "hours", "gaps")},
            "friend_items": [pad_left(h["friend_items"], max_friends) for h in histories],
        })
        path = directory / f"part-{part}.parquet"
        pq.write_table(table, path)
        files.append(str(path))
        user_idx += rows
    return files


@pytest.fixture(scope="module")
def training(conf, tmp_path_factory):
    """The inputs of one small training problem and its uninterrupted run, shared by the recovery tests."""
    conf = deep_merge(conf, {"train": {"lr": 0.01}})
    root = tmp_path_factory.mktemp("training")
    rng = np.random.default_rng(0)
    (root / "train_examples").mkdir()
    train_files = write_train_examples(root / "train_examples", conf, rng)
    valid = [successor_history(rng) for _ in range(200)]
    valid_inputs = build_inputs(valid, "train", conf["features"]["max_seq_len"])
    valid_targets = np.array([h["valid_item"] for h in valid])
    text = rng.normal(size=(N_ITEMS + 1, TEXT_DIM)).astype(np.float32)
    text[0] = text[::7] = 0
    cf = rng.normal(size=(N_ITEMS + 1, conf["model"]["cf_factors"]["rank"])).astype(np.float32)
    cf[0] = 0
    problem = {"conf": conf, "train_files": train_files, "valid_inputs": valid_inputs,
               "valid_targets": valid_targets, "n_items": N_ITEMS, "text_embeddings": text, "cf_factors": cf}
    lines: list[str] = []
    result = train_recommender(**problem, output_dir=str(root / "uninterrupted"), progress=lines.append)
    result.progress_lines = lines
    return problem, result, root


def test_ray_petastorm_training_learns_and_exports_the_best_epoch(training):
    problem, result, _ = training
    conf, valid_inputs, valid_targets, text, cf = (problem[key] for key in ("conf", "valid_inputs", "valid_targets",
                                                                             "text_embeddings", "cf_factors"))
    assert not ray.is_initialized()  # the local Ray it started is shut down again
    train_conf = conf["train"]
    epochs = range(train_conf["epochs"])
    steps_per_epoch = math.ceil(sum(FILE_ROWS) / train_conf["num_workers"] / train_conf["batch_size"])
    assert [entry["epoch"] for entry in result.history] == list(epochs)
    # Equal steps on both ranks despite unequal shards, every batch full (the smaller shard wraps around).
    assert [entry["step"] for entry in result.history] == [steps_per_epoch * (epoch + 1) for epoch in epochs]
    assert all(entry["samples"] == steps_per_epoch * train_conf["batch_size"] * train_conf["num_workers"]
               for entry in result.history)
    ndcg = [entry["ndcg@10"] for entry in result.history]
    assert ndcg[result.best_epoch] == max(ndcg)  # ties between epochs may resolve to either
    assert result.samples_per_second > 0 and result.seconds > 0
    # One progress line per epoch reached the driver, with that epoch's validation score.
    assert [line.split(":")[0] for line in result.progress_lines] == [f"epoch {epoch}" for epoch in epochs]
    assert all(f"ndcg@10 {entry['ndcg@10']:.4f}" in line for entry, line in zip(result.history, result.progress_lines))

    untrained = SocialSequenceRecommender(conf["model"], N_ITEMS, conf["features"]["max_seq_len"], text,
                                          cf_factors=cf).eval()
    model, meta = load_checkpoint(result.checkpoint_dir)
    assert meta["epoch"] == result.best_epoch and meta["n_items"] == N_ITEMS and meta["text_dim"] == TEXT_DIM
    # The exported model is the best epoch with its ALS weight calibrated on the same validation users: at 1x it
    # scores what that epoch reported, and it scores what the calibration says it chose.
    calibration = meta["cf_weight_calibration"]
    assert calibration["valid_ndcg@10"]["1.0"] == pytest.approx(max(ndcg), abs=1e-6)
    chosen = calibration["valid_ndcg@10"][str(calibration["multiple"])]
    assert chosen == max(calibration["valid_ndcg@10"].values())
    assert validation_ndcg(model, valid_inputs, valid_targets) == pytest.approx(chosen, abs=1e-6)
    assert model.cf_log_weight.exp().item() == pytest.approx(calibration["learned_weight"] * calibration["multiple"])
    assert max(ndcg) > 0.6 and max(ndcg) > validation_ndcg(untrained, valid_inputs, valid_targets) + 0.4


def cluster_problem(same_cluster: bool):
    """An untrained cf model over two clusters of 15 items (ALS factors e1 and e2) and 120 validation users with
    five items of one cluster, whose target lies in the same cluster or in the other one."""
    rng = np.random.default_rng(4)
    factors = np.zeros((31, 2), dtype=np.float32)
    factors[1:16, 0] = factors[16:, 1] = 1.0
    factors[1:] += rng.normal(scale=0.05, size=(30, 2))
    conf = {"hidden": 16, "layers": 1, "heads": 1, "dropout": 0.0, "use_text": False, "use_context": False,
            "use_social": False, "use_cf": True, "cf_factors": {"alpha": 10.0, "reg": 0.05}}
    torch.manual_seed(0)
    model = SocialSequenceRecommender(conf, 30, 8, None, cf_factors=factors).eval()
    histories = []
    for user in range(120):
        cluster = np.arange(1, 16) if user % 2 else np.arange(16, 31)
        other = np.arange(16, 31) if user % 2 else np.arange(1, 16)
        items = rng.permutation(cluster)[:6]
        target = items[5] if same_cluster else rng.choice(other)
        histories.append({"items": np.append(items[:5], [target, 0]), "event_types": np.ones(7, int),
                          "hours": np.ones(7, int), "gaps": np.ones(7, int), "test_item": 1})
    inputs = build_inputs(histories, "train", 8)
    return model, inputs, np.array([h["items"][5] for h in histories])


@pytest.mark.parametrize(("same_cluster", "expected"), [(True, 32.0), (False, 0.001)])
def test_cf_weight_calibration_keeps_the_multiple_that_ranks_validation_best(same_cluster, expected):
    """ALS right: the largest multiple; ALS wrong (targets in the other cluster): the smallest, where the ALS term
    no longer pushes the targets below the user's own cluster."""
    model, inputs, targets = cluster_problem(same_cluster)
    learned = model.cf_log_weight.exp().item()
    train_conf = {"cf_weight_grid": [0.001, 0.5, 1, 2, 4, 8, 16, 32], "valid_k": 10, "valid_batch_size": 50}
    calibration = calibrate_cf_weight(model, inputs, targets, train_conf)
    scores = calibration["valid_ndcg@10"]
    assert calibration["multiple"] == expected and scores[str(expected)] == max(scores.values())
    assert scores["32.0"] > scores["0.001"] if same_cluster else scores["32.0"] < scores["0.001"]
    assert calibration["learned_weight"] == pytest.approx(learned)
    assert model.cf_log_weight.exp().item() == pytest.approx(learned * expected)
    assert validation_ndcg(model, inputs, targets) == pytest.approx(scores[str(expected)], abs=1e-6)


def test_cf_weight_calibration_breaks_ties_towards_the_learned_weight():
    model, inputs, _ = cluster_problem(True)
    learned = model.cf_log_weight.exp().item()
    unreachable = np.zeros(len(inputs["items"]), dtype=np.int64)  # no user has a target: every multiple scores 0
    unreachable[0] = inputs["items"][0, -1]  # one target, already seen: excluded, so a miss for every multiple
    calibration = calibrate_cf_weight(model, inputs, unreachable, {"cf_weight_grid": [4, 0.5, 1, 2], "valid_k": 10,
                                                                   "valid_batch_size": 50})
    assert set(calibration["valid_ndcg@10"].values()) == {0.0}
    assert calibration["multiple"] == 1.0 and model.cf_log_weight.exp().item() == pytest.approx(learned)


def validation_ndcg(model, inputs, targets) -> float:
    with torch.no_grad():
        scores = model.score_all({name: torch.from_numpy(values) for name, values in inputs.items()})
    return metrics_from_ranks(target_ranks(scores.numpy(), targets, excluded=inputs["items"]), ks=(10,))["ndcg@10"]


def same_history(left: list[dict], right: list[dict]) -> bool:
    keys = ("epoch", "step", "samples", "train_loss", "ndcg@10", "recall@10", "mrr")
    return all(a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
               for a, b in zip(left, right, strict=True) for key in keys)


def test_resume_continues_an_interrupted_run_to_the_same_result(training, tmp_path, monkeypatch):
    problem, uninterrupted, _ = training
    conf = deep_merge(problem["conf"], {"train": {"max_failures": 0}})
    monkeypatch.setenv(FAULT_ENV, "1:0:2")  # rank 0 dies at the third step of the second epoch
    with pytest.raises(Exception):
        train_recommender(**{**problem, "conf": conf}, output_dir=str(tmp_path / "interrupted"))
    monkeypatch.delenv(FAULT_ENV)
    assert not ray.is_initialized()
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and json.loads((Path(checkpoint) / "meta.json").read_text())["epoch"] == 0
    # Ray keeps its checkpoint manager's state beside the epoch checkpoints, under a name they share a prefix with.
    (Path(checkpoint).parent / "checkpoint_manager_snapshot.json").write_text("{}")

    resumed = train_recommender(**{**problem, "conf": conf}, output_dir=str(tmp_path / "resumed"),
                                resume_from=checkpoint)
    assert same_history(resumed.history, uninterrupted.history)
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert validation_ndcg(load_checkpoint(resumed.checkpoint_dir)[0], problem["valid_inputs"],
                           problem["valid_targets"]) == pytest.approx(max(e["ndcg@10"] for e in uninterrupted.history),
                                                                      abs=1e-6)
    with pytest.raises(ValueError, match="nothing to resume"):
        train_recommender(**problem, output_dir=str(tmp_path / "again"),
                          resume_from=latest_checkpoint(tmp_path / "resumed"))


def test_a_worker_killed_mid_epoch_is_survived(training, tmp_path, monkeypatch):
    problem, uninterrupted, _ = training
    monkeypatch.setenv(FAULT_ENV, "1:1:3")  # rank 1's process exits at the fourth step of the second epoch
    survived = train_recommender(**problem, output_dir=str(tmp_path / "killed"))
    assert (tmp_path / "killed" / "fault-injected").is_file()  # the worker really died
    assert same_history(survived.history, uninterrupted.history)  # restarted from epoch 0's checkpoint


def test_epoch_line_says_where_training_stands():
    metrics = {"epoch": 4, "train_loss": 5.12345, "ndcg@10": 0.08761, "samples_per_second": 12345.6}
    line = epoch_line(metrics, "ndcg@10", {"best": 0.09, "best_epoch": 2, "epochs_without_gain": 2}, 3)
    assert line == ("epoch 4: loss 5.1235, ndcg@10 0.0876 (best 0.0900 at epoch 2; 2/3 without gain), "
                    "12,346 samples/s")


def test_resume_point_picks_the_variants_newest_checkpoint(tmp_path):
    import os

    from socialrec.train.stage import resume_point

    def checkpoint(run: str, variant: str, number: int, mtime: int) -> Path:
        folder = tmp_path / run / variant / "ray_results" / "fit" / f"checkpoint_{number:06d}"
        folder.mkdir(parents=True)
        (folder / "train_state.pt").write_bytes(b"")
        os.utime(folder, (mtime, mtime))
        return folder

    checkpoint("run-a", "model", 0, 100)
    newest_model = checkpoint("run-b", "model", 1, 300)
    newest_sasrec = checkpoint("run-a", "sasrec", 2, 400)
    assert resume_point(tmp_path, None, "model") is None
    assert resume_point(tmp_path, "latest", "model") == str(newest_model)  # not sasrec's, though newer
    assert resume_point(tmp_path, "latest", "sasrec") == str(newest_sasrec)
    assert resume_point(tmp_path, "run-a", "model") == str(tmp_path / "run-a/model/ray_results/fit/checkpoint_000000")
    with pytest.raises(FileNotFoundError, match="no `no_text` checkpoint"):
        resume_point(tmp_path, "latest", "no_text")
