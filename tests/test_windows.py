"""The input windows shared by training, evaluation and inference."""
import numpy as np
import pytest

from socialrec.features.windows import build_inputs, history_end, pad_left


def test_pad_left_keeps_the_most_recent_values():
    assert pad_left([1, 2, 3], 5).tolist() == [0, 0, 1, 2, 3]
    assert pad_left([1, 2, 3, 4, 5, 6], 4).tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize("cutoff,expected", [("train", 3), ("valid", 4), ("full", 5)])
def test_cutoffs_hide_the_holdout_items(cutoff, expected):
    assert history_end(5, True, cutoff) == expected
    assert history_end(5, False, cutoff) == 5


def test_unknown_cutoff_is_an_error():
    with pytest.raises(ValueError, match="unknown cutoff"):
        history_end(3, True, "future")


def test_build_inputs_never_shows_the_test_item_before_the_test():
    row = {"items": [11, 12, 13, 14], "event_types": [1, 2, 3, 4], "hours": [1, 2, 3, 4], "gaps": [1, 1, 2, 3],
           "test_item": 14, "friend_items": [7, 8]}
    valid = build_inputs([row], "valid", 5)
    train = build_inputs([row], "train", 5)
    assert valid["items"].tolist() == [[0, 0, 11, 12, 13]]
    assert train["items"].tolist() == [[0, 0, 0, 11, 12]]
    assert train["event_types"].tolist() == [[0, 0, 0, 1, 2]]
    assert valid["friend_items"].tolist() == [[7, 8]]
    assert valid["items"].dtype == np.int64
