"""Shared fixtures: one local SparkSession with Delta for the whole run, and the test configuration."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from socialrec.config import PROJECT_ROOT, load_config

DATASETS_DIR = Path(os.environ.get("SOCIALREC_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def conf():
    return load_config(PROJECT_ROOT / "conf" / "test.yml")


@pytest.fixture(scope="session")
def spark(conf):
    from socialrec.io.spark_session import get_spark

    session = get_spark(conf)
    yield session
    session.stop()


@pytest.fixture()
def cached_rdds(spark):
    """The ids of the persisted RDDs other than Delta's own cache of each table's log state: a stage that leaves
    one behind holds memory and disk (and the shuffle files behind it) through every later stage. Tests compare
    ids, not counts: an RDD an earlier test left (ALS keeps its factors) may be freed by the JVM's cleaner at
    any moment, which made a count comparison fail in CI."""
    def persisted_ids() -> frozenset[int]:
        persisted = spark.sparkContext._jsc.getPersistentRDDs().values()
        return frozenset(rdd.id() for rdd in persisted if not str(rdd.name()).startswith("Delta Table State"))
    return persisted_ids


@pytest.fixture(autouse=True)
def _release_finished_lakes():
    """After each test, drop the Delta logs and cached frames of the lakes it made. Every test writes a lake of
    its own, and Delta keeps a snapshot of each table it touched (up to an hour): over a whole suite in one
    session that fills the driver's heap (old gen at 1.9 of 2 GB by the late tests, then GC storms; a CI run
    stalled 41 min and lost its JVM)."""
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.catalog.clearCache()
        session._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.fixture()
def lake_conf(conf, tmp_path):
    """The test configuration pointed at an empty lake of its own."""
    from socialrec.config import deep_merge

    return deep_merge(conf, {"lake": {"root": str(tmp_path / "lake")}})
