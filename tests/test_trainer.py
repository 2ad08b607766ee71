"""Ray Train + petastorm end to end on a tiny gold.train_examples-shaped dataset: a real local Ray, two
workers on uneven shards, a pattern the model must learn, and a best checkpoint that scores as reported."""
from __future__ import annotations

import math

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
from socialrec.train.trainer import train_recommender

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


def test_ray_petastorm_training_learns_and_exports_the_best_epoch(conf, tmp_path):
    conf = deep_merge(conf, {"train": {"lr": 0.01}})
    rng = np.random.default_rng(0)
    (tmp_path / "train_examples").mkdir()
    train_files = write_train_examples(tmp_path / "train_examples", conf, rng)
    valid = [successor_history(rng) for _ in range(200)]
    valid_inputs = build_inputs(valid, "train", conf["features"]["max_seq_len"])
    valid_targets = np.array([h["valid_item"] for h in valid])
    text = rng.normal(size=(N_ITEMS + 1, TEXT_DIM)).astype(np.float32)
    text[0] = text[::7] = 0

    result = train_recommender(conf, train_files, valid_inputs, valid_targets, N_ITEMS, text, str(tmp_path / "out"))

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
    assert result.best_epoch == int(np.argmax(ndcg))
    assert result.samples_per_second > 0 and result.seconds > 0

    untrained = SocialSequenceRecommender(conf["model"], N_ITEMS, conf["features"]["max_seq_len"], text).eval()
    model, meta = load_checkpoint(result.checkpoint_dir)
    assert meta["epoch"] == result.best_epoch and meta["n_items"] == N_ITEMS and meta["text_dim"] == TEXT_DIM
    assert validation_ndcg(model, valid_inputs, valid_targets) == pytest.approx(max(ndcg), abs=1e-6)
    assert max(ndcg) > 0.6 and max(ndcg) > validation_ndcg(untrained, valid_inputs, valid_targets) + 0.4


def validation_ndcg(model, inputs, targets) -> float:
    with torch.no_grad():
        scores = model.score_all({name: torch.from_numpy(values) for name, values in inputs.items()})
    return metrics_from_ranks(target_ranks(scores.numpy(), targets, excluded=inputs["items"]), ks=(10,))["ndcg@10"]
