"""Fusion settings side by side: the fused ranking's NDCG@10, Recall@20, coverage@10 and diversity@10 beside the
model's, for a grid of MMR trade-offs × category caps (none, soft budgets, hard), same trained model, same users,
with each setting's paired NDCG@10 difference to the model and the setting the tune_fusion stage would choose.

    .venv/bin/python benchmarks/fusion_sweep.py --conf conf/realdata-orderless.yml --lake /tmp/rd/ciao
        [--users 2000] [--split valid|test] [--mmr 1.0 0.9 0.8] [--soft 0.25 0.5 1 2]

--split valid (the default) makes each user's second-to-last item the target, the last one unseen, as the
tune_fusion stage does; --split test measures the test step, to check a choice out of sample. Ranking and fusion
are the evaluate stage's own, so the figures are what `metrics.fused` would report for these users.
"""
from __future__ import annotations

import argparse
import time

from socialrec.config import load_config
from socialrec.evaluation import fusion_tuning as ft
from socialrec.inference import model_store
from socialrec.pipeline import make_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--users", type=int, default=2000, help="0: every user")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--mmr", type=float, nargs="+", default=[1.0, 0.9, 0.8])
    parser.add_argument("--soft", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    args = parser.parse_args()

    conf = load_config(args.conf, {"lake": {"root": args.lake}})
    ctx = make_context(conf, args.lake)
    tuning = conf["infer"]["tune_fusion"]
    checkpoint = model_store.latest(ctx.lake.directory("checkpoints_dir"))["checkpoint"]
    started = time.perf_counter()
    variants, figures, users = ft.ranked_grid(ctx, checkpoint, args.mmr, [*args.soft, None], args.users or None,
                                              tuning["confidence"], at_validation=args.split == "valid")
    print(f"{users:,} users ({args.split} step), checkpoint {checkpoint}, {len(variants)} settings ranked in "
          f"{time.perf_counter() - started:.0f} s")
    model = figures["model"]
    for name, values in figures.items():
        line = f"{name}: " + ", ".join(f"{metric} {values[metric]:.4f}" for metric in ft.SHOWN if metric in values)
        if "change" in values:
            change = values["change"]
            line += (f" (NDCG@10 {100 * change['difference'] / model['ndcg@10']:+.1f}% vs model, "
                     f"{tuning['confidence']:.0%} interval [{100 * change['low'] / model['ndcg@10']:+.1f}%, "
                     f"{100 * change['high'] / model['ndcg@10']:+.1f}%])" if model["ndcg@10"] else "")
        print(line)
    chosen, within = ft.choose(figures, float(tuning["tolerance"]))
    print(f"tune_fusion would choose: {chosen} ({'within' if within else 'outside'} the {tuning['tolerance']:.0%} "
          "tolerance)")


if __name__ == "__main__":
    main()
