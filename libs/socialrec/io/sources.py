"""Raw files in the generic input format: `events`, `social`, `items`, each .csv, .parquet or .jsonl
(optionally gzipped), as one file (`events.csv.gz`) or a folder of parts (`events/part-0.csv`)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

REQUIRED_COLUMNS = {
    "events": ["user_id", "item_id", "ts"],
    "social": ["src_user_id", "dst_user_id"],
    "items": ["item_id"],
}
OPTIONAL_COLUMNS = {
    "events": ["event_type", "rating", "review_text", "session_id"],
    "social": ["relation", "ts"],
    "items": ["title", "description", "category", "brand", "price"],
}
FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class SourceError(ValueError):
    """The source folder or one of its files cannot be read as the generic input format."""


def format_of(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".gzip")]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def find_files(source_dir: str | Path, table: str) -> tuple[str, list[str]]:
    """The files of one table and their single format; a table may not mix formats."""
    source = Path(source_dir)
    candidates = [p for p in source.glob(f"{table}.*") if p.is_file()]
    folder = source / table
    if folder.is_dir():
        candidates += [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))]
    by_format: dict[str, list[str]] = {}
    for path in sorted(candidates):
        fmt = format_of(path)
        if fmt:
            by_format.setdefault(fmt, []).append(str(path))
    if len(by_format) > 1:
        raise SourceError(f"{table}: files of several formats in {source} ({', '.join(sorted(by_format))}); use one")
    if not by_format:
        return "", []
    (fmt, files), = by_format.items()
    return fmt, files


def read_files(spark: SparkSession, fmt: str, files: list[str], table: str) -> DataFrame:
    """Raw rows of some files of one table, every known column as text, nothing dropped.

    Columns the format does not know are kept as JSON in `_extra`; CSV lines that do not parse (wrong number
    of fields) keep their text in `_corrupt_record` so cleaning can quarantine them instead of losing them.
    """
    if fmt == "csv":
        by_header: dict[tuple[str, ...], list[str]] = {}
        for path in files:
            by_header.setdefault(csv_header(path), []).append(path)
        frames = [_read_csv(spark, header, group) for header, group in by_header.items()]
        df = frames[0]
        for frame in frames[1:]:  # files whose columns differ (a schema change between batches)
            df = df.unionByName(frame, allowMissingColumns=True)
    else:
        df = spark.read.format(fmt).load(files).withColumn("_source_file", F.col("_metadata.file_path"))
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in df.columns]
    if missing:
        raise SourceError(f"{table}: required column(s) {missing} missing from {files[0]} (found {df.columns})")
    known = REQUIRED_COLUMNS[table] + OPTIONAL_COLUMNS[table]
    extra = [c for c in df.columns if c not in known and c not in ("_corrupt_record", "_source_file")]
    columns = [F.col(f"`{c}`").cast("string").alias(c) if c in df.columns else F.lit(None).cast("string").alias(c)
               for c in known]
    extra_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in extra])) if extra else F.lit(None)
    corrupt = F.col("_corrupt_record") if "_corrupt_record" in df.columns else F.lit(None)
    return df.select(*columns, extra_json.cast("string").alias("_extra"), corrupt.cast("string").alias("_corrupt_record"),
                     F.col("_source_file"))


def csv_header(path: str) -> tuple[str, ...]:
    opener = gzip.open if path.endswith((".gz", ".gzip")) else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        return tuple(next(csv.reader(handle), []))


def _read_csv(spark: SparkSession, header: tuple[str, ...], files: list[str]) -> DataFrame:
    """CSV with every column as text; lines with too few or too many fields land in `_corrupt_record`."""
    schema = ", ".join(f"`{c}` STRING" for c in header) + ", _corrupt_record STRING"
    return (spark.read.option("header", True).option("mode", "PERMISSIVE").option("escape", '"')
            .option("columnNameOfCorruptRecord", "_corrupt_record").schema(schema).csv(files)
            .withColumn("_source_file", F.col("_metadata.file_path")))


def file_checksums(spark: SparkSession, files: list[str]) -> dict[str, str]:
    """SHA-256 of each file's bytes, computed by Spark so a large batch is hashed in parallel."""
    if not files:
        return {}
    rows = spark.read.format("binaryFile").load(files).select("path", F.sha2("content", 256).alias("sha")).collect()
    by_path = {row["path"]: row["sha"] for row in rows}
    return {path: by_path[spark_path(path)] for path in files}


def with_checksums(rows: DataFrame, checksums: dict[str, str]) -> DataFrame:
    """`_source_checksum`: the checksum of the file each row came from (`checksums`: local path -> SHA-256)."""
    checksum_of = F.create_map(*[F.lit(x) for path, checksum in checksums.items() for x in (spark_path(path), checksum)])
    return rows.withColumn("_source_checksum", F.element_at(checksum_of, F.col("_source_file")))


def spark_path(path: str) -> str:
    """A local path as Spark reports it in `_metadata.file_path` and binaryFile's `path`."""
    return Path(path).resolve().as_uri().replace("file:///", "file:/", 1)


def require_source(source_dir: str | Path) -> Path:
    source = Path(source_dir)
    if not source.is_dir():
        raise SourceError(f"source folder not found: {source}")
    if not find_files(source, "events")[1]:
        raise SourceError(f"no events files in {source}: expected events.csv|parquet|jsonl[.gz] or events/ folder")
    return source
