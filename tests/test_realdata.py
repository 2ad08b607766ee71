"""Real public datasets through the adapters and the pipeline. The small FilmTrust set runs its ETL in the
default suite; the full pipeline on every dataset is opt-in (`make test-realdata`, marker `realdata`)."""
import pytest

from socialrec.config import PROJECT_ROOT, deep_merge, load_config
from socialrec.pipeline import run_pipeline

from conftest import DATASETS_DIR

needs_datasets = pytest.mark.skipif(not DATASETS_DIR.is_dir(),
                                    reason=f"datasets folder {DATASETS_DIR} not found (set SOCIALREC_DATASETS)")
DATASETS = ["filmtrust", "lastfm-hetrec2011", "amazon-beauty", "yelp-diffnet", "ciao", "epinions"]


def _realdata_conf(tmp_path, **overrides):
    conf = load_config(PROJECT_ROOT / "conf" / "realdata.yml")
    return deep_merge(conf, {"lake": {"root": str(tmp_path / "lake")}, **overrides})


@needs_datasets
def test_filmtrust_etl_reconciles_exactly(spark, tmp_path):
    conf = _realdata_conf(tmp_path, spark=load_config(PROJECT_ROOT / "conf" / "test.yml")["spark"])
    report = run_pipeline(conf, source=str(DATASETS_DIR / "filmtrust"), stages=["ingest", "clean", "features"],
                          progress=lambda _: None)
    clean = report.stages["clean"]
    assert report.stages["ingest"]["rows_in"] == 35_497 + 1_853
    for table in clean["tables"].values():
        assert table["rows_in"] == table["rows_out"] + table["rows_quarantined"] + table["rows_duplicates"]
    assert clean["quarantine_by_rule"] == {"social.dangling_edge": 221}  # trust links to users without ratings
    assert report.tables["gold.user_sequences"]["rows"] == 1_508


@needs_datasets
@pytest.mark.realdata
@pytest.mark.parametrize("dataset", DATASETS)
def test_whole_pipeline_on_real_dataset(spark, tmp_path, dataset):
    conf = _realdata_conf(tmp_path)
    report = run_pipeline(conf, source=str(DATASETS_DIR / dataset), progress=print)
    assert report.status == "ok"
    for table in report.stages["clean"]["tables"].values():
        assert table["rows_in"] == table["rows_out"] + table["rows_quarantined"] + table["rows_duplicates"]
    assert set(report.metrics) >= {"model", "popularity"}
