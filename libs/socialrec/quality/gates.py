"""Quality gates: a table is validated against its suite in conf/quality.yml before it is written.

Suites are small declarative YAML, so thresholds live in configuration rather than code; a value may point
into the main config (`value_set_from: clean.event_types`) so an environment changes a limit in one place
and the gate follows. Great Expectations costs ~5 s to import, so it is imported only when a gate first
validates: modules that merely import this one stay fast.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StringType, StructField, StructType, TimestampType

from socialrec.config import PROJECT_ROOT, ConfigError

SAMPLE_SIZE = 5
LENGTH_COLUMN_PREFIX = "__length_of_"  # temporary column holding size(array) for array_length_between


@dataclass(frozen=True)
class _Kind:
    """What an expectation kind accepts in YAML.

    columns: "each" (one expectation per named column), "key" (one expectation over all named columns, a
    compound key) or None (table-level, no column).
    """

    columns: str | None
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    bounded: bool = False  # needs `min`, `max` or both


KINDS: dict[str, _Kind] = {
    "columns_exist": _Kind("each"),
    "not_null": _Kind("each", optional=frozenset({"mostly"})),
    "in_set": _Kind("each", required=frozenset({"value_set"}), optional=frozenset({"mostly"})),
    "unique": _Kind("key", optional=frozenset({"mostly"})),
    "between": _Kind("each", optional=frozenset({"min", "max", "mostly"}), bounded=True),
    "array_length_between": _Kind("each", optional=frozenset({"min", "max", "mostly"}), bounded=True),
    "row_count_between": _Kind(None, optional=frozenset({"min", "max"}), bounded=True),
}


@dataclass(frozen=True)
class Check:
    """One expectation of a suite, with its references into the main config already resolved."""

    kind: str
    columns: tuple[str, ...]
    args: dict[str, Any]

    @property
    def column(self) -> str | None:
        return ", ".join(self.columns) or None

    def describe(self) -> str:
        """`kind(column=..., arg=...)`: the name used in failure messages and ops.quality_results."""
        if len(self.columns) == 1:
            parts = [f"column={self.columns[0]}"]
        else:
            parts = [f"columns=[{self.column}]"] if self.columns else []
        parts += [f"{key}={json.dumps(value, default=str)}" for key, value in self.args.items()]
        return f"{self.kind}({', '.join(parts)})"


class GateFailed(RuntimeError):
    """A table broke its suite: the message names the table and each failed expectation with sample values.

    failures: the failed result rows; rows: every result row, so the caller can still store them.
    """

    def __init__(self, table: str, failures: list[dict], rows: list[dict]):
        self.table = table
        self.failures = failures
        self.rows = rows
        lines = [f"quality gate failed for {table}: {len(failures)} of {len(rows)} expectations not met"]
        for row in failures:
            sample = f"; unexpected sample: {row['unexpected_sample']}" if row["unexpected_sample"] != "[]" else ""
            lines.append(f"  - {row['expectation']}: observed {row['observed_value']}{sample}")
        super().__init__("\n".join(lines))


@dataclass
class GateResult:
    """The outcome of one validation; `results` holds every expectation's row, passed or not."""

    table: str
    success: bool
    failed: list[dict]
    results: list[dict]  # ops.quality_results rows without their run_id (result_rows adds it)


def results_schema() -> StructType:
    """Schema of ops.quality_results, so the table can be written even from an empty list of rows."""
    return StructType([
        StructField("run_id", StringType()),
        StructField("table", StringType()),
        StructField("expectation", StringType()),
        StructField("column", StringType()),
        StructField("success", BooleanType()),
        StructField("observed_value", StringType()),
        StructField("unexpected_sample", StringType()),
        StructField("validated_at", TimestampType()),
    ])


def config_value(conf: dict, dotted_path: str) -> Any:
    """`clean.event_types` or `clean.rating_range.0` (a number indexes a list) from the main config."""
    node: Any = conf
    for part in str(dotted_path).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted_path)
    return node


def load_suites(path: str | Path, conf: dict) -> dict[str, list[Check]]:
    """Read and check every suite up front, so a typo fails the job at start rather than after hours of work."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"quality suites file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"quality suites file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"quality suites file {path} must map table names to lists of expectations")
    return {table: _parse_suite(table, entries, conf) for table, entries in raw.items()}


def _parse_suite(table: str, entries: Any, conf: dict) -> list[Check]:
    if not isinstance(entries, list):
        raise ConfigError(f"quality suite {table}: expected a list of expectations, got {entries!r}")
    return [check for entry in entries for check in _parse_entry(table, entry, conf)]


def _parse_entry(table: str, entry: Any, conf: dict) -> list[Check]:
    if not isinstance(entry, dict) or "expect" not in entry:
        raise ConfigError(f"quality suite {table}: each expectation needs an `expect` kind, got {entry!r}")
    entry = dict(entry)
    kind_name = entry.pop("expect")
    kind = KINDS.get(kind_name)
    if kind is None:
        raise ConfigError(
            f"quality suite {table}: unknown expectation kind {kind_name!r} (known: {', '.join(sorted(KINDS))})"
        )
    where = f"quality suite {table}, {kind_name}"
    columns = _columns(where, kind, entry)
    args = _resolve_args(where, entry, conf)
    unknown = set(args) - kind.required - kind.optional
    if unknown:
        raise ConfigError(f"{where}: unknown argument(s) {sorted(unknown)}")
    missing = kind.required - set(args)
    if missing:
        raise ConfigError(f"{where}: missing argument(s) {sorted(missing)}")
    if kind.bounded and not {"min", "max"} & set(args):
        raise ConfigError(f"{where}: needs `min`, `max` or both")
    if "value_set" in args and not isinstance(args["value_set"], list):
        raise ConfigError(f"{where}: value_set must be a list, got {args['value_set']!r}")
    if kind.columns == "each":
        return [Check(kind_name, (column,), args) for column in columns]
    return [Check(kind_name, columns, args)]


def _columns(where: str, kind: _Kind, entry: dict) -> tuple[str, ...]:
    column, columns = entry.pop("column", None), entry.pop("columns", None)
    if kind.columns is None:
        if column or columns:
            raise ConfigError(f"{where}: a table-level expectation takes no column")
        return ()
    if bool(column) == bool(columns):
        raise ConfigError(f"{where}: give either `column` or `columns`")
    names = [column] if column else columns
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"{where}: columns must be a list of column names, got {names!r}")
    return tuple(names)


def _resolve_args(where: str, entry: dict, conf: dict) -> dict[str, Any]:
    """Replace each `<arg>_from: dotted.path` with `<arg>: <that value of the main config>`."""
    args = {}
    for key, value in entry.items():
        if not key.endswith("_from"):
            args[key] = value
            continue
        name = key.removesuffix("_from")
        if name in entry:
            raise ConfigError(f"{where}: give `{name}` or `{key}`, not both")
        try:
            args[name] = config_value(conf, value)
        except KeyError:
            raise ConfigError(f"{where}: {key} names {value!r}, which the config does not have") from None
    return args


class QualityGate:
    """Runs a table's suite on a Spark DataFrame with Great Expectations and turns the outcome into rows.

    `spark` is the session the validated DataFrames belong to; GX attaches to that active session itself.
    """

    def __init__(self, spark: SparkSession, conf: dict):
        self.spark = spark
        self.suites = load_suites(PROJECT_ROOT / conf["quality"]["suites_file"], conf)
        self._gx = None
        self._data_source = None
        self._batch_definitions: dict[str, Any] = {}

    def validate(self, table: str, df: DataFrame) -> GateResult:
        if table not in self.suites:
            raise ValueError(f"no quality suite for table {table!r}: every table written needs one in quality.yml")
        checks = self.suites[table]
        # GX computes its metrics in several Spark jobs: cache the input for the run unless the caller did. The
        # length columns are derived from the cached rows, not cached again (a second copy of every array).
        cached_here = not df.is_cached
        if cached_here:
            df = df.persist()
        try:
            # BASIC: counts, without SUMMARY's per-value counts (one more aggregation job per expectation). The
            # sample of unexpected values costs one more job per expectation too, so it is asked for only when a
            # check failed, to show in the message: more values than the sample keeps, so a duplicated value
            # cannot crowd out the others.
            frame = _with_length_columns(df, checks)
            outcome = self._run_suite(table, frame, checks, samples=0)
            if not outcome.success:
                outcome = self._run_suite(table, frame, checks, samples=4 * SAMPLE_SIZE)
        finally:
            if cached_here:
                df.unpersist()
        validated_at = datetime.now(timezone.utc)
        by_index = {result.expectation_config.meta["check"]: result for result in outcome.results}
        rows = [_result_row(table, check, by_index[index], validated_at) for index, check in enumerate(checks)]
        failed = [row for row in rows if not row["success"]]
        return GateResult(table=table, success=not failed, failed=failed, results=rows)

    def _run_suite(self, table: str, frame: DataFrame, checks: list[Check], samples: int):
        return self._batch_definition(table).get_batch(batch_parameters={"dataframe": frame}).validate(
            self._suite(table, checks), result_format={"result_format": "BASIC", "partial_unexpected_count": samples})

    def check(self, table: str, df: DataFrame, run_id: str) -> GateResult:
        """Validate, raising GateFailed (which carries every result row) when any expectation is not met."""
        result = self.validate(table, df)
        if not result.success:
            rows = self.result_rows(result, run_id)
            raise GateFailed(table, [row for row in rows if not row["success"]], rows)
        return result

    def result_rows(self, result: GateResult, run_id: str) -> list[dict]:
        """Rows for ops.quality_results, in its column order."""
        return [{"run_id": run_id, **row} for row in result.results]

    def _batch_definition(self, table: str):
        """One ephemeral GX context per gate, made on first use, with one whole-DataFrame asset per table."""
        if self._data_source is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            # persist=False: GX would cache every DataFrame it sees and never release it; validate() caches
            # for the duration of the run instead.
            self._data_source = context.data_sources.add_spark(name="socialrec", persist=False)
            self._gx = gx
        if table not in self._batch_definitions:
            asset = self._data_source.add_dataframe_asset(name=table)
            self._batch_definitions[table] = asset.add_batch_definition_whole_dataframe(name="whole")
        return self._batch_definitions[table]

    def _suite(self, table: str, checks: list[Check]):
        """The GX suite; each expectation carries its check's index, since GX reorders results."""
        return self._gx.ExpectationSuite(
            name=table,
            expectations=[_expectation(self._gx.expectations, check, {"check": index})
                          for index, check in enumerate(checks)],
        )


def _length_column(column: str) -> str:
    return f"{LENGTH_COLUMN_PREFIX}{column}"


def _with_length_columns(df: DataFrame, checks: list[Check]) -> DataFrame:
    """Add size(array) columns for array_length_between (GX has no array-length expectation).

    A null array gets a null length, which the expectation skips as it skips any null: not_null covers those.
    A missing array column gets no length column, so GX reports the missing column in the result.
    """
    arrays = {check.columns[0] for check in checks if check.kind == "array_length_between"} & set(df.columns)
    if not arrays:
        return df
    return df.withColumns(
        {_length_column(name): F.when(F.col(name).isNotNull(), F.size(name)) for name in sorted(arrays)}
    )


def _expectation(expectations, check: Check, meta: dict):
    """The GX expectation for a check (`expectations` is the lazily imported great_expectations.expectations)."""
    args = check.args
    mostly = {"mostly": args["mostly"]} if "mostly" in args else {}
    bounds = {"min_value": args.get("min"), "max_value": args.get("max")}
    column = check.columns[0] if check.columns else None
    if check.kind == "columns_exist":
        return expectations.ExpectColumnToExist(column=column, meta=meta)
    if check.kind == "not_null":
        return expectations.ExpectColumnValuesToNotBeNull(column=column, meta=meta, **mostly)
    if check.kind == "in_set":
        return expectations.ExpectColumnValuesToBeInSet(column=column, value_set=args["value_set"], meta=meta, **mostly)
    if check.kind == "unique" and len(check.columns) == 1:
        return expectations.ExpectColumnValuesToBeUnique(column=column, meta=meta, **mostly)
    if check.kind == "unique":
        return expectations.ExpectCompoundColumnsToBeUnique(column_list=list(check.columns), meta=meta, **mostly)
    if check.kind == "between":
        return expectations.ExpectColumnValuesToBeBetween(column=column, meta=meta, **bounds, **mostly)
    if check.kind == "array_length_between":
        return expectations.ExpectColumnValuesToBeBetween(
            column=_length_column(column), meta=meta, **bounds, **mostly
        )
    if check.kind == "row_count_between":
        return expectations.ExpectTableRowCountToBeBetween(meta=meta, **bounds)
    raise AssertionError(f"kind {check.kind!r} is in KINDS but has no GX expectation")


def _result_row(table: str, check: Check, result, validated_at: datetime) -> dict:
    """One ops.quality_results row (run_id left for result_rows) from a GX ExpectationValidationResult."""
    details = result.result or {}
    error = _exception_message(result.exception_info or {})
    if error:
        observed = f"error: {error}"
    elif "element_count" in details:
        observed = (
            f"{details.get('unexpected_count', 0)} of {details['element_count']} rows unexpected "
            f"({details.get('unexpected_percent') or 0:.2f}% of the values checked)"
        )
    elif "observed_value" in details:
        observed = json.dumps(details["observed_value"], default=str)
    elif check.kind == "columns_exist":
        observed = "present" if result.success else "missing"
    else:
        observed = ""
    return {
        "table": table,
        "expectation": check.describe(),
        "column": check.column,
        "success": bool(result.success),
        "observed_value": observed,
        "unexpected_sample": json.dumps(_distinct(details.get("partial_unexpected_list") or []), default=str),
        "validated_at": validated_at,
    }


def _exception_message(info: dict) -> str | None:
    """GX reports an error either at the top level or keyed by the metric that raised it."""
    for report in [info, *info.values()]:
        if isinstance(report, dict) and report.get("raised_exception"):
            return report.get("exception_message")
    return None


def _distinct(values: list) -> list:
    """The first few distinct values, so a repeated duplicate key does not fill the whole sample."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True, default=str), value)
    return list(seen.values())[:SAMPLE_SIZE]
