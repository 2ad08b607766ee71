"""SQL over the lake's Delta tables by logical name, with or without Spark.

One query runs on either engine and comes back as pandas:

- `spark`: each table the query names is registered as a temp view from `Lake.read` and the query runs in
  `spark.sql` (local paths and Unity Catalog tables alike);
- `deltalake`: each table is opened with delta-rs (`deltalake.DeltaTable(path)`) and handed to an in-process
  DuckDB as an Arrow dataset, so an analyst can query a local lake without a JVM.

    sql = LakeSQL(conf, spark=spark)   # engine="auto": spark when a session is given or active, else deltalake
    sql.query("SELECT count(*) AS n FROM gold.recommendations WHERE user_key = :user", user="u1")

Write SQL that both dialects accept: logical table names (`gold.recommendations`) bare, identifiers that are
keywords in backticks (`` `table` ``), values as `:name` parameters (never pasted into the text), string
literals in single quotes. Only names the lake knows (`lake.tables`) are rewritten, so `r.user_key` and
literals stay as written.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable

import numpy as np
import pandas as pd

from socialrec.io.tables import Lake

ENGINES = ("auto", "spark", "deltalake")

# Strings, comments and quoted identifiers are copied untouched; only bare dotted names and :params are looked at.
_TOKENS = re.compile(r"""
      (?P<string>'(?:[^']|'')*')
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<backtick>`(?:[^`]|``)*`)
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<param>(?<![:\w]):(?P<param_name>[A-Za-z_]\w*))
    | (?P<name>(?<![\w.$])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)
""", re.VERBOSE | re.DOTALL)


class TableMissing(LookupError):
    """A table the query names has no Delta table at its location (not written yet, or the wrong lake)."""

    def __init__(self, name: str, location: str, detail: str = ""):
        self.name, self.location = name, location
        super().__init__(f"table {name} not found at {location}: no Delta table there (has the stage that "
                         f"writes it run on this lake?){' - ' + detail if detail else ''}")


def view_name(table: str) -> str:
    """`gold.recommendations` -> `gold__recommendations`: one identifier that needs no quoting in either engine."""
    return table.replace(".", "__")


def rewrite(sql: str, tables: Iterable[str], dialect: str = "spark") -> tuple[str, list[str]]:
    """The query with every bare logical table name of `tables` replaced by its view name, and the names used
    (in order of appearance). For `dialect="duckdb"` also `` `x` `` -> `"x"` and `:p` -> `$p`. A dotted chain
    counts as a table only when it starts with a known name (`gold.recommendations.user_key` qualifies a column);
    `cat.gold.recommendations` or `r.user_key` are left alone."""
    known = set(tables)
    used: list[str] = []

    def replace(match: re.Match) -> str:
        text = match.group(0)
        if match.group("backtick") is not None and dialect == "duckdb":
            return '"' + text[1:-1].replace("``", "`").replace('"', '""') + '"'
        if match.group("param") is not None and dialect == "duckdb":
            return "$" + match.group("param_name")
        if match.group("name") is not None:
            parts = text.split(".")
            for end in range(len(parts), 1, -1):
                table = ".".join(parts[:end])
                if table in known:
                    if table not in used:
                        used.append(table)
                    return ".".join([view_name(table), *parts[end:]])
        return text

    return _TOKENS.sub(replace, sql), used


def parameters(sql: str) -> list[str]:
    """The `:name` parameters the query uses (outside strings, comments and quoted identifiers)."""
    return [m.group("param_name") for m in _TOKENS.finditer(sql) if m.group("param") is not None]


def current_recommendations_sql(source: str) -> str:
    """Each user's rows of the latest run that scored them (by run_date, then run_id, which starts with the run's
    UTC start time): what the user sees now when incremental runs rescored only some users. `source` is a table
    or view name or a parenthesised query over gold.recommendations; Spark SQL and DuckDB both run the result
    (scoring.current_recommendations and the analyst notebook share this one definition)."""
    return f"""SELECT r.* FROM {source} r
JOIN (SELECT user_key, run_date, run_id
      FROM (SELECT user_key, run_date, run_id,
                   row_number() OVER (PARTITION BY user_key ORDER BY run_date DESC, run_id DESC) AS _latest
            FROM (SELECT DISTINCT user_key, run_date, run_id FROM {source} s) runs) ranked
      WHERE _latest = 1) latest
  ON r.user_key = latest.user_key AND r.run_date = latest.run_date AND r.run_id = latest.run_id"""


class LakeSQL:
    """Runs SQL over the lake's tables (by logical name) on Spark or on delta-rs + DuckDB."""

    def __init__(self, conf: dict, spark=None, engine: str = "auto"):
        self.conf = conf
        self.engine = choose_engine(engine, spark)
        if self.engine == "spark" and spark is None:
            spark = _active_spark()
        self.spark = spark if self.engine == "spark" else None
        self.lake = Lake(self.spark, conf)
        self._duckdb = None

    # -- the interface ----------------------------------------------------------------------------------------

    def query(self, sql: str, **params) -> pd.DataFrame:
        """The result as pandas, alike on both engines: arrays as lists, timestamps as naive UTC, dates as
        `datetime.date` (what Spark's toPandas gives)."""
        if self.engine == "spark":
            return _normalise(self._spark_frame(sql, params).toPandas())
        result = self._duckdb_result(sql, params)
        dates = [column[0] for column in result.description if str(column[1]) == "DATE"]
        frame = _normalise(result.df())
        for column in dates:  # as Spark gives them: datetime.date, not a midnight timestamp
            frame[column] = pd.Series([None if pd.isna(v) else v.date() for v in frame[column]], index=frame.index,
                                      dtype=object)
        return frame

    def rows(self, sql: str, **params) -> list[dict]:
        """The result as dicts of plain Python values (lists, None), e.g. to read one user's row."""
        if self.engine == "spark":
            return [_plain_row(row.asDict(recursive=True)) for row in self._spark_frame(sql, params).collect()]
        result = self._duckdb_result(sql, params)
        names = [column[0] for column in result.description]
        return [_plain_row(dict(zip(names, values))) for values in result.fetchall()]

    def first(self, sql: str, **params) -> dict | None:
        found = self.rows(sql, **params)
        return found[0] if found else None

    # -- engines ----------------------------------------------------------------------------------------------

    def _prepare(self, sql: str, params: dict, dialect: str) -> tuple[str, list[str], dict]:
        missing = [name for name in parameters(sql) if name not in params]
        if missing:
            raise KeyError(f"query parameter(s) {', '.join(':' + m for m in missing)} not given")
        text, used = rewrite(sql, self.lake.tables, dialect)
        wanted = set(parameters(sql))
        return text, used, {k: _plain(v) for k, v in params.items() if k in wanted}

    def _spark_frame(self, sql: str, params: dict):
        text, used, args = self._prepare(sql, params, "spark")
        for table in used:
            try:
                frame = self.lake.read(table)
            except Exception as error:
                if not self._spark_exists(table):
                    raise TableMissing(table, self.lake.location(table)) from error
                raise
            frame.createOrReplaceTempView(view_name(table))
        return self.spark.sql(text, args=args or None)

    def _spark_exists(self, table: str) -> bool:
        try:
            return self.lake.exists(table)
        except Exception:
            return False

    def _duckdb_result(self, sql: str, params: dict):
        import duckdb

        text, used, args = self._prepare(sql, params, "duckdb")
        if self._duckdb is None:
            self._duckdb = duckdb.connect()
        for table in used:
            self._duckdb.register(view_name(table), self._arrow_source(table))
        return self._duckdb.execute(text, args or None)

    def _arrow_source(self, table: str):
        """The table's current snapshot for DuckDB: a lazy Arrow dataset over its Parquet files (filters and
        columns pushed down). Where the files alone are not the snapshot (deletion vectors, which delta-rs then
        refuses; column mapping, which its dataset would read as NULL columns), the table is read through
        delta-rs' own query engine, which applies them, in full."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaProtocolError, TableNotFoundError

        location = self.lake.location(table)
        if self.lake._is_identifier(location):
            raise ValueError(f"table {table} is the catalog table {location}: the deltalake engine reads Delta "
                             "tables by path only; use engine=spark")
        try:
            delta = DeltaTable(location)
        except TableNotFoundError as error:
            raise TableMissing(table, location, str(error).splitlines()[0] if str(error) else "") from None
        mapping = delta.metadata().configuration.get("delta.columnMapping.mode", "none")
        if mapping != "none":  # the Parquet columns are physical names: a plain dataset reads renamed ones as NULL
            return _read_with_delta_rs(table, location, delta, f"column mapping mode {mapping}")
        try:
            return delta.to_pyarrow_dataset()
        except DeltaProtocolError as refused:  # deletion vectors: the files hold rows the snapshot deleted
            return _read_with_delta_rs(table, location, delta, str(refused))
        except TypeError:
            if not delta.metadata().partition_columns:
                raise
            return _partitioned_dataset(delta, location)


def _partitioned_dataset(delta, location: str):
    """What `to_pyarrow_dataset` builds, for a partitioned table under pyarrow < 16 (delta-rs hands it the
    partition fields through the Arrow C interface, which older pyarrow cannot take): one fragment per file of
    the snapshot's add actions, its partition values (from the log) as the fragment's expression, so pyarrow
    fills the partition columns and DuckDB's filters on them skip files. Reached only after delta-rs checked
    the table's protocol (the files are the snapshot: no deletion vectors) and column mapping was ruled out."""
    import os

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.fs as pa_fs

    schema = pa.schema(delta.schema().to_arrow())
    actions = delta.get_add_actions(flatten=True)
    columns = delta.metadata().partition_columns
    values = {column: actions.column(f"partition.{column}").to_pylist() for column in columns}
    parquet, filesystem = ds.ParquetFileFormat(), pa_fs.LocalFileSystem()
    fragments = []
    for row, path in enumerate(actions.column("path").to_pylist()):
        terms = [pc.field(c).is_null() if values[c][row] is None
                 else pc.field(c) == pa.scalar(values[c][row], schema.field(c).type) for c in columns]
        expression = terms[0]
        for term in terms[1:]:
            expression = expression & term
        fragments.append(parquet.make_fragment(os.path.join(location, path), filesystem=filesystem,
                                               partition_expression=expression))
    return ds.FileSystemDataset(fragments, schema, parquet, filesystem)


def _read_with_delta_rs(table: str, location: str, delta, reason: str):
    """Deletion vectors or column mapping: the whole snapshot through delta-rs' query engine, which applies them
    (materialised, no pushdown), or a clear error where it cannot."""
    import pyarrow as pa
    from deltalake import QueryBuilder

    try:
        stream = QueryBuilder().register("t", delta).execute("SELECT * FROM t")
        reader = (pa.RecordBatchReader.from_stream(stream) if hasattr(pa.RecordBatchReader, "from_stream")
                  else pa.RecordBatchReader._import_from_c_capsule(stream.__arrow_c_stream__()))  # pyarrow 14
        return reader.read_all()
    except Exception as error:
        raise RuntimeError(f"table {table} at {location} cannot be read by delta-rs ({reason}; its query engine: "
                           f"{error}): use engine=spark") from error


def choose_engine(engine: str | None, spark=None) -> str:
    """`auto` is spark when a session is given or active in this process, deltalake otherwise."""
    engine = (engine or "auto").strip().lower()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "spark" if spark is not None or _active_spark() is not None else "deltalake"
    if engine == "spark" and spark is None and _active_spark() is None:
        raise ValueError("engine=spark needs a SparkSession (none given or active); use engine=deltalake")
    return engine


def _active_spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def _plain(value):
    """numpy scalars and arrays as Python values: what Spark's literal conversion and DuckDB both accept."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain_row(row: dict) -> dict:
    return {key: _plain_value(value) for key, value in row.items()}


def _plain_value(value):
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    if isinstance(value, datetime) and value.tzinfo is not None:
        return pd.Timestamp(value).tz_convert("UTC").tz_localize(None).to_pydatetime()
    if value is pd.NA or value is pd.NaT:
        return None
    return _plain(value)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        series = frame[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            frame[column] = series.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        elif pd.api.types.is_datetime64_dtype(series.dtype):
            frame[column] = series.astype("datetime64[ns]")
        elif series.dtype == object:
            frame[column] = pd.Series([_plain_value(v) for v in series], index=frame.index, dtype=object)
    return frame
