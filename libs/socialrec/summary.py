"""The closing summary printed after a run: what was written, what passed, how good the model is."""
from __future__ import annotations

from socialrec.evaluation.metrics import format_comparison
from socialrec.run_context import RunReport


def closing_summary(report: RunReport, conf: dict) -> str:
    lines = [f"\nrun {report.run_id}: {report.status}", "", "tables (rows, Delta version):"]
    for name, info in sorted(report.tables.items()):
        lines.append(f"  {name:<26} {info['rows']:>10,}  v{info['version']}  {info['path']}")
    passed = sum(1 for gate in report.gates.values() if gate["success"])
    lines.append(f"\nquality gates: {passed}/{len(report.gates)} passed")
    clean = report.stages.get("clean")
    if clean and clean.get("status") == "ok":
        lines.append(f"clean: {clean['rows_in']:,} in = {clean['rows_out']:,} out + {clean['rows_quarantined']:,} "
                     f"quarantined + {clean['rows_duplicates']:,} duplicates")
    if report.metrics:
        names = list(report.metrics)
        keys = list(report.metrics[names[0]])
        lines.append("\nmetrics (test split, full ranking):")
        widths = [max(9, len(k)) + 2 for k in keys]
        lines.append("  " + f"{'':<12}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths)))
        for name in names:
            values = report.metrics[name]
            lines.append("  " + f"{name:<12}" + "".join(f"{values.get(k, 0):>{w}.4f}" for k, w in zip(keys, widths)))
    if report.comparisons:
        lines.append("\nmodel minus each row, per user over the same users "
                     "(mean, confidence interval, paired p-value):")
        for name, by_metric in report.comparisons.items():
            lines.append("  " + f"{name:<12}" + "   ".join(f"{metric} {format_comparison(c)}"
                                                         for metric, c in by_metric.items()))
    root = conf["lake"]["root"]
    lines += [
        f"\noutputs: Delta tables under {root}; run report {root}/{conf['lake']['reports_dir']}/{report.run_id}.json",
        "query:   spark.read.format('delta').load('"
        + report.tables.get("gold.recommendations", {}).get("path", f"{root}/gold/recommendations") + "')",
        "         or without Spark: deltalake.QueryBuilder().register('recs', deltalake.DeltaTable(path))"
        ".execute('SELECT ...').read_all()",
    ]
    return "\n".join(lines)
