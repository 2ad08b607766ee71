"""`socialrec status`: every table of the lake with its Delta version, row count and last commit, then the
latest run's status, gates and metrics (from `LAKE/_reports/latest.json`).

Local tables are read straight from their Delta logs with the `deltalake` package (no Spark, so it answers in
about a second); Unity Catalog tables (`catalog.schema.table`), or a local table `deltalake` cannot read, are
asked of Spark, which is started only then.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


def _is_identifier(target: str) -> bool:
    return "/" not in target and target.count(".") == 2


def _from_deltalake(path: str) -> dict:
    from deltalake import DeltaTable

    table = DeltaTable(path)
    last = table.history(1)[0]
    actions = table.get_add_actions(flatten=True)
    rows = actions.column("num_records").to_pylist() if "num_records" in actions.schema.names else []
    if rows and all(r is not None for r in rows):
        count = int(sum(rows))
    else:  # files written without statistics: count with a query instead
        from deltalake import QueryBuilder

        count = int(QueryBuilder().register("t", table).execute("SELECT count(*) AS n FROM t")
                    .read_all().column("n")[0].as_py())
    committed = datetime.fromtimestamp(last["timestamp"] / 1000, tz=timezone.utc)
    return {"version": int(table.version()), "rows": count, "committed_at": committed.isoformat(timespec="seconds"),
            "operation": last.get("operation")}


def _from_spark(spark, target: str, identifier: bool) -> dict | None:
    from delta.tables import DeltaTable

    if identifier:
        if not spark.catalog.tableExists(target):
            return None
        table = DeltaTable.forName(spark, target)
    else:
        if not DeltaTable.isDeltaTable(spark, target):
            return None
        table = DeltaTable.forPath(spark, target)
    last = table.history(1).select("version", "timestamp", "operation").first()
    stamp = last["timestamp"]
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return {"version": int(last["version"]), "rows": table.toDF().count(),
            "committed_at": stamp.isoformat(timespec="seconds"), "operation": last["operation"]}


def table_status(conf: dict, spark=None) -> list[dict]:
    """One entry per table of `lake.tables`: name, location, and version/rows/committed_at or `absent`."""
    root = Path(conf["lake"]["root"]).resolve() if conf["lake"].get("root") else None
    entries = []
    for name, target in conf["lake"]["tables"].items():
        identifier = _is_identifier(target)
        location = target if identifier else str(root / target)
        entry = {"table": name, "location": location, "absent": True}
        info = None
        if not identifier:
            if (Path(location) / "_delta_log").is_dir():
                try:
                    info = _from_deltalake(location)
                except Exception:  # an unreadable log for deltalake (newer protocol, ...): fall back to Spark
                    spark = spark or _spark(conf)
                    info = _from_spark(spark, location, identifier=False)
        else:
            spark = spark or _spark(conf)
            info = _from_spark(spark, target, identifier=True)
        if info:
            entry.update(info, absent=False)
        entries.append(entry)
    return entries


def _spark(conf: dict):
    from socialrec.io.spark_session import get_spark

    return get_spark(conf)


def latest_report(conf: dict) -> dict | None:
    root = conf["lake"].get("root")
    if not root:
        return None
    path = Path(root) / conf["lake"]["reports_dir"] / "latest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def lake_status(conf: dict, spark=None) -> dict:
    return {"root": str(Path(conf["lake"]["root"]).resolve()) if conf["lake"].get("root") else None,
            "tables": table_status(conf, spark), "latest_run": latest_report(conf)}


def format_status(status: dict) -> str:
    lines = [f"lake {status['root']}", "", "tables:"]
    width = max(len(t["table"]) for t in status["tables"]) + 2
    for t in status["tables"]:
        if t["absent"]:
            lines.append(f"  {t['table']:<{width}}absent")
        else:
            lines.append(f"  {t['table']:<{width}}v{t['version']:<5}{t['rows']:>12,} rows  "
                         f"last commit {t['committed_at']} ({t['operation']})")
    run = status["latest_run"]
    if not run:
        lines.append("\nlatest run: none (no _reports/latest.json)")
        return "\n".join(lines)
    lines.append(f"\nlatest run {run['run_id']}: {run['status']} (started {run.get('started_at')})")
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    stages = run.get("stages") or {}
    if stages:
        lines.append("  stages: " + ", ".join(f"{name}={s.get('status')}" for name, s in stages.items()))
    gates = run.get("gates") or {}
    passed = sorted(name for name, g in gates.items() if g.get("success"))
    failed = sorted(name for name, g in gates.items() if not g.get("success"))
    lines.append(f"  gates: {len(passed)}/{len(gates)} passed")
    if passed:
        lines.append("    passed: " + ", ".join(passed))
    for name in failed:
        detail = gates[name].get("failed")
        lines.append(f"    FAILED: {name}" + (f" ({_short(detail)})" if detail else ""))
    metrics = run.get("metrics") or {}
    if metrics:
        keys = list(next(iter(metrics.values())))
        lines.append("  metrics (test split, full ranking):")
        lines.append("    " + f"{'':<12}" + "".join(f"{k:>13}" for k in keys))
        for model, values in metrics.items():
            lines.append("    " + f"{model:<12}" + "".join(_cell(values.get(k)) for k in keys))
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:>13.4f}" if isinstance(value, (int, float)) else f"{'-':>13}"


def _short(detail) -> str:
    if isinstance(detail, list):
        names = [d.get("expectation", str(d)) if isinstance(d, dict) else str(d) for d in detail]
        return ", ".join(names)[:300]
    return str(detail)[:300]
