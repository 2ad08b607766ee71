"""Structured Streaming: new event files (or a Delta table, or Kafka on a cluster) -> bronze -> silver -> the
touched users' gold rows -> their recommendations, seconds after the behaviour.

Each micro-batch is a run of its own (`<UTC start>-b<batch id>`) that goes through the batch pipeline's own
functions on just its rows: bronze.events gets the rows as delivered, `clean` applies the same rules, gate and
quarantine and MERGEs silver.events, `build_features` updates the touched users' sequences (and their friends'
social inputs), and `recommend` rescores only the users with new events, adding the request-time context
(socialrec.inference.live_context: the hour and device of the latest event, the session's last items).

Exactly once across restarts: Spark's checkpoint replays an uncommitted micro-batch with the same rows, and
the run id of every micro-batch is written ahead (`<checkpoint>/runs/<batch id>`) before its first commit, so
the replay reuses it; every write of the batch is then idempotent under that id (bronze and the quarantine
are replaced where `_batch_id` is the run id, silver and gold are MERGEd on natural keys, the batch's
recommendations are replaced where `run_id` is it, ops.batches makes clean and features skip what they did).
A failed gate or a quarantine share over its limit stops the query with that error; nothing of the batch
after the failed step is written, and the restarted query retries the same batch.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from socialrec.etl.clean import clean, parse_timestamp
from socialrec.etl.pseudonymise import hmac_sha256_hex, pseudonymisation_key
from socialrec.features.sequences import build_features
from socialrec.inference import live_context
from socialrec.inference.scoring import LiveInputs, LiveScoring, recommend
from socialrec.io.sources import (OPTIONAL_COLUMNS, REQUIRED_COLUMNS, file_checksums, format_of, read_files,
                                  with_checksums)
from socialrec.run_context import RunContext, RunReport, StageTimer

EVENT_COLUMNS = REQUIRED_COLUMNS["events"] + OPTIONAL_COLUMNS["events"]


class StreamConfigError(ValueError):
    """stream.* cannot start a query: a missing path, an unknown source, a lake without a trained model."""


# ------------------------------------------------------------------------------------------------ source
def source_frame(spark, stream: dict) -> DataFrame:
    """The streaming DataFrame of stream.source: `files` yields one row per new file (its `path`; the rows are
    read in the micro-batch with the batch ingest's reader), `delta` and `kafka` yield event rows."""
    kind, path = stream.get("source", "files"), stream.get("path")
    if kind == "files":
        if not path or not Path(path).is_dir():
            raise StreamConfigError(f"stream.path: folder of new event files not found: {path!r} (socialrec stream "
                                    "--events DIR)")
        # binaryFile without its content column lists files and reads none of their bytes.
        return (spark.readStream.format("binaryFile")
                .schema("path string, modificationTime timestamp, length long, content binary")
                .option("recursiveFileLookup", "true")
                .option("maxFilesPerTrigger", int(stream["max_files_per_trigger"])).load(str(path)).select("path"))
    if kind == "delta":
        reader = spark.readStream.format("delta").option("maxFilesPerTrigger", int(stream["max_files_per_trigger"]))
        table = reader.load(path) if "/" in str(path) else reader.table(path)
        return table.select(*[F.col(c).cast("string").alias(c) if c in table.columns
                              else F.lit(None).cast("string").alias(c) for c in EVENT_COLUMNS],
                            F.lit(str(path)).alias("_source_file"))
    if kind == "kafka":
        kafka = stream.get("kafka") or {}
        schema = ", ".join(f"{c} string" for c in EVENT_COLUMNS)
        records = (spark.readStream.format("kafka")
                   .option("kafka.bootstrap.servers", kafka["bootstrap_servers"]).option("subscribe", kafka["topic"])
                   .option("startingOffsets", kafka.get("starting_offsets", "latest")).load())
        return records.select(
            F.from_json(F.col("value").cast("string"), schema).alias("e"),
            F.concat_ws(":", F.lit("kafka"), "topic", "partition", "offset").alias("_source_file"),
        ).select("e.*", "_source_file")
    raise StreamConfigError(f"stream.source must be files, delta or kafka, not {kind!r}")


def local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else uri


def micro_batch_rows(ctx: RunContext, micro_batch: DataFrame, kind: str) -> DataFrame | None:
    """The micro-batch's events in the bronze layout (text columns as delivered, `_extra`, `_corrupt_record`,
    `_source_file`, `_source_checksum`); None when it brought no rows."""
    if kind != "files":
        rows = (micro_batch.withColumn("_extra", F.lit(None).cast("string"))
                .withColumn("_corrupt_record", F.lit(None).cast("string"))
                .withColumn("_source_checksum", F.lit(None).cast("string")))
        return rows if not rows.isEmpty() else None
    by_format: dict[str, list[str]] = {}
    for row in micro_batch.collect():
        path = local_path(row["path"])
        fmt = format_of(Path(path))
        if fmt and not Path(path).name.startswith(("_", ".")):
            by_format.setdefault(fmt, []).append(path)
    frames = []
    for fmt, files in sorted(by_format.items()):
        frames.append(with_checksums(read_files(ctx.spark, fmt, files, "events"), file_checksums(ctx.spark, files)))
    if not frames:
        return None
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    return rows if not rows.isEmpty() else None


# ------------------------------------------------------------------------------------------- live context
def request_contexts(ctx: RunContext, raw: DataFrame, touched: DataFrame, settings: live_context.LiveSettings
                     ) -> DataFrame:
    """Per touched user (user_key): live_hour (1 + UTC hour of the latest event), live_device (the raw row's
    `device` field of the latest event, where the feed sends one) and session_items (the items of the latest
    event's session, at most stream.live_context.session_minutes before it, the last session_events of them)."""
    lake, live = ctx.lake, ctx.conf["stream"]["live_context"]
    events = lake.read("silver.events").join(touched, "user_key", "left_semi")
    newest = Window.partitionBy("user_key").orderBy(F.desc("ts"), F.desc("event_id"))
    latest = (events.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
              .select("user_key", F.col("ts").alias("_latest"), F.col("session_id").alias("_session")))
    in_session = (events.join(latest, "user_key")
                  .where(F.col("session_id").eqNullSafe(F.col("_session"))
                         & (F.col("ts") >= F.col("_latest") - F.expr(f"INTERVAL {int(live['session_minutes'])} MINUTES")))
                  .join(lake.read("gold.item_index").select("item_id", "item_idx"), "item_id"))
    ordered = F.array_sort(F.collect_list(F.struct("ts", "event_id", "item_idx")))
    sessions = in_session.groupBy("user_key").agg(
        F.slice(ordered, -settings.session_events, settings.session_events).getField("item_idx").alias("session_items"))
    key = pseudonymisation_key(ctx.conf["clean"]["pseudonymisation"])
    device = F.get_json_object("_extra", "$.device")
    devices = (raw.where(device.isNotNull())
               .select(hmac_sha256_hex(F.trim("user_id"), key).alias("user_key"), parse_timestamp(F.col("ts")).alias("_ts"),
                       device.alias("live_device"))
               .withColumn("_n", F.row_number().over(Window.partitionBy("user_key").orderBy(F.desc("_ts"))))
               .where(F.col("_n") == 1).select("user_key", "live_device"))
    return (latest.select("user_key", (F.hour("_latest") + 1).cast("int").alias("live_hour"))
            .join(sessions, "user_key", "left").join(devices, "user_key", "left"))


def context_tables(ctx: RunContext, settings: live_context.LiveSettings) -> live_context.ContextTables:
    """Hour lifts from the training steps of gold.user_sequences (each user's test step held out) and device
    lifts from the raw rows of bronze.events that carry a device; built when the query starts."""
    lake = ctx.lake
    sequences = lake.read("gold.user_sequences")
    index = lake.read("gold.item_index").select("item_id", "item_idx").cache()
    train_end = F.when(F.col("test_item") > 0, F.col("n_steps") - 1).otherwise(F.col("n_steps"))
    steps = sequences.select(F.explode(F.arrays_zip(F.slice("items", 1, train_end).alias("item_idx"),
                                                    F.slice("hours", 1, train_end).alias("hour"))).alias("s"))
    hours = steps.groupBy(F.col("s.item_idx").alias("item_idx"), F.col("s.hour").alias("hour")).count().toPandas()
    device = F.get_json_object("_extra", "$.device")
    devices = (lake.read("bronze.events").where(device.isNotNull())
               .select(F.trim("item_id").alias("item_id"), device.alias("device"))
               .join(index, "item_id").groupBy("item_idx", "device").count().toPandas())
    n_items = int(index.agg(F.max("item_idx")).first()[0] or 0)
    index.unpersist()
    return live_context.context_tables(hours, devices, n_items, settings)


# ------------------------------------------------------------------------------------------- micro-batch
def process_micro_batch(ctx: RunContext, raw: DataFrame, batch_id: int, live: LiveScoring) -> dict:
    """bronze -> silver -> gold -> recommendations for one micro-batch's rows under the run id of `ctx`."""
    run_id = ctx.run_id
    bronze = raw.withColumn("_ingested_at", F.current_timestamp()).withColumn("_batch_id", F.lit(run_id))
    ctx.commit("bronze.events", bronze, mode="overwrite", replace_where=f"_batch_id = '{run_id}'")
    cleaned = clean(ctx, batches=[run_id], events_only=True)
    features = build_features(ctx)
    touched = (ctx.lake.read("silver.events").where(F.col("_batch_id") == run_id).select("user_key").distinct()
               .join(ctx.lake.read("gold.user_sequences").select("user_key"), "user_key", "left_semi")
               .localCheckpoint())
    requests = request_contexts(ctx, raw, touched, live.settings).localCheckpoint()
    scored = recommend(ctx, selected=touched, scope=f"stream:batch={batch_id}", live=LiveInputs(requests, live))
    return {"rows_in": ctx.report.tables["bronze.events"]["rows_written"], "rows_out": scored["rows_out"],
            "rows_quarantined": cleaned["rows_quarantined"], "rows_duplicates": cleaned["rows_duplicates"],
            "users_scored": scored["users_scored"], "features_mode": features.get("mode"),
            "model_version": scored["model_version"]}


class MicroBatchRunner:
    """The foreachBatch function: one run per micro-batch, its id written ahead so a replay reuses it."""

    def __init__(self, ctx: RunContext, checkpoint: Path, progress=print):
        self.ctx, self.checkpoint, self.progress = ctx, checkpoint, progress
        self.kind = ctx.conf["stream"].get("source", "files")
        self.settings = live_context.LiveSettings.from_conf(ctx.conf["stream"]["live_context"])
        self.live = LiveScoring(context_tables(ctx, self.settings), self.settings)
        self.batches = 0

    def run_id_for(self, batch_id: int) -> str:
        from socialrec.pipeline import new_run_id

        record = self.checkpoint / "runs" / f"{batch_id}"
        if not record.is_file():  # written whole (rename) before the batch's first commit
            record.parent.mkdir(parents=True, exist_ok=True)
            partial = record.with_suffix(".tmp")
            partial.write_text(f"{new_run_id()}-b{batch_id}")
            partial.replace(record)
        return record.read_text().strip()

    def __call__(self, micro_batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        run_id = self.run_id_for(batch_id)
        reports = self.ctx.lake.directory("reports_dir")
        earlier = reports / f"{run_id}.json"
        report = RunReport.load(earlier) if earlier.is_file() else RunReport(run_id=run_id, source=f"stream:{self.kind}")
        ctx = dataclasses.replace(self.ctx, report=report)
        raw = micro_batch_rows(ctx, micro_batch, self.kind)
        if raw is None:
            return
        try:
            with StageTimer(report, "stream") as figures:
                figures.update(process_micro_batch(ctx, raw, batch_id, self.live))
            report.status = "ok"
        except Exception as exc:
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            report.save(reports)
        self.batches += 1
        self.progress(f"[stream] batch {batch_id} ({run_id}): {figures['rows_in']} events, "
                      f"{figures['users_scored']} users rescored in {time.perf_counter() - started:.1f}s")


def checkpoint_dir(ctx: RunContext) -> Path:
    return ctx.lake.directory("checkpoints_dir") / ctx.conf["stream"]["checkpoint"]


def start_stream(ctx: RunContext, available_now: bool = False, progress=print) -> StreamingQuery:
    """Start the query (processing-time trigger every stream.trigger_seconds, or once over what is available)."""
    from socialrec.inference import model_store

    stream = ctx.conf["stream"]
    source = source_frame(ctx.spark, stream)
    for table in ("silver.events", "gold.user_sequences", "gold.item_index"):
        if not ctx.lake.exists(table):
            raise StreamConfigError(f"{table} does not exist: run the batch pipeline on this lake first "
                                    "(socialrec run), the stream updates what it built")
    model_store.latest(ctx.lake.directory("checkpoints_dir"))  # a clear error when no model is published
    checkpoint = checkpoint_dir(ctx)
    writer = (source.writeStream.queryName(stream.get("query_name") or "socialrec_stream")
              .option("checkpointLocation", str(checkpoint / "query"))
              .foreachBatch(MicroBatchRunner(ctx, checkpoint, progress)))
    trigger = {"availableNow": True} if available_now else {"processingTime": f"{stream['trigger_seconds']} seconds"}
    return writer.trigger(**trigger).start()


def run_stream(ctx: RunContext, available_now: bool = False, progress=print) -> dict:
    """Run the query until it ends (available-now) or is interrupted; the first failed micro-batch re-raises."""
    query = start_stream(ctx, available_now, progress)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        progress("[stream] stopping (the current micro-batch is replayed on restart if it did not finish)")
        query.stop()
    progress_rows = query.recentProgress
    return {"micro_batches": len(progress_rows),
            "rows_in": sum(int(p.get("numInputRows", 0)) for p in progress_rows)}
