"""Approximate top-K (IVF index) against exact top-K, and its place in the scoring UDF (no Spark)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.inference import ann
from socialrec.inference import fusion as fu
from socialrec.inference import scoring


def clustered(n, dim, clusters, queries, seed=0, spread=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    items = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))
    users = centres[rng.integers(0, clusters, queries)] + spread * rng.normal(size=(queries, dim))
    return items.astype(np.float32), users.astype(np.float32)


def exact(items, users, k):
    scores = users @ items.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], scores


def test_recall_on_clustered_vectors_and_exact_when_every_cell_is_probed():
    items, users, k = *clustered(20_000, 32, 50, 200), 10
    index = ann.build(items, lists=100, seed=1)
    truth, scores = exact(items, users, k)
    few = ann.search(index, users, k, probes=2)[0]
    some = ann.search(index, users, k, probes=8)[0]
    every_ids, every_scores = ann.search(index, users, k, probes=index.lists)
    print(f"recall@{k}: probes 2 {ann.recall(few, truth):.3f}, probes 8 {ann.recall(some, truth):.3f}")
    assert ann.recall(some, truth) >= 0.95
    assert ann.recall(few, truth) <= ann.recall(some, truth)
    np.testing.assert_array_equal(every_ids, truth)
    np.testing.assert_allclose(every_scores, np.take_along_axis(scores, truth, axis=1), rtol=1e-5)


def test_random_vectors_lose_recall_gracefully_and_index_is_deterministic():
    rng = np.random.default_rng(3)
    items, users = rng.normal(size=(5_000, 16)).astype(np.float32), rng.normal(size=(100, 16)).astype(np.float32)
    truth, _ = exact(items, users, 10)
    index = ann.build(items, lists=70)
    recalls = [ann.recall(ann.search(index, users, 10, probes)[0], truth) for probes in (1, 8, 70)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    again = ann.build(items, lists=70)
    np.testing.assert_array_equal(index.ids.numpy(), again.ids.numpy())


def test_fewer_items_than_k_pad_with_minus_one():
    index = ann.build(np.eye(3, dtype=np.float32), ids=[7, 8, 9], lists=2)
    ids, scores = ann.search(index, np.ones((1, 3), np.float32), 5, probes=2)
    assert sorted(ids[0][:3]) == [7, 8, 9] and list(ids[0][3:]) == [-1, -1]
    assert np.isneginf(scores[0][3:]).all()


def test_score_moments_are_exact_over_the_whole_catalogue():
    items, users = clustered(3_000, 8, 5, 20)
    mean, std = ann.score_moments(ann.build(items, lists=10), users)
    scores = users.astype(np.float64) @ items.T.astype(np.float64)
    np.testing.assert_allclose(mean, scores.mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, scores.std(axis=1), rtol=1e-5)


def test_approximate_pool_applies_the_rules_and_matches_exact_when_fully_probed():
    items_vectors, users = clustered(400, 8, 6, 5, seed=2)
    n_items = len(items_vectors)
    representations = np.vstack([np.zeros((1, 8), np.float32), items_vectors])
    purchased = [np.array([1, 2, 3]), np.array([], np.int64), np.arange(1, 300), np.array([400]), np.array([5])]
    blocked = np.zeros(n_items + 1, dtype=bool)
    blocked[[10, 11]] = True
    features = fu.ItemFeatures(item_id=np.array([None] + [f"i{i}" for i in range(1, n_items + 1)], dtype=object),
                               category=np.array([None] + ["c"] * n_items, dtype=object),
                               popularity=np.zeros(n_items + 1), sentiment=np.zeros(n_items + 1),
                               first_seen=np.zeros(n_items + 1), price=np.full(n_items + 1, np.nan), blocked=blocked)
    settings = fu.FusionSettings()
    pool = 20
    reference = fu.chunked_top_k(lambda lo, hi: users @ representations[lo:hi].T, n_items, pool, 64,
                                 fu.excluded_chunk_fn(purchased, features, settings))
    index = ann.build(items_vectors, np.arange(1, n_items + 1), lists=20)

    def allowed(row, ids):
        return fu.allowed_items(ids, purchased[row], features, settings)

    over = 2 + max(len(p) for p in purchased)
    full = scoring.approximate_top_k(index, users, pool, index.lists, allowed, over)
    np.testing.assert_array_equal(full.items, reference.items)
    np.testing.assert_allclose(full.scores, reference.scores, rtol=1e-5)
    np.testing.assert_allclose(full.mean, reference.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.std, reference.std, rtol=1e-5)
    probed = scoring.approximate_top_k(index, users, pool, 3, allowed, over)
    for row, bought in enumerate(purchased):
        found = probed.items[row][np.isfinite(probed.scores[row])]
        assert len(found) == pool and not set(found) & (set(bought.tolist()) | {10, 11})


def test_approximate_settings_from_config(conf):
    assert scoring.approximate_settings(conf["infer"]) is None  # exact is the default
    on = {"approximate": {"enabled": True, "lists": 64, "probes": 4}}
    assert scoring.approximate_settings(on) == {"lists": 64, "probes": 4}


def test_scoring_udf_with_the_index_equals_exact_when_every_cell_is_probed(tmp_path):
    """The wiring: recommend_partitions (the mapInPandas body) run in-process with a small model."""
    torch = pytest.importorskip("torch")
    from socialrec.model.recommender import SocialSequenceRecommender, save_checkpoint

    n_items, max_len = 60, 8
    torch.manual_seed(0)
    model = SocialSequenceRecommender({"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0, "use_text": False,
                                       "use_context": True, "use_social": False}, n_items, max_len, None)
    save_checkpoint(tmp_path / "ckpt", model, {"best_epoch": 0})
    rng = np.random.default_rng(0)
    rows = []
    for user in range(12):
        steps = int(rng.integers(1, 10))
        items = rng.integers(1, n_items + 1, steps)
        rows.append({"user_key": f"u{user}", "items": items, "event_types": rng.integers(1, 5, steps),
                     "hours": rng.integers(1, 25, steps), "gaps": rng.integers(1, 22, steps), "test_item": 0,
                     "purchased": np.unique(items[:2]), "friend_items": np.zeros(0, np.int64)})
    frame = pd.DataFrame(rows)
    features = fu.ItemFeatures(
        item_id=np.array([None] + [f"i{i}" for i in range(1, n_items + 1)], dtype=object),
        category=np.array([None] + list("abcdef" * 10), dtype=object), popularity=rng.integers(0, 50, n_items + 1) * 1.0,
        sentiment=np.zeros(n_items + 1), first_seen=np.zeros(n_items + 1), price=np.full(n_items + 1, np.nan))
    settings = fu.FusionSettings(candidate_pool=30)
    names = ["view", "click", "cart", "purchase"]

    def run(approximate, device="cpu"):
        udf = scoring.recommend_partitions(str(tmp_path / "ckpt"), max_len, 5, 5, 1, features, settings, 1e9, names,
                                           approximate, device)
        return pd.concat(list(udf(iter([frame]))), ignore_index=True)

    exact_recs = run(None)
    on_auto = run(None, "auto")  # the GPU where there is one (a second model copy on it), else the CPU again
    columns = ["user_key", "rank", "item_idx"]
    pd.testing.assert_frame_equal(exact_recs[columns], on_auto[columns])
    approximate_recs = run({"lists": 6, "probes": 6})
    assert exact_recs.groupby("user_key").size().eq(5).all()
    pd.testing.assert_frame_equal(exact_recs[["user_key", "rank", "item_idx"]],
                                  approximate_recs[["user_key", "rank", "item_idx"]])
    np.testing.assert_allclose(exact_recs["score"], approximate_recs["score"], rtol=1e-4, atol=1e-5)


def test_scoring_device_comes_from_config_and_a_missing_gpu_is_an_error():
    torch = pytest.importorskip("torch")
    from socialrec.inference import model_store

    assert model_store.executor_device("cpu") == torch.device("cpu")
    assert model_store.executor_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="infer.device must be cpu, cuda or auto, not 'tpu'"):
        model_store.executor_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="infer.device is 'cuda' but this executor has no usable CUDA"):
            model_store.executor_device("cuda")
