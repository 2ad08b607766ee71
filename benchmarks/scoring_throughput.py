"""Scoring throughput: the infer stage's Spark job beside the same scoring in one bare Python process, the
arithmetic limit of its item products, and the approximate (IVF) top-K against exact.

    .venv/bin/python benchmarks/scoring_throughput.py --users 2000 --items 20000 [--threads 1] [--work DIR]
    .venv/bin/python benchmarks/scoring_throughput.py --trained-lake LAKE [--conf conf/realdata.yml]

The second form measures only the approximate index, on a lake whose train stage has run: the trained model's
item vectors and the user vectors of (up to --trained-users of) its users, against exact top-K.

The lake comes from the synthetic generator (generate -> ingest -> clean -> features, in a subprocess on the
configured local[N]); the model is an untrained one of the configured size (throughput does not depend on the
weights; use_text off, so no text stage is needed). Spark then scores on local[1] with infer.torch_threads =
--threads, and the bare process runs the very same UDF function (scoring.scoring_inputs) over the same users,
collected to pandas first, with the same torch thread count: their ratio is what Spark adds. The arithmetic
limit is users x items x dim multiply-adds over a torch matmul of the scoring's shape on the same threads.
Untrained item vectors have no cluster structure (the worst case for an IVF index), so the index is also
measured on clustered vectors of a larger catalogue. Absolute times on a shared 2-core machine are noisy.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from socialrec.config import PROJECT_ROOT, deep_merge, load_config
from socialrec.inference import ann, model_store, scoring
from socialrec.inference import fusion as fu


def build_lake(conf_path: str, lake: Path, users: int, items: int) -> None:
    sets = {"generator.users": users, "generator.items": items, "generator.files": 4}
    command = [sys.executable, "-m", "socialrec.cli", "run", "--conf", conf_path, "--lake", str(lake),
               "--stages", "generate,ingest,clean,features", *[f"--set={k}={v}" for k, v in sets.items()]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def clear_worker_caches() -> None:
    """The bare process pays the model load and item matrix once, as each Spark worker does."""
    model_store._LOADED.clear()
    scoring._REPRESENTATIONS.clear()
    scoring._INDEXES.clear()


def timed(function, *args, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def gemm_rate(rows: int, dim: int, cols: int) -> float:
    """Multiply-adds per second of a float32 torch matmul [rows, dim] @ [dim, cols] (best of 10: the peak)."""
    a, b = torch.randn(rows, dim), torch.randn(dim, cols)
    torch.matmul(a, b)
    seconds, _ = timed(torch.matmul, a, b, repeat=10)
    return rows * dim * cols / seconds


def retrieval(vectors: np.ndarray, representations: np.ndarray, pool: int, batch: int, chunk: int,
              index: ann.IVFIndex, probes: list[int]) -> dict:
    """Top-`pool` retrieval alone (no rules, no fusion): seconds of the job's exact path, of a plain torch
    matmul + topk, and of the index at each probe count with its recall@10 and @pool against exact."""
    n_items, items = len(representations) - 1, torch.from_numpy(representations)
    everything = lambda row, ids: np.ones(len(ids), dtype=bool)  # noqa: E731

    def job_exact():
        out = []
        for lo in range(0, len(vectors), batch):
            queries = torch.from_numpy(vectors[lo:lo + batch])
            out.append(fu.chunked_top_k(lambda a, b: (queries @ items[a:b].T).numpy(), n_items, pool, chunk).items)
        return np.vstack(out)

    def torch_exact():
        return np.vstack([torch.topk(torch.from_numpy(vectors[lo:lo + batch]) @ items[1:].T, pool).indices.numpy() + 1
                          for lo in range(0, len(vectors), batch)])

    def approximate(p):
        return np.vstack([scoring.approximate_top_k(index, vectors[lo:lo + batch], pool, p, everything, 0).items
                          for lo in range(0, len(vectors), batch)])

    job_seconds, truth = timed(job_exact)
    figures = {"job_exact": job_seconds, "torch_exact": timed(torch_exact)[0], "probes": {}}
    for p in probes:
        seconds, found = timed(approximate, p)
        figures["probes"][p] = {"seconds": seconds, "recall@10": ann.recall(found[:, :10], truth[:, :10]),
                                "recall@pool": ann.recall(found, truth)}
    return figures


def clustered(n: int, dim: int, clusters: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    items = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    users = centres[rng.integers(0, clusters, queries)] + 0.5 * rng.normal(size=(queries, dim))
    return np.vstack([np.zeros((1, dim)), items]).astype(np.float32), users.astype(np.float32)


def print_index_figures(name: str, figures: dict, built: float, lists: int, pool: int) -> None:
    print(f"IVF on {name}: lists {lists}, build {built:.1f}s; exact top-{pool}: the job's path "
          f"{figures['job_exact']:.2f}s, torch matmul + topk {figures['torch_exact']:.2f}s")
    for p, at in figures["probes"].items():
        print(f"  probes {p}: recall@10 {at['recall@10']:.3f}, recall@{pool} {at['recall@pool']:.3f}, "
              f"{at['seconds']:.2f}s: speed-up {figures['job_exact'] / at['seconds']:.1f}x vs the job's exact path,"
              f" {figures['torch_exact'] / at['seconds']:.1f}x vs torch matmul + topk")


def trained_index(conf_path: str, lake: str, users: int, threads: int, lists: int | None) -> None:
    """The index on what it is for: a trained model's item vectors (which cluster) and its users' vectors."""
    from socialrec.pipeline import make_context

    conf = deep_merge(load_config(conf_path), {"lake": {"root": lake}, "infer": {"tune_fusion": {"enabled": False}}})
    ctx = make_context(conf, lake)
    inputs = scoring.scoring_inputs(ctx)
    records = inputs.histories.limit(users).toPandas().to_dict("records")
    ctx.spark.stop()
    torch.set_num_threads(threads)
    checkpoint = inputs.model_info["checkpoint"]
    model, _ = model_store.load_model(checkpoint)
    representations = scoring._item_representations(checkpoint, model)
    n_items, batch, pool = len(representations) - 1, conf["infer"]["batch_size"], conf["infer"]["candidate_pool"]
    vectors = np.vstack([scoring._user_vectors(model, records[lo:lo + batch], conf["features"]["max_seq_len"])
                         for lo in range(0, len(records), batch)])
    built, index = timed(lambda: ann.build(representations[1:], np.arange(1, n_items + 1), lists))
    figures = retrieval(vectors, representations, pool, batch, conf["infer"]["item_chunk"], index,
                        [p for p in (4, 8, 16, 32, 64) if p < index.lists] + [index.lists])
    print_index_figures(f"the trained model's {n_items:,} item vectors ({inputs.model_info['model_version']}), "
                        f"{len(records):,} users", figures, built, index.lists, pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the Spark task and the bare process")
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--lists", type=int, default=None, help="IVF lists (default round(sqrt(items)))")
    parser.add_argument("--ann-items", type=int, default=200_000, help="catalogue size of the clustered ANN test")
    parser.add_argument("--work", default="/tmp/socialrec-bench-scoring")
    parser.add_argument("--conf", default=str(PROJECT_ROOT / "conf" / "local.yml"))
    parser.add_argument("--reuse-lake", action="store_true", help="score the lake an earlier run left in --work")
    parser.add_argument("--trained-lake", help="only measure the index on this lake's trained model")
    parser.add_argument("--trained-users", type=int, default=2000)
    args = parser.parse_args()
    if args.trained_lake:
        trained_index(args.conf, args.trained_lake, args.trained_users, args.threads, args.lists)
        return

    work = Path(args.work)
    if not (args.reuse_lake and (work / "lake" / "gold").is_dir()):
        shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        build_lake(args.conf, work / "lake", args.users, args.items)
        print(f"lake built in {time.perf_counter() - started:.0f}s (generate, ingest, clean, features)", flush=True)

    from socialrec.pipeline import make_context, run_pipeline

    conf = deep_merge(load_config(args.conf), {
        "lake": {"root": str(work / "lake")}, "spark": {"master": "local[1]"},
        "infer": {"torch_threads": args.threads, "approximate": {"enabled": False, "lists": args.lists,
                                                                  "probes": args.probes},
                  "tune_fusion": {"enabled": False}}})  # an untrained model: the configured re-ranking
    ctx = make_context(conf, str(work / "source"))
    n_items = model_store.publish_untrained(conf, ctx.lake, "bench")
    dim, batch, pool = conf["model"]["hidden"], conf["infer"]["batch_size"], conf["infer"]["candidate_pool"]

    report = run_pipeline(conf, stages=["infer"], progress=lambda line: None)
    stage = report.stages["infer"]
    users = stage["users_scored"]
    inputs = scoring.scoring_inputs(ctx)
    udf_seconds, _ = timed(lambda: inputs.histories.mapInPandas(inputs.udf, scoring.RANKED_SCHEMA)
                           .write.format("noop").mode("overwrite").save())
    approximate_udf = scoring.scoring_inputs(dataclasses.replace(ctx, conf=deep_merge(
        ctx.conf, {"infer": {"approximate": {"enabled": True}}}))).udf
    frame = inputs.histories.toPandas()
    ctx.spark.stop()  # the bare process below competes with no Spark worker

    torch.set_num_threads(args.threads)
    clear_worker_caches()
    bare_seconds, out = timed(lambda: list(inputs.udf(iter([frame]))))
    assert sum(part["user_key"].nunique() for part in out) == users
    clear_worker_caches()
    bare_approximate_seconds, _ = timed(lambda: list(approximate_udf(iter([frame]))))

    checkpoint = inputs.model_info["checkpoint"]
    model, _ = model_store.load_model(checkpoint)
    representations = scoring._item_representations(checkpoint, model)
    records = frame.to_dict("records")
    vector_seconds, vectors = timed(lambda: np.vstack([
        scoring._user_vectors(model, records[lo:lo + batch], conf["features"]["max_seq_len"])
        for lo in range(0, len(records), batch)]))
    build_seconds, index = timed(lambda: ann.build(representations[1:], np.arange(1, n_items + 1), args.lists))
    own = retrieval(vectors, representations, pool, batch, conf["infer"]["item_chunk"], index, [args.probes])
    rate = gemm_rate(batch, dim, n_items)
    limit = rate / (n_items * dim)

    big_items, big_users = clustered(args.ann_items, dim, 1000, 2048)
    big_build, big_index = timed(lambda: ann.build(big_items[1:], np.arange(1, args.ann_items + 1)))
    big = retrieval(big_users, big_items, pool, batch, conf["infer"]["item_chunk"], big_index, [4, 8, 16, 32])

    print(f"\nusers={users:,} items={n_items:,} dim={dim}: Spark local[1] with infer.torch_threads={args.threads}, "
          f"bare process with torch threads {args.threads}")
    print(f"spark infer stage (item features, UDF, gates, Delta commits): {stage['seconds']:.1f}s = "
          f"{users / stage['seconds']:,.0f} users/s")
    print(f"spark UDF with its input joins (mapInPandas -> noop sink, warm worker): {udf_seconds:.1f}s = "
          f"{users / udf_seconds:,.0f} users/s")
    print(f"bare process, the same UDF function on the same users: {bare_seconds:.1f}s = "
          f"{users / bare_seconds:,.0f} users/s | Spark/bare time: stage {stage['seconds'] / bare_seconds:.2f}x, "
          f"UDF {udf_seconds / bare_seconds:.2f}x")
    print(f"bare process, the same UDF with the IVF index (lists {index.lists}, probes {args.probes}): "
          f"{bare_approximate_seconds:.1f}s = {users / bare_approximate_seconds:,.0f} users/s")
    print(f"parts, bare: user vectors {users / vector_seconds:,.0f} users/s | top-{pool} over {n_items:,} items: "
          f"the job's exact path {users / own['job_exact']:,.0f} users/s, torch matmul + topk "
          f"{users / own['torch_exact']:,.0f} users/s, IVF {users / own['probes'][args.probes]['seconds']:,.0f} users/s")
    print(f"arithmetic limit: GEMM {rate / 1e9:.1f} G multiply-adds/s ([{batch}x{dim}] @ [{dim}x{n_items}], "
          f"{args.threads} thread(s)) / ({n_items:,} items x {dim}) = {limit:,.0f} users/s; the Spark stage reaches "
          f"{users / stage['seconds'] / limit:.2%} of it, the bare UDF {users / bare_seconds / limit:.2%}")
    for name, figures, built, lists in (
            (f"the model's {n_items:,} item vectors (untrained: no clusters), {users:,} users", own, build_seconds,
             index.lists),
            (f"{args.ann_items:,} clustered vectors x {dim}, 2,048 users", big, big_build, big_index.lists)):
        print_index_figures(name, figures, built, lists, pool)


if __name__ == "__main__":
    main()
