"""Social, text-aware next-item recommender: a causal transformer over a user's event history.

Why BERT with an explicit mask rather than GPT-2: `BertModel` fed through `inputs_embeds` takes a ready 4D
additive mask unchanged, so one mask expresses causality, left padding and a self-loop for padding queries
(no all-masked softmax row, hence no NaN anywhere) and it behaves the same under eager, SDPA and bf16 autocast.
GPT-2 is causal by construction but its own mask builder would need the same padding fix-up, so it buys
nothing. Absolute positions are fine because windows are left-padded: the latest step always sits at L-1.

Items share one representation (id embedding + projected frozen text embedding) as inputs, as friends'
items and as output weights, so text lets cold items be scored and ranked like any other.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertModel

# Vocabulary sizes of the context codes, fixed by the id conventions of docs/tables.md (0 is padding):
EVENT_TYPE_CODES = 1 + 8  # 1 + position in clean.event_types (8 types)
HOUR_CODES = 1 + 24       # 1 + hour of day
GAP_CODES = 1 + 21        # 1 + min(20, floor(log2(1 + minutes)))

WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"


class SocialSequenceRecommender(nn.Module):
    """Scores every item for a user from their behaviour sequence, context codes and friends' items.

    `batch` is a dict of LongTensors: items, event_types, hours, gaps [B, L] (left-padded with 0) and
    friend_items [B, F] (0 = no friend item). Context and friend keys are needed only when their flags are on.
    """

    def __init__(self, model_conf: dict, n_items: int, max_len: int, text_embeddings: np.ndarray | None,
                 item_counts: np.ndarray | None = None):
        super().__init__()
        self.model_conf = dict(model_conf)
        self.n_items = n_items
        self.max_len = max_len
        self.use_text = bool(model_conf["use_text"])
        self.use_context = bool(model_conf["use_context"])
        self.use_social = bool(model_conf["use_social"])
        self.exclude_seen = bool(model_conf.get("exclude_seen", False))
        self.loss = model_conf.get("loss", "full")
        if self.loss == "auto":  # the full softmax while its [positions, catalogue] logits stay small
            self.loss = "full" if n_items <= int(model_conf["full_softmax_max_items"]) else "sampled"
        if self.loss not in ("full", "sampled"):
            raise ValueError(f"model.loss must be full, sampled or auto, got {self.loss!r}")
        if self.loss == "sampled":
            self.negatives = int(model_conf["negatives"])
            # Q(item) ∝ (count + 1) ** alpha over the training interactions; uniform without counts.
            counts = np.ones(n_items + 1) if item_counts is None else np.asarray(item_counts, dtype=np.float64) + 1
            probs = counts ** float(model_conf.get("sampling_alpha", 0.75))
            probs[0] = 0.0
            self.register_buffer("sampling_probs", torch.tensor(probs / probs.sum(), dtype=torch.float32))
        hidden = model_conf["hidden"]
        self.hidden = hidden
        bert_config = BertConfig(
            vocab_size=1,  # ids never go through BERT's word embeddings: inputs arrive as inputs_embeds
            type_vocab_size=1,
            hidden_size=hidden,
            num_hidden_layers=model_conf["layers"],
            num_attention_heads=model_conf["heads"],
            intermediate_size=4 * hidden,
            hidden_dropout_prob=model_conf["dropout"],
            attention_probs_dropout_prob=model_conf["dropout"],
            max_position_embeddings=max_len,
        )
        init_std = bert_config.initializer_range

        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

        self.text_dim = 0
        if self.use_text:
            if text_embeddings is None:
                raise ValueError("model.use_text is on but no text embeddings were given")
            text = torch.tensor(np.asarray(text_embeddings), dtype=torch.float32)  # a copy: inputs may be read-only
            if text.ndim != 2 or text.shape[0] != n_items + 1:
                raise ValueError(f"text embeddings must be [n_items + 1 = {n_items + 1}, dim], got {tuple(text.shape)}")
            self.text_dim = text.shape[1]
            # Frozen features saved with the weights, so a checkpoint alone reproduces the scores.
            self.register_buffer("text_embeddings", text)
            self.register_buffer("has_text", text.abs().sum(dim=1) > 0)
            self.text_projection = nn.Linear(self.text_dim, hidden)

        if self.use_context:
            self.event_type_embedding = nn.Embedding(EVENT_TYPE_CODES, hidden, padding_idx=0)
            self.hour_embedding = nn.Embedding(HOUR_CODES, hidden, padding_idx=0)
            self.gap_embedding = nn.Embedding(GAP_CODES, hidden, padding_idx=0)
            for embedding in (self.event_type_embedding, self.hour_embedding, self.gap_embedding):
                nn.init.normal_(embedding.weight, std=init_std)
                with torch.no_grad():
                    embedding.weight[0].zero_()

        self.encoder = BertModel(bert_config, add_pooling_layer=False)
        # Unused (inputs_embeds path); frozen so DDP does not wait for a gradient that never comes.
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)

        if self.use_social:
            self.social_query = nn.Linear(hidden, hidden)
            self.social_key = nn.Linear(hidden, hidden)
            self.social_gate = nn.Linear(2 * hidden, 1)

    def item_representations(self) -> Tensor:
        """[n_items + 1, hidden]: id embedding plus projected text where the item has text; row 0 is padding."""
        representation = self.item_embedding.weight
        if self.use_text:
            projected = self.text_projection(self.text_embeddings)
            representation = representation + projected * self.has_text.unsqueeze(1).to(projected.dtype)
        return representation

    def sequence_states(self, batch) -> Tensor:
        """[B, L, hidden] behaviour states; position t sees steps <= t only."""
        return self._behaviour_states(batch, self.item_representations())

    def user_vectors(self, batch) -> Tensor:
        """[B, hidden]: the latest step's state fused with the friends' items."""
        representations = self.item_representations()
        last_states = self._behaviour_states(batch, representations)[:, -1:]
        return self._fuse_social(last_states, batch, representations)[:, 0]

    def training_loss(self, batch, exclude_seen: bool | None = None) -> Tensor:
        """Mean next-item cross-entropy over every (step, next step) pair of real items: a softmax over the whole
        catalogue, or over `model.negatives` items drawn by popularity with the log-Q correction (model.loss).

        With `model.exclude_seen` the task is the next *new* item, as scoring and evaluation never offer an item
        the user already had: an item seen at or before a step is no negative there, and a repeat is no target.
        """
        exclude_seen = self.exclude_seen if exclude_seen is None else exclude_seen
        representations = self.item_representations()
        states = self._fuse_social(self._behaviour_states(batch, representations), batch, representations)
        inputs, targets = batch["items"][:, :-1], batch["items"][:, 1:]
        # A padding input has seen nothing, a padding target is nothing to predict.
        pairs = (inputs > 0) & (targets > 0)
        if exclude_seen:
            pairs &= first_positions(inputs, targets) > torch.arange(inputs.shape[1], device=inputs.device)
        rows, steps = pairs.nonzero(as_tuple=True)
        queries, labels = states[:, :-1][pairs], targets[pairs]
        if self.loss == "sampled":
            logits, labels, candidates = self._sampled_logits(queries, labels, representations)
        else:
            logits, candidates = self._scores(queries, representations), None
        if exclude_seen:
            logits = self._mask_seen(logits, inputs, rows, steps, candidates)
        total = F.cross_entropy(logits.float(), labels, reduction="sum")
        return total / pairs.sum().clamp(min=1)

    @staticmethod
    def _mask_seen(logits: Tensor, inputs: Tensor, rows: Tensor, steps: Tensor, candidates: Tensor | None) -> Tensor:
        """-inf for each pair's items seen at or before its step: the [P, L] history indices where the columns are
        the catalogue (bounded memory for any catalogue size), a [P, S] comparison for sampled candidates."""
        if candidates is None:
            history = inputs[rows]
            history = history.masked_fill(torch.arange(inputs.shape[1], device=inputs.device) > steps[:, None], 0)
            return logits.scatter(1, history, float("-inf"))  # column 0 (padding) is -inf already
        seen = first_positions(inputs, candidates.expand(len(inputs), -1))[rows] <= steps[:, None]
        return logits.masked_fill(torch.cat([seen.new_zeros((len(seen), 1)), seen], dim=1), float("-inf"))

    def _sampled_logits(self, queries: Tensor, labels: Tensor, representations: Tensor):
        """[P, 1 + S] logits of the positive then S shared negatives, each minus log Q(item) (Yi et al., 2019),
        so the sampled softmax estimates the full one without popularity bias; accidental hits are masked."""
        candidates = torch.multinomial(self.sampling_probs, self.negatives, replacement=True)       # [S]
        log_q = self.sampling_probs.log()
        negatives = queries @ representations[candidates].to(queries.dtype).T - log_q[candidates].to(queries.dtype)
        negatives = negatives.masked_fill(candidates[None, :] == labels[:, None], float("-inf"))
        positive = (queries * representations[labels].to(queries.dtype)).sum(-1, keepdim=True)
        logits = torch.cat([positive - log_q[labels, None].to(queries.dtype), negatives], dim=1)
        return logits, torch.zeros_like(labels), candidates

    def forward(self, batch) -> Tensor:
        """The training loss: DDP only synchronises gradients of computations that go through forward()."""
        return self.training_loss(batch)

    def score_all(self, batch) -> Tensor:
        """[B, n_items + 1] scores of every item; column 0 (padding) is -inf."""
        return self._scores(self.user_vectors(batch), self.item_representations())

    def _behaviour_states(self, batch, representations: Tensor) -> Tensor:
        items = batch["items"]
        inputs = F.embedding(items, representations)
        if self.use_context:
            inputs = (inputs + self.event_type_embedding(batch["event_types"]) + self.hour_embedding(batch["hours"])
                      + self.gap_embedding(batch["gaps"]))
        mask = causal_padding_mask(items, inputs.dtype)
        return self.encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state

    def _fuse_social(self, states: Tensor, batch, representations: Tensor) -> Tensor:
        """Attend over friends' items with each behaviour state as the query, then gate per user and step:
        g = sigmoid(W[h_b; h_s] + b), h = g*h_b + (1-g)*h_s. Users without friend items keep h_b exactly."""
        if not self.use_social:
            return states
        friend_items = batch["friend_items"]
        is_friend_item = friend_items > 0                                  # [B, F]
        friends = F.embedding(friend_items, representations)               # [B, F, H]
        attention = torch.einsum("blh,bfh->blf", self.social_query(states), self.social_key(friends))
        attention = attention / math.sqrt(self.hidden)
        # finfo.min rather than -inf: users without friend items get a finite (discarded) softmax, not NaN.
        attention = attention.masked_fill(~is_friend_item.unsqueeze(1), torch.finfo(attention.dtype).min)
        social = torch.einsum("blf,bfh->blh", attention.softmax(dim=-1), friends).to(states.dtype)
        gate = torch.sigmoid(self.social_gate(torch.cat([states, social], dim=-1)))
        fused = gate * states + (1 - gate) * social
        has_friends = is_friend_item.any(dim=1)[:, None, None]
        return torch.where(has_friends, fused.to(states.dtype), states)

    @staticmethod
    def _scores(user_vectors: Tensor, representations: Tensor) -> Tensor:
        item_scores = user_vectors @ representations[1:].to(user_vectors.dtype).T
        padding = item_scores.new_full((item_scores.shape[0], 1), float("-inf"))
        return torch.cat([padding, item_scores], dim=1)


def first_positions(items: Tensor, candidates: Tensor) -> Tensor:
    """[B, C]: the first position of candidates[b, c] in items[b], or the row length where it does not occur."""
    length = items.shape[1]
    positions = torch.arange(length, device=items.device)[None, :, None]
    found = torch.where(items[:, :, None] == candidates[:, None, :], positions, length)
    return found.amin(dim=1)  # [B, L, C] transient: callers pass short candidate lists (targets, negatives)


def causal_padding_mask(items: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 1, L, L] additive mask: a step attends to earlier-or-same real steps; padding attends to itself only
    (its state is never used, the self-loop just keeps its softmax row finite)."""
    length = items.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    allowed = (causal & (items > 0).unsqueeze(1)) | torch.eye(length, dtype=torch.bool, device=items.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=items.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def save_checkpoint(path, model: nn.Module, meta: dict) -> None:
    """Write `path/model.pt` (weights and text embeddings) and `path/meta.json` (how to rebuild the model,
    plus the caller's epoch/metrics). Accepts a DDP-wrapped model."""
    model = getattr(model, "module", model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    full_meta = {**meta, "model_conf": model.model_conf, "n_items": model.n_items, "max_len": model.max_len,
                 "text_dim": model.text_dim}
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(state, path / WEIGHTS_FILE)
    (path / META_FILE).write_text(json.dumps(full_meta, indent=2, default=float))


def load_checkpoint(path, map_location="cpu") -> tuple[SocialSequenceRecommender, dict]:
    """Rebuild the model written by save_checkpoint, in eval mode."""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    text = state["text_embeddings"].numpy() if meta["model_conf"]["use_text"] else None
    model = SocialSequenceRecommender(meta["model_conf"], meta["n_items"], meta["max_len"], text)
    model.load_state_dict(state)
    return model.to(map_location).eval(), meta
