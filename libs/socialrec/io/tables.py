"""The lake: logical table names from config mapped to Delta paths (local) or catalog tables (Databricks)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession


class Lake:
    """Reads and writes the pipeline's Delta tables by logical name (`silver.events`)."""

    def __init__(self, spark: SparkSession, conf: dict):
        self.spark = spark
        self.root = str(Path(conf["lake"]["root"]).resolve()) if conf["lake"]["root"] else None
        self.tables: dict[str, str] = conf["lake"]["tables"]
        self.conf = conf

    def location(self, name: str) -> str:
        """A filesystem path under the lake root, or a `catalog.schema.table` identifier."""
        if name not in self.tables:
            raise KeyError(f"unknown table {name!r}: add it to lake.tables in the config")
        target = self.tables[name]
        return target if self._is_identifier(target) else str(Path(self.root) / target)

    def directory(self, setting: str) -> Path:
        """A working folder under the lake root (reports, checkpoints, staging)."""
        path = Path(self.root) / self.conf["lake"][setting]
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _is_identifier(target: str) -> bool:
        return "/" not in target and target.count(".") == 2

    def exists(self, name: str) -> bool:
        target = self.location(name)
        if self._is_identifier(target):
            return self.spark.catalog.tableExists(target)
        return DeltaTable.isDeltaTable(self.spark, target)

    def read(self, name: str) -> DataFrame:
        target = self.location(name)
        if self._is_identifier(target):
            return self.spark.read.table(target)
        return self.spark.read.format("delta").load(target)

    def delta(self, name: str) -> DeltaTable:
        target = self.location(name)
        if self._is_identifier(target):
            return DeltaTable.forName(self.spark, target)
        return DeltaTable.forPath(self.spark, target)

    def write(self, name: str, df: DataFrame, mode: str = "overwrite", partition_by: list[str] | None = None,
              replace_where: str | None = None, files: int | None = None) -> int:
        """Commit `df` to the table as one Delta transaction and return the new version."""
        if files:
            df = df.repartition(files)
        writer = df.write.format("delta").mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true") if not replace_where else writer
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        target = self.location(name)
        if self._is_identifier(target):
            writer.saveAsTable(target)
        else:
            writer.save(target)
        return self.version(name)

    def merge(self, name: str, df: DataFrame, keys: list[str], update_existing: bool = False) -> int:
        """Upsert `df` on natural `keys` in one Delta commit (insert-only unless `update_existing`), so a batch
        applied twice changes nothing; a missing table is created from `df`. Returns the new version."""
        if not self.exists(name):
            return self.write(name, df)
        condition = " AND ".join(f"target.`{key}` <=> batch.`{key}`" for key in keys)
        merge = self.delta(name).alias("target").merge(df.alias("batch"), condition)
        if update_existing:
            merge = merge.whenMatchedUpdateAll()
        merge.whenNotMatchedInsertAll().execute()
        return self.version(name)

    def last_commit_metrics(self, name: str) -> dict:
        row = self.delta(name).history(1).select("operation", "operationMetrics").first()
        return {"operation": row["operation"], **{k: int(v) for k, v in (row["operationMetrics"] or {}).items()
                                                   if str(v).isdigit()}}

    def version(self, name: str) -> int:
        return int(self.delta(name).history(1).select("version").first()[0])

    def snapshot_files(self, name: str) -> list[str]:
        """`file:///` URLs of the Parquet files of the table's current snapshot (what petastorm reads)."""
        return sorted(local_file_url(uri) for uri in self.read(name).inputFiles())


def local_file_url(uri: str) -> str:
    """Spark's `file:/x` (and Databricks' `dbfs:/x`, seen through its /dbfs mount) as a `file:///` URL."""
    parsed = urlparse(uri)
    if parsed.scheme == "dbfs":
        return f"file:///dbfs{parsed.path}"
    if parsed.scheme in ("", "file"):
        return f"file://{parsed.path}"
    return uri
