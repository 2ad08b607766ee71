"""bronze -> silver: validate each row against named rules (and each user and session against the bot rules),
quarantine the failures with the rule's name, deduplicate on natural keys, normalise types and pseudonymise
users. Every input row ends in exactly one of silver, quarantine or the duplicate count, so the three always
add up to what came in."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from socialrec.etl.pseudonymise import hmac_sha256_hex, pseudonymisation_key
from socialrec.run_context import RunContext

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE = r"\+?\d[\d\s().-]{7,}\d"


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


def parse_timestamp(raw: Column) -> Column:
    """ISO-8601 text, or epoch seconds / milliseconds (13+ digits), to a UTC timestamp; null if unparsable."""
    text = F.trim(raw)
    digits = text.rlike(r"^\d{9,14}$")
    epoch = F.when(F.length(text) >= 13, text.cast("double") / 1000).otherwise(text.cast("double"))
    return F.when(digits, F.timestamp_seconds(epoch.cast("long"))).otherwise(F.try_to_timestamp(text))


def first_failed_rule(rules: list[tuple[str, Column]]) -> Column:
    """The name of the first rule a row breaks, or null when it breaks none."""
    label = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        label = F.when(F.coalesce(broken, F.lit(False)), F.lit(name)).otherwise(label)
    return label


def quarantine_rows(labelled: DataFrame, table: str, run_id: str) -> DataFrame:
    raw_columns = [c for c in labelled.columns if not c.startswith("_")] + ["_extra", "_corrupt_record"]
    return labelled.where(F.col("_rule").isNotNull()).select(
        F.lit(table).alias("table"),
        F.col("_rule").alias("rule"),
        F.to_json(F.struct(*raw_columns)).alias("record"),
        F.col("_source_file"),
        F.col("_batch_id"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def scrub_text(column: Column, max_chars: int) -> Column:
    """Free text must not carry contact details into silver, nor megabytes of text into every later stage."""
    return F.substring(F.regexp_replace(F.regexp_replace(column, EMAIL, "[email]"), PHONE, "[phone]"), 1, max_chars)


def _raw_row_rules(id_columns: tuple[str, ...]) -> list[tuple[str, Column]]:
    """Rules every raw table shares: lines the reader could not split into fields, and ids with bytes that
    were not UTF-8 (the reader turns them into U+FFFD, which would silently merge distinct ids)."""
    return [
        ("malformed_row", F.col("_corrupt_record").isNotNull()),
        ("invalid_encoding", F.coalesce(*[F.col(c).contains("\ufffd") for c in id_columns], F.lit(False))),
    ]


def _event_rules(conf: dict, ts: Column, event_type: Column, rating: Column) -> list[tuple[str, Column]]:
    clean = conf["clean"]
    low, high = clean["rating_range"]
    latest = datetime.now(timezone.utc) + timedelta(hours=clean["future_tolerance_hours"])
    return [
        *_raw_row_rules(("user_id", "item_id")),
        ("missing_user_id", _blank("user_id")),
        ("missing_item_id", _blank("item_id")),
        ("unparsable_timestamp", ts.isNull()),
        ("timestamp_out_of_range",
         (ts < F.lit(clean["min_valid_ts"]).cast("timestamp")) | (ts > F.lit(latest.replace(tzinfo=None)))),
        ("unknown_event_type", ~event_type.isin(clean["event_types"])),
        ("invalid_rating", ~_blank("rating") & (rating.isNull() | (rating < low) | (rating > high))),
    ]


def peak_events_per_minute(events: DataFrame) -> DataFrame:
    """(`_user`, `_peak`): each user's most events in any 60-second window (second resolution).

    Skew-safe for bots with millions of events: the groupBy on (user, second) combines map-side, so each
    user reaches the per-user window with at most one row per second it was active (a bot hammering for an
    hour is 3,600 rows, whatever its event count), and that window is a small per-user sort.
    """
    per_second = events.groupBy("_user", "_second").count()
    last_minute = Window.partitionBy("_user").orderBy("_second").rangeBetween(-59, 0)
    return (per_second.withColumn("_in_minute", F.sum("count").over(last_minute))
            .groupBy("_user").agg(F.max("_in_minute").alias("_peak")))


def judged_now(flagged: DataFrame) -> DataFrame | None:
    """The flagged keys computed once, now, and held on the driver (a few keys; None when there are none): no
    cached copy left behind for the stage to release."""
    rows = flagged.collect()
    return flagged.sparkSession.createDataFrame(rows, flagged.schema) if rows else None


def flag_bots(bots: dict, labelled: DataFrame, ts: Column, event_type: Column) -> DataFrame:
    """Label, among rows that broke no row rule, whole users and sessions no human produces.

    - `bot_rate`: every event of a user with more than `max_events_per_minute` events in some 60-second
      window of this batch (the demo generator's 3,000 users peak at 7: <= 6 funnel steps 5-300 s apart,
      plus duplicates; Ciao's day-granular ratings peak at 93 per "minute"; the default of 120 flags neither).
    - `impossible_funnel`: every event of a session that purchases an item before its first view of that
      item (a replayed or forged tracker stream); sessions without a view of the item are not judged.

    Judged on the batch's own rows (a bot already in silver from an earlier batch stays there). Each rule
    judges only what can break it: the window only users with more events in the batch than the limit (no one
    else can exceed it), the funnel only views and purchases. The flagged keys are few, computed once, held on
    the driver and broadcast, so the join back neither shuffles the skewed event rows by user nor repeats the
    rules' aggregations each time the labelled batch is read.
    """
    keyed = labelled.withColumns({"_user": F.trim("user_id"), "_session": F.trim("session_id")})
    limit, funnel = bots.get("max_events_per_minute"), bots.get("impossible_funnel")
    valid = keyed.where(F.col("_rule").isNull()).select(
        "_user", "_session", F.trim("item_id").alias("_item"), event_type.alias("_type"), ts.alias("_ts"))
    flags = []
    if limit is not None:
        busy = judged_now(valid.groupBy("_user").count().where(F.col("count") > limit).select("_user"))
        if busy is not None:  # most batches: no user has even `limit` events in the whole batch
            peaks = peak_events_per_minute(valid.join(F.broadcast(busy), "_user", "left_semi")
                                           .withColumn("_second", F.col("_ts").cast("long")))
            flagged = judged_now(peaks.where(F.col("_peak") > limit).select("_user", F.lit(True).alias("_bot")))
            if flagged is not None:
                keyed = keyed.join(F.broadcast(flagged), "_user", "left")
                flags.append(("bot_rate", F.col("_bot")))
    if funnel:
        first = lambda kind: F.min(F.when(F.col("_type") == kind, F.col("_ts")))  # noqa: E731
        forged = judged_now(valid.where((F.col("_session") != "") & F.col("_type").isin("view", "purchase"))
                            .groupBy("_session", "_item").agg(first("view").alias("v"), first("purchase").alias("p"))
                            .where(F.col("p") < F.col("v")).select("_session").distinct()
                            .withColumn("_forged", F.lit(True)))
        if forged is not None:
            keyed = keyed.join(F.broadcast(forged), "_session", "left")
            flags.append(("impossible_funnel", F.col("_forged")))
    return keyed.withColumn("_rule", F.coalesce(F.col("_rule"), first_failed_rule(flags))).drop(
        "_user", "_session", "_bot", "_forged")


def normalised_event_type(conf: dict) -> Column:
    clean = conf["clean"]
    text = F.lower(F.trim(F.col("event_type")))
    aliases = F.create_map(*[F.lit(x) for pair in clean["event_type_aliases"].items() for x in pair])
    mapped = F.coalesce(F.element_at(aliases, text), text)
    return F.when(_blank("event_type"), F.lit(clean["default_event_type"])).otherwise(mapped)


# An event is its user, item, time and type: the dedupe and the silver MERGE match on these columns, exactly.
# event_id is a compact 64-bit hash of them, an id for analysts and tie-breaks, never trusted to be collision-free.
EVENT_NATURAL_KEY = ("user_id", "item_id", "ts", "event_type")
SILVER_ORDER = ("user_id", "ts")  # silver.events' layout within a file: each user's rows together, in time order


def clean_events(ctx: RunContext, key: bytes, batches: list[str]) -> tuple[DataFrame, DataFrame]:
    bronze = pending_rows(ctx, "bronze.events", batches)
    ts, event_type = parse_timestamp(F.col("ts")), normalised_event_type(ctx.conf)
    rating = F.expr("try_cast(rating as double)")
    labelled = bronze.withColumn("_rule", first_failed_rule(_event_rules(ctx.conf, ts, event_type, rating)))
    labelled = flag_bots(ctx.conf["clean"]["bots"], labelled, ts, event_type).persist()
    good = labelled.where(F.col("_rule").isNull()).select(
        F.trim("user_id").alias("user_id"),
        F.trim("item_id").alias("item_id"),
        event_type.alias("event_type"),
        ts.alias("ts"),
        rating.alias("rating"),
        scrub_text(F.col("review_text"), ctx.conf["clean"]["max_text_chars"]).alias("review_text"),
        F.col("session_id"),
        F.col("_batch_id"),
    )
    # One shuffle by user: the dedupe on the natural key reuses it, and each user's rows end up together and in
    # time order, so the repeated 64-character pseudonym and the timestamps compress to a few bytes a row. The
    # dedupe sorts by its key, put in that order, so the layout needs no second sort.
    silver = (
        good.repartition("user_id")
        .dropDuplicates([*SILVER_ORDER, *(column for column in EVENT_NATURAL_KEY if column not in SILVER_ORDER)])
        .sortWithinPartitions(*SILVER_ORDER)
        .withColumn("user_key", hmac_sha256_hex(F.col("user_id"), key))
        .withColumn("event_id", F.xxhash64(*EVENT_NATURAL_KEY))
        .select("event_id", "user_key", "item_id", "event_type", "ts", "rating", "review_text", "session_id",
                "_batch_id")
    )
    return silver, labelled


def clean_social(ctx: RunContext, key: bytes, known_users: DataFrame, batches: list[str]) -> tuple[DataFrame, DataFrame]:
    """Drop self-loops and edges to users with no events (dangling), each quarantined under its rule."""
    bronze = pending_rows(ctx, "bronze.social", batches)
    src, dst = F.trim("src_user_id"), F.trim("dst_user_id")
    known = known_users.select(F.col("user_id").alias("_known"))
    with_src = bronze.join(known.withColumnRenamed("_known", "_src_known"), src == F.col("_src_known"), "left")
    joined = with_src.join(known.withColumnRenamed("_known", "_dst_known"), dst == F.col("_dst_known"), "left")
    rules = [
        *_raw_row_rules(("src_user_id", "dst_user_id")),
        ("missing_user_id", _blank("src_user_id") | _blank("dst_user_id")),
        ("self_loop", src == dst),
        ("dangling_edge", F.col("_src_known").isNull() | F.col("_dst_known").isNull()),
    ]
    labelled = joined.withColumn("_rule", first_failed_rule(rules)).drop("_src_known", "_dst_known").persist()
    relation = F.coalesce(F.lower(F.trim("relation")), F.lit("friend"))
    silver = (
        labelled.where(F.col("_rule").isNull())
        .select(src.alias("src"), dst.alias("dst"), relation.alias("relation"), parse_timestamp(F.col("ts")).alias("ts"))
        .dropDuplicates(["src", "dst"])
        .select(hmac_sha256_hex(F.col("src"), key).alias("src_user_key"),
                hmac_sha256_hex(F.col("dst"), key).alias("dst_user_key"), "relation", "ts")
    )
    return silver, labelled


def clean_items(ctx: RunContext, batches: list[str]) -> tuple[DataFrame, DataFrame]:
    bronze = pending_rows(ctx, "bronze.items", batches)
    price = F.expr("try_cast(price as double)")
    rules = [
        *_raw_row_rules(("item_id",)),
        ("missing_item_id", _blank("item_id")),
        ("invalid_price", ~_blank("price") & (price.isNull() | (price < 0))),
    ]
    labelled = bronze.withColumn("_rule", first_failed_rule(rules)).persist()
    limit = ctx.conf["clean"]["max_text_chars"]
    text = lambda c: F.when(_blank(c), None).otherwise(scrub_text(F.trim(c), limit))  # noqa: E731
    silver = (
        labelled.where(F.col("_rule").isNull())
        .select(F.trim("item_id").alias("item_id"), text("title").alias("title"),
                text("description").alias("description"), F.lower(F.trim("category")).alias("category"),
                F.trim("brand").alias("brand"), price.alias("price"))
        .dropDuplicates(["item_id"])
    )
    return silver, labelled


MERGE_KEYS = {"events": (["user_key", "item_id", "ts", "event_type"], False),  # EVENT_NATURAL_KEY, pseudonymised
              "social": (["src_user_key", "dst_user_key"], False),
              "items": (["item_id"], True)}  # the catalogue's latest row for an item wins


def pending_batches(ctx: RunContext) -> list[str]:
    """Bronze batches the clean stage has not applied yet (all of them on a new lake)."""
    batches = {row[0] for row in ctx.lake.read("bronze.events").select("_batch_id").distinct().collect()}
    for table in ("bronze.social", "bronze.items"):
        if ctx.lake.exists(table):
            batches |= {row[0] for row in ctx.lake.read(table).select("_batch_id").distinct().collect()}
    if ctx.lake.exists("ops.batches"):
        done = ctx.lake.read("ops.batches").where(F.col("stage") == "clean").select("batch_id").collect()
        batches -= {row[0] for row in done}
    return sorted(batches)


def pending_rows(ctx: RunContext, table: str, batches: list[str]) -> DataFrame:
    return ctx.lake.read(table).where(F.col("_batch_id").isin(batches))


def clean(ctx: RunContext, batches: list[str] | None = None, events_only: bool = False) -> dict:
    """Clean the bronze batches not yet applied (or the `batches` named), MERGE them into silver on natural keys
    and record them.

    Each silver table changes in one commit and the batches are marked done last, so a run killed half way
    is completed by the next one: MERGE and the batch-scoped quarantine overwrite make re-applying a no-op.
    `events_only`: the batches hold events alone (a stream's micro-batch), so the social and catalogue tables
    are not read for them.
    """
    key = pseudonymisation_key(ctx.conf["clean"]["pseudonymisation"])
    batches = pending_batches(ctx) if batches is None else sorted(batches)
    figures = {"rows_in": 0, "rows_out": 0, "rows_quarantined": 0, "rows_duplicates": 0, "tables": {},
               "batches": batches}
    if not batches:
        return figures
    outputs = [("events", *clean_events(ctx, key, batches))]
    if ctx.lake.exists("bronze.social") and not events_only:
        known_users = ctx.lake.read("bronze.events").select(F.trim("user_id").alias("user_id")).distinct()
        outputs.append(("social", *clean_social(ctx, key, known_users, batches)))
    if ctx.lake.exists("bronze.items") and not events_only:
        outputs.append(("items", *clean_items(ctx, batches)))
    try:
        commit_clean_outputs(ctx, outputs, batches, figures)
    finally:  # the cached batch is the size of the input: a long pipeline run must not carry it into later stages
        for _, silver, labelled in outputs:
            silver.unpersist()
            labelled.unpersist()
    mark_batches_done(ctx, "clean", batches)
    return figures


def commit_clean_outputs(ctx: RunContext, outputs: list[tuple[str, DataFrame, DataFrame]], batches: list[str],
                         figures: dict) -> None:
    """Judge every table's quarantine share, then MERGE each silver table and replace the batches' quarantine."""
    checked, figures["quarantine_by_rule"] = [], {}
    for table, silver, labelled in outputs:
        # One pass over the cached batch gives the rows in and the quarantine by rule.
        by_rule = {row["_rule"]: row["count"] for row in labelled.groupBy("_rule").count().collect()}
        rules = {f"{table}.{rule}": count for rule, count in by_rule.items() if rule is not None}
        figures["quarantine_by_rule"].update(rules)
        quarantine = quarantine_rows(labelled, table, ctx.run_id)
        checked.append((table, silver.persist(), quarantine, sum(by_rule.values()), sum(rules.values())))
    quarantined = checked[0][2]
    for _, _, quarantine, _, _ in checked[1:]:
        quarantined = quarantined.unionByName(quarantine)
    shares = {table: (n_quarantined, rows_in) for table, _, _, rows_in, n_quarantined in checked}
    # Judge the whole batch before committing any of it, so a broken source leaves silver untouched.
    _check_quarantine_share(ctx.conf, shares, figures["quarantine_by_rule"])
    for table, silver, _, rows_in, rows_quarantined in checked:
        if rows_in == 0:  # e.g. a later batch with new events only: that table has nothing to merge or gate
            figures["tables"][table] = {"rows_in": 0, "rows_out": 0, "rows_quarantined": 0, "rows_duplicates": 0}
            continue
        keys, update_existing = MERGE_KEYS[table]
        ctx.commit(f"silver.{table}", silver, merge_on=keys, update_existing=update_existing)
        silver.unpersist()
        rows_out = ctx.report.tables[f"silver.{table}"]["rows_written"]
        table_figures = {"rows_in": rows_in, "rows_out": rows_out, "rows_quarantined": rows_quarantined,
                         "rows_duplicates": rows_in - rows_out - rows_quarantined}
        figures["tables"][table] = table_figures
        for name in table_figures:
            figures[name] += table_figures[name]
    batch_list = ", ".join(f"'{batch}'" for batch in batches)
    ctx.commit("silver.quarantine", quarantined, mode="overwrite", replace_where=f"_batch_id IN ({batch_list})")


def mark_batches_done(ctx: RunContext, stage: str, batches: list[str]) -> None:
    rows = [(stage, batch, ctx.run_id) for batch in batches]
    done = ctx.spark.createDataFrame(rows, "stage string, batch_id string, run_id string").withColumn(
        "applied_at", F.current_timestamp())
    ctx.lake.write("ops.batches", done, mode="append")


class QuarantineThresholdExceeded(RuntimeError):
    """Too large a share of a table was quarantined: the source is probably broken, not just dirty."""


def _check_quarantine_share(conf: dict, shares: dict[str, tuple[int, int]], by_rule: dict[str, int]) -> None:
    limits = conf["quality"]["max_quarantine_fraction"]
    for table, (quarantined, rows_in) in shares.items():
        limit = limits[table] if isinstance(limits, dict) else limits
        share = quarantined / max(rows_in, 1)
        if share > limit:
            reasons = {k: v for k, v in by_rule.items() if k.startswith(f"{table}.")}
            raise QuarantineThresholdExceeded(
                f"silver.{table}: {share:.1%} of {rows_in} rows quarantined, above the limit of "
                f"{limit:.1%} (quality.max_quarantine_fraction); by rule: {reasons}"
            )
