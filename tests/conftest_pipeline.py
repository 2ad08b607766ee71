"""One small pipeline run shared by the end-to-end, ops, notebook, browser and ablation tests (imported by each,
so a single pytest session builds the lake once; run alone, each file builds it once).

The lake is the test configuration (conf/test.yml) with fewer epochs and ALS iterations, so that the whole
pipeline stays within a few minutes on 2 cores."""
from __future__ import annotations

from pathlib import Path

import pytest

from socialrec.config import deep_merge

FAST = {
    "train": {"epochs": 2, "valid_users": 200},
    "evaluate": {"als": {"iterations": 3, "rank": 8}},
}

_BUILT: dict = {}


def build_lake(conf: dict, root) -> tuple[dict, object]:
    from socialrec.pipeline import run_pipeline

    if "run" not in _BUILT:
        lake_conf = deep_merge(conf, {**FAST, "lake": {"root": str(root)}})
        _BUILT["lines"] = []
        report = run_pipeline(lake_conf, progress=_BUILT["lines"].append)
        _BUILT["run"] = (lake_conf, report)
    return _BUILT["run"]


def lake_folder(conf: dict, setting: str) -> Path:
    """A working folder of the lake (reports, checkpoints) as the pipeline laid it out."""
    return Path(conf["lake"]["root"]) / conf["lake"][setting]


def progress_lines() -> list[str]:
    """The progress lines the shared run printed."""
    return _BUILT["lines"]


@pytest.fixture(scope="session")
def pipeline_lake(spark, conf, tmp_path_factory):
    """(conf pointed at the lake, RunReport) of a finished end-to-end run."""
    return build_lake(conf, tmp_path_factory.mktemp("ops_lake") / "lake")
