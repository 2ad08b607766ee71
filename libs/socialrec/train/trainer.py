"""Data-parallel training of the recommender: Ray Train workers each stream their petastorm shard of one
gold.train_examples snapshot, DDP averages gradients, rank 0 validates every epoch, and the best epoch's
model is exported in `save_checkpoint` format for scoring.

Epochs are numbered from 0, so `history[best_epoch]` is the best epoch's metrics.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs
import pyarrow.parquet as pq
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from socialrec.evaluation.metrics import metrics_from_ranks, target_ranks
from socialrec.model.recommender import WEIGHTS_FILE, SocialSequenceRecommender, load_checkpoint, save_checkpoint

TRAIN_COLUMNS = ("items", "event_types", "hours", "gaps", "friend_items")
TRAIN_STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"
FAULT_ENV = "SOCIALREC_FAULT_TRAIN"


@dataclass
class TrainResult:
    checkpoint_dir: str          # output_dir/best, loadable with load_checkpoint
    best_epoch: int              # 0-based index into history
    history: list[dict]          # one dict of reported metrics per finished epoch
    samples_per_second: float    # training examples per second over all workers (validation excluded)
    seconds: float               # wall time of the whole fit


def train_recommender(conf: dict, train_files: list[str], valid_inputs: dict[str, np.ndarray],
                      valid_targets: np.ndarray, n_items: int, text_embeddings: np.ndarray | None,
                      output_dir: str, item_counts: np.ndarray | None = None, cf_factors: np.ndarray | None = None,
                      resume_from: str | None = None, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train on the Parquet files of one gold.train_examples snapshot; validate on `valid_inputs` windows
    (build_inputs output) against `valid_targets` (item ids, 0 = skip the user). `item_counts` (training
    interactions per item id) shape the sampled softmax's proposal; `cf_factors` are the collaborative item
    factors (features.collaborative) when model.use_cf is on; `resume_from` is a checkpoint directory
    written by an earlier, interrupted run (see latest_checkpoint) to continue from; `progress` gets one line per
    finished epoch (`epoch_line`), sent by rank 0 through a Ray queue, so it reaches the driver from any node."""
    train_conf = conf["train"]
    if not train_files:
        raise ValueError("no training files: gold.train_examples has an empty snapshot")
    output_dir = Path(output_dir).resolve()
    urls = [as_url(path) for path in train_files]
    score_name = f"ndcg@{train_conf['valid_k']}"
    if resume_from and is_finished(resume_from, train_conf):
        raise ValueError(f"nothing to resume: {resume_from} is the end of a finished training run")
    release_ray = connect_ray(train_conf)
    epochs = EpochLines(progress) if progress else None
    try:
        rows = sum(read_parquet_metadata(url).num_rows for url in urls)
        steps_per_epoch = math.ceil(rows / train_conf["num_workers"] / train_conf["batch_size"])
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={
                "conf": conf, "urls": urls, "n_items": n_items, "steps_per_epoch": steps_per_epoch,
                # Object refs: the arrays go through the object store once instead of inside every worker's config.
                "valid_ref": ray.put((valid_inputs, np.asarray(valid_targets, dtype=np.int64))),
                "text_ref": ray.put(text_embeddings),
                "cf_ref": ray.put(cf_factors),
                "counts_ref": ray.put(item_counts),
                "resume_from": str(resume_from) if resume_from else None,
                "fault": fault_plan(output_dir),
                "progress_queue": epochs.queue if epochs else None,
            },
            scaling_config=ScalingConfig(num_workers=train_conf["num_workers"], use_gpu=train_conf["use_gpu"],
                                         resources_per_worker={"CPU": train_conf["cpus_per_worker"]}),
            run_config=RunConfig(
                name=f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
                storage_path=str(output_dir / "ray_results"),
                checkpoint_config=CheckpointConfig(num_to_keep=train_conf["keep_checkpoints"],
                                                   checkpoint_score_attribute=score_name,
                                                   checkpoint_score_order="max"),
                failure_config=FailureConfig(max_failures=train_conf["max_failures"]),
            ),
        )
        started = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - started

        best_dir = output_dir / "best"
        with result.get_best_checkpoint(metric=score_name, mode="max").as_directory() as directory:
            model, meta = load_checkpoint(directory)
        if resume_from:  # the interrupted run's best epoch may beat every epoch trained since
            # Epoch checkpoints only: Ray also keeps files named checkpoint_* there (checkpoint_manager_snapshot.json).
            for earlier in Path(resume_from).parent.glob(f"checkpoint_*/{TRAIN_STATE_FILE}"):
                earlier_model, earlier_meta = load_checkpoint(earlier.parent)
                if earlier_meta["metrics"][score_name] > meta["metrics"][score_name]:
                    model, meta = earlier_model, earlier_meta
        if model.use_cf and train_conf.get("cf_weight_grid"):
            meta["cf_weight_calibration"] = calibrate_cf_weight(model, valid_inputs, valid_targets, train_conf)
        save_checkpoint(best_dir, model, meta)
        with result.checkpoint.as_directory() as directory:
            history = json.loads((Path(directory) / HISTORY_FILE).read_text())
    finally:
        if epochs:
            epochs.close()
        if release_ray:
            release_ray()
    train_seconds = sum(epoch["train_seconds"] for epoch in history)
    return TrainResult(
        checkpoint_dir=str(best_dir), best_epoch=int(meta["epoch"]), history=history,
        samples_per_second=sum(epoch["samples"] for epoch in history) / train_seconds if train_seconds else 0.0,
        seconds=seconds,
    )


def calibrate_cf_weight(model: SocialSequenceRecommender, valid_inputs: dict[str, np.ndarray],
                        valid_targets: np.ndarray, train_conf: dict) -> dict:
    """Set the ALS term's weight to the multiple of the learned one (`train.cf_weight_grid`) that ranks the
    validation items best; returns the learned and chosen weights and each multiple's validation score.

    Why: the weight is learned jointly with a transformer that can memorise its training windows, and on the
    training loss the memorising part takes credit that does not carry to unseen steps, so the learned weight
    understates ALS (Yelp, 8,000 validation users: NDCG@10 0.0132 as learned, 0.0143 at 2x; docs/results.md).
    One scalar fitted on held-out steps (stacking) corrects it; ties keep the multiple nearest 1."""
    score_name = f"ndcg@{train_conf['valid_k']}"
    learned = model.cf_log_weight.detach().clone()
    scores = {}
    for multiple in train_conf["cf_weight_grid"]:
        with torch.no_grad():
            model.cf_log_weight.copy_(learned + math.log(multiple))
        scores[float(multiple)] = validate(model, valid_inputs, valid_targets, train_conf, "cpu")[score_name]
    chosen = max(scores, key=lambda multiple: (scores[multiple], -abs(math.log(multiple))))
    with torch.no_grad():
        model.cf_log_weight.copy_(learned + math.log(chosen))
    return {"learned_weight": float(learned.exp()), "multiple": chosen,
            "weight": float(model.cf_log_weight.detach().exp()),
            f"valid_{score_name}": {str(multiple): score for multiple, score in scores.items()}}


def latest_checkpoint(root) -> str | None:
    """The newest epoch checkpoint under `root` (any earlier training run's Ray results), for `--resume`."""
    candidates = [path.parent for path in Path(root).glob(f"**/ray_results/*/checkpoint_*/{TRAIN_STATE_FILE}")]
    return str(max(candidates, key=lambda path: path.stat().st_mtime)) if candidates else None


def is_finished(checkpoint_dir: str, train_conf: dict) -> bool:
    """True when the checkpoint ends its run: the last epoch, or early stopping had already triggered."""
    state = torch.load(Path(checkpoint_dir) / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    return state["epoch"] + 1 >= train_conf["epochs"] or \
        state["early_stopping"]["epochs_without_gain"] >= train_conf["patience"]


def fault_plan(output_dir: Path) -> dict | None:
    """Fault injection for recovery tests: SOCIALREC_FAULT_TRAIN="EPOCH:RANK:STEP" kills that rank's process at
    that step of that epoch, once per output directory (a marker file remembers it happened)."""
    value = os.environ.get(FAULT_ENV)
    if not value:
        return None
    epoch, rank, step = (int(part) for part in value.split(":"))
    return {"epoch": epoch, "rank": rank, "step": step, "marker": str(output_dir / "fault-injected")}


def maybe_inject_fault(fault: dict | None, epoch: int, rank: int, step: int) -> None:
    if fault and (fault["epoch"], fault["rank"], fault["step"]) == (epoch, rank, step) \
            and not os.path.exists(fault["marker"]):
        Path(fault["marker"]).write_text(f"rank {rank} killed at epoch {epoch} step {step}\n")
        os._exit(137)  # like the OOM killer: no cleanup, no exception for Ray to catch


def connect_ray(train_conf: dict):
    """Join `train.ray_address` (an address, `auto`, or `spark`: a Ray cluster started on the current Spark
    cluster's executors with ray.util.spark, as on Databricks), or start a local Ray sized to this machine.
    Returns the function that undoes what this call started (None when Ray was already up)."""
    if ray.is_initialized():
        return None
    # Worker logs repeat every metric per rank; failures still surface as exceptions from fit().
    quiet = {"log_to_driver": train_conf["worker_logs"], "logging_level": logging.WARNING}
    address = train_conf["ray_address"]
    if address == "spark":
        from ray.util.spark import setup_ray_cluster, shutdown_ray_cluster

        address, _ = setup_ray_cluster(**(train_conf.get("ray_on_spark") or {"max_worker_nodes": 1}))
        ray.init(address=address, **quiet)

        def release():
            ray.shutdown()
            shutdown_ray_cluster()
        return release
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    return ray.shutdown


def as_url(path: str) -> str:
    """petastorm wants URLs: plain paths become absolute file:// URLs, URLs pass through."""
    return path if "://" in path else Path(path).resolve().as_uri()


def read_parquet_metadata(url: str):
    filesystem, path = pyarrow.fs.FileSystem.from_uri(url)
    return pq.read_metadata(path, filesystem=filesystem)


def warmup_then_cosine(warmup_steps: int, total_steps: int):
    """LR factor: linear ramp over the warm-up steps, then cosine decay to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def train_worker(config: dict) -> None:
    """The per-worker loop run by TorchTrainer (resumes from the latest Ray checkpoint after a failure)."""
    conf = config["conf"]
    train_conf = conf["train"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    use_gpu = train_conf["use_gpu"]
    if not use_gpu:
        torch.set_num_threads(max(1, int(train_conf["cpus_per_worker"])))
    device = ray.train.torch.get_device()

    torch.manual_seed(train_conf["seed"])  # identical initial weights on every rank
    model = SocialSequenceRecommender(conf["model"], config["n_items"], conf["features"]["max_seq_len"],
                                      ray.get(config["text_ref"]), item_counts=ray.get(config["counts_ref"]),
                                      cf_factors=ray.get(config["cf_ref"]))
    checkpoint = ray.train.get_checkpoint()  # Ray's own, after a worker failure
    if checkpoint is None and config["resume_from"]:
        checkpoint = Checkpoint.from_directory(config["resume_from"])
    state, history = restore(model, checkpoint)
    # The frozen text table is a buffer: re-broadcasting it before every step would only cost bandwidth.
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"forward_sync_buffers": False})
    module = getattr(model, "module", model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=train_conf["lr"], weight_decay=train_conf["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine(
        train_conf["warmup_steps"], config["steps_per_epoch"] * train_conf["epochs"]))
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    step = state["step"] if state else 0
    early = state["early_stopping"] if state else {"best": -1.0, "best_epoch": -1, "epochs_without_gain": 0}
    valid_inputs, valid_targets = ray.get(config["valid_ref"])
    score_name = f"ndcg@{train_conf['valid_k']}"

    for epoch in range(state["epoch"] + 1 if state else 0, train_conf["epochs"]):
        model.train()
        # Random streams (dropout, negatives, data order) depend on (seed, epoch, rank) only, so a run resumed
        # from any epoch's checkpoint continues exactly as the uninterrupted run would have.
        torch.manual_seed(int(np.random.SeedSequence((train_conf["seed"], epoch, rank)).generate_state(1)[0]))
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        samples = 0
        batches = shard_batches(config["urls"], rank, world_size, (train_conf["seed"], epoch, rank), train_conf,
                                device)
        # Every rank takes the same number of steps (shards differ in size): DDP's all-reduces stay paired and
        # weights, optimizer state and schedule stay identical across ranks, so rank 0's checkpoint speaks for all.
        with contextlib.closing(batches):
            for epoch_step, batch in enumerate(itertools.islice(batches, config["steps_per_epoch"])):
                maybe_inject_fault(config["fault"], epoch, rank, epoch_step)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_gpu):
                    loss = model(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                batch_rows = len(batch["items"])
                loss_sum += loss.detach().float() * batch_rows
                samples += batch_rows
        train_seconds = time.perf_counter() - started
        loss_sum, samples = all_sum([loss_sum.item(), samples], device)

        metrics = validate(module, valid_inputs, valid_targets, train_conf, device) if rank == 0 else None
        metrics = broadcast_from_rank0(metrics)
        metrics.update(epoch=epoch, step=step, train_loss=loss_sum / max(samples, 1), samples=int(samples),
                       train_seconds=train_seconds, samples_per_second=samples / train_seconds,
                       lr=scheduler.get_last_lr()[0])
        history.append(metrics)
        if metrics[score_name] > early["best"]:
            early = {"best": metrics[score_name], "best_epoch": epoch, "epochs_without_gain": 0}
        else:
            early["epochs_without_gain"] += 1
        if rank == 0 and config.get("progress_queue") is not None:
            config["progress_queue"].put(epoch_line(metrics, score_name, early, train_conf["patience"]))

        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                save_checkpoint(directory, module, {"epoch": epoch, "metrics": metrics})
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                            "epoch": epoch, "config": conf, "early_stopping": early},
                           Path(directory) / TRAIN_STATE_FILE)
                (Path(directory) / HISTORY_FILE).write_text(json.dumps(history, indent=2))
                checkpoint = Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)
        if early["epochs_without_gain"] >= train_conf["patience"]:
            break


class EpochLines:
    """Relays the epoch lines rank 0 puts on a Ray queue to `progress` on the driver, from a thread that runs
    while fit() blocks."""

    def __init__(self, progress: Callable[[str], None]):
        from ray.util.queue import Queue

        self.queue, self.progress = Queue(), progress
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._relay, name="epoch-lines", daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        from ray.exceptions import RayActorError
        from ray.util.queue import Empty

        try:
            while not (self.stopped.is_set() and self.queue.empty()):
                try:
                    self.progress(self.queue.get(timeout=0.5))
                except Empty:
                    continue
        except RayActorError:  # the queue died with the Ray cluster: fit() reports that failure, not this thread
            return

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.queue.shutdown()


def epoch_line(metrics: dict, score_name: str, early: dict, patience: int) -> str:
    """The progress line of one finished epoch: loss, validation score, best so far and early-stopping state."""
    return (f"epoch {metrics['epoch']}: loss {metrics['train_loss']:.4f}, {score_name} {metrics[score_name]:.4f} "
            f"(best {early['best']:.4f} at epoch {early['best_epoch']}; {early['epochs_without_gain']}/{patience} "
            f"without gain), {metrics['samples_per_second']:,.0f} samples/s")


def restore(model: SocialSequenceRecommender, checkpoint: Checkpoint | None) -> tuple[dict | None, list[dict]]:
    """Load weights from a Ray checkpoint into `model`; return its training state and metric history."""
    if checkpoint is None:
        return None, []
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        state = torch.load(directory / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
        history = json.loads((directory / HISTORY_FILE).read_text())
    return state, history


def shard_batches(urls: list[str], rank: int, world_size: int, seed: tuple, train_conf: dict, device):
    """Endless shuffled torch batches of `train.batch_size` rows from this rank's petastorm shard: one
    num_epochs=1 reader per pass, re-opened with a fresh row-group order when a smaller shard runs out."""
    rng = np.random.default_rng(seed)
    for batch in shuffled_batches(shard_chunks(urls, rank, world_size, rng), train_conf["batch_size"],
                                  train_conf["shuffle_buffer"], rng):
        yield {name: torch.from_numpy(values).to(device) for name, values in batch.items()}


def shard_chunks(urls: list[str], rank: int, world_size: int, rng: np.random.Generator):
    from petastorm import make_batch_reader

    # petastorm's legacy-pyarrow FutureWarnings, once per reader; set where they arise so nothing can reorder it.
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    while True:
        rows = 0
        with make_batch_reader(urls, cur_shard=rank, shard_count=world_size, num_epochs=1,
                               reader_pool_type="thread", workers_count=1, shuffle_row_groups=True,
                               seed=int(rng.integers(1, 2**31)),  # petastorm treats seed 0 as unseeded
                               schema_fields=list(TRAIN_COLUMNS)) as reader:
            # petastorm 0.13.1 race: a read that starts while the ventilator is still queueing row groups can end
            # at once with no rows (~15% of reads on 2 cores). Queueing is immediate and unbounded: wait for it.
            while not reader.ventilator.completed():
                time.sleep(0.001)
            for chunk in reader:
                chunk = {name: np.asarray(getattr(chunk, name), dtype=np.int64) for name in TRAIN_COLUMNS}
                rows += len(chunk["items"])
                yield chunk
        if not rows:
            raise RuntimeError(f"petastorm shard {rank} of {world_size} has no rows: {urls}")


def shuffled_batches(chunks, batch_size: int, buffer_rows: int, rng: np.random.Generator):
    """Re-batch an endless stream of column chunks, shuffling rows within a buffer of about `buffer_rows`
    rows: petastorm only shuffles the order of row groups, and a row group is often a whole file."""
    buffer: list[dict[str, np.ndarray]] = []
    buffered = 0
    for chunk in chunks:
        buffer.append(chunk)
        buffered += len(chunk["items"])
        if buffered >= max(buffer_rows, batch_size):
            rows = shuffle_rows(buffer, rng)
            complete = buffered // batch_size * batch_size
            for start in range(0, complete, batch_size):
                yield {name: values[start:start + batch_size] for name, values in rows.items()}
            buffer = [{name: values[complete:] for name, values in rows.items()}]
            buffered -= complete


def shuffle_rows(chunks: list[dict[str, np.ndarray]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    order = None
    merged = {}
    for name in chunks[0]:
        values = np.concatenate([chunk[name] for chunk in chunks])
        order = rng.permutation(len(values)) if order is None else order
        merged[name] = values[order]
    return merged


def validate(model: SocialSequenceRecommender, valid_inputs: dict[str, np.ndarray], valid_targets: np.ndarray,
             train_conf: dict, device) -> dict[str, float]:
    """Full-ranking Recall/NDCG@valid_k (and MRR), each user's input items excluded except the target.
    Scored in float32: bf16 scores would tie and, ties counting against the target, understate the model."""
    keep = valid_targets > 0
    inputs = {name: values[keep] for name, values in valid_inputs.items()}
    targets = valid_targets[keep]
    ranks = [np.zeros(0, dtype=np.int64)]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(targets), train_conf["valid_batch_size"]):
            window = slice(start, start + train_conf["valid_batch_size"])
            batch = {name: torch.from_numpy(values[window]).to(device) for name, values in inputs.items()}
            scores = model.score_all(batch).float().cpu().numpy()
            ranks.append(target_ranks(scores, targets[window], excluded=inputs["items"][window]))
    return metrics_from_ranks(np.concatenate(ranks), ks=(train_conf["valid_k"],))


def all_sum(values: list[float], device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_rank0(value):
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
