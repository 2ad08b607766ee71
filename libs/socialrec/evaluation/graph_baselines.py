"""The literature's collaborative baselines on a fixed split: BPR-MF (Rendle et al., UAI'09) and LightGCN
(He et al., SIGIR'20), trained as RecBole trains them (BPR loss, one uniform negative per positive, Adam,
early stopping on a validation metric evaluated by full ranking every epoch), plus popularity.

Pure torch on the split's dense ids; the published-protocol benchmark (`socialrec.evaluation.protocol`) calls
these beside the project's model. Settings come from `protocol.baselines` in conf/base.yml.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from socialrec.evaluation.metrics import hit_matrix, per_user_topk


@dataclass
class IndexedSplit:
    """A split on dense ids: users 0..U-1, items 0..I-1 over every part (the whole catalogue is rankable), each
    part as (user, item) index arrays."""

    n_users: int
    n_items: int
    parts: dict[str, tuple[np.ndarray, np.ndarray]]

    def item_sets(self, part: str) -> list[np.ndarray]:
        users, items = self.parts[part]
        order = np.argsort(users, kind="stable")
        grouped = items[order]
        bounds = np.searchsorted(users[order], np.arange(self.n_users + 1))
        return [grouped[bounds[u]:bounds[u + 1]] for u in range(self.n_users)]


def index_split(split, user_ids: list[str] | None = None, item_ids: list[str] | None = None
                ) -> tuple[IndexedSplit, list[str], list[str]]:
    """Dense ids for a `socialrec.evaluation.splits.Split` (sorted publisher ids unless given)."""
    parts = {name: split.part(name) for name in ("train", "valid", "test")}
    user_ids = user_ids or sorted(set().union(*(set(p["user_id"]) for p in parts.values())))
    item_ids = item_ids or sorted(set().union(*(set(p["item_id"]) for p in parts.values())))
    user_pos = {u: i for i, u in enumerate(user_ids)}
    item_pos = {v: i for i, v in enumerate(item_ids)}
    coded = {name: (part["user_id"].map(user_pos).to_numpy(np.int64), part["item_id"].map(item_pos).to_numpy(np.int64))
             for name, part in parts.items()}
    return IndexedSplit(len(user_ids), len(item_ids), coded), user_ids, item_ids


def top_k(scores: np.ndarray, masked: list[np.ndarray], k: int) -> np.ndarray:
    """Each row's k best columns, best first, after setting each row's `masked` columns to -inf."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    for row, items in enumerate(masked):
        scores[row, items] = -np.inf
    head = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, head, axis=1), axis=1, kind="stable")
    return np.take_along_axis(head, order, axis=1)


def rank_all(score_rows, users: np.ndarray, masked: list[np.ndarray], k: int, batch: int = 1024) -> np.ndarray:
    """Top-k lists of `users` from `score_rows(user batch) -> [batch, items]`, scored in batches."""
    lists = [top_k(score_rows(users[start:start + batch]), [masked[u] for u in users[start:start + batch]], k)
             for start in range(0, len(users), batch)]
    return np.concatenate(lists) if lists else np.zeros((0, k), dtype=np.int64)


def popularity_scores(data: IndexedSplit, parts=("train",)) -> np.ndarray:
    counts = np.zeros(data.n_items, dtype=np.float64)
    for part in parts:
        np.add.at(counts, data.parts[part][1], 1.0)
    return counts - np.arange(data.n_items) * 1e-9  # a deterministic tie-break that favours no test item


def _normalised_adjacency(data: IndexedSplit):
    """LightGCN's D^-1/2 A D^-1/2 over the user-item bipartite graph of the train pairs (users first)."""
    import torch

    users, items = data.parts["train"]
    rows = np.concatenate([users, items + data.n_users])
    cols = np.concatenate([items + data.n_users, users])
    degree = np.bincount(rows, minlength=data.n_users + data.n_items).astype(np.float64)
    scale = 1.0 / np.sqrt(np.maximum(degree, 1.0))
    values = scale[rows] * scale[cols]
    size = data.n_users + data.n_items
    return torch.sparse_coo_tensor(np.stack([rows, cols]), values.astype(np.float32), (size, size),
                                   check_invariants=False).coalesce()


class FactorModel:
    """BPR-MF (`layers` 0) or LightGCN (`layers` >= 1: the mean of the embeddings after 0..layers propagations)."""

    def __init__(self, data: IndexedSplit, dim: int, layers: int, seed: int):
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.data, self.layers = data, layers
        self.weights = torch.nn.Parameter(torch.empty(data.n_users + data.n_items, dim))
        torch.nn.init.xavier_uniform_(self.weights, generator=generator)
        self.graph = _normalised_adjacency(data) if layers else None

    def embeddings(self):
        import torch

        if not self.layers:
            return self.weights
        layers = [self.weights]
        for _ in range(self.layers):
            layers.append(torch.sparse.mm(self.graph, layers[-1]))
        return torch.stack(layers).mean(dim=0)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            table = self.embeddings().numpy()
        return table[:self.data.n_users], table[self.data.n_users:]


def _negatives(rng: np.random.Generator, users: np.ndarray, positives: list[set], n_items: int) -> np.ndarray:
    """One uniform negative per positive pair, redrawn while it is one of the user's train items."""
    negatives = rng.integers(0, n_items, len(users))
    for _ in range(20):
        clash = np.fromiter((negatives[i] in positives[u] for i, u in enumerate(users)), bool, len(users))
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, n_items, int(clash.sum()))
    return negatives


def validation_score(user_vectors, item_vectors, data: IndexedSplit, metric: str, k: int) -> float:
    """`metric` on the validation part by full ranking, train items masked."""
    valid_sets = data.item_sets("valid")
    users = np.array([u for u, items in enumerate(valid_sets) if len(items)], dtype=np.int64)
    lists = rank_all(lambda batch: user_vectors[batch] @ item_vectors.T, users, data.item_sets("train"), k)
    hits = hit_matrix(lists, [valid_sets[u] for u in users])
    return float(per_user_topk(hits, [len(valid_sets[u]) for u in users], metric).mean())


def train_factor_model(data: IndexedSplit, settings: dict, layers: int, seed: int, log=print) -> dict:
    """Train BPR-MF or LightGCN on the train pairs, keep the epoch with the best validation metric, stop after
    `patience` epochs without a better one. Returns the best user and item vectors and the training record."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FactorModel(data, int(settings["embedding_size"]), layers, seed)
    optimiser = torch.optim.Adam([model.weights], lr=float(settings["learning_rate"]))
    users, items = data.parts["train"]
    positives = [set(s.tolist()) for s in data.item_sets("train")]
    batch, reg = int(settings["batch_size"]), float(settings["reg_weight"])
    metric, k = settings["valid_metric"], int(settings["valid_metric"].partition("@")[2])
    best = {"score": -1.0, "epoch": 0}
    started = time.perf_counter()
    for epoch in range(1, int(settings["max_epochs"]) + 1):
        order = rng.permutation(len(users))
        negatives = _negatives(rng, users[order], positives, data.n_items)
        for start in range(0, len(order), batch):
            picked = order[start:start + batch]
            u = torch.from_numpy(users[picked])
            i = torch.from_numpy(items[picked] + data.n_users)
            j = torch.from_numpy(negatives[start:start + batch] + data.n_users)
            table = model.embeddings()
            ue, ie, je = table[u], table[i], table[j]
            loss = -torch.nn.functional.logsigmoid((ue * ie).sum(1) - (ue * je).sum(1)).mean()
            ego = model.weights
            loss = loss + reg * (ego[u].pow(2).sum() + ego[i].pow(2).sum() + ego[j].pow(2).sum()) / 2 / len(picked)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        user_vectors, item_vectors = model.vectors()
        score = validation_score(user_vectors, item_vectors, data, metric, k)
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "users": user_vectors, "items": item_vectors}
        elif epoch - best["epoch"] >= int(settings["patience"]):
            break
        if epoch % 10 == 0:
            log(f"  {'LightGCN' if layers else 'BPR-MF'} epoch {epoch}: valid {metric} {score:.4f} "
                f"(best {best['score']:.4f} at {best['epoch']})")
    return {"users": best["users"], "items": best["items"], "best_epoch": best["epoch"], "epochs": epoch,
            f"valid_{metric}": best["score"], "seconds": round(time.perf_counter() - started, 1)}
