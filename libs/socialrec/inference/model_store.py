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
    pointer = checkpoints_dir / "latest.json"
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(pointer)
    return record


def latest(checkpoints_dir: Path) -> dict:
    pointer = checkpoints_dir / "latest.json"
    if not pointer.is_file():
        raise FileNotFoundError(f"no trained model under {checkpoints_dir}: run the train stage first")
    return json.loads(pointer.read_text())


def load_model(checkpoint_dir: str):
    """Load once per Python worker process: Spark reuses workers across tasks, so later tasks get it free."""
    if checkpoint_dir not in _LOADED:
        from socialrec.model.recommender import load_checkpoint

        model, meta = load_checkpoint(checkpoint_dir)
        _LOADED[checkpoint_dir] = (model.eval(), meta)
    return _LOADED[checkpoint_dir]


def score_histories(model, histories: list[dict], cutoff: str, max_len: int) -> np.ndarray:
    """Scores of every item for each history cut at `cutoff` (column 0, padding, is -inf)."""
    import torch

    from socialrec.features.windows import build_inputs

    inputs = build_inputs(histories, cutoff, max_len)
    with torch.inference_mode():
        batch = {name: torch.from_numpy(values) for name, values in inputs.items()}
        return model.score_all(batch).float().numpy()


def publish_untrained(conf: dict, lake, run_id: str) -> int:
    """Publish a freshly initialised model (ids only, seed 0) so the scoring path can run without a training
    run: its benchmark and its tests. Returns the catalogue size."""
    import torch

    from socialrec.model.recommender import SocialSequenceRecommender, save_checkpoint

    torch.manual_seed(0)
    n_items = lake.read("gold.item_index").count()
    model = SocialSequenceRecommender({**conf["model"], "use_text": False}, n_items, conf["features"]["max_seq_len"],
                                      None)
    checkpoints = lake.directory("checkpoints_dir")
    save_checkpoint(checkpoints / "untrained", model, {"best_epoch": 0})
    publish(checkpoints, run_id, str(checkpoints / "untrained"), {"best_epoch": 0})
    return n_items
