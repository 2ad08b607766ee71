"""Per-user fusion latency: `fusion.rank_user` (fused score, rules, re-rank, explanations) on synthetic users, the
part of the scoring UDF that runs in Python once per user (docs/benchmarks.md).

    .venv/bin/python benchmarks/rank_user_latency.py [--users 500] [--items 20000] [--friend-events 20]

Each user has 30 history items, 5 purchases, `--friend-events` friends' purchases and a model pool of
`infer.candidate_pool` items; fusion settings come from conf/base.yml. Printed: ms per user with MMR off and on
(`infer.mmr_lambda`), and the same with the category cap off, so each part's cost can be read off.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from socialrec.config import PROJECT_ROOT, load_config
from socialrec.inference import fusion as fu

DAY = 86400.0


def catalogue(n_items: int, rng: np.random.Generator) -> fu.ItemFeatures:
    return fu.ItemFeatures(
        item_id=np.array([None] + [f"i{i}" for i in range(1, n_items + 1)], dtype=object),
        category=np.array([None] + [f"c{i % 12}" for i in range(1, n_items + 1)], dtype=object),
        popularity=np.r_[0.0, rng.zipf(1.5, n_items).astype(float)],
        sentiment=rng.normal(0.0, 0.1, n_items + 1),
        first_seen=rng.uniform(0.0, 100 * DAY, n_items + 1),
        price=rng.uniform(1.0, 50.0, n_items + 1),
        title=np.array([None] + [f"Item {i}" for i in range(1, n_items + 1)], dtype=object),
        blocked=np.zeros(n_items + 1, dtype=bool),
        rating=rng.uniform(1.0, 5.0, n_items + 1),
    )


def users(count: int, n_items: int, friend_events: int, as_of: float, rng: np.random.Generator):
    for user in range(count):
        history = rng.integers(1, n_items + 1, 30)
        yield fu.UserContext(
            f"u{user}", history_items=history, history_types=np.array(["view"] * 30, dtype=object),
            purchased=history[:5], friend_ids=rng.integers(0, 50, friend_events),
            friend_items=rng.integers(1, n_items + 1, friend_events),
            friend_types=np.array(["purchase"] * friend_events, dtype=object),
            friend_ts=rng.uniform(0.0, as_of, friend_events))


def ms_per_user(settings: fu.FusionSettings, args, dim: int = 64) -> float:
    rng = np.random.default_rng(0)
    items, as_of = catalogue(args.items, rng), 100 * DAY
    priors = fu.ItemPriors.build(items, as_of, settings)
    vectors = fu.unit_vectors(rng.normal(size=(args.items + 1, dim)))
    contexts = list(users(args.users, args.items, args.friend_events, as_of, rng))
    pools = [rng.choice(np.arange(1, args.items + 1), settings.candidate_pool, replace=False) for _ in contexts]
    scores = np.sort(rng.normal(size=(len(contexts), settings.candidate_pool)), axis=1)[:, ::-1]
    started = time.perf_counter()
    for user, pool, pool_scores in zip(contexts, pools, scores):
        fu.rank_user(user, items, priors, settings, args.top_k, as_of, pool_items=pool, pool_scores=pool_scores,
                     mean=0.0, std=1.0, model_scores_of=lambda ids: vectors[ids, 0], item_vectors=vectors)
    return (time.perf_counter() - started) / len(contexts) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--friend-events", type=int, default=20)
    args = parser.parse_args()
    infer = load_config(PROJECT_ROOT / "conf" / "base.yml")["infer"]
    args.top_k = int(infer["top_k"])
    configured = fu.FusionSettings.from_conf(infer)
    print(f"rank_user, {args.users} users, {args.items} items, pool {configured.candidate_pool}, top {args.top_k}, "
          f"{args.friend_events} friend events each")
    for label, settings in (
            ("configured (MMR {0}, cap {1})".format(configured.mmr_lambda, configured.max_per_category), configured),
            ("MMR off, cap on", dataclasses.replace(configured, mmr_lambda=1.0)),
            ("MMR off, cap off", dataclasses.replace(configured, mmr_lambda=1.0, max_per_category=None))):
        print(f"  {label:32s} {ms_per_user(settings, args):6.2f} ms/user")


if __name__ == "__main__":
    main()
