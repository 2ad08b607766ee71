"""Quality gates with real Spark and real Great Expectations: passing data, each expectation kind failing on
crafted bad data, tolerances, values taken from the main config, and the rows stored in ops.quality_results."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from socialrec.config import PROJECT_ROOT, deep_merge
from socialrec.quality.gates import GateFailed, QualityGate, results_schema

EVENT_COLUMNS = "event_id string, user_key string, item_id string, event_type string, rating double, items array<int>"
SUITES = {
    "t.events": [
        {"expect": "columns_exist", "columns": ["event_id", "user_key", "event_type", "rating", "session_id"]},
        {"expect": "not_null", "column": "user_key"},
        {"expect": "in_set", "column": "event_type", "value_set_from": "clean.event_types"},
        {"expect": "unique", "columns": ["event_id"]},
        {"expect": "unique", "columns": ["user_key", "item_id"]},
        {"expect": "between", "column": "rating", "min_from": "clean.rating_range.0",
         "max_from": "clean.rating_range.1"},
        {"expect": "row_count_between", "min": 1, "max": 5},
        {"expect": "array_length_between", "column": "items", "min_from": "features.max_seq_len",
         "max_from": "features.max_seq_len"},
    ],
    "t.mostly": [{"expect": "between", "column": "rating", "min": 0, "max": 5, "mostly": 0.75}],
    "t.types": [{"expect": "in_set", "column": "event_type", "value_set_from": "clean.event_types"}],
}


def gate_with_suites(spark, conf, folder, suites, overrides=None) -> QualityGate:
    path = folder / "quality.yml"
    path.write_text(yaml.safe_dump(suites, sort_keys=False))
    return QualityGate(spark, deep_merge(conf, {"quality": {"suites_file": str(path)}, **(overrides or {})}))


@pytest.fixture(scope="module")
def gate(spark, conf, tmp_path_factory):
    return gate_with_suites(spark, conf, tmp_path_factory.mktemp("suites"), SUITES)


@pytest.fixture(scope="module")
def full_items(conf):
    return [1] * conf["features"]["max_seq_len"]


@pytest.fixture(scope="module")
def good_events(spark, full_items):
    rows = [
        ("e1", "u1", "i1", "view", 4.0, full_items, "s1"),
        ("e2", "u1", "i2", "click", None, full_items, "s1"),
        ("e3", "u2", "i1", "purchase", 5.0, full_items, "s2"),
        ("e4", "u3", "i3", "cart", 0.0, full_items, "s3"),
        ("e5", "u3", "i4", "rating", 2.5, None, "s3"),  # a null array is left to not_null
    ]
    return spark.createDataFrame(rows, EVENT_COLUMNS + ", session_id string")


@pytest.fixture(scope="module")
def bad_events(spark, full_items):
    """Breaks every expectation of t.events exactly once (and has no session_id column)."""
    rows = [
        ("e1", "u1", "i1", "view", 4.0, full_items),
        ("e1", "u1", "i2", "click", None, full_items),        # duplicate event_id
        ("e3", None, "i1", "purchase", 5.0, full_items),      # null user_key
        ("e4", "u2", "i9", "teleport", 0.0, full_items),      # unknown event type
        ("e5", "u2", "i9", "cart", 9.5, [1, 2, 3]),           # duplicate (user, item), rating and length out of range
        ("e6", "u3", "i4", "rating", 2.5, full_items),        # sixth row: more than the suite's max of 5
    ]
    return spark.createDataFrame(rows, EVENT_COLUMNS)


@pytest.fixture(scope="module")
def bad_failure(gate, bad_events):
    with pytest.raises(GateFailed) as info:
        gate.check("t.events", bad_events, run_id="run-bad")
    return info.value


def test_good_frame_passes(gate, good_events):
    result = gate.check("t.events", good_events, run_id="run-good")

    assert result.success and result.failed == []
    assert len(result.results) == len(gate.suites["t.events"]) == 12
    assert all(row["success"] for row in result.results)


# kind -> (the expectation as named in messages and rows, its column, what the message must show)
EXPECTED_FAILURES = {
    "columns_exist": ("columns_exist(column=session_id)", "session_id", "missing"),
    "not_null": ("not_null(column=user_key)", "user_key", "[null]"),
    "in_set": ('in_set(column=event_type, value_set=["view", "click", "cart", "purchase", "rating", "review", '
               '"like", "share"])', "event_type", '["teleport"]'),
    "unique": ("unique(column=event_id)", "event_id", '["e1"]'),
    "unique_compound": ("unique(columns=[user_key, item_id])", "user_key, item_id", '"i9"'),
    "between": ("between(column=rating, min=0.0, max=5.0)", "rating", "[9.5]"),
    "row_count_between": ("row_count_between(min=1, max=5)", None, "6"),
    "array_length_between": ("array_length_between(column=items, min=50, max=50)", "items", "[3]"),
}


@pytest.mark.parametrize("kind", EXPECTED_FAILURES)
def test_each_kind_fails_on_bad_frame_with_named_samples(bad_failure, kind):
    expectation, column, shown = EXPECTED_FAILURES[kind]
    message = str(bad_failure)
    [row] = [row for row in bad_failure.failures if row["expectation"] == expectation]

    assert row["column"] == column and row["success"] is False and row["run_id"] == "run-bad"
    assert message.startswith("quality gate failed for t.events")
    line = next(line for line in message.splitlines() if expectation in line)
    assert shown in line


def test_only_the_broken_expectations_fail(bad_failure):
    assert bad_failure.table == "t.events"
    assert {row["expectation"] for row in bad_failure.failures} == {e for e, _, _ in EXPECTED_FAILURES.values()}
    assert len(bad_failure.rows) == 12  # every result comes with the exception, for storage


def test_unexpected_samples_are_json_lists_of_distinct_values(bad_failure):
    samples = {row["expectation"]: json.loads(row["unexpected_sample"]) for row in bad_failure.rows}

    assert samples["unique(column=event_id)"] == ["e1"]  # two offending rows, one distinct value
    assert {"user_key": "u2", "item_id": "i9"} in samples["unique(columns=[user_key, item_id])"]
    assert all(isinstance(sample, list) and len(sample) <= 5 for sample in samples.values())


def test_mostly_tolerates_a_share_of_bad_values(gate, spark):
    def frame(ratings):
        return spark.createDataFrame([(r,) for r in ratings], "rating double")

    assert gate.validate("t.mostly", frame([1.0, 2.0, 3.0, 9.0])).success  # 75 % in range
    failed = gate.validate("t.mostly", frame([1.0, 2.0, 8.0, 9.0]))  # 50 % in range
    assert not failed.success
    assert failed.failed[0]["observed_value"].startswith("2 of 4 rows unexpected")


def test_value_sets_come_from_the_main_config(spark, conf, tmp_path, gate):
    odd_types = ["teleport", "wink", "nudge", "poke", "stare", "wave", "shrug"]
    frame = spark.createDataFrame([(t,) for t in ["view", *odd_types]], "event_type string")

    rejected = gate.validate("t.types", frame)
    assert not rejected.success
    assert len(json.loads(rejected.failed[0]["unexpected_sample"])) == 5  # a sample, not all seven

    widened = gate_with_suites(spark, conf, tmp_path, SUITES,
                               {"clean": {"event_types": conf["clean"]["event_types"] + odd_types}})
    assert widened.validate("t.types", frame).success


def test_result_rows_fit_the_ops_table_schema(spark, bad_failure):
    schema = results_schema()
    stored = spark.createDataFrame(bad_failure.rows, schema)

    assert [f.name for f in schema] == ["run_id", "table", "expectation", "column", "success", "observed_value",
                                        "unexpected_sample", "validated_at"]
    assert list(bad_failure.rows[0]) == stored.columns
    assert stored.filter("not success").count() == len(bad_failure.failures) == 8
    assert spark.createDataFrame([], schema).count() == 0


def test_result_rows_carry_the_run_id(gate, good_events):
    result = gate.validate("t.events", good_events)
    rows = gate.result_rows(result, "run-7")

    assert [row["run_id"] for row in rows] == ["run-7"] * len(result.results)
    assert {row["table"] for row in rows} == {"t.events"}


def test_missing_array_column_is_a_failed_expectation_not_a_crash(gate, good_events):
    result = gate.validate("t.events", good_events.drop("items"))

    [row] = result.failed
    assert row["expectation"].startswith("array_length_between(column=items")
    assert row["observed_value"].startswith("error:") and "items" in row["observed_value"]


def test_table_without_suite_is_refused(gate, good_events):
    with pytest.raises(ValueError, match="silver.nowhere"):
        gate.validate("silver.nowhere", good_events)


@pytest.mark.parametrize("entry, error", [
    ({"expect": "looks_fine", "column": "x"}, r"t\.broken.*unknown expectation kind 'looks_fine'"),
    ({"expect": "between", "column": "x", "minimum": 1}, r"t\.broken, between: unknown argument.*minimum"),
    ({"expect": "between", "column": "x"}, r"t\.broken, between: needs `min`, `max` or both"),
    ({"expect": "in_set", "column": "x", "value_set_from": "clean.no_such_key"}, r"clean\.no_such_key"),
    ({"expect": "in_set", "column": "x", "value_set_from": "clean.event_type_aliases"}, "must be a list"),
    ({"expect": "row_count_between", "column": "x", "min": 1}, "table-level"),
])
def test_bad_suites_fail_at_load_time(spark, conf, tmp_path, entry, error):
    with pytest.raises(ValueError, match=error):
        gate_with_suites(spark, conf, tmp_path, {"t.broken": [entry]})


def test_project_suites_cover_every_table_and_pass_good_data(spark, conf, good_events):
    gate = QualityGate(spark, conf)
    written_tables = {name for name in conf["lake"]["tables"] if not name.startswith("ops.")}

    assert written_tables <= set(gate.suites)
    events = good_events.drop("items").selectExpr(
        "*", "cast(null as string) as review_text", "'b1' as _batch_id", "current_timestamp() as ts"
    )
    result = gate.validate("silver.events", events)
    assert result.success, result.failed


def test_importing_gates_leaves_great_expectations_unloaded():
    code = "import sys, socialrec.quality.gates; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "False"
