"""Published protocols: the project's model beside the literature's baselines on a fixed split, scored the way
the published tables are (all items ranked, a user's test items together, their train and validation items
masked; Recall, NDCG, Precision, Hit and MRR at K as RecBole defines them).

`build_split` makes the split (a published split folder, or a dataset split at random by ratio), `run_protocol`
writes its train and validation pairs as a source, runs the pipeline on it (ingest, clean, features, text
embedding, Ray training: every gate included; the pipeline holds out validation pairs only, so training and early
stopping never see a test pair), then ranks the split's test users with the trained model and its variants
(the id-only SASRec) and trains and ranks popularity, BPR-MF and LightGCN on the same train pairs
(`socialrec.evaluation.graph_baselines`). The report (`LAKE/_reports/protocol-<run_id>.json`) keeps every figure,
the seeds, each baseline's mean and 95% interval over seeds, and the model's paired difference to every row.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.etl.adapters import prepare_source
from socialrec.etl.pseudonymise import pseudonymisation_key
from socialrec.evaluation import graph_baselines as gb
from socialrec.evaluation.metrics import hit_matrix, paired_values, per_user_topk, topk_metrics
from socialrec.evaluation.splits import (Split, load_published_split, published_to_original_ids, ratio_split,
                                         write_split_source)
from socialrec.inference import model_store
from socialrec.io.spark_session import get_spark
from socialrec.io.tables import Lake
from socialrec.pipeline import run_pipeline

PIPELINE_STAGES = ["ingest", "clean", "features", "embed_text", "train"]


def _dataset_tables(dataset_dir: str | Path, staging: Path) -> dict[str, pd.DataFrame]:
    """A dataset's generic tables (through its adapter), as text."""
    source = Path(prepare_source(dataset_dir, staging))
    return {name: pd.read_csv(source / f"{name}.csv", dtype=str, keep_default_na=False)
            for name in ("events", "social", "items") if (source / f"{name}.csv").is_file()}


def catalogue(split: Split, items: pd.DataFrame | None, item_map: dict[str, str] | None) -> pd.DataFrame:
    """Every item of the split (test-only items too: full ranking ranks the whole catalogue), with the dataset's
    text where its original id is known (`item_map`: published id -> original id; None: the same ids)."""
    ids = sorted(set(split.train["item_id"]) | set(split.valid["item_id"]) | set(split.test["item_id"]))
    frame = pd.DataFrame({"item_id": ids})
    if items is None:
        return frame
    original = frame["item_id"].map(item_map) if item_map is not None else frame["item_id"]
    described = items.drop_duplicates("item_id").set_index("item_id")
    return pd.concat([frame, described.reindex(original.to_numpy()).reset_index(drop=True)], axis=1)


def build_split(split_dir: str | None, dataset_dir: str | None, settings: dict, staging: Path,
                ratios=None, seed: int | None = None) -> tuple[Split, pd.DataFrame | None]:
    """The split and its catalogue. `split_dir`: a published split (text from `dataset_dir`'s items where given,
    through the split's reindex files); else `dataset_dir` split at random by `ratios` with `seed`."""
    seed = int(settings["split_seed"] if seed is None else seed)
    tables = _dataset_tables(dataset_dir, staging) if dataset_dir else {}
    if split_dir:
        split = load_published_split(split_dir, float(settings["valid_ratio"]), seed)
        item_map = published_to_original_ids(split_dir, "item")
    elif dataset_dir:
        social = tables.get("social")
        split = ratio_split(tables["events"], ratios or settings["ratios"], seed,
                            social[["src_user_id", "dst_user_id"]] if social is not None else None,
                            name=Path(dataset_dir).name)
        item_map = None
    else:
        raise ValueError("give a published split folder (--split) or a dataset to split by ratio (--dataset)")
    items = catalogue(split, tables.get("items"), item_map)
    if tables.get("items") is not None and "title" in items:
        split.protocol["items_with_text"] = int((items["title"].fillna("") != "").sum())
    split.protocol["items"] = len(items)
    return split, items


def pseudonym(user_id: str, key: bytes) -> str:
    """The user_key that cleaning gives `user_id` (HMAC-SHA256 hex, as socialrec.etl.pseudonymise in Spark)."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def model_top_lists(lake, conf: dict, user_ids: list[str], k: int) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    """Top-k item ids (published ids) for `user_ids` under the trained model and each variant, from each user's
    whole history in gold.user_sequences (train and validation pairs), that history masked. Users the lake does
    not know get empty lists (every test item a miss). Returns ({model: [users, k] item positions in
    `item_ids`}, item_ids, known mask)."""
    key = pseudonymisation_key(conf["clean"]["pseudonymisation"])
    index = lake.read("gold.item_index").select("item_idx", "item_id").toPandas().sort_values("item_idx")
    item_ids = [""] * (int(index["item_idx"].max()) + 1)
    for idx, item in zip(index["item_idx"], index["item_id"]):
        item_ids[int(idx)] = item
    sequences = lake.read("gold.user_sequences").toPandas()
    rows = {key_: position for position, key_ in enumerate(sequences["user_key"])}
    wanted = [rows.get(pseudonym(user, key), -1) for user in user_ids]
    known = np.array([position >= 0 for position in wanted])
    records = sequences.iloc[[p for p in wanted if p >= 0]].to_dict("records")
    info = model_store.latest(lake.directory("checkpoints_dir"))
    checkpoints = {"model": info["checkpoint"], **{n: p for n, p in (info.get("variants") or {}).items()}}
    batch = int(conf["infer"]["batch_size"])
    max_len = int(conf["features"]["max_seq_len"])
    lists = {}
    for name, path in checkpoints.items():
        model, _ = model_store.load_model(path)
        chunks = []
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            scores = model_store.score_histories(model, chunk, "full", max_len)
            scores[:, 0] = -np.inf
            chunks.append(gb.top_k(scores, [np.asarray(r["items"], dtype=np.int64) for r in chunk], k))
        top = np.zeros((len(user_ids), k), dtype=np.int64)  # 0: the padding id, never a test item
        if chunks:
            top[known] = np.concatenate(chunks)
        lists[name] = top
    return lists, item_ids, known


def per_user_values(lists: np.ndarray, test_sets: list, metrics: list[str]) -> dict[str, np.ndarray]:
    hits = hit_matrix(lists, test_sets)
    n_relevant = [len(items) for items in test_sets]
    return {metric: per_user_topk(hits, n_relevant, metric) for metric in metrics}


def interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean and a normal-approximation interval over seeds (the half-width is 0 for a single seed)."""
    mean = float(np.mean(values))
    half = 1.959964 * float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(values)}


def run_protocol(conf: dict, split: Split, items: pd.DataFrame | None, *, train_model: bool = True,
                 rank_model: bool = True, progress=print) -> dict:
    """The whole protocol on one split: the pipeline on its train/validation pairs (unless `train_model` is off:
    the lake's model from an earlier run on the same split), then every model ranked on its test pairs (the
    baselines only when `rank_model` is off). Returns the report (also written under the lake's reports folder)."""
    settings = conf["protocol"]
    ks = [int(k) for k in settings["ks"]]
    names = [f"{metric}@{k}" for k in ks for metric in settings["metrics"]]
    lake_root = Path(conf["lake"]["root"]).resolve()
    source = lake_root / "_source" / "split"
    write_split_source(split, source, items)
    report = {"split": split.protocol, "sizes": split.sizes(), "ks": ks, "models": {}, "comparisons": {}}
    if split.social is not None:
        report["sizes"]["social"] = len(split.social)

    data, user_ids, item_ids = gb.index_split(split)
    test_sets = data.item_sets("test")
    test_users = np.array([u for u, s in enumerate(test_sets) if len(s)], dtype=np.int64)
    truth = [test_sets[u] for u in test_users]
    masked = [np.concatenate([a, b]) for a, b in zip(data.item_sets("train"), data.item_sets("valid"))]
    per_user: dict[str, dict[str, np.ndarray]] = {}

    if train_model:
        started = time.perf_counter()
        pipeline_report = run_pipeline(conf, str(source), PIPELINE_STAGES, progress=progress)
        report["pipeline_run_id"] = pipeline_report.run_id
        report["pipeline_seconds"] = round(time.perf_counter() - started, 1)
        report["gates_passed"] = sum(1 for gate in pipeline_report.gates.values() if gate.get("success"))
        report["training"] = {k: v for k, v in (pipeline_report.stages.get("train") or {}).items()
                              if k in ("variants", "seconds", "best_epoch")}
    if rank_model:
        lake = Lake(get_spark(conf), conf)
        report.setdefault("pipeline_run_id", model_store.latest(lake.directory("checkpoints_dir"))["run_id"])
        lists, lake_items, known = model_top_lists(lake, conf, [user_ids[u] for u in test_users], max(ks))
        position = {item: i for i, item in enumerate(item_ids)}
        # Lake item ids back to the split's dense ids (the padding id 0 maps to -1: never a test item).
        to_split = np.array([-1] + [position.get(item, -1) for item in lake_items[1:]], dtype=np.int64)
        report["users_unknown_to_lake"] = int((~known).sum())
        for name, top in lists.items():
            coded = to_split[top]
            per_user[name] = per_user_values(coded, truth, names)
            report["models"][name] = {"metrics": topk_metrics(coded, truth, ks, settings["metrics"])}

    baselines = settings["baselines"]
    seeds = [int(s) for s in settings["baseline_seeds"]]
    popularity = gb.popularity_scores(data)
    top = gb.rank_all(lambda batch: np.tile(popularity, (len(batch), 1)), test_users, masked, max(ks))
    per_user["popularity"] = per_user_values(top, truth, names)
    report["models"]["popularity"] = {"metrics": topk_metrics(top, truth, ks, settings["metrics"])}
    for name in baselines["models"]:
        if not isinstance(baselines.get(name), dict):
            raise ValueError(f"protocol.baselines.models names {name!r} but protocol.baselines.{name} "
                             f"(its layers and learning_rate) is not set")
        model_settings = {**baselines, **baselines[name]}
        runs = []
        for seed in seeds:
            progress(f"protocol: training {name} (seed {seed})")
            trained = gb.train_factor_model(data, model_settings, int(model_settings["layers"]), seed, log=progress)
            top = gb.rank_all(lambda batch: trained["users"][batch] @ trained["items"].T, test_users, masked, max(ks))
            runs.append({"seed": seed, "metrics": topk_metrics(top, truth, ks, settings["metrics"]),
                         **{k: v for k, v in trained.items() if k not in ("users", "items")}})
            if seed == seeds[0]:
                per_user[name] = per_user_values(top, truth, names)
        report["models"][name] = {
            "metrics": {m: interval([run["metrics"][m] for run in runs])["mean"] for m in names},
            "intervals": {m: interval([run["metrics"][m] for run in runs]) for m in names},
            "runs": runs,
        }
    if "model" in per_user:
        confidence = float(conf["evaluate"]["compare"]["confidence"])
        report["comparisons"] = {
            other: {m: paired_values(per_user["model"][m], values[m], confidence) for m in settings["compare"]}
            for other, values in per_user.items() if other != "model"}
    report["users_evaluated"] = int(len(test_users))
    out = lake_root / "_reports" / f"protocol-{report.get('pipeline_run_id', 'baselines')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not train_model and out.is_file():  # ranking again a model trained earlier: keep how it was trained
        earlier = json.loads(out.read_text())
        report.update({key: earlier[key] for key in ("pipeline_seconds", "gates_passed", "training")
                       if key in earlier and key not in report})
    out.write_text(json.dumps(report, indent=1, default=float))
    report["path"] = str(out)
    return report


def markdown_table(report: dict, columns: list[str]) -> str:
    """The report's models in the published table's own columns (baselines: mean over seeds)."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, entry in report["models"].items():
        cells = [f"{entry['metrics'][c]:.4f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
