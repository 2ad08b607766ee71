"""Fixed-length model inputs cut from a user's full time-ordered history (pure numpy, shared by
training, evaluation and inference so the three can never disagree on what the model sees)."""
from __future__ import annotations

import numpy as np

SEQUENCE_FIELDS = ("items", "event_types", "hours", "gaps")


def pad_left(values, length: int) -> np.ndarray:
    """The last `length` values, left-padded with 0 (0 is the padding id of every vocabulary)."""
    out = np.zeros(length, dtype=np.int64)
    tail = np.asarray(values, dtype=np.int64)[-length:] if length else np.zeros(0, dtype=np.int64)
    if len(tail):
        out[length - len(tail):] = tail
    return out


def history_end(n_steps: int, has_holdout: bool, cutoff: str) -> int:
    """How many leading steps of a history the model may see for a cutoff.

    train: everything before the validation item; valid: everything before the test item; full: all of it.
    Users without a holdout (too short a history) show their whole history at every cutoff.
    """
    if cutoff == "full" or not has_holdout:
        return n_steps
    if cutoff == "valid":
        return n_steps - 1
    if cutoff == "train":
        return n_steps - 2
    raise ValueError(f"unknown cutoff {cutoff!r}: expected train, valid or full")


def build_inputs(histories, cutoff: str, max_len: int) -> dict[str, np.ndarray]:
    """Stack padded windows for rows of gold.user_sequences (dicts or pandas rows).

    Each history needs the fields of SEQUENCE_FIELDS plus `test_item` (0 when the user has no holdout)
    and may carry `friend_items` (padded list of the friends' recent items).
    """
    batch: dict[str, list] = {field: [] for field in SEQUENCE_FIELDS}
    friends: list = []
    for row in histories:
        n_steps = len(row["items"])
        end = history_end(n_steps, bool(row["test_item"]), cutoff)
        for field in SEQUENCE_FIELDS:
            batch[field].append(pad_left(np.asarray(row[field])[:end], max_len))
        friend_items = row.get("friend_items") if hasattr(row, "get") else None
        friends.append(np.asarray(friend_items if friend_items is not None else [], dtype=np.int64))
    out = {field: np.stack(values) if values else np.zeros((0, max_len), np.int64) for field, values in batch.items()}
    width = max((len(f) for f in friends), default=0)
    out["friend_items"] = np.stack([pad_left(f, width) for f in friends]) if friends else np.zeros((0, 0), np.int64)
    return out
