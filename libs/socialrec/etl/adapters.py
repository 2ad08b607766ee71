"""Adapters from public research datasets, in the files their publishers distribute, to the generic input format.

`prepare_source(source_dir, staging_dir)` is what a pipeline calls before ingesting: a folder already in the
generic format (an `events.*` file or an `events/` folder) comes back unchanged; a folder holding one of the
datasets below, recognised by its published file names, is converted once into `staging_dir/<name>/`
(`events.csv`, `social.csv`, `items.csv` as available, then `_SUCCESS` last) and that folder comes back. The
conversion is cached: it is skipped while `_SUCCESS` is newer than every input file (and was written by this
adapter version from the same source folder). Anything else raises `SourceError`.

Each dataset has `ADAPTERS[name] = (detector, converter)`: `detector(folder) -> list[Path]` lists the
published files of the dataset found directly in `folder` that the converter reads (empty: not this dataset);
`converter(raw_dir, out_dir) -> dict[str, int]` writes the generic tables and returns their row counts.
Rows are written exactly as published (duplicates, self-links and edges to users without events included:
cleaning quarantines or dedupes them with a rule name, so nothing is lost silently). Ids are written as the
publisher's ids, as text.

Mapping decisions (the table is in docs/datasets.md): dataset: events (event_type, rating) | time | social
(relation) | items.

- ciao: `rating_with_timestamp.mat` rows as "rating" with the 0-5 value (helpfulness dropped) | real Unix seconds,
  day granularity (same-day events tie; rows written by user, time, file order) | `trustnetwork.mat` as "trust" |
  the product's category name (`catalog_ciao.txt`) as `category` only: Tang's files name no product.
- epinions: `rating.mat` rows as "rating", 1-5 | none: synthetic, file order | `trustnetwork.mat` as "trust" |
  category name as `category` only.
- lastfm-hetrec2011: one "view" per `user_artists.dat` pair, rating empty (a listen count is not a rating:
  dropped) | none: synthetic, file order (user, then artist id) | `user_friends.dat` as "friend" (both directions,
  as published) | artist name as `title`, its TOP_TAGS most assigned tags as `description`.
- amazon-beauty: each review as "purchase", rating empty | order only: synthetic, in S3-Rec's order | none |
  product title as `title` (empty for the 7 items without one).
- yelp-diffnet: each train/val/test pair as "purchase" | none: synthetic, per user the train pairs, then the
  validation pairs, then the test pairs | `yelp.links` as "friend" | none.
- filmtrust: `ratings.txt` rows as "rating", 0.5-4 | none: synthetic, file order | `trust.txt` as "trust" | none.

Synthetic timestamps: where a dataset gives only an order, or no time at all, the adapter numbers each user's events
in the stated order and gives event k (0-based) the time SYNTHETIC_EPOCH + k hours (2000-01-01T00:00:00Z, one hour
apart; every user starts at the epoch). They are strictly increasing per user, so the project's leave-last-out holds
out the last rows in that order: for Amazon Beauty it is S3-Rec's own leave-one-out; for datasets with no time
(epinions, lastfm listens, filmtrust) it is a deterministic split by file order, not a temporal one; for Yelp
(DiffNet) each user's published validation pairs come after the training pairs and the published test pairs last, so
a user with published test pairs is tested on one of them (its last; DiffNet's split is random per pair, and every
user with validation pairs also has test pairs), and the 6,613 users with none are held out on training pairs. Hour
of day and gap features carry no information on synthetic times, and "friends' items before a step" compares
positions, not moments.

Choices not taken: lastfm tag-assignment dates are not used as listen times (they date a tag, not a listen,
exist for only 20,665 of the 92,834 pairs, and mixing real and synthetic times would order them arbitrarily);
ciao's `trust.mat` (57,544 links) is not used because its user ids do not match the rating files' (edges share
a rated product no more often than random pairs do), while `trustnetwork.mat` does; no title or description is
ever made up from ids or categories.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.io.sources import SourceError

ADAPTER_VERSION = 1
SYNTHETIC_EPOCH = 946_684_800          # 2000-01-01T00:00:00Z, epoch seconds
SYNTHETIC_STEP_SECONDS = 3_600         # one hour between a user's consecutive synthetic events
TOP_TAGS = 10                          # lastfm: tags per artist description
SUCCESS = "_SUCCESS"

Detector = Callable[[Path], list[Path]]
Converter = Callable[[Path, Path], dict[str, int]]


# ---------------------------------------------------------------------------------------------------- helpers

def _first(folder: Path, *names: str) -> Path | None:
    """The first of `names` that is a file directly in `folder`."""
    for name in names:
        path = folder / name
        if path.is_file():
            return path
    return None


def _present(*paths: Path | None) -> list[Path]:
    return [p for p in paths if p is not None]


def _text(values: pd.Series) -> pd.Series:
    """Free text as one line (the CSV reader is line based): control characters become spaces; missing is ''."""
    return (values.fillna("").astype(str)
            .str.replace(r"[\x00-\x1f\x7f]+", " ", regex=True).str.replace(r" {2,}", " ", regex=True).str.strip())


def _ids(values) -> pd.Series:
    """Ids as they will read as text: integers stay integers (written without a decimal part), text is trimmed."""
    series = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_integer_dtype(series):
        return series
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        return series.astype("Int64")
    return series.astype(str).str.strip()


def synthetic_ts(users: pd.Series) -> pd.Series:
    """SYNTHETIC_EPOCH + k hours for each user's k-th row (0-based) in the given row order."""
    step = users.groupby(users, sort=False).cumcount().to_numpy(dtype=np.int64)
    return pd.Series(SYNTHETIC_EPOCH + step * SYNTHETIC_STEP_SECONDS, index=users.index)


def _write(df: pd.DataFrame, out_dir: Path, table: str) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{table}.csv", index=False, lineterminator="\n")
    return len(df)


def _events(users, items, ts, event_type: str, rating=None) -> pd.DataFrame:
    frame = {"user_id": _ids(users).to_numpy(), "item_id": _ids(items).to_numpy(),
             "ts": np.asarray(ts, dtype=np.int64), "event_type": event_type}
    if rating is not None:
        frame["rating"] = _ids(rating).to_numpy()  # numbers as published ("4", "3.5")
    return pd.DataFrame(frame)


def _social(src, dst, relation: str) -> pd.DataFrame:
    return pd.DataFrame({"src_user_id": _ids(src).to_numpy(), "dst_user_id": _ids(dst).to_numpy(),
                         "relation": relation})


def _read_table(path: Path, sep: str, names: list[str] | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """A delimited file with every field as text, exactly as delivered (no quoting, no NA guessing)."""
    return pd.read_csv(path, sep=sep, header=None if names else 0, names=names, dtype=str, quoting=3,
                       keep_default_na=False, encoding=encoding)


def _require(detector: Detector, raw_dir: Path, name: str) -> list[Path]:
    inputs = detector(Path(raw_dir))
    if not inputs:
        raise SourceError(f"{raw_dir}: the files of {name} were not found (expected {HINTS[name]})")
    return inputs


# ---------------------------------------------------------------------------------- Tang's Ciao and Epinions

def _mat_columns(path: Path | None) -> int | None:
    """Columns of the one matrix in a MATLAB file, read from its header only."""
    if path is None:
        return None
    from scipy.io import whosmat

    try:
        shapes = [shape for _, shape, _ in whosmat(str(path))]
    except Exception:  # not a MATLAB file
        return None
    return shapes[0][1] if len(shapes) == 1 and len(shapes[0]) == 2 else None


def _load_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    arrays = [v for k, v in loadmat(str(path)).items() if not k.startswith("__")]
    if len(arrays) != 1:
        raise SourceError(f"{path}: expected one matrix, found {len(arrays)}")
    return np.asarray(arrays[0]).astype(np.int64)


def _read_catalog(path: Path | None) -> dict[str, str]:
    """`catalog_*.txt`: one `<id> <name>` per line (CRLF; 'Ciao Caf?' is as published)."""
    if path is None:
        return {}
    names = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        parts = line.strip().split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit():
            names[parts[0]] = parts[1].strip()
    return names


def _tang_items(products: pd.Series, categories: pd.Series, catalog: dict[str, str]) -> pd.DataFrame:
    """One row per product: its most frequent category (ties: lowest id), as the catalogue's name (the id
    itself when no catalogue is there). Tang's files have no product names, so there is no title."""
    pairs = pd.DataFrame({"item_id": _ids(products).to_numpy(), "c": categories.to_numpy(dtype=np.int64)})
    counts = pairs.groupby(["item_id", "c"]).size().rename("n").reset_index()
    best = counts.sort_values(["item_id", "n", "c"], ascending=[True, False, True]).drop_duplicates("item_id")
    category = best["c"].astype(str)
    best = best.assign(category=category.map(catalog).fillna(category) if catalog else category)
    return best[["item_id", "category"]].reset_index(drop=True)


def detect_ciao(folder: Path) -> list[Path]:
    """`rating_with_timestamp.mat` (or a 5-column `rating.mat`), optional `trustnetwork.mat`, `catalog_ciao.txt`."""
    folder = Path(folder)
    ratings = _first(folder, "rating_with_timestamp.mat")
    if ratings is None and _mat_columns(_first(folder, "rating.mat")) == 5:
        ratings = folder / "rating.mat"
    if ratings is None:
        return []
    return _present(ratings, _first(folder, "trustnetwork.mat"), _first(folder, "catalog_ciao.txt"))


def convert_ciao(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    inputs = _require(detect_ciao, raw_dir, "ciao")
    ratings = inputs[0]
    m = _load_mat(ratings)  # user, product, category, rating, helpfulness[, timestamp]
    df = pd.DataFrame({"u": m[:, 0], "p": m[:, 1], "c": m[:, 2], "r": m[:, 3]})
    if ratings.name == "rating_with_timestamp.mat":
        df["ts"] = m[:, 5]
        df = df.sort_values(["u", "ts"], kind="stable")
    else:  # rating.mat alone: no time, synthetic times in file order
        df["ts"] = synthetic_ts(df["u"])
    return _write_tang(df, Path(raw_dir), Path(out_dir), "catalog_ciao.txt")


def _write_tang(df: pd.DataFrame, raw_dir: Path, out_dir: Path, catalog_name: str) -> dict[str, int]:
    """Ciao and Epinions share Tang et al.'s layout: ratings (u, p, c, r, ts), `trustnetwork.mat`, a category list."""
    counts = {"events": _write(_events(df["u"], df["p"], df["ts"], "rating", df["r"]), out_dir, "events")}
    trust = _first(raw_dir, "trustnetwork.mat")
    if trust is not None:
        t = _load_mat(trust)
        counts["social"] = _write(_social(t[:, 0], t[:, 1], "trust"), out_dir, "social")
    catalog = _read_catalog(_first(raw_dir, catalog_name))
    counts["items"] = _write(_tang_items(df["p"], df["c"], catalog), out_dir, "items")
    return counts


def detect_epinions(folder: Path) -> list[Path]:
    """A 4-column `rating.mat` (user, product, category, rating), optional `trustnetwork.mat`, `catalog_epinion.txt`."""
    folder = Path(folder)
    ratings = _first(folder, "rating.mat")
    if _first(folder, "rating_with_timestamp.mat") is not None or _mat_columns(ratings) != 4:
        return []
    return _present(ratings, _first(folder, "trustnetwork.mat"), _first(folder, "catalog_epinion.txt"))


def convert_epinions(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    inputs = _require(detect_epinions, raw_dir, "epinions")
    m = _load_mat(inputs[0])
    df = pd.DataFrame({"u": m[:, 0], "p": m[:, 1], "c": m[:, 2], "r": m[:, 3]})
    df["ts"] = synthetic_ts(df["u"])
    return _write_tang(df, Path(raw_dir), Path(out_dir), "catalog_epinion.txt")


# ------------------------------------------------------------------------------------------ HetRec 2011 Last.fm

def detect_lastfm_hetrec2011(folder: Path) -> list[Path]:
    """`user_artists.dat`, optional `user_friends.dat`, `artists.dat`, `tags.dat`, `user_taggedartists.dat`."""
    folder = Path(folder)
    listens = _first(folder, "user_artists.dat")
    if listens is None:
        return []
    return _present(listens, *(_first(folder, n) for n in ("user_friends.dat", "artists.dat", "tags.dat",
                                                            "user_taggedartists.dat")))


def _artist_tags(folder: Path) -> pd.Series:
    """Each artist's TOP_TAGS most assigned tags (ties: lowest tag id), comma separated."""
    assignments, tags = _first(folder, "user_taggedartists.dat"), _first(folder, "tags.dat")
    if assignments is None or tags is None:
        return pd.Series(dtype=str)
    ta = pd.read_csv(assignments, sep="\t", usecols=["artistID", "tagID"], dtype=np.int64)
    names = _read_table(tags, "\t", encoding="latin-1")  # tags.dat is ISO-8859-1, the other files UTF-8
    names = pd.Series(_text(names["tagValue"]).to_numpy(), index=names["tagID"].astype(np.int64))
    counts = ta.groupby(["artistID", "tagID"]).size().rename("n").reset_index()
    counts = counts.sort_values(["artistID", "n", "tagID"], ascending=[True, False, True])
    top = counts.groupby("artistID").head(TOP_TAGS).assign(tag=lambda d: d["tagID"].map(names))
    top = top[top["tag"].fillna("") != ""]
    return top.groupby("artistID", sort=True)["tag"].agg(", ".join).rename(index=str)


def convert_lastfm_hetrec2011(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    raw_dir = Path(raw_dir)
    inputs = _require(detect_lastfm_hetrec2011, raw_dir, "lastfm-hetrec2011")
    listens = _read_table(inputs[0], "\t")  # userID, artistID, weight (listen count: not a rating, dropped)
    events = _events(listens["userID"], listens["artistID"], synthetic_ts(listens["userID"]), "view")
    counts = {"events": _write(events, out_dir, "events")}
    friends = _first(raw_dir, "user_friends.dat")
    if friends is not None:
        f = _read_table(friends, "\t")
        counts["social"] = _write(_social(f["userID"], f["friendID"], "friend"), out_dir, "social")
    artists = _first(raw_dir, "artists.dat")
    if artists is not None:
        a = _read_table(artists, "\t")
        items = pd.DataFrame({"item_id": _ids(a["id"]), "title": _text(a["name"])})
        items["description"] = items["item_id"].map(_artist_tags(raw_dir)).fillna("")
        counts["items"] = _write(items, out_dir, "items")
    return counts


# ------------------------------------------------------------------------------- Amazon Beauty (S3-Rec order)

_S3REC = ("Beauty.txt", "s3rec_Beauty.txt")
_TITLE_FILES = (("datamaps.json", "p5_datamaps.json"), ("item_id_to_int.json", "dhr_item_id_to_int.json"),
                ("products_lookup.csv", "dhr_products_lookup.csv"))


def detect_amazon_beauty(folder: Path) -> list[Path]:
    """`interactions_ordered.csv` + `items.csv` (assembled), else S3-Rec's `Beauty.txt` (also `s3rec_Beauty.txt`)
    with, for titles, P5's `datamaps.json` + `item_id_to_int.json` + `products_lookup.csv` (or `p5_`/`dhr_` names)."""
    folder = Path(folder)
    ordered, items = _first(folder, "interactions_ordered.csv"), _first(folder, "items.csv")
    if ordered is not None and items is not None:
        with ordered.open(encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
        if {"user_id", "item_id", "position"} <= set(header):
            return [ordered, items]
    sequences = _first(folder, *_S3REC)
    if sequences is None:
        return []
    titles = [_first(folder, *names) for names in _TITLE_FILES]
    return [sequences, *titles] if all(titles) else [sequences]


def _beauty_titles_from_raw(datamaps: Path, asin_to_int: Path, lookup: Path) -> pd.DataFrame:
    """S3-Rec item id -> ASIN (P5 datamaps) -> product int (item_id_to_int) -> name (`global_product_id` row)."""
    id2item = json.loads(datamaps.read_text(encoding="utf-8"))["id2item"]
    to_int = json.loads(asin_to_int.read_text(encoding="utf-8"))
    names = pd.read_csv(lookup, dtype=str, keep_default_na=False)
    by_product = dict(zip(names["global_product_id"].astype(np.int64), names["name"]))
    ids = sorted(id2item, key=int)
    titles = [by_product.get(to_int.get(id2item[i]), "") for i in ids]
    return pd.DataFrame({"item_id": ids, "title": _text(pd.Series(titles))})


def convert_amazon_beauty(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    inputs = _require(detect_amazon_beauty, raw_dir, "amazon-beauty")
    if inputs[0].name == "interactions_ordered.csv":
        df = pd.read_csv(inputs[0], dtype=str, keep_default_na=False)
        df = df.assign(_u=df["user_id"].astype(np.int64), _p=df["position"].astype(np.int64))
        df = df.sort_values(["_u", "_p"], kind="stable")
        users, item_ids = df["user_id"], df["item_id"]
        raw_items = pd.read_csv(inputs[1], dtype=str, keep_default_na=False)
        items = pd.DataFrame({"item_id": _ids(raw_items["item_id"]), "title": _text(raw_items["title"])})
    else:  # S3-Rec's file: "<user> <item> <item> ..." per line, items in time order
        users, item_ids = [], []
        for line in inputs[0].read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) > 1:
                users += [fields[0]] * (len(fields) - 1)
                item_ids += fields[1:]
        users, item_ids = pd.Series(users), pd.Series(item_ids)
        items = _beauty_titles_from_raw(*inputs[1:]) if len(inputs) == 4 else None
    users = pd.Series(users).reset_index(drop=True)
    events = _events(users, pd.Series(item_ids).reset_index(drop=True), synthetic_ts(users), "purchase")
    counts = {"events": _write(events, out_dir, "events")}
    if items is not None:
        counts["items"] = _write(items, out_dir, "items")
    return counts


# --------------------------------------------------------------------------------------------- Yelp (DiffNet)

_YELP_SPLITS = ("yelp.train.rating", "yelp.val.rating", "yelp.test.rating")


def detect_yelp_diffnet(folder: Path) -> list[Path]:
    """`yelp.train.rating`, optional `yelp.val.rating`, `yelp.test.rating`, `yelp.links`."""
    folder = Path(folder)
    if _first(folder, _YELP_SPLITS[0]) is None:
        return []
    return _present(*(_first(folder, n) for n in (*_YELP_SPLITS, "yelp.links")))


def convert_yelp_diffnet(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    raw_dir = Path(raw_dir)
    _require(detect_yelp_diffnet, raw_dir, "yelp-diffnet")
    parts = []
    for rank, name in enumerate(_YELP_SPLITS):  # train, then validation, then test pairs per user
        path = _first(raw_dir, name)
        if path is not None:
            part = _read_table(path, "\t", names=["u", "i", "v"])
            parts.append(part.assign(_split=rank, _row=np.arange(len(part))))
    df = pd.concat(parts, ignore_index=True)
    df = df.assign(_u=df["u"].astype(np.int64)).sort_values(["_u", "_split", "_row"], kind="stable")
    df = df.reset_index(drop=True)
    counts = {"events": _write(_events(df["u"], df["i"], synthetic_ts(df["u"]), "purchase"), out_dir, "events")}
    links = _first(raw_dir, "yelp.links")
    if links is not None:
        ln = _read_table(links, "\t", names=["a", "b", "v"])
        counts["social"] = _write(_social(ln["a"], ln["b"], "friend"), out_dir, "social")
    return counts


# --------------------------------------------------------------------------------------------------- FilmTrust

def _triples(path: Path | None) -> bool:
    """The first line holds three space-separated numbers, as FilmTrust's files do."""
    if path is None:
        return False
    with path.open(encoding="utf-8", errors="replace") as fh:
        fields = fh.readline().split()
    return len(fields) == 3 and all(re.fullmatch(r"\d+(\.\d+)?", f) for f in fields)


def detect_filmtrust(folder: Path) -> list[Path]:
    """`ratings.txt` (user item rating) and `trust.txt` (trustor trustee value), space separated, no header."""
    folder = Path(folder)
    ratings, trust = _first(folder, "ratings.txt"), _first(folder, "trust.txt")
    return [ratings, trust] if _triples(ratings) and _triples(trust) else []


def convert_filmtrust(raw_dir: Path, out_dir: Path) -> dict[str, int]:
    ratings, trust = _require(detect_filmtrust, raw_dir, "filmtrust")
    r = _read_table(ratings, " ", names=["u", "i", "r"])
    counts = {"events": _write(_events(r["u"], r["i"], synthetic_ts(r["u"]), "rating", r["r"]), out_dir, "events")}
    t = _read_table(trust, " ", names=["a", "b", "v"])
    counts["social"] = _write(_social(t["a"], t["b"], "trust"), out_dir, "social")
    return counts


# ------------------------------------------------------------------------------------------ registry and staging

ADAPTERS: dict[str, tuple[Detector, Converter]] = {
    "ciao": (detect_ciao, convert_ciao),
    "epinions": (detect_epinions, convert_epinions),
    "lastfm-hetrec2011": (detect_lastfm_hetrec2011, convert_lastfm_hetrec2011),
    "amazon-beauty": (detect_amazon_beauty, convert_amazon_beauty),
    "yelp-diffnet": (detect_yelp_diffnet, convert_yelp_diffnet),
    "filmtrust": (detect_filmtrust, convert_filmtrust),
}
HINTS = {
    "ciao": "rating_with_timestamp.mat or a 5-column rating.mat [+ trustnetwork.mat, catalog_ciao.txt]",
    "epinions": "a 4-column rating.mat [+ trustnetwork.mat, catalog_epinion.txt]",
    "lastfm-hetrec2011": "user_artists.dat [+ user_friends.dat, artists.dat, tags.dat, user_taggedartists.dat]",
    "amazon-beauty": "interactions_ordered.csv + items.csv, or Beauty.txt/s3rec_Beauty.txt",
    "yelp-diffnet": "yelp.train.rating [+ yelp.val.rating, yelp.test.rating, yelp.links]",
    "filmtrust": "ratings.txt + trust.txt (space-separated triples)",
}
GENERIC_HINT = "events.csv|parquet|jsonl[.gz] or an events/ folder"


def is_generic(folder: str | Path) -> bool:
    """The folder holds the generic input format: an `events.*` file or an `events/` folder."""
    folder = Path(folder)
    return (folder / "events").is_dir() or any(p.is_file() for p in folder.glob("events.*"))


def detect(folder: str | Path) -> tuple[str, list[Path]]:
    """The one dataset whose published files are in `folder`, and the files its converter reads."""
    folder = Path(folder)
    found = {name: inputs for name, (detector, _) in ADAPTERS.items() if (inputs := detector(folder))}
    if len(found) > 1:
        raise SourceError(f"{folder}: files of several datasets ({', '.join(found)}); give each its own folder")
    if not found:
        known = "; ".join(f"{name}: {hint}" for name, hint in HINTS.items())
        raise SourceError(f"{folder}: not a source the pipeline can read. Known formats: the generic input format "
                          f"({GENERIC_HINT}); {known}")
    return next(iter(found.items()))


def _is_fresh(target: Path, source: Path, inputs: list[Path]) -> bool:
    marker = target / SUCCESS
    if not marker.is_file():
        return False
    try:
        stamp = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("adapter_version") != ADAPTER_VERSION or stamp.get("source") != str(source.resolve()):
        return False
    done = marker.stat().st_mtime_ns
    return all(done > p.stat().st_mtime_ns for p in inputs)


def prepare_source(source_dir: str | Path, staging_dir: str | Path) -> Path:
    """`source_dir` itself when it is in the generic format; otherwise the folder `staging_dir/<dataset>` holding
    the detected dataset converted to it (reused while its `_SUCCESS` is newer than every input file)."""
    source = Path(source_dir)
    if not source.is_dir():
        raise SourceError(f"source folder not found: {source}")
    if is_generic(source):
        return source
    name, inputs = detect(source)
    converter = ADAPTERS[name][1]
    target = Path(staging_dir) / name
    if _is_fresh(target, source, inputs):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{name}.converting-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        started = time.time()
        counts = converter(source, work)
        stamp = {"dataset": name, "source": str(source.resolve()), "adapter_version": ADAPTER_VERSION,
                 "inputs": [str(p) for p in inputs], "rows": counts, "seconds": round(time.time() - started, 2)}
        (work / SUCCESS).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")  # last
        old = target.parent / f".{name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
