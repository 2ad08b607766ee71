"""Operator progress: the stage bar and the per-table lines (which table, how many rows, how long), plain lines
when stderr is not a terminal, and the pipeline reporting every committed table through them."""
import io
import re

from socialrec.progress import CLEAR, Console, bar, table_line


def test_bar_fills_by_finished_stages():
    assert bar(0, 8) == "[----------] 0/8 stages"
    assert bar(3, 8) == "[###-------] 3/8 stages"  # rounded down: full only when every stage is done
    assert bar(7, 8) == "[########--] 7/8 stages"
    assert bar(8, 8) == "[##########] 8/8 stages"
    assert bar(0, 0) == "[##########] 0/0 stages"


def test_table_line_says_table_rows_and_seconds():
    assert table_line("silver.events", 116008, 3.24) == "  wrote silver.events: 116,008 rows in 3.2s"
    assert table_line("gold.item_index", 1500, 0.81, version=4) == "  wrote gold.item_index: 1,500 rows in 0.8s (v4)"
    assert (table_line("silver.events", 5000, 2.0, version=2, changed=1200)
            == "  merged silver.events: 5,000 rows (1,200 inserted or updated) in 2.0s (v2)")


def test_console_without_terminal_writes_plain_lines_only():
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, tty=False)
    console("[1/2] ingest ...")
    console.stage(0, 2, "ingest")
    console(table_line("bronze.events", 10, 0.5))
    console.stage(1, 2)
    console.close()
    assert out.getvalue() == "[1/2] ingest ...\n  wrote bronze.events: 10 rows in 0.5s\n"
    assert err.getvalue() == ""


def test_console_on_terminal_redraws_the_bar_under_the_lines():
    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err, tty=True)
    console.stage(0, 2, "ingest")
    console("  wrote bronze.events: 10 rows in 0.5s")
    console.stage(1, 2)
    console.close()
    assert out.getvalue() == "  wrote bronze.events: 10 rows in 0.5s\n"  # the log stays clean
    assert err.getvalue() == ("[----------] 0/2 stages: ingest" + CLEAR + "[----------] 0/2 stages: ingest"
                              + CLEAR + "[#####-----] 1/2 stages" + CLEAR)


def test_pipeline_reports_every_committed_table(spark, lake_conf, tmp_path):
    from socialrec.pipeline import run_pipeline

    source = tmp_path / "source"
    source.mkdir()
    (source / "events.csv").write_text("user_id,item_id,ts,event_type\nu1,i1,2025-01-01T10:00:00,view\n"
                                       "u1,i2,2025-01-01T11:00:00,purchase\nu2,i1,2025-01-02T10:00:00,purchase\n")
    lines, stages = [], []

    class Recorder:
        def __call__(self, line):
            lines.append(line)

        def stage(self, done, total, name=""):
            stages.append((done, total, name))

    report = run_pipeline(lake_conf, source=str(source), stages=["ingest", "clean"], progress=Recorder())
    assert stages == [(0, 2, "ingest"), (1, 2, ""), (1, 2, "clean"), (2, 2, "")]
    assert re.search(r"^  wrote bronze\.events: 3 rows in \d+\.\ds \(v\d+\)$", "\n".join(lines), re.M)
    assert re.search(r"^  merged silver\.events: 3 rows \(3 inserted or updated\) in \d+\.\ds", "\n".join(lines),
                     re.M)
    for table, info in report.tables.items():  # one line per committed table, its time kept in the report
        assert info["seconds"] > 0
        assert sum(line.startswith(("  wrote " + table + ":", "  merged " + table + ":")) for line in lines) == 1
