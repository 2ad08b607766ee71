"""Social, text-aware next-item recommender: a causal transformer over a user's event history.

Why BERT with an explicit mask rather than GPT-2: `BertModel` fed through `inputs_embeds` takes a ready 4D
additive mask unchanged, so one mask expresses causality, left padding and a self-loop for padding queries
(no all-masked softmax row, hence no NaN anywhere) and it behaves the same under eager, SDPA and bf16 autocast.
GPT-2 is causal by construction but its own mask builder would need the same padding fix-up, so it buys
nothing. Absolute positions are fine because windows are left-padded: the latest step always sits at L-1.

Items share one representation (id embedding + projected frozen text embedding + projected frozen
collaborative factors) as inputs, as friends' items and as output weights, so text lets cold items be scored
and ranked like any other, and items seen by few users start from what all users' co-occurrences say of them
rather than from a free id vector that a handful of training steps would only memorise.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
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
                 item_counts: np.ndarray | None = None, cf_factors: np.ndarray | None = None,
                 als_term_factors: np.ndarray | None = None):
        super().__init__()
        self.model_conf = dict(model_conf)
        self.n_items = n_items
        self.max_len = max_len
        self.use_text = bool(model_conf["use_text"])
        self.use_context = bool(model_conf["use_context"])
        self.use_social = bool(model_conf["use_social"])
        self.use_cf = bool(model_conf.get("use_cf", False))
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

        self.use_item_id = bool(model_conf.get("use_item_id", True))
        if not (self.use_item_id or self.use_text or self.use_cf):
            raise ValueError("model.use_item_id is off and no item feature (use_text, use_cf) is on: "
                             "items would have no representation")
        if self.use_item_id:
            self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
            nn.init.normal_(self.item_embedding.weight, std=init_std)
            with torch.no_grad():
                self.item_embedding.weight[0].zero_()

        self.text_dim = self._frozen_item_feature("text", text_embeddings) if self.use_text else 0
        if self.use_cf:
            self._frozen_item_feature("cf", cf_factors)
            factors = self.cf_embeddings
            rows = factors.norm(dim=1)
            # The projected feature sees factors at unit mean norm; the fold-in uses them as ALS fitted them.
            self.register_buffer("cf_scale", rows[rows > 0].mean() if bool((rows > 0).any()) else rows.new_ones(()),
                                 persistent=False)
            # The ALS term's item factors: the input feature's by default, refitted after training under
            # model.cf_factors.refit_after_training (replace_als_term_factors).
            self.register_buffer("als_term_factors", factors.clone() if als_term_factors is None
                                 else torch.tensor(np.asarray(als_term_factors), dtype=torch.float32))
            self.register_buffer("cf_gram", self.als_term_factors.T @ self.als_term_factors, persistent=False)
            self.cf_alpha = float(model_conf["cf_factors"]["alpha"])
            self.cf_reg = float(model_conf["cf_factors"]["reg"])
            # u·y fits the implicit preference (1 for a user's items, 0 elsewhere), so the weight starts at
            # log(catalogue): a preference-1 item then takes as much softmax mass as all preference-0 items
            # together. Learned in log space: Adam's steps of ~lr are then relative changes at any scale.
            self.cf_log_weight = nn.Parameter(torch.tensor(math.log(math.log(n_items + 1))))

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

    def _frozen_item_feature(self, name: str, table: np.ndarray | None) -> int:
        """Register an [n_items + 1, dim] item table (`text` embeddings, `cf` factors) as buffers `<name>_embeddings`
        and `has_<name>` (non-zero rows) with a learned `<name>_projection`; returns dim. Buffers, so a checkpoint
        alone reproduces the scores."""
        if table is None:
            raise ValueError(f"model.use_{name} is on but no {name} table was given")
        matrix = torch.tensor(np.asarray(table), dtype=torch.float32)  # a copy: inputs may be read-only
        if matrix.ndim != 2 or matrix.shape[0] != self.n_items + 1:
            raise ValueError(f"{name} table must be [n_items + 1 = {self.n_items + 1}, dim], got {tuple(matrix.shape)}")
        self.register_buffer(f"{name}_embeddings", matrix)
        self.register_buffer(f"has_{name}", matrix.abs().sum(dim=1) > 0)
        setattr(self, f"{name}_projection", nn.Linear(matrix.shape[1], self.hidden))
        return matrix.shape[1]

    def input_representations(self, ids: Tensor | None = None) -> Tensor:
        """[n_items + 1, hidden] what the transformer and the social attention see of an item: id embedding (under
        use_item_id) plus each projected frozen feature (text, cf) where the item has it; row 0 is padding.
        With `ids` (sorted, unique) only those items' rows, [len(ids), hidden]."""
        terms = []
        if self.use_item_id:
            terms.append(self.item_embedding.weight if ids is None else self.item_embedding(ids))
        for name in ("text", "cf"):
            if getattr(self, f"use_{name}"):
                table, present = getattr(self, f"{name}_embeddings"), getattr(self, f"has_{name}")
                if ids is not None:
                    table, present = table[ids], present[ids]
                if name == "cf":
                    table = table / self.cf_scale
                projected = getattr(self, f"{name}_projection")(table)
                terms.append(projected * present.unsqueeze(1).to(projected.dtype))
        return sum(terms[1:], terms[0])  # the constructor guarantees at least one term

    def item_representations(self, ids: Tensor | None = None, inputs: Tensor | None = None) -> Tensor:
        """[n_items + 1, dim] the output item vectors every score is a dot product with: the input representation
        (`inputs` when the caller has it already), followed under use_cf by the item's ALS factors (dim = hidden +
        rank), so scoring, top-K and the index stay one matrix product. With `ids` only those items' rows."""
        representation = self.input_representations(ids) if inputs is None else inputs
        if self.use_cf:
            factors = self.als_term_factors if ids is None else self.als_term_factors[ids]
            representation = torch.cat([representation, factors.to(representation.dtype)], dim=1)
        return representation

    def batch_items(self, batch, *extra: Tensor) -> ItemTable:
        """The input representations of the items a batch reads (its windows, friends' items, `extra`) and no
        other: projecting a large catalogue's frozen features costs more than the transformer on the batch."""
        touched = [batch["items"].flatten(), *(values.flatten() for values in extra)]
        if self.use_social:
            touched.append(batch["friend_items"].flatten())
        ids = torch.unique(torch.cat(touched))
        return ItemTable(self.input_representations(ids), ids)

    def sequence_states(self, batch) -> Tensor:
        """[B, L, hidden] behaviour states; position t sees steps <= t only."""
        return self._behaviour_states(batch, self.batch_items(batch))

    def user_vectors(self, batch) -> Tensor:
        """[B, dim]: the latest step's state fused with the friends' items (and the user's folded-in ALS factors
        under use_cf), the left side of every score."""
        inputs = self.batch_items(batch)
        last_states = self._fuse_social(self._behaviour_states(batch, inputs)[:, -1:], batch, inputs)
        return self._with_fold_in(last_states, batch["items"])[:, 0]

    def _with_fold_in(self, states: Tensor, items: Tensor) -> Tensor:
        """[B, S, hidden (+ rank)]: the states of the last S steps, each followed under use_cf by the learned
        weight times the ALS user factors folded in from the steps up to it."""
        if not self.use_cf:
            return states
        folded = self.fold_in(items)[:, -states.shape[1]:]
        return torch.cat([states, (self.cf_log_weight.exp() * folded).to(states.dtype)], dim=-1)

    def fold_in(self, items: Tensor) -> Tensor:
        """[B, L, rank] each prefix's implicit-ALS user factors given the frozen item factors Y: the exact
        normal equations MLlib solves for a user, (YᵀY + Σ α·yᵢyᵢᵀ + λ·n·I) u = Σ (1 + α·rᵢ)·yᵢ over the prefix's
        n distinct items (rᵢ: occurrences). Why: u·y is the ALS score, so the model contains ALS as one term
        of its logit and the transformer learns what ALS misses; folding in from the window rather than
        storing user factors serves any user, new ones included, with no per-user table."""
        with torch.autocast(device_type=items.device.type, enabled=False):
            factors = F.embedding(items, self.als_term_factors.float())              # [B, L, r]
            real = (items > 0).float()
            first = real * (first_positions(items, items) == torch.arange(items.shape[1], device=items.device)).float()
            outer = torch.einsum("bl,blr,bls->blrs", self.cf_alpha * real, factors, factors).cumsum(dim=1)
            eye = torch.eye(factors.shape[-1], device=items.device)
            # 1e-6·I keeps the padding prefix (Gram alone) solvable even for a rank-deficient Gram.
            system = (self.cf_gram.float() + outer
                      + (self.cf_reg * first.cumsum(dim=1) + 1e-6)[..., None, None] * eye)
            rhs = ((self.cf_alpha * real + first)[..., None] * factors).cumsum(dim=1)
            return torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)

    def replace_als_term_factors(self, factors: np.ndarray) -> None:
        """Score the ALS term with other item factors (same rank), e.g. refitted on the validation steps too once
        training and the weight's calibration are done; the transformer keeps the item feature it was trained on.
        Why: model selection must not see the validation items, but the test step may, as the ALS baseline does:
        the refit is 'retrain on train + validation after selection' for the part that is cheap to refit."""
        table = torch.tensor(np.asarray(factors), dtype=torch.float32, device=self.als_term_factors.device)
        if table.shape != self.als_term_factors.shape:
            raise ValueError(f"ALS term factors must be {tuple(self.als_term_factors.shape)}, got {tuple(table.shape)}")
        self.als_term_factors = table
        self.cf_gram = table.T @ table

    def training_loss(self, batch, exclude_seen: bool | None = None) -> Tensor:
        """Mean cross-entropy over every (step, target) pair of real items, the target being the next item or one
        drawn from the next `model.target_window` (see _targets): a softmax over the whole catalogue, or over
        `model.negatives` items drawn by popularity with the log-Q correction (model.loss).

        With `model.exclude_seen` the task is the next *new* item, as scoring and evaluation never offer an item
        the user already had: an item seen at or before a step is no negative there, and a repeat is no target.
        """
        exclude_seen = self.exclude_seen if exclude_seen is None else exclude_seen
        if self.loss == "sampled":  # the loss reads the batch's items and the negatives only
            candidates = torch.multinomial(self.sampling_probs, self.negatives, replacement=True)      # [S]
            item_inputs = self.batch_items(batch, candidates)
        else:
            candidates, item_inputs = None, ItemTable(self.input_representations())
        states = self._fuse_social(self._behaviour_states(batch, item_inputs), batch, item_inputs)
        states = self._with_fold_in(states, batch["items"])
        item_outputs = ItemTable(self.item_representations(item_inputs.ids, item_inputs.rows), item_inputs.ids)
        inputs, targets = batch["items"][:, :-1], self._targets(batch["items"], exclude_seen)
        # A padding input has seen nothing, a padding target is nothing to predict.
        pairs = (inputs > 0) & (targets > 0)
        if exclude_seen:
            pairs &= first_positions(inputs, targets) > torch.arange(inputs.shape[1], device=inputs.device)
        rows, steps = pairs.nonzero(as_tuple=True)
        queries, labels = states[:, :-1][pairs], targets[pairs]
        if candidates is not None:
            logits, labels = self._sampled_logits(queries, labels, item_outputs, candidates)
        else:
            logits = self._scores(queries, item_outputs.rows)
        if exclude_seen:
            logits = self._mask_seen(logits, inputs, rows, steps, candidates)
        total = F.cross_entropy(logits.float(), labels, reduction="sum")
        return total / pairs.sum().clamp(min=1)

    def _targets(self, items: Tensor, exclude_seen: bool) -> Tensor:
        """[B, L-1] the item each step learns to predict: the next one, or with `model.target_window` W != 1 one
        drawn uniformly per step and call from the next W steps (0: the rest of the sequence), skipping items the
        user had at or before the step under exclude_seen.

        Why: where order carries little (ratings logged per day, check-ins split at random) the next item is
        an arbitrary pick from the user's set; any future item is as good a target, and redrawing it every
        epoch stops the transformer from memorising each training sequence (PinnerFormer's dense all-action
        loss, sampled)."""
        window = int(self.model_conf.get("target_window", 1))
        if window == 1:
            return items[:, 1:]
        length = items.shape[1]
        steps = torch.arange(length - 1, device=items.device)[:, None]            # [L-1, 1] query step t
        later = torch.arange(length, device=items.device)[None, :]                 # [1, L] candidate step j
        reachable = (later > steps) & ((later - steps <= window) if window > 0 else True)
        allowed = reachable[None] & (items[:, None, :] > 0)                         # [B, L-1, L]
        if exclude_seen:
            first_seen = first_positions(items, items)                              # [B, L] first step of each item
            allowed &= (first_seen[:, None, :] > steps[None])
        draws = torch.rand(allowed.shape, device=items.device).masked_fill(~allowed, -1.0)
        chosen = draws.argmax(dim=-1)                                                # [B, L-1]
        targets = items.gather(1, chosen)
        return targets.masked_fill(~allowed.any(dim=-1), 0)

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

    def _sampled_logits(self, queries: Tensor, labels: Tensor, representations: ItemTable, candidates: Tensor):
        """[P, 1 + S] logits of the positive then the S shared negatives `candidates`, each minus log Q(item)
        (Yi et al., 2019), so the sampled softmax estimates the full one without popularity bias; accidental hits
        are masked. Returns the logits and the positive's column (0) per pair."""
        log_q = self.sampling_probs.log()
        negatives = queries @ representations[candidates].to(queries.dtype).T - log_q[candidates].to(queries.dtype)
        negatives = negatives.masked_fill(candidates[None, :] == labels[:, None], float("-inf"))
        positive = (queries * representations[labels].to(queries.dtype)).sum(-1, keepdim=True)
        logits = torch.cat([positive - log_q[labels, None].to(queries.dtype), negatives], dim=1)
        return logits, torch.zeros_like(labels)

    def forward(self, batch) -> Tensor:
        """The training loss: DDP only synchronises gradients of computations that go through forward()."""
        return self.training_loss(batch)

    def score_all(self, batch) -> Tensor:
        """[B, n_items + 1] scores of every item; column 0 (padding) is -inf."""
        return self._scores(self.user_vectors(batch), self.item_representations())

    def _behaviour_states(self, batch, representations: ItemTable) -> Tensor:
        items = batch["items"]
        inputs = representations[items]
        if self.use_context:
            inputs = (inputs + self.event_type_embedding(batch["event_types"]) + self.hour_embedding(batch["hours"])
                      + self.gap_embedding(batch["gaps"]))
        mask = causal_padding_mask(items, inputs.dtype)
        return self.encoder(inputs_embeds=inputs, attention_mask=mask).last_hidden_state

    def _fuse_social(self, states: Tensor, batch, representations: ItemTable) -> Tensor:
        """Attend over friends' items with each behaviour state as the query, then gate per user and step:
        g = sigmoid(W[h_b; h_s] + b), h = g*h_b + (1-g)*h_s. Users without friend items keep h_b exactly."""
        if not self.use_social:
            return states
        friend_items = batch["friend_items"]
        is_friend_item = friend_items > 0                                  # [B, F]
        friends = representations[friend_items]                            # [B, F, H]
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


@dataclass
class ItemTable:
    """Item vectors looked up by item id: `rows` holds every item (ids None, row i = item i) or the sorted,
    unique item `ids` only."""
    rows: Tensor
    ids: Tensor | None = None

    def __getitem__(self, items: Tensor) -> Tensor:
        return F.embedding(items if self.ids is None else torch.searchsorted(self.ids, items), self.rows)


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
    cf, als_term = None, None
    if meta["model_conf"].get("use_cf"):
        cf = state["cf_embeddings"].numpy()
        als_term = state.setdefault("als_term_factors", state["cf_embeddings"]).numpy()  # older checkpoints: one table
    model = SocialSequenceRecommender(meta["model_conf"], meta["n_items"], meta["max_len"], text, cf_factors=cf,
                                      als_term_factors=als_term)
    model.load_state_dict(state)
    return model.to(map_location).eval(), meta
