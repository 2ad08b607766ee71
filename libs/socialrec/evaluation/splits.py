"""Fixed train/validation/test splits, as the literature publishes them, for the published-protocol benchmark.

A `Split` holds (user, item) pairs with the publisher's ids kept as text, per part, in each user's order. It
comes from a published split folder (`load_published_split`: SocialLGN's `train_set.txt`/`test_set.txt`/
`trust.txt`, SELFRec's `train.txt`/`test.txt`) or from a dataset split at random by ratio (`ratio_split`:
RecBole's `RS` split with `RO` order, 8:1:1 by default). Published splits carry no validation part: it is carved
from train (SELFRec's sequences: each user's last train item, S3-Rec's convention; SocialLGN's sets: a seeded
random share), so models are tuned on validation only and the test pairs are read once.

`write_split_source` turns a split into the pipeline's generic input format: train then validation pairs per user
as events (times one hour apart in that order, so the pipeline's own leave-last-out holds out validation pairs
only), the social graph and the item text where known. The test pairs never reach the source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.etl.adapters import SYNTHETIC_EPOCH, SYNTHETIC_STEP_SECONDS
from socialrec.io.sources import SourceError

PARTS = ("train", "valid", "test")


@dataclass
class Split:
    """(user_id, item_id) pairs per part (text ids as published, each user's pairs in order), the social edges
    (src_user_id, dst_user_id) and how the split was made."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    social: pd.DataFrame | None = None
    protocol: dict = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {name: len(self.part(name)) for name in PARTS}


def _pairs(users, items) -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(users, dtype=str).to_numpy(),
                         "item_id": pd.Series(items, dtype=str).to_numpy()})


def ratio_counts(total: int, ratios: list[float]) -> list[int]:
    """How many of a user's `total` pairs go to each part: RecBole's `_calcu_split_ids` (floor of each share,
    the rest to the first part, and one pair to every later part whose share is a fraction of one, while the
    first keeps more than one)."""
    counts = [int(ratio * total) for ratio in ratios]
    counts[0] = total - sum(counts[1:])
    for position in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-position] * total < 1:
            counts[-position] += 1
            counts[0] -= 1
    return counts


def _split_by_ratio(pairs: pd.DataFrame, ratios: list[float], seed: int, shuffle: bool) -> list[pd.DataFrame]:
    """Each user's pairs (shuffled with `seed` unless `shuffle` is off: kept in order) cut by `ratio_counts`."""
    rng = np.random.default_rng(seed)
    parts: list[list[pd.DataFrame]] = [[] for _ in ratios]
    for _, rows in pairs.groupby("user_id", sort=True):
        rows = rows.iloc[rng.permutation(len(rows))] if shuffle else rows
        bounds = np.cumsum([0, *ratio_counts(len(rows), ratios)])
        for position in range(len(ratios)):
            parts[position].append(rows.iloc[bounds[position]:bounds[position + 1]])
    return [pd.concat(chunks, ignore_index=True) if chunks else pairs.iloc[:0] for chunks in parts]


def ratio_split(pairs: pd.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 2020, social: pd.DataFrame | None = None,
                name: str = "random") -> Split:
    """RecBole's random split by ratio, per user (`eval_args: {split: {RS: ratios}, order: RO, group_by: user}`):
    each user's distinct items shuffled with `seed`, then cut into train, validation and test."""
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative shares summing to 1 (train, valid, test), got {ratios}")
    pairs = _pairs(pairs["user_id"], pairs["item_id"]).drop_duplicates(ignore_index=True)
    train, valid, test = _split_by_ratio(pairs, ratios, seed, shuffle=True)
    return Split(train, valid, test, social, {"name": name, "kind": "ratio", "ratios": ratios, "seed": seed,
                                              "order": "random per user"})


def _read_selfrec(path: Path) -> pd.DataFrame:
    """SELFRec's sequence files: `user:item item ...` per line, items in time order."""
    users, items = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        user, _, sequence = line.partition(":")
        for item in sequence.split():
            users.append(user.strip())
            items.append(item)
    return _pairs(users, items)


def _read_csv_pairs(path: Path, columns=("user", "item")) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceError(f"{path}: expected columns {list(columns)}, found {list(frame.columns)}")
    return _pairs(frame[columns[0]], frame[columns[1]])


def load_published_split(folder: str | Path, valid_ratio: float = 0.1, seed: int = 2020) -> Split:
    """A published split folder, recognised by its file names, with a validation part carved from train."""
    folder = Path(folder)
    if (folder / "train_set.txt").is_file() and (folder / "test_set.txt").is_file():
        train = _read_csv_pairs(folder / "train_set.txt")
        test = _read_csv_pairs(folder / "test_set.txt")
        social = None
        if (folder / "trust.txt").is_file():
            edges = _read_csv_pairs(folder / "trust.txt", ("user", "friend"))
            social = pd.DataFrame({"src_user_id": edges["user_id"], "dst_user_id": edges["item_id"]})
        # SocialLGN's pairs are sets (file order is random): validation is a seeded random share of train.
        train, valid, _ = _split_by_ratio(train, [1.0 - valid_ratio, valid_ratio, 0.0], seed, shuffle=True)
        protocol = {"kind": "published", "format": "sociallgn", "valid": f"{valid_ratio:g} of train at random",
                    "seed": seed}
    elif (folder / "train.txt").is_file() and (folder / "test.txt").is_file():
        sequences = _read_selfrec(folder / "train.txt")
        test = _read_selfrec(folder / "test.txt")
        # Sequences (leave-one-out): the last train item is the validation item (S3-Rec's convention).
        last = sequences.groupby("user_id").cumcount(ascending=False) == 0
        many = sequences.groupby("user_id")["item_id"].transform("size") > 1
        train, valid = sequences[~(last & many)].reset_index(drop=True), sequences[last & many].reset_index(drop=True)
        social = None
        protocol = {"kind": "published", "format": "selfrec", "valid": "each user's last train item"}
    else:
        raise SourceError(f"{folder} holds no published split: expected SocialLGN's train_set.txt + test_set.txt "
                          f"or SELFRec's train.txt + test.txt")
    protocol["name"] = folder.name
    protocol["folder"] = str(folder)
    return Split(train, valid, test, social, protocol)


def published_to_original_ids(folder: str | Path, kind: str) -> dict[str, str] | None:
    """{published id: the dataset's original id} from a SocialLGN `userReindex.json`/`itemReindex.json`
    (which map original to published ids); None where the folder has none (the ids are the original ones)."""
    path = Path(folder) / f"{kind}Reindex.json"
    if not path.is_file():
        return None
    return {str(new): str(original) for original, new in json.loads(path.read_text()).items()}


def write_split_source(split: Split, out_dir: str | Path, items: pd.DataFrame | None = None,
                       event_type: str = "view") -> dict[str, int]:
    """The split's train and validation pairs as a source folder in the generic input format (`events.csv`,
    `social.csv`, `items.csv` as available), each user's train pairs then validation pairs one hour apart; the
    test pairs are left out. Returns the row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen = pd.concat([split.train, split.valid], ignore_index=True)  # train first: a user's order is kept
    step = seen.groupby("user_id", sort=False).cumcount().to_numpy()
    events = pd.DataFrame({
        "user_id": seen["user_id"], "item_id": seen["item_id"],
        "ts": pd.to_datetime(SYNTHETIC_EPOCH + step * SYNTHETIC_STEP_SECONDS, unit="s", utc=True)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "event_type": event_type,
    })
    events.to_csv(out / "events.csv", index=False)
    counts = {"events": len(events)}
    if split.social is not None:
        split.social.assign(relation="friend").to_csv(out / "social.csv", index=False)
        counts["social"] = len(split.social)
    if items is not None:
        items.to_csv(out / "items.csv", index=False)
        counts["items"] = len(items)
    (out / "split.json").write_text(json.dumps({**split.protocol, "sizes": split.sizes()}, indent=1))
    return counts
