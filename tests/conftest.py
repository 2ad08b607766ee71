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
def lake_conf(conf, tmp_path):
    """The test configuration pointed at an empty lake of its own."""
    from socialrec.config import deep_merge

    return deep_merge(conf, {"lake": {"root": str(tmp_path / "lake")}})
