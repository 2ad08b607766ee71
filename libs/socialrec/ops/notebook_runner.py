"""Run a Databricks source-format notebook (`# Databricks notebook source`, cells separated by
`# COMMAND ----------`) locally: every cell in one namespace that holds `spark` (socialrec's session, or None
with `--no-spark`), a `display` that prints, and no `dbutils` (so the widget shim reads env vars / defaults).
After each cell, every open matplotlib figure is saved as PNG into the output folder and closed.

    python -m socialrec.ops.notebook_runner notebooks/analyst_recommendations.py --out /tmp/nb \\
        --param lake=/tmp/lake --param conf=conf/test.yml
    python -m socialrec.ops.notebook_runner notebooks/analyst_recommendations.py --out /tmp/nb \\
        --param lake=/tmp/lake --param engine=deltalake --no-spark     # no JVM started
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
START_SPARK = "start"  # run_notebook's default `spark`: get (or build) socialrec's session


def split_cells(text: str) -> list[str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"not a Databricks source notebook: the first line must be {HEADER!r}")
    cells, current = [], []
    for line in lines[1:]:
        if line.strip() == SEPARATOR:
            cells.append("\n".join(current))
            current = []
        else:
            current.append(line)
    cells.append("\n".join(current))
    return [cell for cell in cells if cell.strip()]


def is_magic(cell: str) -> bool:
    """`# MAGIC %md` / `%pip` / `%sql` cells: Databricks renders or runs them; locally they are skipped."""
    code = [line for line in cell.splitlines() if line.strip()]
    return bool(code) and all(line.startswith("# MAGIC") for line in code)


@dataclass
class NotebookRun:
    namespace: dict
    output: str
    figures: list[Path] = field(default_factory=list)
    cells_run: int = 0


def _display(obj, *args, **kwargs) -> None:
    """Databricks' display(), as text: Spark and pandas frames as a table, figures are left to the runner."""
    try:
        from pyspark.sql import DataFrame

        if isinstance(obj, DataFrame):
            obj = obj.limit(50).toPandas()
    except ImportError:
        pass
    if hasattr(obj, "to_string"):
        print(obj.to_string(max_rows=50))
    elif obj.__class__.__name__ == "Figure":
        return
    else:
        print(obj)


def run_notebook(path: str | Path, out_dir: str | Path, spark=START_SPARK, params: dict | None = None,
                 conf: dict | None = None, echo: bool = False) -> NotebookRun:
    """Execute the notebook cell by cell; `params` become the widget shim's env vars for the run. `spark`: a
    session to use, None to run without Spark (the notebook's `spark` is None), or by default socialrec's
    session for `conf`. A failing cell raises with the cell number in the traceback's file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(spark, str) and spark == START_SPARK:
        from socialrec.config import load_config
        from socialrec.io.spark_session import get_spark

        spark = get_spark(conf or load_config())
    from socialrec.ops.widgets import ENV_PREFIX

    saved_env = {}
    for key, value in (params or {}).items():
        env = ENV_PREFIX + key.upper()
        saved_env[env] = os.environ.get(env)
        os.environ[env] = str(value)
    namespace = {"__name__": "__main__", "__file__": str(path), "spark": spark, "display": _display}
    run = NotebookRun(namespace=namespace, output="")
    buffer = io.StringIO()
    plt.close("all")
    try:
        for number, cell in enumerate(split_cells(path.read_text()), 1):
            if is_magic(cell):
                continue
            with contextlib.redirect_stdout(_Tee(buffer, sys.stdout) if echo else buffer), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
                exec(compile(cell, f"{path.name}[cell {number}]", "exec"), namespace)
            run.cells_run += 1
            for index, num in enumerate(plt.get_fignums(), 1):
                target = out_dir / f"{path.stem}_cell{number:02d}_{index}.png"
                plt.figure(num).savefig(target, dpi=80)
                run.figures.append(target)
            plt.close("all")
    finally:
        run.output = buffer.getvalue()
        (out_dir / f"{path.stem}.out.txt").write_text(run.output)
        for env, value in saved_env.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
    return run


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m socialrec.ops.notebook_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook")
    parser.add_argument("--out", required=True, help="folder for the figures (PNG) and the cell output")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--conf", help="config for the Spark session (default conf/local.yml)")
    parser.add_argument("--no-spark", action="store_true", help="start no Spark session: the notebook's "
                        "`spark` is None (e.g. with --param engine=deltalake)")
    args = parser.parse_args(argv)
    from socialrec.config import load_config

    params = dict(pair.split("=", 1) for pair in args.param)
    run = run_notebook(args.notebook, args.out, spark=None if args.no_spark else START_SPARK, params=params,
                       conf=load_config(args.conf), echo=True)
    print(f"\n{run.cells_run} cells run; figures: " + ", ".join(str(p) for p in run.figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
