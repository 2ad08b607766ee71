"""gold.user_sequences' arrays from a tiny hand-made history: a funnel on one item is one step with its strongest
event type and its first time, a return to an item is a new step, gaps are log-scaled minutes, and the last two
steps are the validation and test items only when the history is long enough."""
from __future__ import annotations

from datetime import datetime, timedelta

from socialrec.features.sequences import item_index, user_histories

CONF = {
    "clean": {"event_types": ["view", "click", "cart", "purchase", "rating", "review", "like", "share"]},
    "features": {"event_strength": {"view": 1, "click": 2, "cart": 3, "purchase": 5}, "min_events_per_user": 3},
}
START = datetime(2026, 1, 1, 10, 0, 0)
EVENTS = [  # user_key, item_id, event_type, minutes after START (listed out of order: the arrays sort by time)
    ("u1", "A", "purchase", 2),
    ("u1", "A", "view", 0),
    ("u1", "A", "click", 1),
    ("u1", "B", "view", 60),
    ("u1", "A", "view", 70),
    ("u1", "A", "cart", 80),
    ("u2", "B", "view", 5),
]


def test_steps_types_hours_gaps_and_holdout(spark):
    events = spark.createDataFrame(
        [(i, user, item, kind, START + timedelta(minutes=minutes)) for i, (user, item, kind, minutes) in enumerate(EVENTS)],
        "event_id long, user_key string, item_id string, event_type string, ts timestamp")
    rows = {r.user_key: r.asDict() for r in user_histories(events, item_index(events, None), CONF).collect()}
    epoch = int((START - datetime(1970, 1, 1)).total_seconds())
    assert rows["u1"] == {
        "user_key": "u1", "user_idx": 1,
        "items": [1, 2, 1],                 # A (the funnel), B, A again
        "event_types": [4, 1, 3],           # purchase, view, cart: 1 + position in clean.event_types
        "hours": [11, 12, 12],              # hour of the step's first event, + 1
        "gaps": [1, 6, 4],                  # first step; 60 min: 1 + floor(log2(61)); 10 min: 1 + floor(log2(11))
        "ts": [epoch, epoch + 3600, epoch + 4200],
        "n_steps": 3, "valid_item": 2, "test_item": 1,
        "purchased": [1],
    }
    assert rows["u2"] == {
        "user_key": "u2", "user_idx": 2, "items": [2], "event_types": [1], "hours": [11], "gaps": [1],
        "ts": [epoch + 300], "n_steps": 1, "valid_item": 0, "test_item": 0, "purchased": [],
    }
