"""Raw files in the generic input format: `events`, `social`, `items`, each .csv, .parquet or .jsonl
(optionally gzipped), as one file (`events.csv.gz`) or a folder of parts (`events/part-0.csv`)."""
from __future__ import annotations

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


def _format_of(path: Path) -> str | None:
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
        fmt = _format_of(path)
        if fmt:
            by_format.setdefault(fmt, []).append(str(path))
    if len(by_format) > 1:
        raise SourceError(f"{table}: files of several formats in {source} ({', '.join(sorted(by_format))}); use one")
    if not by_format:
        return "", []
    (fmt, files), = by_format.items()
    return fmt, files


def read_table(spark: SparkSession, source_dir: str | Path, table: str) -> DataFrame | None:
    """All of a table's raw files as text columns plus `_source_file`; None when the table is absent."""
    fmt, files = find_files(source_dir, table)
    if not files:
        return None
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", True).option("multiLine", False).option("escape", '"')
    df = reader.format(fmt).load(files)
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in df.columns]
    if missing:
        raise SourceError(f"{table}: required column(s) {missing} missing from {files[0]} (found {df.columns})")
    known = REQUIRED_COLUMNS[table] + OPTIONAL_COLUMNS[table]
    columns = [F.col(f"`{c}`").cast("string").alias(c) if c in df.columns else F.lit(None).cast("string").alias(c)
               for c in known]
    return df.select(*columns, F.col("_metadata.file_path").alias("_source_file"))


def require_source(source_dir: str | Path) -> Path:
    source = Path(source_dir)
    if not source.is_dir():
        raise SourceError(f"source folder not found: {source}")
    if not find_files(source, "events")[1]:
        raise SourceError(f"no events files in {source}: expected events.csv|parquet|jsonl[.gz] or events/ folder")
    return source
