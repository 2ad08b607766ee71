"""One small pipeline run shared by tests/test_ops.py and tests/test_notebooks.py (imported by both, so a
single pytest session builds the lake once; run alone, each file builds it once).

The lake is the test configuration (conf/test.yml) with a smaller synthetic source and fewer epochs/ALS
iterations, so that each of those test files stays within a few minutes on 2 cores."""
from __future__ import annotations

import pytest

from socialrec.config import deep_merge

FAST = {
    "generator": {"users": 200, "items": 100, "files": 2},
    "train": {"epochs": 2, "valid_users": 200},
    "evaluate": {"als": {"iterations": 3, "rank": 8}},
}

_BUILT: dict = {}


def build_lake(conf: dict, root) -> tuple[dict, object]:
    from socialrec.pipeline import run_pipeline

    if "run" not in _BUILT:
        lake_conf = deep_merge(conf, {**FAST, "lake": {"root": str(root)}})
        report = run_pipeline(lake_conf, progress=lambda line: None)
        _BUILT["run"] = (lake_conf, report)
    return _BUILT["run"]


@pytest.fixture(scope="session")
def pipeline_lake(spark, conf, tmp_path_factory):
    """(conf pointed at the lake, RunReport) of a finished end-to-end run."""
    return build_lake(conf, tmp_path_factory.mktemp("ops_lake") / "lake")
