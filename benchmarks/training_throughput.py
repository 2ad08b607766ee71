"""Training throughput: Ray Train + petastorm (the production path: DDP workers, each streaming its shard of
the gold training table) beside a bare single-process torch loop over the same rows in memory, same model,
same batch size, same total thread count. The ratio is what the distribution machinery costs (or wins).

    .venv/bin/python benchmarks/training_throughput.py [--users 20000] [--items 5000] [--epochs 2]
        [--workers 2] [--use-gpu] [--work /tmp/socialrec-train-bench]

Rows are synthetic sessions with a learnable successor pattern (written as Parquet like gold.train_examples),
so both loops also report their validation NDCG@10 as a sanity check. Samples/s count training rows only
(validation excluded). With --use-gpu both paths run on the GPU (bf16 autocast) and the line also shows peak
memory and the model FLOP utilisation against --peak-tflops.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from socialrec.config import PROJECT_ROOT, deep_merge, load_config
from socialrec.features.windows import build_inputs, pad_left
from socialrec.model.recommender import SocialSequenceRecommender
from socialrec.train.trainer import TRAIN_COLUMNS, train_recommender, validate, warmup_then_cosine


def synthetic_histories(rng: np.random.Generator, users: int, items: int, max_len: int, friends: int) -> list[dict]:
    """Each user walks k -> k + stride (per-user stride from a small set) with noise: an order to learn."""
    histories = []
    for _ in range(users):
        length = int(rng.integers(8, max_len + 3))
        stride = int(rng.choice([1, 2, 3]))
        walk = (int(rng.integers(0, items)) + stride * np.arange(length)) % items + 1
        noise = rng.random(length) < 0.1
        walk[noise] = rng.integers(1, items + 1, int(noise.sum()))
        histories.append({"items": walk, "event_types": rng.integers(1, 9, length), "hours": rng.integers(1, 25, length),
                          "gaps": rng.integers(1, 22, length), "test_item": int(walk[-1]), "valid_item": int(walk[-2]),
                          "friend_items": rng.integers(1, items + 1, friends)})
    return histories


def write_examples(histories: list[dict], conf: dict, folder: Path, files: int) -> list[str]:
    windows = build_inputs(histories, "train", conf["features"]["max_seq_len"])
    friends = np.stack([pad_left(h["friend_items"], conf["features"]["max_friends"]) for h in histories])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, rows in enumerate(np.array_split(np.arange(len(histories)), files)):
        table = pa.table({"user_idx": rows + 1, **{name: list(windows[name][rows]) for name in TRAIN_COLUMNS[:-1]},
                          "friend_items": list(friends[rows])})
        paths.append(str(folder / f"part-{part}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=1024)
    return paths


def bare_loop(conf: dict, paths: list[str], n_items: int, text: np.ndarray, cf: np.ndarray, valid,
              device: str) -> dict:
    """One process, rows in memory, the same model/optimiser/schedule/batch as a training worker."""
    train_conf = conf["train"]
    torch.set_num_threads(max(1, int(train_conf["num_workers"] * train_conf["cpus_per_worker"])))
    table = pa.concat_tables([pq.read_table(path, columns=list(TRAIN_COLUMNS)) for path in paths])
    rows = {name: np.stack(table.column(name).to_numpy(zero_copy_only=False)).astype(np.int64)
            for name in TRAIN_COLUMNS}
    torch.manual_seed(train_conf["seed"])
    model = SocialSequenceRecommender(conf["model"], n_items, conf["features"]["max_seq_len"], text,
                                      cf_factors=cf).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train_conf["lr"],
                                  weight_decay=train_conf["weight_decay"])
    batch_size = train_conf["batch_size"] * train_conf["num_workers"]  # the same global batch as DDP
    steps = math.ceil(len(rows["items"]) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine(train_conf["warmup_steps"],
                                                                                steps * train_conf["epochs"]))
    rng = np.random.default_rng(train_conf["seed"])
    samples, seconds = 0, 0.0
    for _ in range(train_conf["epochs"]):
        model.train()
        order = rng.permutation(len(rows["items"]))
        started = time.perf_counter()
        for step in range(steps):
            picked = order[step * batch_size:(step + 1) * batch_size]
            batch = {name: torch.from_numpy(values[picked]).to(device) for name, values in rows.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            samples += len(picked)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    metrics = validate(model, valid[0], valid[1], train_conf, device)
    return {"samples_per_second": samples / seconds, "ndcg@10": metrics[f"ndcg@{train_conf['valid_k']}"],
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
            "flops_per_sample": training_flops_per_sample(model, conf)}


def training_flops_per_sample(model: SocialSequenceRecommender, conf: dict) -> float:
    """~6 x parameters touched per position (forward + backward) plus the output softmax over the catalogue."""
    length = conf["features"]["max_seq_len"]
    encoder = sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)
    softmax = model.hidden * (model.n_items if model.loss == "full" else model.negatives)
    return 6.0 * length * (encoder + softmax)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="per worker")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--work", default="/tmp/socialrec-train-bench")
    args = parser.parse_args()

    cpus = max(1.0, (os.cpu_count() or 2) / args.workers)
    conf = deep_merge(load_config(PROJECT_ROOT / "conf" / "local.yml"), {
        "model": {"hidden": args.hidden},
        "train": {"epochs": args.epochs, "num_workers": args.workers, "use_gpu": args.use_gpu,
                  "batch_size": args.batch_size, "cpus_per_worker": cpus, "patience": args.epochs + 1,
                  "valid_users": 2000},
    })
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(0)
    histories = synthetic_histories(rng, args.users, args.items, conf["features"]["max_seq_len"],
                                    conf["features"]["max_friends"])
    paths = write_examples(histories, conf, work / "train_examples", files=max(args.workers, 4))
    valid_histories = histories[: conf["train"]["valid_users"]]
    valid = (build_inputs(valid_histories, "train", conf["features"]["max_seq_len"]),
             np.array([h["valid_item"] for h in valid_histories]))
    text = rng.normal(size=(args.items + 1, conf["text"]["dim"])).astype(np.float32)
    text[0] = 0
    cf = rng.normal(size=(args.items + 1, conf["model"]["cf_factors"]["rank"])).astype(np.float32)  # as ALS' shape
    cf[0] = 0
    device = "cuda" if args.use_gpu else "cpu"

    bare = bare_loop(conf, paths, args.items, text, cf, valid, device)
    ray_result = train_recommender(conf, paths, valid[0], valid[1], args.items, text, str(work / "ray"),
                                   cf_factors=cf)
    ray_best = max(epoch["ndcg@10"] for epoch in ray_result.history)
    ratio = bare["samples_per_second"] / ray_result.samples_per_second
    print(f"rows={args.users:,} items={args.items:,} epochs={args.epochs} workers={args.workers} "
          f"device={device} global_batch={args.batch_size * args.workers}")
    print(f"bare single-process loop : {bare['samples_per_second']:10.1f} samples/s  ndcg@10 {bare['ndcg@10']:.4f}")
    print(f"Ray Train + petastorm    : {ray_result.samples_per_second:10.1f} samples/s  ndcg@10 {ray_best:.4f}")
    print(f"bare / Ray ratio         : {ratio:.2f}")
    if args.use_gpu:
        achieved = bare["samples_per_second"] * bare["flops_per_sample"] / 1e12
        print(f"bare loop peak memory {bare['peak_memory_gb']:.2f} GiB, ~{achieved:.1f} TFLOP/s = "
              f"{achieved / args.peak_tflops:.1%} model FLOP utilisation of {args.peak_tflops} TFLOP/s")


if __name__ == "__main__":
    main()
