"""Approximate top-K by inner product: an inverted-file (IVF) index over the item vectors, in torch.

Why: exact top-K costs users x items x dim multiply-adds plus a selection over every item per user. k-means
splits the catalogue into `lists` cells; a user scores only the items of the `probes` cells whose centroids
score highest for them, about probes/lists of the catalogue. What that loses is measured, not assumed: recall
against exact top-K in tests/test_scoring_ann.py and benchmarks/scoring_throughput.py.

Fusion z-scores the model score per user over the whole catalogue. Those moments need no scan: the mean score
is q . mean(v) and the mean squared score is q^T E[v v^T] q, so the index keeps both and the z-scores stay
those of the exact path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TRAIN_POINTS_PER_LIST = 256  # k-means is trained on a sample of this many items per list (as FAISS does)


@dataclass
class IVFIndex:
    centroids: torch.Tensor   # [lists, dim]
    vectors: torch.Tensor     # [n, dim] item vectors, grouped by list
    ids: torch.Tensor         # [n] int64: the item id of each row of `vectors`
    offsets: np.ndarray       # [lists + 1]: list c holds rows offsets[c]:offsets[c + 1]
    mean: np.ndarray          # [dim] float64 mean item vector
    second: np.ndarray        # [dim, dim] float64 mean of v v^T

    @property
    def lists(self) -> int:
        return len(self.centroids)


def default_lists(n: int) -> int:
    return int(min(n, max(1, round(np.sqrt(n)))))


def _nearest(vectors: torch.Tensor, centroids: torch.Tensor, block: int = 16384) -> torch.Tensor:
    """Nearest centroid of each vector, a block of rows at a time so memory stays [block, lists]."""
    norms = (centroids * centroids).sum(1)[None, :]  # |v|^2 is the same for every centroid of a row
    return torch.cat([(norms - 2 * vectors[lo:lo + block] @ centroids.T).argmin(1)
                      for lo in range(0, len(vectors), block)])


def build(vectors, ids=None, lists: int | None = None, iterations: int = 10, seed: int = 0) -> IVFIndex:
    """k-means (Lloyd, L2) over a sample of the vectors, then every vector filed under its nearest centroid.
    Deterministic for a seed, so every executor process builds the same index."""
    data = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    n = len(data)
    if n == 0:
        raise ValueError("ann.build: no vectors to index")
    ids = torch.arange(n, dtype=torch.int64) if ids is None else torch.as_tensor(np.asarray(ids, dtype=np.int64))
    lists = min(n, int(lists or default_lists(n)))
    generator = torch.Generator().manual_seed(seed)
    sample = data[torch.randperm(n, generator=generator)[:lists * TRAIN_POINTS_PER_LIST]]
    centroids = sample[torch.randperm(len(sample), generator=generator)[:lists]].clone()
    for _ in range(iterations):
        assign = _nearest(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        counts = torch.bincount(assign, minlength=lists)
        filled = counts > 0  # an empty cell keeps its centroid
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
    assign = _nearest(data, centroids)
    order = torch.argsort(assign, stable=True)
    offsets = np.zeros(lists + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(torch.bincount(assign, minlength=lists).numpy())
    as64 = data.double()
    return IVFIndex(centroids, data[order].contiguous(), ids[order], offsets, as64.mean(0).numpy(),
                    (as64.T @ as64 / n).numpy())


def search(index: IVFIndex, queries, k: int, probes: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) [B, k] of the best inner products among the items of each query's `probes` best cells,
    best first; ids -1 and scores -inf where those cells hold fewer than k items."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    probes = max(1, min(int(probes), index.lists))
    cells = torch.topk(q @ index.centroids.T, probes, dim=1).indices.reshape(-1)  # [B * probes]
    order = torch.argsort(cells, stable=True)
    probing = order // probes                  # the query of each (query, cell) pair, grouped by cell
    present, counts = torch.unique_consecutive(cells[order], return_counts=True)
    best_scores = torch.full((len(q), k), float("-inf"))
    best_ids = torch.full((len(q), k), -1, dtype=torch.int64)
    start = 0
    for cell, count in zip(present.tolist(), counts.tolist()):
        rows, start = probing[start:start + count], start + count
        lo, hi = int(index.offsets[cell]), int(index.offsets[cell + 1])
        if hi == lo:
            continue
        scores = torch.cat([best_scores[rows], q[rows] @ index.vectors[lo:hi].T], dim=1)
        ids = torch.cat([best_ids[rows], index.ids[lo:hi].expand(len(rows), -1)], dim=1)
        top = torch.topk(scores, k, dim=1)  # the running best k are part of the input, so k always exist
        best_scores[rows] = top.values
        best_ids[rows] = ids.gather(1, top.indices)
    return best_ids.numpy(), best_scores.numpy()


def score_moments(index: IVFIndex, queries) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and standard deviation of each query's scores over every indexed item."""
    q = np.asarray(queries, dtype=np.float64)
    mean = q @ index.mean
    second = np.einsum("bi,ij,bj->b", q, index.second, q)
    return mean, np.sqrt(np.maximum(second - mean ** 2, 0.0))


def recall(approximate_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-K ids that the approximate top-K found (averaged over queries)."""
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) / max(len(e), 1)
            for a, e in zip(np.asarray(approximate_ids), np.asarray(exact_ids))]
    return float(np.mean(hits)) if hits else 1.0
