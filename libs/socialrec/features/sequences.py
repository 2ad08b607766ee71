"""silver -> gold: item vocabulary, per-user collapsed histories with the leave-last-out split, social
neighbours with their recent items, the padded training table petastorm reads, and the item text.

Incremental: a run whose new silver batches hold events only (the daily case) rebuilds the histories of the
users those events touch, and the social inputs of their friends, and MERGEs just those rows into gold; ids
stay stable (new users and items get the next ids), popularity is recounted from the updated histories. The
first build, a batch that changes the social graph or the catalogue, or a changed `features` config rebuilds
gold in full. The batches applied are recorded in ops.batches under `features@<config fingerprint>` after the
last commit, so a killed run is redone by the next one (every write is a MERGE or overwrite of recomputed rows).
"""
from __future__ import annotations

import hashlib
import json

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from socialrec.etl.clean import mark_batches_done
from socialrec.run_context import RunContext


def event_type_code(conf: dict) -> Column:
    """1 + position in clean.event_types (0 stays the padding code)."""
    codes = F.create_map(*[F.lit(x) for i, t in enumerate(conf["clean"]["event_types"]) for x in (t, i + 1)])
    return F.element_at(codes, F.col("event_type"))


def event_strength(conf: dict) -> Column:
    strengths = F.create_map(*[F.lit(x) for pair in conf["features"]["event_strength"].items() for x in pair])
    return F.coalesce(F.element_at(strengths, F.col("event_type")), F.lit(1))


def next_ids(keys: DataFrame, key: str, id_column: str, existing: DataFrame | None) -> DataFrame:
    """Dense ids for `keys` (one column, `key`): existing keys keep their id, new ones get the next ids in key
    order, so a model trained on yesterday's ids still reads today's tables."""
    keys = keys.select(key).distinct()
    if existing is None:
        return keys.withColumn(id_column, F.row_number().over(Window.orderBy(key)).cast("int"))
    known = existing.select(key, id_column)
    offset = existing.agg(F.coalesce(F.max(id_column), F.lit(0))).first()[0]
    new = (keys.join(known, key, "left_anti")
           .withColumn(id_column, (F.lit(offset) + F.row_number().over(Window.orderBy(key))).cast("int")))
    return keys.join(known, key).unionByName(new)


def item_index(events: DataFrame, items: DataFrame | None) -> DataFrame:
    """Dense ids 1..N for every item seen in events or listed in the catalogue (cold items included)."""
    ids = events.select("item_id")
    if items is not None:
        ids = ids.unionByName(items.select("item_id"))
    indexed = next_ids(ids, "item_id", "item_idx", None)
    if items is None:
        return indexed.withColumn("category", F.lit(None).cast("string")).withColumn("has_text", F.lit(False))
    has_text = F.coalesce(describes_item(), F.lit(False))
    catalogue = items.select("item_id", "category", has_text.alias("has_text"))
    return indexed.join(catalogue, "item_id", "left").fillna({"has_text": False})


# Steps of a user's time-ordered events `_e`: a new step starts where the item changes, so a view -> click ->
# cart -> purchase funnel is one decision about one item (one step) and "predict the next event" does not
# degenerate into "repeat the current item". A step keeps its first timestamp and its strongest event type.
STEP_STARTS = "filter(sequence(0, size(_e) - 1), i -> CASE WHEN i = 0 THEN true ELSE _e[i - 1].item_idx != _e[i].item_idx END)"
STEPS = """transform(_starts, (s, k) -> named_struct(
    'item_idx', _e[s].item_idx,
    'ts', _e[s].ts,
    'event_type', array_max(slice(_e, s + 1, coalesce(try_element_at(_starts, k + 2), size(_e)) - s).kind).code))"""
# Log-scaled minutes since the previous step, 1 for a user's first step (0 stays the padding code).
GAPS = """transform(_steps, (s, k) -> CASE WHEN k = 0 THEN 1 ELSE cast(1 + least(20, floor(log2(
    1 + (cast(s.ts AS long) - cast(_steps[k - 1].ts AS long)) / 60.0))) AS int) END)"""


HISTORY_COLUMNS = ("user_key", "items", "event_types", "hours", "gaps", "ts", "n_steps", "valid_item", "test_item",
                   "user_idx", "purchased")


def user_histories(events: DataFrame, index: DataFrame, conf: dict, existing: DataFrame | None = None) -> DataFrame:
    """Arrays over each user's whole history plus the validation and test items (0 when too short); user ids
    from `existing` (gold.user_sequences) where the user has one.

    One shuffle of the events: each user's events are collected once (combined map-side, where silver keeps a
    user's rows together) and collapsed into steps with array expressions, in the JVM; the item index, small,
    is broadcast."""
    min_steps = conf["features"]["min_events_per_user"]
    kind = F.struct(event_strength(conf).alias("strength"), event_type_code(conf).alias("code"))  # strongest wins
    event = F.struct(F.col("ts"), F.col("event_id"), F.col("item_idx"), kind.alias("kind"),
                     (F.col("event_type") == "purchase").alias("bought"))
    users = (
        events.join(F.broadcast(index.select("item_id", "item_idx")), "item_id")
        .groupBy("user_key").agg(F.array_sort(F.collect_list(event)).alias("_e"))
        .withColumn("_starts", F.expr(STEP_STARTS))
        .withColumn("_steps", F.expr(STEPS))
        .select(
            "user_key",
            F.col("_steps.item_idx").alias("items"),
            F.col("_steps.event_type").alias("event_types"),
            F.transform("_steps", lambda step: (F.hour(step["ts"]) + 1).cast("int")).alias("hours"),
            F.expr(GAPS).alias("gaps"),
            F.col("_steps.ts").cast("array<long>").alias("ts"),
            F.size("_steps").alias("n_steps"),
            F.array_sort(F.array_distinct(F.filter("_e", lambda e: e["bought"])["item_idx"])).alias("purchased"),
        )
    )
    holdout = F.col("n_steps") >= min_steps
    return (
        users.withColumn("valid_item", F.when(holdout, F.element_at("items", -2)).otherwise(0))
        .withColumn("test_item", F.when(holdout, F.element_at("items", -1)).otherwise(0))
        .join(next_ids(users, "user_key", "user_idx", existing), "user_key")
        .select(*HISTORY_COLUMNS)
    )


def social_neighbours(social: DataFrame | None, users: DataFrame, conf: dict, only: DataFrame | None = None
                      ) -> DataFrame:
    """Each user's friends and the friends' most recent items before the user's validation step (for the users
    in `only` (user_key) when given; friends' items still come from every user).

    The cut-off keeps the friends' later activity (which may include the user's own test item, bought
    together) out of the model's inputs, so social signal cannot leak the answer.
    """
    limit = conf["features"]["max_friends"]
    targets = users if only is None else users.join(only, "user_key", "left_semi")
    empty = targets.select("user_key", "user_idx", F.array().cast("array<int>").alias("friends"),
                           F.array().cast("array<int>").alias("friend_items"))
    if social is None:
        return empty
    cutoff = F.when(F.col("test_item") > 0, F.element_at("ts", -2)).otherwise(F.lit(2**62))
    # Users go by their int ids from here on: keys are joined back once per user at the end. A repeated edge
    # takes no second place (dense_rank) and adds nothing twice (a set of friends, the latest time per item),
    # so the edges need no shuffle of their own to be made distinct.
    target_ids = targets.select("user_key", "user_idx", cutoff.alias("cutoff"))
    friend_ids = users.select(F.col("user_key").alias("dst_user_key"), F.col("user_idx").alias("friend_idx"),
                              F.col("n_steps").alias("friend_steps"))
    edges = (
        social.select(F.col("src_user_key").alias("user_key"), "dst_user_key")
        .join(target_ids, "user_key")
        .join(friend_ids, "dst_user_key")
        .withColumn("_rank", F.dense_rank().over(
            Window.partitionBy("user_idx").orderBy(F.desc("friend_steps"), "friend_idx")))
        .where(F.col("_rank") <= limit)
        .select("user_idx", "friend_idx", "cutoff")
    )
    # Each friendship meets the friend's whole history as one array row, and is then moved once, to its user:
    # the friend's events are unpacked, cut off and ranked there without another shuffle.
    histories = users.select(F.col("user_idx").alias("friend_idx"), F.arrays_zip("items", "ts").alias("_h"))
    recent = (
        edges.join(histories, "friend_idx").repartition("user_idx")
        .select("user_idx", F.explode(F.filter("_h", lambda e: e["ts"] < F.col("cutoff"))).alias("e"))
        .groupBy("user_idx", F.col("e.items").alias("item_idx")).agg(F.max("e.ts").alias("last_ts"))
        .withColumn("_rank", F.row_number().over(Window.partitionBy("user_idx").orderBy(F.desc("last_ts"), "item_idx")))
        .where(F.col("_rank") <= limit)
        .groupBy("user_idx").agg(F.array_sort(F.collect_list(F.struct("last_ts", "item_idx"))).alias("_r"))
        .select("user_idx", F.col("_r.item_idx").alias("friend_items"))
    )
    friends = edges.groupBy("user_idx").agg(F.array_sort(F.collect_set("friend_idx")).alias("friends"))
    return (
        target_ids.join(friends, "user_idx", "left").join(recent, "user_idx", "left")
        .select("user_key", "user_idx",
                F.coalesce("friends", F.array().cast("array<int>")).alias("friends"),
                F.coalesce("friend_items", F.array().cast("array<int>")).alias("friend_items"))
    )


def padded(column: str, end: Column, length: int) -> Column:
    """The `length` values before position `end` (1-based, exclusive), left-padded with zeros."""
    start = F.greatest(F.lit(1), end - F.lit(length))
    window = F.slice(F.col(column), start, end - start)
    return F.concat(F.array_repeat(F.lit(0), F.lit(length) - F.size(window)), window)


def train_examples(histories: DataFrame, conf: dict) -> DataFrame:
    """One fixed-length row per user: the history before the validation item (the whole history when the
    user has no holdout), so training never sees validation or test items."""
    length, friends = conf["features"]["max_seq_len"], conf["features"]["max_friends"]
    end = F.when(F.col("test_item") > 0, F.col("n_steps") - 1).otherwise(F.col("n_steps") + 1)
    rows = histories.where(F.when(F.col("test_item") > 0, F.col("n_steps") - 2).otherwise(F.col("n_steps")) >= 2)
    friend_items = F.slice(F.col("friend_items"), 1, friends)
    return rows.select(
        "user_idx",
        *[padded(c, end, length).alias(c) for c in ("items", "event_types", "hours", "gaps")],
        F.concat(F.array_repeat(F.lit(0), F.lit(friends) - F.size(friend_items)), friend_items).alias("friend_items"),
    )


def describes_item():
    """An item has text when the catalogue gives it a title, a description or a category: a category alone
    (Ciao's and Epinions' catalogues) still places a new item among its kind for the encoder."""
    return F.col("title").isNotNull() | F.col("description").isNotNull() | F.col("category").isNotNull()


def item_text(index: DataFrame, items: DataFrame | None) -> DataFrame | None:
    """Title, description and category as one passage; items with none of them are absent, never made up."""
    if items is None:
        return None
    text = F.concat_ws(". ", "title", "description", F.when(F.col("category").isNotNull(),
                                                             F.concat(F.lit("Category: "), "category")))
    return (items.where(describes_item())
            .join(index.select("item_id", "item_idx"), "item_id")
            .select("item_idx", "item_id", text.alias("text")))


def training_popularity(histories: DataFrame) -> DataFrame:
    """Training interactions per item (each user's test item held out)."""
    train_items = histories.select(F.explode(F.slice("items", 1, F.when(F.col("test_item") > 0, F.col("n_steps") - 1)
                                                     .otherwise(F.col("n_steps")))).alias("item_idx"))
    return train_items.groupBy("item_idx").agg(F.count("*").cast("long").alias("popularity"))


def with_popularity(index: DataFrame, histories: DataFrame) -> DataFrame:
    return (index.select("item_idx", "item_id", "category", "has_text")
            .join(training_popularity(histories), "item_idx", "left").fillna({"popularity": 0}))


def config_fingerprint(conf: dict) -> str:
    """What gold depends on besides silver: a change rebuilds gold in full."""
    inputs = {"features": conf["features"], "event_types": conf["clean"]["event_types"]}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def feature_batches(ctx: RunContext) -> tuple[str, list[str], list[str]]:
    """(stage name, batches clean applied that features has not, batches features already applied under the
    current config)."""
    stage = f"features@{config_fingerprint(ctx.conf)}"
    if not ctx.lake.exists("ops.batches"):
        return stage, [], []
    applied = ctx.lake.read("ops.batches").select("stage", "batch_id").distinct().collect()
    cleaned = {row["batch_id"] for row in applied if row["stage"] == "clean"}
    done = {row["batch_id"] for row in applied if row["stage"] == stage}
    return stage, sorted(cleaned - done), sorted(done)


def events_only(ctx: RunContext, batches: list[str]) -> bool:
    """True when none of `batches` brought social edges or catalogue rows."""
    for table in ("bronze.social", "bronze.items"):
        if ctx.lake.exists(table) and ctx.lake.read(table).where(F.col("_batch_id").isin(batches)).limit(1).count():
            return False
    return True


def build_features(ctx: RunContext) -> dict:
    stage, pending, done = feature_batches(ctx)
    built = ctx.lake.exists("gold.user_sequences") and ctx.lake.exists("gold.item_index")
    if built and done and not pending:
        return {"mode": "up to date", "rows_out": 0, "batches": []}
    if built and done and events_only(ctx, pending):
        figures = update_features(ctx, pending)
    else:
        figures = rebuild_features(ctx)
    if pending:
        mark_batches_done(ctx, stage, pending)
    figures["batches"] = pending
    return figures


def update_features(ctx: RunContext, batches: list[str]) -> dict:
    """Rebuild the users the batches' events touch (and their friends' social inputs); MERGE only those rows.

    Every output is computed and checkpointed before the first commit: the commits then neither re-read tables
    they have just changed nor drag the whole lineage (gold as it was, joined with silver) through each gate."""
    conf, lake = ctx.conf, ctx.lake
    events = lake.read("silver.events")
    social = lake.read("silver.social") if lake.exists("silver.social") else None
    touched = events.where(F.col("_batch_id").isin(batches)).select("user_key").distinct().localCheckpoint()
    user_events = events.join(touched, "user_key", "left_semi")

    old_index = lake.read("gold.item_index").localCheckpoint()
    index = (next_ids(user_events.select("item_id"), "item_id", "item_idx", old_index)  # items of touched users
             .join(old_index.select("item_idx", "category", "has_text"), "item_idx", "left")
             .fillna({"has_text": False}))
    old_sequences = lake.read("gold.user_sequences").localCheckpoint()
    rebuilt = user_histories(user_events, index, conf, old_sequences)
    histories = (old_sequences.drop("friend_items").join(touched, "user_key", "left_anti")
                 .unionByName(rebuilt).localCheckpoint())
    affected = touched
    if social is not None:  # friends of a touched user see new friend items
        friends_of_touched = (social.join(touched.withColumnRenamed("user_key", "dst_user_key"), "dst_user_key",
                                          "left_semi").select(F.col("src_user_key").alias("user_key")))
        affected = touched.unionByName(friends_of_touched).distinct()
    affected = affected.join(histories.select("user_key"), "user_key", "left_semi").localCheckpoint()
    neighbours = social_neighbours(social, histories, conf, only=affected).localCheckpoint()
    changed = histories.join(neighbours.select("user_key", "friend_items"), "user_key").localCheckpoint()
    moved = (with_popularity(index, histories)
             .join(old_index.select("item_idx", F.col("popularity").alias("_old")), "item_idx", "left")
             .where(F.col("_old").isNull() | (F.col("_old") != F.col("popularity"))).drop("_old").localCheckpoint())

    ctx.commit("gold.item_index", moved, merge_on=["item_idx"], update_existing=True)
    ctx.commit("gold.user_sequences", changed, merge_on=["user_key"], update_existing=True)
    ctx.commit("gold.social_neighbours", neighbours, merge_on=["user_key"], update_existing=True)
    ctx.commit("gold.train_examples", train_examples(changed, conf), merge_on=["user_idx"], update_existing=True)
    return {"mode": "incremental", "users_touched": touched.count(), "users_rebuilt": affected.count(),
            "rows_out": ctx.report.tables["gold.user_sequences"]["rows_written"]}


def rebuild_features(ctx: RunContext) -> dict:
    """Histories first, committed and released; the tables after them read gold.user_sequences back, so the
    shuffles behind the histories (several copies of the events) can be cleaned up before those are computed."""
    conf, lake = ctx.conf, ctx.lake
    events = lake.read("silver.events")
    items = lake.read("silver.items") if lake.exists("silver.items") else None
    social = lake.read("silver.social") if lake.exists("silver.social") else None

    index = item_index(events, items).persist()
    try:
        commit_histories(ctx, events, index, social)
        sequences = lake.read("gold.user_sequences")
        ctx.commit("gold.item_index", with_popularity(index, sequences))
        ctx.commit("gold.train_examples", train_examples(sequences, conf), files=conf["features"]["train_files"])
        text = item_text(index, items)
        if text is not None:
            ctx.commit("gold.item_text", text)
    finally:
        index.unpersist()
    figures = {name: ctx.report.tables[name]["rows"] for name in ctx.report.tables if name.startswith("gold.")}
    figures["rows_out"] = ctx.report.tables["gold.user_sequences"]["rows"]
    figures["mode"] = "full"
    return figures


def commit_histories(ctx: RunContext, events: DataFrame, index: DataFrame, social: DataFrame | None) -> None:
    """gold.user_sequences and gold.social_neighbours from silver; their caches are released on return."""
    conf = ctx.conf
    histories = user_histories(events, index, conf).persist()
    neighbours = social_neighbours(social, histories, conf).persist()
    try:
        ctx.commit("gold.user_sequences",
                   histories.join(neighbours.select("user_key", "friend_items"), "user_key", "left"))
        ctx.commit("gold.social_neighbours", neighbours)
    finally:
        neighbours.unpersist()
        histories.unpersist()
