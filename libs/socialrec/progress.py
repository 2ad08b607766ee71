"""Operator progress for `socialrec run`: which stage of how many, and for every committed table which table, how
many rows and how long. Lines go to stdout (the log a scheduler keeps); only on a terminal is a text bar
(`[###-------] 3/8 stages`) also drawn on stderr, redrawn in place under the lines, since in a log file a bar
is noise. Dependency-free: the jobs run on cluster drivers and in CI where nothing else is installed."""
from __future__ import annotations

import sys

CLEAR = "\r\x1b[K"  # back to the line start and erase it: the bar is redrawn in place


def bar(done: int, total: int, width: int = 10) -> str:
    """`[###-------] 3/8 stages`: rounded down, so a full bar means every stage finished."""
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} stages"


def table_line(table: str, rows: int, seconds: float, version=None, changed: int | None = None) -> str:
    """One committed table: `  wrote silver.events: 116,008 rows in 3.2s (v3)`; a MERGE also says how many
    rows it inserted or updated, which is what differs from the batch's size on a re-run."""
    verb, extra = ("merged", f" ({changed:,} inserted or updated)") if changed is not None else ("wrote", "")
    tail = f" (v{version})" if version is not None else ""
    return f"  {verb} {table}: {rows:,} rows{extra} in {seconds:.1f}s{tail}"


class Console:
    """The command line's progress sink: callable with a line (as `run_pipeline(progress=...)` expects), plus
    `stage(done, total, name)` for the bar, drawn only when stderr is a terminal."""

    def __init__(self, out=None, err=None, tty: bool | None = None):
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.tty = self.err.isatty() if tty is None else tty
        self.status = ""

    def __call__(self, line: str) -> None:
        self._erase()
        print(line, file=self.out, flush=True)
        self._draw()

    def stage(self, done: int, total: int, name: str = "") -> None:
        self._erase()
        self.status = bar(done, total) + (f": {name}" if name else "")
        self._draw()

    def close(self) -> None:
        """Erase the bar, so the closing summary and errors start on a clean line."""
        self._erase()
        self.status = ""

    def _erase(self) -> None:
        if self.tty and self.status:
            self.err.write(CLEAR)
            self.err.flush()

    def _draw(self) -> None:
        if self.tty and self.status:
            self.err.write(self.status)
            self.err.flush()
