"""`socialrec report RUN_ID`: one run's report (`LAKE/_reports/<run_id>.json`) as ONE self-contained HTML page:
inline CSS, the plot embedded as a base64 PNG (matplotlib, Agg backend), no external asset. The plot is also
saved beside the page as `<run_id>_metrics.png`."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from socialrec.evaluation.metrics import format_comparison

PLOT_METRICS = ("ndcg@10", "recall@20")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}.ok{color:#17663a;font-weight:600}.failed{color:#b00020;font-weight:600}
.model td{background:#eef6ff}.muted{color:#777}code{background:#f5f5f5;padding:0 .2em}
"""


def reports_dir(conf: dict) -> Path:
    return Path(conf["lake"]["root"]) / conf["lake"]["reports_dir"]


def load_report(conf: dict, run_id: str) -> dict:
    """The run report by id; `latest` is the most recent run (whatever its id)."""
    folder = reports_dir(conf)
    path = folder / ("latest.json" if run_id == "latest" else f"{run_id}.json")
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.json") if p.stem != "latest") if folder.is_dir() else []
        raise FileNotFoundError(f"no run report {path}" + (f"; runs: {', '.join(known[-5:])}" if known else ""))
    return json.loads(path.read_text())


def fmt(value) -> str:
    """How the page writes a metric value (tests look values up in this form)."""
    return f"{value:.4f}" if isinstance(value, float) else (f"{value:,}" if isinstance(value, int) else str(value))


def _status(value) -> str:
    cls = "ok" if value in ("ok", True) else "failed" if value in ("failed", False) else "muted"
    text = {True: "passed", False: "failed"}.get(value, value)
    return f'<span class="{cls}">{html.escape(str(text))}</span>'


def _table(headers: list[str], rows: list[list], row_classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for cell in row:
            if isinstance(cell, tuple) and cell and cell[0] == "html":
                cells.append(f"<td>{cell[1]}</td>")
            elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{fmt(cell)}</td>')
            else:
                cells.append(f"<td>{html.escape('' if cell is None else str(cell))}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def metrics_plot_png(metrics: dict) -> bytes | None:
    """Grouped bars of NDCG@10 and Recall@20 per model (the model first, then the baselines)."""
    models = [m for m in metrics if any(k in metrics[m] for k in PLOT_METRICS)]
    if not models:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    width = 0.8 / len(PLOT_METRICS)
    for j, key in enumerate(PLOT_METRICS):
        values = [float(metrics[m].get(key, 0.0)) for m in models]
        bars = ax.bar([i + (j - (len(PLOT_METRICS) - 1) / 2) * width for i in range(len(models))], values, width,
                      label=key.replace("ndcg", "NDCG").replace("recall", "Recall"))
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("value (test split)")
    ax.set_title("NDCG@10 and Recall@20 per model")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def render_html(report: dict, plot_png: bytes | None = None) -> str:
    run_id = report["run_id"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>socialrec run {html.escape(run_id)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>socialrec run <code>{html.escape(run_id)}</code>: {_status(report.get('status'))}</h1>",
             f"<p>started {html.escape(str(report.get('started_at')))} · source "
             f"<code>{html.escape(str(report.get('source')))}</code></p>"]
    if report.get("error"):
        parts.append(f"<p class='failed'>error: {html.escape(report['error'])}</p>")

    stages = report.get("stages") or {}
    parts.append("<h2>Stages</h2>")
    parts.append(_table(["stage", "status", "seconds", "rows in", "rows out", "note"], [
        [name, ("html", _status(s.get("status"))), s.get("seconds"), s.get("rows_in"), s.get("rows_out"),
         s.get("error") or ""] for name, s in stages.items()]))

    clean = stages.get("clean") or {}
    if clean.get("tables"):
        parts.append("<h2>Clean reconciliation (in = out + quarantined + duplicates)</h2>")
        rows = []
        for table, f in {**clean["tables"], "total": clean}.items():
            balanced = f["rows_in"] == f["rows_out"] + f["rows_quarantined"] + f["rows_duplicates"]
            rows.append([table, f["rows_in"], f["rows_out"], f["rows_quarantined"], f["rows_duplicates"],
                         ("html", _status("ok" if balanced else "failed"))])
        parts.append(_table(["table", "in", "out", "quarantined", "duplicates", "balances"], rows))
    by_rule = clean.get("quarantine_by_rule") or {}
    if by_rule:
        parts.append("<h2>Quarantine by rule</h2>")
        parts.append(_table(["table.rule", "rows"], [[k, v] for k, v in sorted(by_rule.items())]))

    gates = report.get("gates") or {}
    passed = sum(1 for g in gates.values() if g.get("success"))
    parts.append(f"<h2>Quality gates ({passed}/{len(gates)} passed)</h2>")
    parts.append(_table(["table", "result", "failed expectations"], [
        [name, ("html", _status(bool(g.get("success")))),
         "; ".join(f"{f.get('expectation')}({f.get('column') or ''})" if isinstance(f, dict) else str(f)
                   for f in (g.get("failed") or []))] for name, g in sorted(gates.items())]))

    tables = report.get("tables") or {}
    parts.append("<h2>Tables</h2>")
    parts.append(_table(["table", "Delta version", "rows", "seconds", "location"], [
        [name, t.get("version"), t.get("rows"), t.get("seconds"), t.get("path")]
        for name, t in sorted(tables.items())]))

    metrics = report.get("metrics") or {}
    parts.append("<h2>Metrics (test split, full ranking)</h2>")
    if metrics:
        keys = list(dict.fromkeys(k for values in metrics.values() for k in values))
        models = sorted(metrics, key=lambda m: (m != "model", m))  # the model first, beside every baseline
        parts.append(_table(["model", *keys], [[m, *[metrics[m].get(k) for k in keys]] for m in models],
                            ["model" if m == "model" else "" for m in models]))
        comparisons = report.get("comparisons") or {}
        if comparisons:
            compared = list(dict.fromkeys(metric for by_metric in comparisons.values() for metric in by_metric))
            parts.append("<h3>The model minus each row, per user (mean, confidence interval, paired p-value)</h3>")
            parts.append(_table(["row", *compared], [
                [other, *[format_comparison(by_metric[m]) if m in by_metric else None for m in compared]]
                for other, by_metric in comparisons.items()]))
        if plot_png:
            encoded = base64.b64encode(plot_png).decode("ascii")
            parts.append(f'<p><img alt="NDCG@10 and Recall@20 per model" src="data:image/png;base64,{encoded}"></p>')
    else:
        parts.append("<p class='muted'>no metrics in this run (evaluate did not run)</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(conf: dict, run_id: str, out: str | Path | None = None) -> Path:
    """Write the page (default `LAKE/_reports/<run_id>.html`) and the plot PNG beside it; return the page."""
    report = load_report(conf, run_id)
    out = Path(out) if out else reports_dir(conf) / f"{report['run_id']}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    png = metrics_plot_png(report.get("metrics") or {})
    if png:
        out.with_name(f"{out.stem}_metrics.png").write_bytes(png)
    out.write_text(render_html(report, png), encoding="utf-8")
    return out
