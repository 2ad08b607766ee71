"""Each user's friends and their recent items on a tiny hand-made graph: the friends with the longest histories
win the `max_friends` places, and only items from before the user's own validation step count."""
from __future__ import annotations

from socialrec.features.sequences import social_neighbours

CONF = {"features": {"max_friends": 2}}
HISTORIES = [  # user_key, user_idx, items, ts, n_steps, test_item (0: no holdout, whole history visible)
    ("a", 1, [1, 2, 3, 4], [10, 20, 30, 40], 4, 4),  # cut-off: a's validation step at ts 30
    ("b", 2, [5, 6, 7], [5, 25, 35], 3, 7),  # cut-off 25
    ("c", 3, [8], [15], 1, 0),
    ("d", 4, [9, 10], [1, 2], 2, 0),
]
EDGES = [("a", "b"), ("a", "c"), ("a", "d"), ("a", "b"), ("a", "stranger"), ("b", "a"), ("d", "c")]


def _frames(spark):
    users = spark.createDataFrame(
        HISTORIES, "user_key string, user_idx int, items array<int>, ts array<long>, n_steps int, test_item int")
    social = spark.createDataFrame(EDGES, "src_user_key string, dst_user_key string")
    return users, social


def test_the_busiest_friends_and_their_items_before_the_cutoff(spark):
    users, social = _frames(spark)
    rows = {r.user_key: (r.user_idx, list(r.friends), list(r.friend_items))
            for r in social_neighbours(social, users, CONF).collect()}
    # a: b (3 steps) and d (2) beat c (1); b's 7 at ts 35 is after a's cut-off 30, and of b's 5, 6 and d's 9, 10
    # the two most recent are kept, oldest first. d has no holdout, so every item of its friend c counts.
    assert rows == {
        "a": (1, [2, 4], [5, 6]),
        "b": (2, [1], [1, 2]),
        "c": (3, [], []),
        "d": (4, [3], [8]),
    }


def test_only_the_requested_users_get_rows_but_friends_items_come_from_everyone(spark):
    users, social = _frames(spark)
    only = spark.createDataFrame([("a",)], "user_key string")
    rows = [(r.user_key, list(r.friends), list(r.friend_items))
            for r in social_neighbours(social, users, CONF, only=only).collect()]
    assert rows == [("a", [2, 4], [5, 6])]
