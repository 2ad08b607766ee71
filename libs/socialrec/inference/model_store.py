"""Where the trained model lives: the train stage publishes its best checkpoint, scoring jobs load it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_LOADED: dict = {}


def publish(checkpoints_dir: Path, run_id: str, checkpoint_dir: str, summary: dict) -> dict:
    """Point `latest.json` at a finished training run's best checkpoint (written last, atomically)."""
    record = {"run_id": run_id, "checkpoint": str(checkpoint_dir), **summary,
              "model_version": f"{run_id}-e{summary.get('best_epoch', 0)}"}
    write_json_atomically(checkpoints_dir / "latest.json", record)
    return record


def write_json_atomically(path: Path, record: dict) -> None:
    """A reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)


def latest(checkpoints_dir: Path) -> dict:
    pointer = checkpoints_dir / "latest.json"
    if not pointer.is_file():
        raise FileNotFoundError(f"no trained model under {checkpoints_dir}: run the train stage first")
    return json.loads(pointer.read_text())


def executor_device(requested: str | None = "cpu"):
    """The torch device a scoring task uses (`infer.device`): `cpu`; `cuda`, the GPU Spark assigned to the task
    where GPU scheduling is on (else cuda:0), and an error on an executor without CUDA rather than a silent CPU
    run; `auto`, cuda where present and cpu elsewhere (one config for CPU and GPU clusters)."""
    import torch

    requested = str(requested or "cpu").lower()
    if requested not in ("cpu", "cuda", "auto"):
        raise ValueError(f"infer.device must be cpu, cuda or auto, not {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("infer.device is 'cuda' but this executor has no usable CUDA device "
                           "(torch.cuda.is_available() is False): score on a GPU cluster, or set infer.device "
                           "to auto or cpu")
    from pyspark import TaskContext

    task = TaskContext.get()
    gpus = task.resources().get("gpu") if task is not None else None
    return torch.device(f"cuda:{int(gpus.addresses[0])}" if gpus is not None and gpus.addresses else "cuda:0")


def load_model(checkpoint_dir: str, device=None):
    """Load once per Python worker process and device: Spark reuses workers across tasks, so later tasks get it
    free."""
    key = (checkpoint_dir, str(device or "cpu"))
    if key not in _LOADED:
        from socialrec.model.recommender import load_checkpoint

        model, meta = load_checkpoint(checkpoint_dir)
        _LOADED[key] = (model.to(device or "cpu").eval(), meta)
    return _LOADED[key]


def model_device(model):
    return next(model.parameters()).device


def score_histories(model, histories: list[dict], cutoff: str, max_len: int) -> np.ndarray:
    """Scores of every item for each history cut at `cutoff` (column 0, padding, is -inf)."""
    import torch

    from socialrec.features.windows import build_inputs

    inputs = build_inputs(histories, cutoff, max_len)
    with torch.inference_mode():
        batch = {name: torch.from_numpy(values).to(model_device(model)) for name, values in inputs.items()}
        return model.score_all(batch).float().cpu().numpy()


def publish_untrained(conf: dict, lake, run_id: str) -> int:
    """Publish a freshly initialised model (ids only, seed 0) so the scoring path can run without a training
    run: its benchmark and its tests. Returns the catalogue size."""
    import torch

    from socialrec.model.recommender import SocialSequenceRecommender, save_checkpoint

    torch.manual_seed(0)
    n_items = lake.read("gold.item_index").count()
    model = SocialSequenceRecommender({**conf["model"], "use_text": False, "use_cf": False}, n_items, conf["features"]["max_seq_len"],
                                      None)
    checkpoints = lake.directory("checkpoints_dir")
    save_checkpoint(checkpoints / "untrained", model, {"best_epoch": 0})
    publish(checkpoints, run_id, str(checkpoints / "untrained"), {"best_epoch": 0})
    return n_items


def fusion_choice_path(checkpoints_dir: Path, model_version: str) -> Path:
    return checkpoints_dir / "fusion_choices" / f"{model_version}.json"


def publish_fusion_choice(checkpoints_dir: Path, record: dict) -> Path:
    """Keep the tune_fusion stage's choice beside the model it was tuned for (written atomically), so scoring
    and evaluation of that model version re-rank the same way."""
    path = fusion_choice_path(checkpoints_dir, record["model_version"])
    write_json_atomically(path, record)
    return path


def fusion_choice(checkpoints_dir: Path, model_version: str) -> dict | None:
    path = fusion_choice_path(checkpoints_dir, model_version)
    return json.loads(path.read_text()) if path.is_file() else None
