"""One SparkSession with Delta Lake, wired to this environment's Python and the cached Delta jars."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from socialrec.config import PROJECT_ROOT


def delta_jars() -> list[str]:
    """The Delta jars fetched by scripts/setup_env.sh (SOCIALREC_JARS overrides the folder)."""
    folder = Path(os.environ.get("SOCIALREC_JARS", PROJECT_ROOT / ".jars"))
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    if not jars:
        raise RuntimeError(
            f"no Delta Lake jars in {folder}: run `make setup` (scripts/setup_env.sh fetches them from Maven Central)"
        )
    return jars


def get_spark(conf: dict) -> SparkSession:
    """Return the active session or build a local one; on Databricks the cluster's session is used as is."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    spark_conf = conf["spark"]
    # Workers must run this environment's interpreter, or pandas UDFs fail with ModuleNotFoundError.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(spark_conf["master"])
        .appName(spark_conf["app_name"])
        .config("spark.jars", ",".join(delta_jars()))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(spark_conf["shuffle_partitions"]))
        .config("spark.driver.memory", spark_conf["driver_memory"])
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(spark_conf["arrow_batch_size"]))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.adaptive.enabled", "true")
        # petastorm reads the Parquet files of a snapshot directly: keep deletion vectors off.
        .config("spark.databricks.delta.properties.defaults.enableDeletionVectors", "false")
        .config("spark.driver.extraJavaOptions", "-Dlog4j.rootLogger=ERROR")
    )
    for key, value in (spark_conf.get("conf") or {}).items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
