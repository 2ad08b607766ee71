"""The local runner: stages in order, each gated, timed and recorded in the run report. The same stage
functions back the `jobs/` entry points that Databricks and spark-submit run one task at a time."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from socialrec.io.spark_session import get_spark
from socialrec.io.tables import Lake
from socialrec.run_context import RunContext, RunReport, StageTimer

log = logging.getLogger("socialrec")

STAGES = ("generate", "ingest", "clean", "features", "embed_text", "train", "tune_fusion", "infer", "evaluate")


def _stage_functions() -> dict[str, Callable[[RunContext, str], dict]]:
    from socialrec.etl.clean import clean
    from socialrec.etl.generate import generate_source
    from socialrec.etl.ingest import ingest
    from socialrec.evaluation.evaluate import evaluate
    from socialrec.evaluation.fusion_tuning import tune_fusion
    from socialrec.features.sequences import build_features
    from socialrec.features.text_embedding import embed_item_text
    from socialrec.inference.scoring import recommend
    from socialrec.train.stage import train

    def generate(ctx: RunContext, source: str) -> dict:
        counts = generate_source(ctx.spark, ctx.conf["generator"], source)
        return {"rows_out": sum(counts.values()), "tables": counts, "out": source}

    return {
        "generate": generate,
        "ingest": ingest,
        "clean": lambda ctx, source: clean(ctx),
        "features": lambda ctx, source: build_features(ctx),
        "embed_text": lambda ctx, source: embed_item_text(ctx),
        "train": lambda ctx, source: train(ctx),
        "tune_fusion": lambda ctx, source: tune_fusion(ctx),
        "infer": lambda ctx, source: recommend(ctx),
        "evaluate": lambda ctx, source: evaluate(ctx),
    }


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def make_context(conf: dict, source: str, run_id: str | None = None) -> RunContext:
    from socialrec.quality.gates import QualityGate

    spark = get_spark(conf)
    lake = Lake(spark, conf)
    run_id = run_id or new_run_id()
    earlier = lake.directory("reports_dir") / f"{run_id}.json"
    report = RunReport.load(earlier) if earlier.is_file() else RunReport(run_id=run_id, source=source)
    return RunContext(conf=conf, spark=spark, lake=lake, report=report, gate=QualityGate(spark, conf))


def resolve_stages(requested: list[str] | None, synthetic: bool) -> list[str]:
    if not requested:
        return [s for s in STAGES if synthetic or s != "generate"]
    unknown = [s for s in requested if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in requested]


def run_pipeline(conf: dict, source: str | None = None, stages: list[str] | None = None,
                 progress: Callable[[str], None] = print, run_id: str | None = None) -> RunReport:
    """Run the stages; the first failure stops the run, is recorded in the report and re-raised.

    `progress` gets a line when a stage starts and ends and one per committed table; a progress object with a
    `stage(done, total, name)` method (socialrec.progress.Console) also hears where the run is, for its bar."""
    synthetic = source is None
    lake_root = Path(conf["lake"]["root"]).resolve()
    source = source or str(lake_root / "_source" / "synthetic")
    ctx = make_context(conf, source, run_id)
    ctx.progress = progress
    advance = getattr(progress, "stage", lambda done, total, name="": None)
    functions = _stage_functions()
    reports_dir = ctx.lake.directory("reports_dir")
    selected = resolve_stages(stages, synthetic)
    try:
        for position, stage in enumerate(selected, 1):
            progress(f"[{position}/{len(selected)}] {stage} ...")
            advance(position - 1, len(selected), stage)
            with StageTimer(ctx.report, stage) as figures:
                figures.update(functions[stage](ctx, source))
            progress(f"[{position}/{len(selected)}] {stage} ok in {figures['seconds']:.1f}s "
                     f"({_headline(figures)})")
            advance(position, len(selected))
            ctx.report.save(reports_dir)
        ctx.report.status = "ok"
    except Exception as exc:
        ctx.report.status = "failed"
        ctx.report.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ctx.report.save(reports_dir)
    return ctx.report


def _headline(figures: dict) -> str:
    keys = ("rows_in", "rows_out", "rows_quarantined", "rows_duplicates", "best_epoch", "chosen", "users_evaluated")
    return ", ".join(f"{k}={figures[k]}" for k in keys if k in figures) or "done"
