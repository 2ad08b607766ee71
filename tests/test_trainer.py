"""Ray Train + petastorm end to end on a tiny gold.train_examples-shaped dataset: a real local Ray, two
workers on uneven shards, a pattern the model must learn, and a best checkpoint that scores as reported."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from socialrec.config import deep_merge
from socialrec.evaluation.metrics import metrics_from_ranks, target_ranks
from socialrec.features.windows import build_inputs, pad_left
from socialrec.model.recommender import load_checkpoint
from socialrec.train.trainer import train_recommender

N_ITEMS = 40
TEXT_DIM = 16
FILE_ROWS = (700, 500)  # unequal on purpose: the two workers get shards of different sizes


def successor_history(rng: np.random.Generator, max_len: int) -> dict:
    """Item k is always followed by k + 1 (wrapping), with random context codes and friends."""
    length = int(rng.integers(4, max_len + 3))
    items = (int(rng.integers(0, N_ITEMS)) + np.arange(length)) % N_ITEMS + 1
    return {"items": items, "event_types": rng.integers(1, 9, length), "hours": rng.integers(1, 25, length),
            "gaps": rng.integers(1, 22, length), "test_item": int(items[-1]), "valid_item": int(items[-2]),
            "friend_items": rng.integers(0, N_ITEMS + 1, int(rng.integers(0, 6)))}


def write_train_examples(directory, conf, rng) -> list[str]:
    """gold.train_examples rows (history before the validation item) as one Parquet file per FILE_ROWS."""
    max_len, max_friends = conf["features"]["max_seq_len"], conf["features"]["max_friends"]
    files, user_idx = [], 1
    for part, rows in enumerate(FILE_ROWS):
        histories = [successor_history(rng, max_len) for _ in range(rows)]
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
    valid = [successor_history(rng, conf["features"]["max_seq_len"]) for _ in range(200)]
    valid_inputs = build_inputs(valid, "train", conf["features"]["max_seq_len"])
    valid_targets = np.array([h["valid_item"] for h in valid])
    text = rng.normal(size=(N_ITEMS + 1, TEXT_DIM)).astype(np.float32)
    text[0] = text[::7] = 0

    result = train_recommender(conf, train_files, valid_inputs, valid_targets, N_ITEMS, text, str(tmp_path / "out"))

    assert not ray.is_initialized()  # the local Ray it started is shut down again
    epochs = conf["train"]["epochs"]
    assert [entry["epoch"] for entry in result.history] == list(range(epochs))
    assert all(entry["samples"] == sum(FILE_ROWS) for entry in result.history)  # both shards read to the end
    ndcg = [entry["ndcg@10"] for entry in result.history]
    assert result.best_epoch == int(np.argmax(ndcg))
    assert max(ndcg) > 0.6 and max(ndcg) > ndcg[0]  # ranking ~40 items at random gives NDCG@10 ~0.1
    assert result.samples_per_second > 0 and result.seconds > 0

    model, meta = load_checkpoint(result.checkpoint_dir)
    assert meta["epoch"] == result.best_epoch and meta["n_items"] == N_ITEMS and meta["text_dim"] == TEXT_DIM
    with torch.no_grad():
        scores = model.score_all({name: torch.from_numpy(values) for name, values in valid_inputs.items()})
    ranks = target_ranks(scores.numpy(), valid_targets, excluded=valid_inputs["items"])
    assert abs(metrics_from_ranks(ranks, ks=(10,))["ndcg@10"] - max(ndcg)) < 1e-6
