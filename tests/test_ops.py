"""Operator tools on a finished small run: `socialrec status` and `socialrec report`."""
import base64
import re

import pytest

from conftest_pipeline import pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.cli import main
from socialrec.ops.report import fmt, render_html, write_report
from socialrec.ops.status import format_status, lake_status

@pytest.mark.slow
def test_status_lists_tables_versions_and_gates(pipeline_lake, capsys):
    conf, report = pipeline_lake
    status = lake_status(conf)
    by_name = {t["table"]: t for t in status["tables"]}
    assert set(by_name) == set(conf["lake"]["tables"])
    for name, info in report.tables.items():  # what the run wrote, seen from the Delta logs
        assert not by_name[name]["absent"], name
        assert by_name[name]["version"] == info["version"]
        assert by_name[name]["rows"] == info["rows"], name
        assert by_name[name]["committed_at"]
    assert status["latest_run"]["run_id"] == report.run_id

    assert main(["status", "--conf", _conf_file(conf), "--lake", conf["lake"]["root"]]) == 0
    out = capsys.readouterr().out
    assert f"latest run {report.run_id}: ok" in out
    assert f"gates: {len(report.gates)}/{len(report.gates)} passed" in out
    for name, info in report.tables.items():
        assert re.search(rf"^  {re.escape(name)}\s+v{info['version']}\s+{info['rows']:,} rows", out, re.M), name
    for gate in report.gates:
        assert gate in out
    assert "ndcg@10" in out and "popularity" in out


def test_status_says_absent_and_names_failed_gates(tmp_path, conf):
    from socialrec.config import deep_merge
    from socialrec.run_context import RunReport

    empty = deep_merge(conf, {"lake": {"root": str(tmp_path / "lake")}})
    RunReport(run_id="r1", source="x", status="failed",
              gates={"silver.events": {"success": False, "failed": [{"expectation": "expect_column_values_to_not_be_null",
                                                                      "column": "user_key"}]},
                     "bronze.events": {"success": True, "failed": []}}).save(tmp_path / "lake" / "_reports")
    text = format_status(lake_status(empty))
    assert all(re.search(rf"^  {re.escape(name)}\s+absent$", text, re.M) for name in conf["lake"]["tables"])
    assert "latest run r1: failed" in text and "gates: 1/2 passed" in text
    assert "FAILED: silver.events (expect_column_values_to_not_be_null)" in text


@pytest.mark.slow
def test_report_html_is_self_contained(pipeline_lake, capsys):
    conf, report = pipeline_lake
    assert main(["report", "latest", "--conf", _conf_file(conf), "--lake", conf["lake"]["root"]]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(f"_reports/{report.run_id}.html")
    page = open(path, encoding="utf-8").read()
    assert report.run_id in page
    for stage in report.stages:
        assert f"<td>{stage}</td>" in page
    for model, values in report.metrics.items():
        assert f"<td>{model}</td>" in page
        assert f'<td class="num">{fmt(values["ndcg@10"])}</td>' in page
    clean = report.stages["clean"]
    assert f'<td class="num">{fmt(clean["rows_in"])}</td>' in page  # the reconciliation's total row
    for rule in clean["quarantine_by_rule"]:
        assert rule in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert (open(path.replace(".html", "_metrics.png"), "rb").read(8)) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_by_id_to_chosen_file_and_unknown_run(pipeline_lake, tmp_path, capsys):
    conf, report = pipeline_lake
    out = write_report(conf, report.run_id, tmp_path / "r.html")
    assert out == tmp_path / "r.html" and (tmp_path / "r_metrics.png").is_file()
    assert main(["report", "nope", "--conf", _conf_file(conf), "--lake", conf["lake"]["root"]]) == 2
    assert "no run report" in capsys.readouterr().err


def test_report_marks_failed_stage_without_metrics():
    page = render_html({"run_id": "r9", "status": "failed", "error": "GateFailed: boom",
                        "stages": {"ingest": {"status": "ok", "seconds": 1.0, "rows_in": 5, "rows_out": 5},
                                   "clean": {"status": "failed", "seconds": 0.5, "error": "boom"}},
                        "gates": {}, "tables": {}, "metrics": {}})
    assert "r9" in page and '<span class="failed">failed</span>' in page and "no metrics" in page
    assert "<img" not in page


def test_report_shows_the_models_paired_differences():
    comparison = {"difference": -0.0009, "low": -0.0021, "high": 0.0003, "p_value": 0.14, "users": 7375}
    page = render_html({"run_id": "r1", "status": "ok", "stages": {}, "gates": {}, "tables": {},
                        "metrics": {"model": {"ndcg@10": 0.0207}, "als": {"ndcg@10": 0.0216}},
                        "comparisons": {"als": {"ndcg@10": comparison}}})
    assert "The model minus each row" in page and "-0.0009 [-0.0021, +0.0003] p=0.14" in page


def _conf_file(conf) -> str:
    from socialrec.config import PROJECT_ROOT

    return str(PROJECT_ROOT / "conf" / "test.yml")
