"""Dataset adapters: every public dataset converts to the generic format with the row counts its README states,
ids as text, the promised time order; detection, `prepare_source` (generic folders unchanged, conversion
cached) and unknown folders. Reads SOCIALREC_DATASETS (default ../shared/datasets); skips when it is absent."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from socialrec.config import PROJECT_ROOT
from socialrec.etl.adapters import (ADAPTERS, SYNTHETIC_EPOCH, SYNTHETIC_STEP_SECONDS, detect, prepare_source,
                                    synthetic_ts)
from socialrec.io.sources import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, SourceError, find_files, require_source

DATASETS_DIR = Path(os.environ.get("SOCIALREC_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))

# Figures from the datasets' README files (../shared/datasets/README.md, lastfm readme.txt).
EXPECTED = {
    "ciao": dict(events=284_086, social=111_781, items=105_114, users=7_375, event_items=105_114,
                 event_type="rating", ratings=(0, 5), time="real"),
    "epinions": dict(events=922_267, social=355_754, items=296_277, users=22_164, event_items=296_277,
                     event_type="rating", ratings=(1, 5), time="synthetic"),
    "lastfm-hetrec2011": dict(events=92_834, social=25_434, items=17_632, users=1_892, event_items=17_632,
                              event_type="view", ratings=None, time="synthetic"),
    "amazon-beauty": dict(events=198_502, social=None, items=12_101, users=22_363, event_items=12_101,
                          event_type="purchase", ratings=None, time="synthetic"),
    "yelp-diffnet": dict(events=207_945, social=143_765, items=None, users=17_235, event_items=37_378,
                         event_type="purchase", ratings=None, time="synthetic"),
    "filmtrust": dict(events=35_497, social=1_853, items=None, users=1_508, event_items=2_071,
                      event_type="rating", ratings=(0.5, 4), time="synthetic"),
}
RELATION = {"ciao": "trust", "epinions": "trust", "lastfm-hetrec2011": "friend", "yelp-diffnet": "friend",
            "filmtrust": "trust"}


def dataset_dir(name: str) -> Path:
    if not DATASETS_DIR.is_dir():
        pytest.skip(f"datasets folder {DATASETS_DIR} not found (set SOCIALREC_DATASETS to its path)")
    folder = DATASETS_DIR / name
    if not folder.is_dir():
        pytest.skip(f"dataset folder {folder} not found")
    return folder


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each dataset converted once per module: name -> (out_dir, counts)."""
    done: dict[str, tuple[Path, dict[str, int]]] = {}

    def convert(name: str) -> tuple[Path, dict[str, int]]:
        if name not in done:
            raw = dataset_dir(name)
            out = tmp_path_factory.mktemp(name)
            done[name] = (out, ADAPTERS[name][1](raw, out))
        return done[name]

    return convert


@pytest.mark.parametrize("name", list(EXPECTED))
def test_dataset_converts_with_published_counts(name, converted):
    exp = EXPECTED[name]
    assert detect(dataset_dir(name))[0] == name
    out, counts = converted(name)
    tables = {t: exp[t] for t in ("events", "social", "items") if exp[t] is not None}
    assert counts == tables
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.csv" for t in tables)

    frames = {t: read_csv(out / f"{t}.csv") for t in tables}
    for table, df in frames.items():
        assert len(df) == tables[table], table
        assert set(REQUIRED_COLUMNS[table]) <= set(df.columns) <= set(REQUIRED_COLUMNS[table] + OPTIONAL_COLUMNS[table])
        if table == "items":  # one line per row: the CSV reader is line based
            assert (out / "items.csv").read_bytes().count(b"\n") == len(df) + 1
    for table, columns in (("events", ["user_id", "item_id"]), ("social", ["src_user_id", "dst_user_id"]),
                           ("items", ["item_id"])):
        for column in columns if table in frames else []:
            ids = frames[table][column]
            assert ids.str.fullmatch(r"\d+").all(), f"{table}.{column}: ids as the publisher's integers, as text"

    events = frames["events"]
    assert events["user_id"].nunique() == exp["users"]
    assert events["item_id"].nunique() == exp["event_items"]
    assert set(events["event_type"]) == {exp["event_type"]}
    if exp["ratings"]:
        rating = events["rating"].astype(float)
        assert (rating.min(), rating.max()) == exp["ratings"]
    else:
        assert "rating" not in events.columns

    ts = events["ts"].astype(np.int64)
    step = ts.groupby(events["user_id"], sort=False).diff().dropna()
    if exp["time"] == "synthetic":  # each user's rows in the documented order, one hour apart from the epoch
        first = ts.groupby(events["user_id"], sort=False).transform("min")
        assert (first == SYNTHETIC_EPOCH).all()
        assert (step == SYNTHETIC_STEP_SECONDS).all()
    else:  # real times, written in time order per user (ties allowed: day granularity)
        assert (step >= 0).all()
        assert pd.Timestamp(ts.min(), unit="s") >= pd.Timestamp("2000-05-01")
        assert pd.Timestamp(ts.max(), unit="s") < pd.Timestamp("2011-05-01")

    if "social" in frames:
        assert set(frames["social"]["relation"]) == {RELATION[name]}


def test_item_text_is_published_text_only(converted):
    out, _ = converted("amazon-beauty")
    items = read_csv(out / "items.csv")
    assert list(items.columns) == ["item_id", "title"]
    assert (items["title"] == "").sum() == 7  # 12,094 titles for 12,101 items: the rest stay empty
    out, _ = converted("lastfm-hetrec2011")
    items = read_csv(out / "items.csv").set_index("item_id")
    assert (items["title"] != "").all() and (items["description"] == "").sum() == 5_499  # untagged artists
    assert items.loc["1686", "title"] == '"Weird Al" Yankovic'
    assert items.loc["64", "title"] == "Röyksopp"
    assert items.loc["2", "description"].startswith("darkwave, german, gothic")
    assert len(items.loc["2", "description"].split(", ")) == 10
    out, _ = converted("ciao")
    items = read_csv(out / "items.csv")
    assert list(items.columns) == ["item_id", "category"]  # Tang's files name no product: no title
    assert items["category"].nunique() == 28 and "DVDs" in set(items["category"])


def test_yelp_published_test_pairs_come_last(converted):
    raw = dataset_dir("yelp-diffnet")
    out, _ = converted("yelp-diffnet")
    events = read_csv(out / "events.csv")
    split = pd.concat([read_csv_raw(raw / f"yelp.{s}.rating").assign(split=s) for s in ("train", "val", "test")])
    events = events.merge(split, on=["user_id", "item_id"], how="left", validate="one_to_one")
    events["rank"] = events["split"].map({"train": 0, "val": 1, "test": 2})
    events["ts"] = events["ts"].astype(np.int64)
    events = events.sort_values(["user_id", "ts"])
    assert events.groupby("user_id")["rank"].apply(lambda r: r.is_monotonic_increasing).all()
    last = events.groupby("user_id").tail(1)
    test_users = set(split.loc[split["split"] == "test", "user_id"])
    assert set(last.loc[last["split"] == "test", "user_id"]) == test_users


def read_csv_raw(path: Path) -> pd.DataFrame:
    names = ["user_id", "item_id", "v"]
    return pd.read_csv(path, sep="\t", header=None, names=names, dtype=str)[["user_id", "item_id"]]


def test_amazon_raw_files_give_the_same_tables(converted, tmp_path):
    raw = dataset_dir("amazon-beauty") / "raw"
    if not raw.is_dir():
        pytest.skip(f"{raw} not found")
    assert detect(raw)[0] == "amazon-beauty"
    assembled, _ = converted("amazon-beauty")
    counts = ADAPTERS["amazon-beauty"][1](raw, tmp_path)
    assert counts == {"events": 198_502, "items": 12_101}
    for table in ("events", "items"):
        assert (tmp_path / f"{table}.csv").read_bytes() == (assembled / f"{table}.csv").read_bytes(), table


def test_each_dataset_is_detected_by_its_own_detector_only():
    for name, (detector, _) in ADAPTERS.items():
        folder = dataset_dir(name)
        assert [other for other, (d, _) in ADAPTERS.items() if d(folder)] == [name]
        assert all(p.parent == folder for p in detector(folder))


def test_synthetic_ts_numbers_each_users_rows_in_order():
    users = pd.Series(["b", "a", "b", "b", "a"])
    assert synthetic_ts(users).tolist() == [SYNTHETIC_EPOCH + h * 3600 for h in (0, 0, 1, 2, 1)]


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_prepare_source_returns_generic_folder_unchanged(tmp_path, layout):
    source = tmp_path / "src"
    if layout == "file":
        source.mkdir()
        (source / "events.csv").write_text("user_id,item_id,ts\nu1,i1,1700000000\n")
    else:
        (source / "events").mkdir(parents=True)
        (source / "events" / "part-0.csv").write_text("user_id,item_id,ts\nu1,i1,1700000000\n")
    staging = tmp_path / "staging"
    assert prepare_source(source, staging) == source
    assert not staging.exists()


def test_prepare_source_converts_once_and_reconverts_when_inputs_change(tmp_path):
    raw = tmp_path / "my-filmtrust"
    shutil.copytree(dataset_dir("filmtrust"), raw)
    staging = tmp_path / "staging"

    target = prepare_source(raw, staging)
    assert target == staging / "filmtrust"
    assert require_source(target) == target and find_files(target, "events")[0] == "csv"
    marker = target / "_SUCCESS"
    stamp = json.loads(marker.read_text())
    assert stamp["dataset"] == "filmtrust" and stamp["rows"] == {"events": 35_497, "social": 1_853}
    assert [p.name for p in staging.iterdir()] == ["filmtrust"]  # no work folders left behind
    first = marker.stat().st_mtime_ns

    (target / "events.csv").write_text("sentinel")  # a cached conversion is not rewritten
    assert prepare_source(raw, staging) == target
    assert marker.stat().st_mtime_ns == first and (target / "events.csv").read_text() == "sentinel"

    later = first + 1_000  # an input changed after the conversion: convert again
    os.utime(raw / "trust.txt", ns=(later, later))
    assert prepare_source(raw, staging) == target
    assert marker.stat().st_mtime_ns > later
    assert len(read_csv(target / "events.csv")) == 35_497
    assert prepare_source(raw, staging) == target and marker.stat().st_mtime_ns > later  # and cached again

    marker.unlink()  # an interrupted conversion (no _SUCCESS) is redone
    assert prepare_source(raw, staging) == target and marker.is_file()


def test_unknown_folder_raises_source_error(tmp_path):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "ratings.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SourceError) as err:
        prepare_source(folder, tmp_path / "staging")
    message = str(err.value)
    assert str(folder) in message
    assert "events.csv" in message and all(name in message for name in ADAPTERS)
    with pytest.raises(SourceError, match="not found"):
        prepare_source(tmp_path / "missing", tmp_path / "staging")
    with pytest.raises(SourceError, match="filmtrust"):
        ADAPTERS["filmtrust"][1](folder, tmp_path / "out")
    assert not (tmp_path / "staging").exists()
