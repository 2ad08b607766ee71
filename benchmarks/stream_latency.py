"""Streaming latency: an event file landed -> its users' updated recommendations committed, p50/p95, and the
events/s the stream sustains when files arrive faster than it scores.

Builds a lake from the synthetic generator (ingest -> clean -> features), publishes an untrained model of the
configured size (scoring costs the same whatever the weights) and scores everyone once, then starts the stream
(`socialrec.stream.job.start_stream`, processing-time trigger) and
1. lands --files files one at a time (--users users x a 3-event session each), waiting for each, and times each
   from the file's landing to the end of the micro-batch that committed its recommendations;
2. lands --burst files at once and reports events/s over the whole burst.

    .venv/bin/python benchmarks/stream_latency.py --lake /tmp/bench-stream [--files 10 --users 20 --burst 8]
"""
from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from socialrec.config import deep_merge, load_config
from socialrec.inference import model_store
from socialrec.io.tables import Lake
from socialrec.pipeline import make_context, run_pipeline
from socialrec.stream.job import start_stream

HEADER = "user_id,item_id,ts,event_type,session_id,device\n"


def landed_file(rng, users: list[str], items: list[str], day: int, minute: int) -> str:
    lines = [HEADER]
    for user in users:
        picked = rng.choice(items, size=3, replace=False)
        for step, item in enumerate(picked):
            kind = "purchase" if step == 2 else "view"
            lines.append(f"{user},{item},2025-07-{day:02d}T12:{minute:02d}:{10 + step:02d},{kind},{user}-{day},mobile\n")
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="/tmp/bench-stream")
    parser.add_argument("--conf", default="conf/local.yml")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--users", type=int, default=20, help="users per landed file")
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--trigger-seconds", type=float, default=1)
    args = parser.parse_args()

    shutil.rmtree(args.lake, ignore_errors=True)
    landing = Path(args.lake) / "_landing"
    conf = deep_merge(load_config(args.conf), {
        "lake": {"root": args.lake}, "infer": {"tune_fusion": {"enabled": False}},
        "stream": {"path": str(landing), "trigger_seconds": args.trigger_seconds}})
    quiet = {"progress": lambda _: None}
    started = time.perf_counter()
    run_pipeline(conf, stages=["generate", "ingest", "clean", "features"], **quiet)
    lake = Lake(make_context(conf, "bench").spark, conf)
    model_store.publish_untrained(conf, lake, "untrained")
    run_pipeline(conf, source=str(Path(args.lake) / "_source" / "synthetic"), stages=["infer"], **quiet)
    landing.mkdir(parents=True)
    print(f"lake built in {time.perf_counter() - started:.0f}s: {lake.read('silver.events').count()} events, "
          f"{lake.read('gold.user_sequences').count()} users, {lake.read('gold.item_index').count()} items")

    done = threading.Semaphore(0)
    finished: list[float] = []

    def on_batch(line: str) -> None:
        if line.startswith("[stream] batch"):
            finished.append(time.time())
            print("  " + line)
            done.release()

    users = [r["user_id"] for r in lake.read("bronze.events").select("user_id").distinct().collect()]
    items = [r["item_id"] for r in lake.read("gold.item_index").select("item_id").collect()]
    rng = np.random.default_rng(3)
    query = start_stream(make_context(conf, "stream:files"), progress=on_batch)
    try:
        latencies = []
        for number in range(args.files):
            text = landed_file(rng, list(rng.choice(users, size=args.users, replace=False)), items, 1 + number, 0)
            landed = time.time()
            (landing / f"single-{number:03d}.csv").write_text(text)
            if not done.acquire(timeout=600):
                raise RuntimeError(f"no micro-batch finished in 600 s: {query.exception()}")
            latencies.append(finished[-1] - landed)
        events = 0
        burst_start = time.time()
        for number in range(args.burst):
            text = landed_file(rng, list(rng.choice(users, size=args.users, replace=False)), items, 1 + number, 30)
            events += text.count("\n") - 1
            (landing / f"burst-{number:03d}.csv").write_text(text)
        before = len(finished)
        while lake.read("bronze.events").where("_source_file LIKE '%burst-%'").count() < events \
                or len(finished) == before:
            if not done.acquire(timeout=600):
                raise RuntimeError(f"the burst did not finish: {query.exception()}")
        burst_seconds = finished[-1] - burst_start
    finally:
        query.stop()
    p50, p95 = np.percentile(latencies, [50, 95])
    print(f"single files ({args.users} users x 3 events each): landed -> recommendations committed "
          f"p50 {p50:.1f}s, p95 {p95:.1f}s, min {min(latencies):.1f}s, max {max(latencies):.1f}s over {len(latencies)}")
    print(f"burst: {args.burst} files, {events} events in {burst_seconds:.1f}s = {events / burst_seconds:.1f} events/s "
          f"({len(finished) - before} micro-batches)")


if __name__ == "__main__":
    main()
