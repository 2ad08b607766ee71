"""`socialrec ablate`: the full model beside itself with one component switched off (social, text, context)
and beside the baselines, trained and evaluated in one run on the same split, written as a Markdown table
and a bar plot. The ablations are ordinary train.variants, so they go through exactly the harness the
model does."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from socialrec.config import deep_merge

TABLE_METRICS = ("ndcg@10", "recall@20", "mrr", "coverage@10")
OTHER_ROLES = {"model": "—", "fused": "none: model + social, sentiment, freshness, popularity (infer.fusion)"}


def ablation_conf(conf: dict) -> dict:
    """The configuration with evaluate.ablations added to train.variants."""
    variants = {**(conf["train"].get("variants") or {}), **conf["evaluate"]["ablations"]}
    return deep_merge(conf, {"train": {"variants": variants}})


def stages_to_run(conf: dict, source: str | None) -> list[str]:
    """Train and evaluate on the gold tables already in the lake; the whole pipeline (no scoring) otherwise."""
    from socialrec.pipeline import STAGES

    gold = Path(conf["lake"]["root"]) / conf["lake"]["tables"]["gold.train_examples"]
    if (gold / "_delta_log").is_dir():
        return ["train", "tune_fusion", "evaluate"]
    return [stage for stage in STAGES if stage != "infer" and (source is None or stage != "generate")]


def ablation_markdown(metrics: dict[str, dict], ablations: dict[str, dict], source: str,
                      comparisons: dict[str, dict] | None = None, train_figures: dict | None = None) -> str:
    """Rows: the full model, each ablation (with its change against the full model and, from the evaluate
    stage's `comparisons`, the paired p-value of that change), then the rest. An ablation of an input the lake
    does not have (train stage: `absent_inputs`) is the model itself, and its row says so rather than
    presenting a zero change as a finding."""
    full = metrics["model"]
    trained = (train_figures or {}).get("variants", {})
    absent = (train_figures or {}).get("absent_inputs", {})
    order = ["model", *[name for name in ablations if name in metrics],
             *[name for name in metrics if name != "model" and name not in ablations]]
    header = "| model | switched off | " + " | ".join(TABLE_METRICS) + " | Δ ndcg@10 vs full (paired p) |"
    lines = [f"Ablation on `{source}` (test split, full ranking over the catalogue, seen items excluded).", "",
             header, "|" + "---|" * (len(TABLE_METRICS) + 3)]
    for name in order:
        values = metrics[name]
        off = ", ".join(flag.removeprefix("use_") for flag, on in ablations.get(name, {}).items() if on is False)
        delta = (f"{values['ndcg@10'] - full['ndcg@10']:+.4f} ({(values['ndcg@10'] / full['ndcg@10'] - 1):+.1%})"
                 if name != "model" and full["ndcg@10"] else "")
        paired = ((comparisons or {}).get(name) or {}).get("ndcg@10")
        if delta and paired:
            delta += f", p={paired['p_value']:.2g}"
        cells = " | ".join(f"{values.get(metric, float('nan')):.4f}" for metric in TABLE_METRICS)
        label = "**model** (full)" if name == "model" else name
        role = off or OTHER_ROLES.get(name, "baseline")
        if trained.get(name, {}).get("same_as"):
            why = "; ".join(absent[flag] for flag in ablations.get(name, {}) if flag in absent) or "same settings"
            role += f" (inert: {why}, so the same model as `{trained[name]['same_as']}`, not trained again)"
        lines.append(f"| {label} | {role} | {cells} | {delta} |")
    return "\n".join(lines) + "\n"


def plot_ablation(metrics: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("ndcg@10", "recall@20")):
        values = [metrics[name][metric] for name in names]
        axis.bar(names, values, color=["#1f77b4" if name == "model" else "#9bbbd8" for name in names])
        axis.set_title(metric)
        axis.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def data_label(source: str | None, stages: list[str], conf: dict) -> str:
    """What the table was computed on: the source folder, the synthetic generator, or the lake whose gold
    tables an earlier run built (then no source is given)."""
    if source:
        return source
    return "synthetic" if "generate" in stages else f"the lake {conf['lake']['root']}"


def run_ablation(conf: dict, source: str | None = None, out_dir: str | None = None,
                 progress: Callable[[str], None] = print) -> dict:
    """Train every ablation beside the model and the baselines; return {markdown, plot, run_id, metrics}."""
    from socialrec.pipeline import run_pipeline

    conf = ablation_conf(conf)
    stages = stages_to_run(conf, source)
    report = run_pipeline(conf, source=source, stages=stages, progress=progress)
    out = Path(out_dir or Path(conf["lake"]["root"]) / conf["lake"]["reports_dir"])
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / f"ablation-{report.run_id}.md"
    label = data_label(source, stages, conf)
    markdown.write_text(ablation_markdown(report.metrics, conf["evaluate"]["ablations"], label, report.comparisons,
                                          report.stages.get("train")))
    plot = out / f"ablation-{report.run_id}.png"
    plot_ablation(report.metrics, plot)
    return {"run_id": report.run_id, "markdown": str(markdown), "plot": str(plot), "metrics": report.metrics}
