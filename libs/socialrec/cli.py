"""`socialrec` command line: run the pipeline (or some of its stages) and generate synthetic sources."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from socialrec.config import ConfigError, load_config, set_dotted


STREAM_DESCRIPTION = ("Watch --events DIR (or stream.source) for new event files; each micro-batch is cleaned, "
                      "gated and MERGEd into silver, the touched users' gold rows are updated and only they are "
                      "rescored into gold.recommendations, exactly once across restarts. Needs a lake the batch "
                      "pipeline built (gold tables and a trained model).")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, so schedulers' logs show the cause at a glance."""

    def error(self, message: str):
        self.exit(2, f"socialrec: error: {message} (see `socialrec {self.prog.split()[-1]} --help`)\n")


def _overrides(conf: dict, pairs: list[str]) -> None:
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        set_dotted(conf, key, yaml.safe_load(value))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="socialrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser("run", help="run the pipeline end to end (or the stages named)",
                              description="Run ingest -> clean -> features -> embed_text -> train -> tune_fusion -> infer -> "
                                          "evaluate (plus generate when no --source is given).")
    run.add_argument("--conf", help="config file (default conf/local.yml)")
    run.add_argument("--lake", help="lake root folder (overrides lake.root)")
    run.add_argument("--source", help="folder of raw files in the generic input format; default: synthetic data")
    run.add_argument("--stages", help="comma-separated subset of stages to run, in pipeline order")
    run.add_argument("--run-id", help="join an existing run (multi-task jobs share one run id and report)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=3")
    run.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                     help="train continues an interrupted training run from its last epoch checkpoint "
                          "(the latest one, or RUN_ID's) instead of starting afresh (train.resume)")
    run.add_argument("--users", metavar="all|changed-since=YYYY-MM-DD",
                     help="users the infer stage rescores (infer.users; default all)")

    stream = commands.add_parser("stream", help="update recommendations seconds after new events (Structured Streaming)",
                                 description=STREAM_DESCRIPTION)
    stream.add_argument("--events", help="folder watched for new event files (stream.path)")
    stream.add_argument("--conf", help="config file (default conf/local.yml)")
    stream.add_argument("--lake", help="lake root folder (overrides lake.root)")
    stream.add_argument("--available-now", action="store_true",
                        help="process the files present, then stop (for schedulers); default: run until stopped")
    stream.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")

    generate = commands.add_parser("generate", help="write a synthetic source in the generic input format")
    generate.add_argument("--out", required=True, help="output folder")
    generate.add_argument("--conf", help="config file (default conf/local.yml)")
    generate.add_argument("--users", type=int)
    generate.add_argument("--items", type=int)
    generate.add_argument("--seed", type=int)

    status = commands.add_parser("status", help="tables (Delta version, rows, last commit) and the latest run",
                                 description="Every table of lake.tables with its Delta version, row count and last "
                                             "commit (or absent), then the latest run's status, gates and metrics.")
    status.add_argument("--conf", help="config file (default conf/local.yml)")
    status.add_argument("--lake", help="lake root folder (overrides lake.root)")

    report = commands.add_parser("report", help="one run as a self-contained HTML page",
                                 description="Write LAKE/_reports/<run_id>.html (stages, reconciliation, quarantine, "
                                             "gates, tables, metrics and a plot) and print its path.")
    report.add_argument("run_id", metavar="RUN_ID", help="a run id, or `latest`")
    report.add_argument("--conf", help="config file (default conf/local.yml)")
    report.add_argument("--lake", help="lake root folder (overrides lake.root)")
    report.add_argument("--out", help="output HTML file (default LAKE/_reports/<run_id>.html)")

    maintain = commands.add_parser("maintain", help="OPTIMIZE (Z-order) and VACUUM the lake's tables",
                                   description="Compact every table of lake.tables (Z-ordered per maintenance.zorder),"
                                               " then VACUUM with maintenance.vacuum_retention_hours; prints the files"
                                               " before/after per table.")
    maintain.add_argument("--conf", help="config file (default conf/local.yml)")
    maintain.add_argument("--lake", help="lake root folder (overrides lake.root)")
    maintain.add_argument("--tables", help="comma-separated subset of lake.tables (default: all)")
    maintain.add_argument("--set", action="append", metavar="KEY=VALUE",
                          help="override a config value, e.g. maintenance.vacuum_retention_hours=336")

    ablate = commands.add_parser("ablate", help="the model without social / text / context, beside the baselines",
                                 description="Train the full model and each of evaluate.ablations (one component "
                                             "off) plus train.variants, evaluate all with the baselines on the "
                                             "same split, and write ablation-<run_id>.md and .png. Uses the lake's "
                                             "gold tables when present, else runs the pipeline up to evaluate.")
    ablate.add_argument("--conf", help="config file (default conf/local.yml)")
    ablate.add_argument("--lake", help="lake root folder (overrides lake.root)")
    ablate.add_argument("--source", help="raw source folder when the lake has no gold tables yet")
    ablate.add_argument("--out", help="folder for the Markdown table and plot (default LAKE/_reports)")
    ablate.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")

    protocol = commands.add_parser("protocol", help="the model beside BPR-MF, LightGCN and popularity on a "
                                                    "published split (or a seeded random split by ratio)",
                                   description="Run the pipeline (ingest to train) on a split's train and validation "
                                               "pairs, then rank its test pairs with the model, its variants and "
                                               "the baselines under the published full-ranking protocol "
                                               "(socialrec/evaluation/protocol.py).")
    protocol.add_argument("--split", help="published split folder (SocialLGN's train_set.txt/test_set.txt, "
                                          "SELFRec's train.txt/test.txt), ids kept")
    protocol.add_argument("--dataset", help="dataset folder: split at random by --ratio; with --split, where "
                                            "item text comes from (through the split's itemReindex.json)")
    protocol.add_argument("--ratio", help="train,valid,test shares for --dataset (default protocol.ratios)")
    protocol.add_argument("--seed", type=int, help="seed of the split (default protocol.split_seed)")
    protocol.add_argument("--baselines-only", action="store_true", help="skip the pipeline and the model")
    protocol.add_argument("--reuse-model", action="store_true",
                          help="rank with the lake's model from an earlier run on the same split (no pipeline)")
    protocol.add_argument("--conf", help="config file (default conf/local.yml)")
    protocol.add_argument("--lake", help="lake root folder (overrides lake.root)")
    protocol.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    return parser


def _load(args) -> dict:
    conf = load_config(args.conf)
    _overrides(conf, getattr(args, "set", None))
    if getattr(args, "lake", None):
        conf["lake"]["root"] = args.lake
    if getattr(args, "resume", None):
        conf["train"]["resume"] = args.resume
    if hasattr(args, "users"):  # `run`: a malformed infer.users (--users or --set) fails before Spark starts
        from socialrec.inference.scoring import users_since

        conf["infer"]["users"] = args.users or conf["infer"].get("users", "all")
        users_since(conf["infer"]["users"])
    return conf


def cmd_run(args) -> int:
    from socialrec.pipeline import run_pipeline
    from socialrec.progress import Console
    from socialrec.summary import closing_summary

    from socialrec.etl.adapters import detect, is_generic
    from socialrec.io.sources import require_source
    from socialrec.pipeline import resolve_stages

    if args.source and not Path(args.source).is_dir():
        raise FileNotFoundError(f"--source folder not found: {args.source}")
    conf = _load(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    selected = resolve_stages(stages, synthetic=args.source is None)  # fail on a typo before Spark starts
    if args.source and "ingest" in selected:
        require_source(args.source) if is_generic(Path(args.source)) else detect(Path(args.source))
    console = Console()  # stage and table lines on stdout; a bar on stderr when it is a terminal
    try:
        report = run_pipeline(conf, source=args.source, stages=stages, run_id=args.run_id, progress=console)
    finally:
        console.close()
    print(closing_summary(report, conf))
    return 0


def cmd_stream(args) -> int:
    from socialrec.pipeline import make_context
    from socialrec.stream.job import run_stream

    conf = _load(args)
    if args.events:
        conf["stream"]["path"] = args.events
    ctx = make_context(conf, source=f"stream:{conf['stream'].get('source', 'files')}")
    figures = run_stream(ctx, available_now=args.available_now)
    print(f"stream stopped: {figures['micro_batches']} micro-batches, {figures['rows_in']} input rows")
    return 0


def cmd_generate(args) -> int:
    from socialrec.etl.generate import generate_source
    from socialrec.io.spark_session import get_spark

    conf = _load(args)
    for key in ("users", "items", "seed"):
        if getattr(args, key) is not None:
            conf["generator"][key] = getattr(args, key)
    counts = generate_source(get_spark(conf), conf["generator"], args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{table}={rows}" for table, rows in counts.items()))
    return 0


def cmd_status(args) -> int:
    from socialrec.ops.status import format_status, lake_status

    print(format_status(lake_status(_load(args))))
    return 0


def cmd_report(args) -> int:
    from socialrec.ops.report import write_report

    print(write_report(_load(args), args.run_id, args.out))
    return 0


def cmd_maintain(args) -> int:
    from socialrec.io.spark_session import get_spark
    from socialrec.ops.maintenance import format_figures, maintain

    conf = _load(args)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    print(format_figures(maintain(get_spark(conf), conf, tables)))
    return 0


def cmd_ablate(args) -> int:
    from socialrec.evaluation.ablation import run_ablation

    result = run_ablation(_load(args), source=args.source, out_dir=args.out)
    print(Path(result["markdown"]).read_text())
    print(f"wrote {result['markdown']} and {result['plot']}")
    return 0


def cmd_protocol(args) -> int:
    from socialrec.evaluation.protocol import build_split, markdown_table, run_protocol

    for folder in (args.split, args.dataset):
        if folder and not Path(folder).is_dir():
            raise FileNotFoundError(f"folder not found: {folder}")
    conf = _load(args)
    ratios = [float(r) for r in args.ratio.split(",")] if args.ratio else None
    staging = Path(conf["lake"]["root"]).resolve() / "_source" / "adapted"
    split, items = build_split(args.split, args.dataset, conf["protocol"], staging, ratios, args.seed)
    print(f"split {split.protocol['name']}: {split.sizes()}")
    report = run_protocol(conf, split, items, train_model=not (args.baselines_only or args.reuse_model),
                          rank_model=not args.baselines_only)
    columns = [f"{m}@{k}" for k in conf["protocol"]["ks"] for m in conf["protocol"]["metrics"]]
    print(markdown_table(report, columns))
    print(f"wrote {report['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "stream": cmd_stream, "ablate": cmd_ablate, "generate": cmd_generate, "status": cmd_status,
                "report": cmd_report, "maintain": cmd_maintain,
                "protocol": cmd_protocol}[args.command](args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"socialrec: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a stage failed: one clear line, details in the run report
        print(f"socialrec: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
