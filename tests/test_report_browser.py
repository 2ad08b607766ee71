"""The HTML run report (`socialrec report`) and one notebook's figures, opened in headless Chromium (Debian's
`chromium`, installed by `scripts/setup_env.sh --with-browser`, which `make test` runs; SOCIALREC_CHROMIUM names
another binary): the page a person opens shows the run's key figures and its plots decode and are painted. A
missing browser fails rather than skips: this check is part of what "done" means for the operator tools."""
import html
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_pipeline import pipeline_lake  # noqa: F401  (the shared session fixture)
from socialrec.config import PROJECT_ROOT
from socialrec.ops.notebook_runner import run_notebook
from socialrec.ops.report import fmt, write_report

WINDOW = (1280, 3000)  # tall enough that the report's plot is inside the screenshot
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--window-size={WINDOW[0]},{WINDOW[1]}"]
# Added to the copy of a page that is dumped: after `load`, every <img> records whether the browser decoded it
# (its natural size) and where it was laid out, which the DOM alone does not say.
PROBE = ("<script>addEventListener('load',()=>{for(const i of document.images){i.dataset.decoded=i.complete&&"
         "i.naturalWidth>0?i.naturalWidth+'x'+i.naturalHeight:'no';i.dataset.bottom=i.getBoundingClientRect().bottom}})"
         "</script>")
MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE = (31, 119, 180), (255, 127, 14)  # the first two colours of its cycle


@pytest.fixture(scope="session")
def chromium() -> str:
    """Resolved before the shared pipeline lake is built, so a missing browser fails in seconds."""
    path = os.environ.get("SOCIALREC_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("headless Chromium not found: run `bash scripts/setup_env.sh --with-browser` (installs "
                    "Debian's `chromium` with apt; `make test` does) or set SOCIALREC_CHROMIUM=/path/to/chromium",
                    pytrace=False)
    return path


class Page(HTMLParser):
    """The DOM Chromium dumped, as a reader sees it: headings, tables (header row first, cell texts), images."""

    def __init__(self, dom: str):
        super().__init__()
        self.headings, self.tables, self.images, self.text = [], [], [], []
        self._cell = self._heading = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2"):
            self._heading = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)

    def table(self, column: str) -> tuple[list[str], list[list[str]]]:
        """The first table with that column: its header and its rows."""
        header, *rows = next(t for t in self.tables if t and column in t[0])
        return header, rows


def _chromium(chromium: str, page: Path, profile: Path, *flags: str) -> str:
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *flags, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def dump_dom(chromium: str, page: Path, profile: Path) -> Page:
    """The page after `load`, from a probed copy beside it (so relative image paths resolve the same)."""
    probed = page.with_name(page.stem + ".probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    return Page(_chromium(chromium, probed, profile, "--dump-dom"))


def screenshot(chromium: str, page: Path, profile: Path) -> np.ndarray:
    shot = page.with_name(page.stem + ".screenshot.png")
    _chromium(chromium, page, profile, f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and a plot, not a blank page
    return pixels


def _painted(pixels: np.ndarray, colour: tuple) -> int:
    return int((np.abs(pixels.astype(int) - colour).max(axis=2) <= 6).sum())


def _decoded_as_file(image: dict, png: Path) -> None:
    width, height = Image.open(png).size
    assert image["data-decoded"] == f"{width}x{height}", (image.get("alt"), image["data-decoded"])


@pytest.mark.slow
def test_run_report_in_chromium_shows_the_key_figures(chromium, pipeline_lake, tmp_path):
    conf, report = pipeline_lake
    path = write_report(conf, report.run_id, tmp_path / "report.html")
    page = dump_dom(chromium, path, tmp_path / "profile")

    assert f"socialrec run {report.run_id}: ok" in page.headings
    gates = len(report.gates)
    assert gates and f"Quality gates ({gates}/{gates} passed)" in page.headings
    header, rows = page.table("stage")
    assert [row[0] for row in rows] == list(report.stages) and all(row[1] == "ok" for row in rows)
    assert [row[header.index("rows out")] for row in rows] == [
        "" if s.get("rows_out") is None else fmt(s["rows_out"]) for s in report.stages.values()]
    header, rows = page.table("ndcg@10")
    assert rows[0][0] == "model"  # the model first, beside every baseline
    assert {row[0]: row[header.index("ndcg@10")] for row in rows} == {
        model: fmt(values["ndcg@10"]) for model, values in report.metrics.items()}
    header, rows = page.table("Delta version")
    tables = {row[0]: row for row in rows if row[0] in report.tables}
    assert {name: row[header.index("rows")] for name, row in tables.items()} == {
        name: fmt(info["rows"]) for name, info in report.tables.items()}

    [plot] = page.images
    assert plot["src"].startswith("data:image/png;base64,")
    _decoded_as_file(plot, path.with_name("report_metrics.png"))
    assert float(plot["data-bottom"]) < WINDOW[1]
    pixels = screenshot(chromium, path, tmp_path / "profile")
    assert _painted(pixels, MATPLOTLIB_BLUE) > 500 and _painted(pixels, MATPLOTLIB_ORANGE) > 500  # the bars


@pytest.mark.slow
def test_notebook_figures_in_chromium(chromium, pipeline_lake, spark, tmp_path):
    """The analyst notebook's PNGs, as saved by the local runner, on a page beside the notebook's output."""
    conf, report = pipeline_lake
    out = tmp_path / "analyst"
    run = run_notebook(PROJECT_ROOT / "notebooks" / "analyst_recommendations.py", out, spark=spark,
                       params={"conf": "conf/test.yml", "lake": conf["lake"]["root"]})
    assert len(run.figures) == 3
    gallery = out / "index.html"
    gallery.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><h1>analyst_recommendations"
                       "</h1>" + "".join(f'<figure><img alt="{p.stem}" src="{p.name}"></figure>' for p in run.figures)
                       + f"<pre>{html.escape(run.output)}</pre></body></html>", encoding="utf-8")
    page = dump_dom(chromium, gallery, tmp_path / "profile")

    assert [image["alt"] for image in page.images] == [p.stem for p in run.figures]
    for image, png in zip(page.images, run.figures):
        _decoded_as_file(image, png)
    text = "".join(page.text)
    assert f"ndcg@10={fmt(report.metrics['model']['ndcg@10'])}" in text  # the metrics cell's figure
    assert f"run {report.run_id}" in text
    pixels = screenshot(chromium, gallery, tmp_path / "profile")
    assert _painted(pixels, MATPLOTLIB_BLUE) > 500  # the NDCG bars are painted, not just referenced
