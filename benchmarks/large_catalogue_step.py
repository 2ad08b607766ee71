"""Training step time on a large catalogue with the sampled softmax: the item rows the batch reads (its windows,
friends' items and the negatives; what `training_loss` projects) beside the whole catalogue's rows (what it
projected before, and what the full softmax still needs), same model, same batch, same thread count.

    .venv/bin/python benchmarks/large_catalogue_step.py [--items 296277] [--text-dim 384] [--batch-size 128]
        [--negatives 1024] [--steps 5] [--threads 2] [--no-item-id]

Defaults are Epinions' shape (296,277 items, MiniLM's 384-d text, 32 ALS factors). Both paths give the same loss
and gradients (tests/test_model.py); the ratio is what projecting only the touched rows saves per step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from socialrec.model.recommender import ItemTable, SocialSequenceRecommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=296_277)
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--cf-rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--friend-items", type=int, default=50)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-item-id", action="store_true", help="items are their frozen features alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    text = rng.normal(size=(args.items + 1, args.text_dim)).astype(np.float32)
    cf = rng.normal(size=(args.items + 1, args.cf_rank)).astype(np.float32)
    text[0] = cf[0] = 0
    conf = {"hidden": args.hidden, "layers": 2, "heads": 2, "dropout": 0.1, "use_text": True, "use_context": True,
            "use_social": True, "use_cf": True, "use_item_id": not args.no_item_id,
            "cf_factors": {"alpha": 10.0, "reg": 0.05}, "loss": "sampled", "negatives": args.negatives,
            "sampling_alpha": 0.75, "target_window": 0, "exclude_seen": True}
    model = SocialSequenceRecommender(conf, args.items, args.max_len, text, cf_factors=cf,
                                      item_counts=rng.integers(0, 50, args.items + 1).astype(np.float64))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    shape = (args.batch_size, args.max_len)
    batch = {"items": rng.integers(1, args.items + 1, shape), "event_types": rng.integers(1, 9, shape),
             "hours": rng.integers(1, 25, shape), "gaps": rng.integers(1, 22, shape),
             "friend_items": rng.integers(0, args.items + 1, (args.batch_size, args.friend_items))}
    batch = {name: torch.from_numpy(values) for name, values in batch.items()}

    def seconds_per_step() -> float:
        def step():
            loss = model.training_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        step()  # warm-up
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - started) / args.steps

    touched = seconds_per_step()
    model.batch_items = lambda batch, *extra: ItemTable(model.input_representations())
    whole = seconds_per_step()
    print(f"{args.items:,} items, text {args.text_dim}-d, batch {args.batch_size} x {args.max_len}, "
          f"{args.negatives} negatives, item ids {'off' if args.no_item_id else 'on'}, {args.threads} threads")
    print(f"touched rows: {touched:.3f} s/step ({args.batch_size / touched:,.0f} samples/s); whole catalogue: "
          f"{whole:.3f} s/step ({args.batch_size / whole:,.0f} samples/s); speed-up x{whole / touched:.1f}")


if __name__ == "__main__":
    main()
