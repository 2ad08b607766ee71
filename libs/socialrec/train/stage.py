"""The train stage: gather the gold inputs (training files, validation sample, text vectors, collaborative item
factors) and hand them
to Ray Train; publish the best checkpoint for scoring."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

from socialrec.config import deep_merge
from socialrec.features.windows import build_inputs
from socialrec.inference import model_store
from socialrec.run_context import RunContext


def text_matrix(ctx: RunContext, n_items: int) -> np.ndarray | None:
    """[n_items + 1, dim] pretrained text vectors, zero rows for items without text, when any variant trained
    in this run reads them."""
    if not any_variant_uses(ctx.conf, "use_text"):
        return None
    vectors = ctx.lake.read("gold.item_embeddings").toPandas()
    matrix = np.zeros((n_items + 1, len(vectors["embedding"].iloc[0])), dtype=np.float32)
    matrix[vectors["item_idx"].to_numpy()] = np.stack(vectors["embedding"].to_numpy())
    return matrix


def cf_matrix(ctx: RunContext, conf: dict, n_items: int, with_validation: bool = False) -> np.ndarray | None:
    """Collaborative item factors fitted on the training steps (also on the validation steps with
    `with_validation`), when any variant trained in this run uses them."""
    from socialrec.features.collaborative import item_factor_table

    if not any_variant_uses(conf, "use_cf"):
        return None
    params = conf["model"]["cf_factors"]
    return item_factor_table(ctx.lake.read("gold.user_sequences"), n_items,
                             {**params, "with_validation": with_validation or params.get("with_validation")})


def searched_cf_settings(ctx: RunContext, conf: dict, n_items: int, valid) -> tuple[dict, list[dict] | None]:
    """`conf` with the ALS settings that model.cf_factors.search chose on the validation users (unchanged when
    no search is set or no variant uses the cf component), and the search's trials."""
    from socialrec.features.collaborative import search_als_params

    params = conf["model"]["cf_factors"]
    if not params.get("search") or not any_variant_uses(conf, "use_cf"):
        return conf, None
    chosen, trials = search_als_params(ctx.lake.read("gold.user_sequences"), n_items, params, params["search"],
                                       valid, int(conf["train"]["valid_k"]))
    return deep_merge(conf, {"model": {"cf_factors": {key: chosen[key] for key in ("rank", "reg", "alpha")}}}), trials


def refit_als_term(checkpoint_dir: str, factors: np.ndarray) -> None:
    """Give a trained cf model's ALS term the item factors refitted on the validation steps too
    (model.cf_factors.refit_after_training): early stopping and the weight's calibration have used the validation
    step already, so from here on the model may know it, as the ALS baseline does."""
    from socialrec.model.recommender import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(checkpoint_dir)
    model.replace_als_term_factors(factors)
    save_checkpoint(checkpoint_dir, model, {**meta, "als_term_refit": True})


def absent_inputs(lake) -> dict[str, str]:
    """{model flag: why} for each input the lake has no data for (no item text: FilmTrust, Yelp; no friends'
    items: Amazon Beauty). It is switched off in every variant, so no model carries untrained weights for it
    and an ablation of it is recognised as the model itself."""
    absent = {}
    if not lake.exists("gold.item_embeddings") or not lake.read("gold.item_embeddings").limit(1).count():
        absent["use_text"] = "no item has text"
    if not lake.read("gold.user_sequences").where(F.size("friend_items") > 0).limit(1).count():
        absent["use_social"] = "no user has friends' items"
    return absent


def variant_confs(conf: dict) -> dict[str, dict]:
    """`model` (the configured recommender) plus each of train.variants: name -> model overrides, trained on
    the same data with the same settings (the SASRec-like baseline, ablations)."""
    variants = {"model": conf}
    for name, overrides in (conf["train"].get("variants") or {}).items():
        if name == "model":
            raise ValueError("train.variants cannot redefine `model`: it is the configured recommender")
        variants[name] = deep_merge(conf, {"model": overrides or {}})
    return variants


def any_variant_uses(conf: dict, flag: str) -> bool:
    """Whether the model or any variant trained beside it has model `flag` on: an input table is built only then."""
    return any(variant["model"].get(flag) for variant in variant_confs(conf).values())


def resume_point(checkpoints: Path, resume: str | None, name: str) -> str | None:
    """train.resume: null (start afresh), `latest` (the newest checkpoint of this variant in any earlier run) or
    a run id; the checkpoint that the variant's training continues from."""
    from socialrec.train.trainer import latest_checkpoint

    if not resume:
        return None
    runs = [checkpoints / resume] if resume != "latest" else [p for p in checkpoints.iterdir() if p.is_dir()]
    found = [checkpoint for run in runs if (checkpoint := latest_checkpoint(run / name))]
    if not found:
        raise FileNotFoundError(f"train.resume={resume}: no `{name}` checkpoint under {checkpoints}")
    return max(found, key=lambda path: Path(path).stat().st_mtime)


def checkpoint_meta(checkpoint_dir: str) -> dict:
    from socialrec.model.recommender import META_FILE

    return json.loads((Path(checkpoint_dir) / META_FILE).read_text())


def finished_result(checkpoint_dir: str):
    """The TrainResult of a variant whose run had finished: its exported best model and history."""
    from socialrec.train.trainer import HISTORY_FILE, TrainResult

    variant_dir = Path(checkpoint_dir).parents[2]  # <run>/<variant>/ray_results/<fit>/checkpoint_<n>
    history = json.loads((Path(checkpoint_dir) / HISTORY_FILE).read_text())
    best_epoch = checkpoint_meta(str(variant_dir / "best"))["epoch"]
    return TrainResult(checkpoint_dir=str(variant_dir / "best"), best_epoch=best_epoch, history=history,
                       samples_per_second=0.0, seconds=0.0)


def train(ctx: RunContext) -> dict:
    from socialrec.train.trainer import is_finished, train_recommender

    conf, lake = ctx.conf, ctx.lake
    index = lake.read("gold.item_index").select("item_idx", "popularity").toPandas()
    n_items = int(index["item_idx"].max())
    counts = np.zeros(n_items + 1, dtype=np.float64)
    counts[index["item_idx"].to_numpy()] = index["popularity"].to_numpy()
    valid = (
        lake.read("gold.user_sequences").where(F.col("test_item") > 0)
        .orderBy(F.xxhash64("user_key", F.lit(conf["train"]["seed"])))
        .limit(conf["train"]["valid_users"])
        .select("user_idx", "items", "event_types", "hours", "gaps", "test_item", "valid_item", "friend_items")
        .toPandas()
    )
    started = time.perf_counter()
    conf, cf_search = searched_cf_settings(ctx, conf, n_items, valid)
    cf_search_seconds = round(time.perf_counter() - started, 1)
    valid_inputs = build_inputs(valid.to_dict("records"), "train", conf["features"]["max_seq_len"])
    checkpoints = lake.directory("checkpoints_dir")
    train_files = lake.snapshot_files("gold.train_examples")
    absent = absent_inputs(lake)
    text = None if "use_text" in absent else text_matrix(ctx, n_items)
    started = time.perf_counter()
    cf = cf_matrix(ctx, conf, n_items)
    cf_params = conf["model"]["cf_factors"]
    refit = (cf_matrix(ctx, conf, n_items, with_validation=True) if any_variant_uses(conf, "use_cf")
             and cf_params.get("refit_after_training") and not cf_params.get("with_validation") else None)
    cf_seconds = round(time.perf_counter() - started, 1)
    figures: dict = {"variants": {}, "absent_inputs": absent,
                     **({"cf_fit_seconds": cf_seconds} if cf is not None else {}),
                     **({"cf_search": cf_search, "cf_search_seconds": cf_search_seconds} if cf_search else {})}
    published: dict = {}
    trained: dict[str, str] = {}  # the model settings of each variant trained so far -> its name
    for name, variant_conf in variant_confs(conf).items():
        variant_conf = deep_merge(variant_conf, {"model": {flag: False for flag in absent}})
        settings = json.dumps(variant_conf["model"], sort_keys=True, default=str)
        if settings in trained:  # e.g. `no_social` where the lake has no friends' items: the model itself
            same = trained[settings]
            published[name] = published[same]
            figures["variants"][name] = {**figures["variants"][same], "same_as": same}
            continue
        trained[settings] = name
        output_dir = checkpoints / ctx.run_id / name
        resume_from = resume_point(checkpoints, conf["train"].get("resume"), name)
        if resume_from and is_finished(resume_from, variant_conf["train"]):
            result = finished_result(resume_from)  # that variant had completed before the interruption
        else:
            result = train_recommender(
                variant_conf, train_files, valid_inputs, valid["valid_item"].to_numpy(np.int64), n_items,
                text if variant_conf["model"]["use_text"] else None, str(output_dir), item_counts=counts,
                cf_factors=cf if variant_conf["model"].get("use_cf") else None, resume_from=resume_from,
                progress=(lambda line, name=name: ctx.progress(f"  {name} {line}")) if ctx.progress else None,
            )
        if refit is not None and variant_conf["model"].get("use_cf"):
            refit_als_term(result.checkpoint_dir, refit)
        best = result.history[result.best_epoch] if result.history else {}
        published[name] = result.checkpoint_dir
        figures["variants"][name] = {
            "epochs": len(result.history), "best_epoch": result.best_epoch, "valid": best,
            "use_text": variant_conf["model"]["use_text"], "use_social": variant_conf["model"]["use_social"],
            "use_cf": bool(variant_conf["model"].get("use_cf")),
            "samples_per_second": round(result.samples_per_second, 1),
            "resumed_from": resume_from,
            **({"cf_weight": calibration} if (calibration := checkpoint_meta(result.checkpoint_dir)
                                             .get("cf_weight_calibration")) else {}),
        }
    main = figures["variants"]["model"]
    record = model_store.publish(checkpoints, ctx.run_id, published["model"],
                                 {"best_epoch": main["best_epoch"], "valid": main["valid"],
                                  "variants": published})
    ctx.report.artifacts["model"] = record
    return {**{key: main[key] for key in ("epochs", "best_epoch", "use_text", "samples_per_second", "valid")},
            "checkpoint": published["model"], **figures}
