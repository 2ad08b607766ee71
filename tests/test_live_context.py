"""Request-time context terms (socialrec.inference.live_context) and how fusion uses them: pure numpy."""
import numpy as np
import pandas as pd
import pytest

from socialrec.inference import fusion as fu
from socialrec.inference import live_context as lc
from socialrec.inference.scoring import user_context


def test_affinity_lift_by_hand():
    # Item 1: 8 steps at hour code 20, 2 at code 8; item 2: 10 at code 8. Overall share p_20 = 8/20, p_8 = 12/20.
    lift = lc.affinity_lift(np.array([1, 1, 2]), np.array([20, 8, 8]), np.array([8.0, 2.0, 10.0]), n_items=3,
                            n_codes=24, prior_count=0.0, max_lift=10.0)
    assert lift.shape == (4, 25)
    assert lift[1, 20] == pytest.approx(np.log((8 / 10) / (8 / 20)))
    assert lift[2, 8] == pytest.approx(np.log((10 / 10) / (12 / 20)))
    assert lift[3].tolist() == [0.0] * 25 and lift[:, 0].tolist() == [0.0] * 4   # unseen item, unknown code
    shrunk = lc.affinity_lift(np.array([1, 1, 2]), np.array([20, 8, 8]), np.array([8.0, 2.0, 10.0]), 3, 24,
                              prior_count=10.0, max_lift=10.0)
    assert 0 < shrunk[1, 20] < lift[1, 20]   # pseudo-steps at the overall share pull the lift towards 0
    clipped = lc.affinity_lift(np.array([1, 2]), np.array([1, 2]), np.array([100.0, 1.0]), 2, 24, 0.0, 0.5)
    assert clipped.max() == 0.5


def test_session_affinity_is_the_share_of_recent_session_items_per_category():
    categories = np.array([None, "a", "a", "b", "c", None], dtype=object)
    scores = lc.session_affinity(np.array([3, 1, 2, 1]), categories, last=3)   # the last three: a, a, a
    assert scores.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    scores = lc.session_affinity(np.array([3, 1, 3, 4]), categories, last=4)
    assert scores.tolist() == [0.0, 0.25, 0.25, 0.5, 0.25, 0.0]
    assert lc.session_affinity(np.zeros(0, np.int64), categories, 5).sum() == 0


def test_context_parts_are_weighted_and_unknown_context_adds_nothing():
    tables = lc.context_tables(pd.DataFrame({"item_idx": [1, 2], "hour": [19, 7], "count": [5, 5]}),
                               pd.DataFrame({"item_idx": [1, 2], "device": ["mobile", "web"], "count": [5, 5]}),
                               n_items=2, settings=lc.LiveSettings(prior_count=1.0))
    assert tables.devices == ("mobile", "web")
    settings = lc.LiveSettings(weights={"session": 0.5, "hour": 0.3, "device": 0.2}, prior_count=1.0)
    categories = np.array([None, "a", "b"], dtype=object)
    parts = lc.context_parts(lc.RequestContext(hour=19, device="mobile", session_items=np.array([2])), tables,
                             categories, settings)
    assert parts["session"].tolist() == [0.0, 0.0, 0.5]
    assert parts["hour"][1] > 0 > parts["hour"][2] and parts["device"][1] > 0 > parts["device"][2]
    unknown = lc.context_parts(lc.RequestContext(hour=0, device="tv"), tables, categories, settings)
    assert all(not values.any() for values in unknown.values())
    with pytest.raises(ValueError, match="stream.live_context.weights"):
        lc.LiveSettings.from_conf({"weights": {"weather": 1.0}})


def _items(n=4):
    return fu.ItemFeatures(item_id=np.array([None] + [f"i{i}" for i in range(1, n + 1)], dtype=object),
                           category=np.array([None, "a", "a", "b", "b"][:n + 1], dtype=object),
                           popularity=np.zeros(n + 1), sentiment=np.zeros(n + 1), first_seen=np.full(n + 1, np.nan),
                           price=np.full(n + 1, np.nan))


def test_session_term_reorders_and_explains():
    items = _items()
    settings = fu.FusionSettings(weights={"model": 1.0, "social": 0, "sentiment": 0, "fresh": 0, "pop": 0},
                                 max_per_category=None)
    user = fu.UserContext(user_key="u", history_items=np.array([1]), history_types=np.array(["view"], dtype=object))
    priors = fu.ItemPriors.build(items, 0.0, settings)
    pool = dict(pool_items=np.array([2, 3, 4]), pool_scores=np.array([1.0, 0.5, 0.4]))
    plain = fu.rank_user(user, items, priors, settings, 3, 0.0, **pool)
    assert plain["item_idx"].tolist() == [2, 3, 4]
    session = {"session": np.array([0.0, 0.0, 0.0, 2.0, 2.0])}   # the session is browsing category b
    live = fu.rank_user(user, items, priors, settings, 3, 0.0, context_parts=session, **pool)
    assert live["item_idx"].tolist() == [3, 4, 2]
    assert live["reason_code"].iloc[0] == "in_session" and "(b)" in live["reason"].iloc[0]
    assert live["components"].iloc[0]["session"] == 2.0


def test_items_newer_than_the_model_are_left_out():
    items = _items().first(2)
    assert items.n_items == 2 and items.category.tolist() == [None, "a", "a"]
    row = {"user_key": "u", "items": [1, 3, 2], "event_types": [1, 1, 4], "purchased": [2, 4],
           "friend_events": [{"friend_idx": 5, "item_idx": 4, "event_type": 4, "ts": 1.0},
                             {"friend_idx": 5, "item_idx": 1, "event_type": 4, "ts": 2.0}]}
    user = user_context(row, ["view", "click", "cart", "purchase"], n_items=2)
    assert user.history_items.tolist() == [1, 2] and user.history_types.tolist() == ["view", "purchase"]
    assert user.purchased.tolist() == [2] and user.friend_items.tolist() == [1]
