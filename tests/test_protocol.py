"""Published protocols: the metric definitions against RecBole's, the splits (ids kept, nothing of test in
training), the literature's baselines, and the split mode run through the real pipeline on a small split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import DATASETS_DIR
from socialrec.evaluation import graph_baselines as gb
from socialrec.evaluation.metrics import topk_metrics
from socialrec.evaluation.splits import load_published_split, ratio_counts, ratio_split

# A hand-made case: four users' top-5 lists and test sets (a user with three test items, two found; one with
# one test item at position 3; one with none found; one with seven test items, all five positions hits).
TOP = np.array([[5, 3, 9, 1, 7], [2, 4, 6, 8, 10], [11, 12, 13, 14, 15], [1, 2, 3, 4, 5]])
TESTS = [[3, 7, 20], [6], [99, 98], [1, 2, 3, 4, 5, 6, 7]]
# What RecBole 1.2.1's metric_info functions (recbole/evaluator/metrics.py: Recall, NDCG, Precision, Hit, MRR)
# return on this case, averaged over users; computed by running that file's functions on TOP and TESTS.
RECBOLE = {
    3: {"recall": 0.44047619047619047, "ndcg": 0.4490204777414663, "precision": 0.41666666666666663,
        "hit": 0.75, "mrr": 0.4583333333333333},
    5: {"recall": 0.5952380952380952, "ndcg": 0.49440592587580445, "precision": 0.4, "hit": 0.75,
        "mrr": 0.4583333333333333},
}


def test_topk_metrics_match_recboles_definitions_on_a_hand_made_case():
    values = topk_metrics(TOP, TESTS, ks=(3, 5))
    for k, expected in RECBOLE.items():
        for name, value in expected.items():
            assert values[f"{name}@{k}"] == pytest.approx(value, abs=1e-12), f"{name}@{k}"
    # By hand, user 0 at K=5: hits at positions 2 and 5 of 3 test items -> recall 2/3, NDCG
    # (1/log2(3) + 1/log2(6)) / (1 + 1/log2(3) + 1/log2(4)), MRR 1/2.
    one = topk_metrics(TOP[:1], TESTS[:1], ks=(5,))
    assert one["recall@5"] == pytest.approx(2 / 3)
    assert one["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(6)) / (1 + 1 / np.log2(3) + 0.5))
    assert one["mrr@5"] == pytest.approx(0.5)


def test_users_without_test_items_do_not_count_and_unknown_metrics_are_refused():
    values = topk_metrics(TOP, [*TESTS[:3], []], ks=(5,))
    assert values["hit@5"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="unknown metric"):
        topk_metrics(TOP, TESTS, ks=(5,), names=("auc",))
    with pytest.raises(ValueError, match="needs top-10 lists"):
        topk_metrics(TOP, TESTS, ks=(10,))


@pytest.mark.parametrize("total, expected", [(10, [8, 1, 1]), (25, [21, 2, 2]), (5, [3, 1, 1]), (2, [1, 0, 1]),
                                             (1, [1, 0, 0])])
def test_ratio_counts_follow_recboles_rule(total, expected):
    assert ratio_counts(total, [0.8, 0.1, 0.1]) == expected


def _pairs(n_users=40, per_user=11):
    return pd.DataFrame([(f"u{u}", f"i{(u * 7 + j) % 97}") for u in range(n_users) for j in range(per_user)],
                        columns=["user_id", "item_id"])


def test_ratio_split_is_disjoint_per_user_seeded_and_keeps_ids():
    pairs = _pairs()
    split = ratio_split(pairs, seed=3)
    again = ratio_split(pairs, seed=3)
    other = ratio_split(pairs, seed=4)
    assert split.sizes() == {"train": 40 * 9, "valid": 40, "test": 40}  # 11 a user: 9 / 1 / 1
    assert split.test.equals(again.test) and not split.test.equals(other.test)
    keys = {name: set(map(tuple, split.part(name)[["user_id", "item_id"]].to_numpy())) for name in
            ("train", "valid", "test")}
    assert not keys["train"] & keys["test"] and not keys["valid"] & keys["test"] and not keys["train"] & keys["valid"]
    assert set.union(*keys.values()) == set(map(tuple, pairs.to_numpy()))
    with pytest.raises(ValueError, match="three non-negative shares"):
        ratio_split(pairs, ratios=(0.8, 0.3, 0.1))


def test_published_split_formats_keep_their_ids_and_carve_validation_from_train(tmp_path):
    sociallgn = tmp_path / "sociallgn"
    sociallgn.mkdir()
    pd.DataFrame({"user": [0] * 10 + [1] * 10, "item": list(range(20))}).to_csv(sociallgn / "train_set.txt",
                                                                                  index=False)
    pd.DataFrame({"user": [0, 1], "item": [30, 31]}).to_csv(sociallgn / "test_set.txt", index=False)
    pd.DataFrame({"user": [0], "friend": [1]}).to_csv(sociallgn / "trust.txt", index=False)
    split = load_published_split(sociallgn, valid_ratio=0.1, seed=1)
    assert split.sizes() == {"train": 18, "valid": 2, "test": 2}
    assert set(split.test["item_id"]) == {"30", "31"}
    assert set(split.train["item_id"]) | set(split.valid["item_id"]) == {str(i) for i in range(20)}
    assert split.social.to_dict("records") == [{"src_user_id": "0", "dst_user_id": "1"}]

    selfrec = tmp_path / "selfrec"
    selfrec.mkdir()
    (selfrec / "train.txt").write_text("1:4 5 6\n2:7\n")
    (selfrec / "test.txt").write_text("1:8\n2:9\n")
    split = load_published_split(selfrec)
    assert split.train.to_dict("records") == [{"user_id": "1", "item_id": "4"}, {"user_id": "1", "item_id": "5"},
                                              {"user_id": "2", "item_id": "7"}]
    assert split.valid.to_dict("records") == [{"user_id": "1", "item_id": "6"}]  # the last train item
    assert split.test["item_id"].tolist() == ["8", "9"]
    with pytest.raises(Exception, match="holds no published split"):
        load_published_split(tmp_path)


def grouped_split(users=90, items=60, groups=3, per_user=12, seed=0):
    """Users and items in `groups` communities, each user's items from their own: structure a collaborative
    model learns and popularity cannot."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}") for u in range(users)
            for i in rng.choice([i for i in range(items) if i % groups == u % groups], per_user, replace=False)]
    return ratio_split(pd.DataFrame(rows, columns=["user_id", "item_id"]), ratios=(0.6, 0.2, 0.2), seed=seed)


def _test_metrics(data, user_vectors=None, item_vectors=None, popularity=None):
    test = data.item_sets("test")
    users = np.array([u for u in range(data.n_users) if len(test[u])])
    masked = [np.concatenate([a, b]) for a, b in zip(data.item_sets("train"), data.item_sets("valid"))]
    score = (lambda b: np.tile(popularity, (len(b), 1))) if popularity is not None else \
        (lambda b: user_vectors[b] @ item_vectors.T)
    return topk_metrics(gb.rank_all(score, users, masked, 10), [test[u] for u in users], ks=(10,))


@pytest.mark.parametrize("layers", [0, 2])
def test_bpr_and_lightgcn_learn_planted_communities_and_stop_on_validation(layers):
    data, _, _ = gb.index_split(grouped_split())
    settings = {"embedding_size": 16, "learning_rate": 0.01, "batch_size": 256, "reg_weight": 1e-5,
                "valid_metric": "ndcg@10", "patience": 5, "max_epochs": 60}
    trained = gb.train_factor_model(data, settings, layers, seed=1, log=lambda line: None)
    learned = _test_metrics(data, trained["users"], trained["items"])["ndcg@10"]
    popular = _test_metrics(data, popularity=gb.popularity_scores(data))["ndcg@10"]
    assert learned > popular + 0.1, (learned, popular)
    assert 1 <= trained["best_epoch"] <= trained["epochs"] <= 60


@pytest.mark.skipif(not (DATASETS_DIR / "benchmark-splits").is_dir(),
                    reason=f"published splits not found under {DATASETS_DIR} (set SOCIALREC_DATASETS)")
def test_sociallgn_lastfm_split_reads_every_published_pair():
    folder = DATASETS_DIR / "benchmark-splits" / "sociallgn_lastfm"
    split = load_published_split(folder)
    train_rows = sum(1 for _ in open(folder / "train_set.txt")) - 1
    test_rows = sum(1 for _ in open(folder / "test_set.txt")) - 1
    assert len(split.train) + len(split.valid) == train_rows and len(split.test) == test_rows
    assert len(split.social) == sum(1 for _ in open(folder / "trust.txt")) - 1


def test_split_mode_runs_the_pipeline_on_train_and_validation_only_and_scores_the_published_way(
        lake_conf, tmp_path):
    from socialrec.config import deep_merge
    from socialrec.etl.pseudonymise import pseudonymisation_key
    from socialrec.evaluation.protocol import build_split, catalogue, model_top_lists, pseudonym, run_protocol
    from socialrec.io.spark_session import get_spark
    from socialrec.io.tables import Lake

    folder = tmp_path / "split"
    folder.mkdir()
    planted = grouped_split()
    pd.concat([planted.train, planted.valid]).rename(columns={"user_id": "user", "item_id": "item"}).to_csv(
        folder / "train_set.txt", index=False)
    planted.test.rename(columns={"user_id": "user", "item_id": "item"}).to_csv(folder / "test_set.txt", index=False)
    conf = deep_merge(lake_conf, {
        "train": {"epochs": 2},
        "protocol": {"baseline_seeds": [1], "baselines": {"models": ["lightgcn"], "max_epochs": 3, "patience": 2}},
    })
    split, items = build_split(str(folder), None, conf["protocol"], tmp_path / "staging")
    assert items["item_id"].tolist() == catalogue(split, None, None)["item_id"].tolist()
    report = run_protocol(conf, split, items, progress=lambda line: None)

    lake = Lake(get_spark(conf), conf)
    # Ids kept: the lake's catalogue is the split's (test-only items included, so every test item is rankable).
    lake_items = set(lake.read("gold.item_index").toPandas()["item_id"])
    assert lake_items == set(split.train["item_id"]) | set(split.valid["item_id"]) | set(split.test["item_id"])
    # Nothing of test in training: the events the pipeline cleaned are exactly the train and validation pairs.
    assert lake.read("silver.events").count() == len(split.train) + len(split.valid)
    key = pseudonymisation_key(conf["clean"]["pseudonymisation"])
    index = lake.read("gold.item_index").select("item_idx", "item_id").toPandas()
    idx = dict(zip(index["item_id"], index["item_idx"]))
    histories = {row["user_key"]: set(row["items"]) for row in
                 lake.read("gold.user_sequences").select("user_key", "items").toPandas().to_dict("records")}
    for user, item in split.test[["user_id", "item_id"]].itertuples(index=False):
        assert idx[item] not in histories.get(pseudonym(user, key), set())

    # Metrics correct: the model's row recomputed from its top lists with a plain per-user loop.
    users = sorted(set(split.test["user_id"]))
    lists, lake_ids, known = model_top_lists(lake, conf, users, 10)
    assert known.all()
    truth = split.test.groupby("user_id")["item_id"].apply(set)
    recall, ndcg = [], []
    for user, top in zip(users, lists["model"]):
        names = [lake_ids[i] for i in top]
        relevant = truth[user]
        hits = [name in relevant for name in names]
        recall.append(sum(hits) / len(relevant))
        ideal = sum(1 / np.log2(p + 2) for p in range(min(len(relevant), 10)))
        ndcg.append(sum(1 / np.log2(p + 2) for p, hit in enumerate(hits) if hit) / ideal)
        assert not set(names) & set(split.train.loc[split.train["user_id"] == user, "item_id"])
    assert report["models"]["model"]["metrics"]["recall@10"] == pytest.approx(np.mean(recall))
    assert report["models"]["model"]["metrics"]["ndcg@10"] == pytest.approx(np.mean(ndcg))
    assert set(report["models"]) == {"model", "sasrec", "popularity", "lightgcn"}  # sasrec: train.variants
    assert report["gates_passed"] >= 1 and report["users_evaluated"] == len(users)
    assert report["comparisons"]["lightgcn"]["ndcg@10"]["users"] == len(users)
    # The planted communities are learnt: the model is well above popularity.
    assert report["models"]["model"]["metrics"]["ndcg@10"] > report["models"]["popularity"]["metrics"]["ndcg@10"]
