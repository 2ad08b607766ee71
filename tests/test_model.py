"""The recommender in isolation (pure torch on CPU): shapes, causality, padding, the social gate, the ablation
flags, checkpoints, and that it can learn a simple successor pattern."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from socialrec.model.recommender import ItemTable, SocialSequenceRecommender, load_checkpoint, save_checkpoint

N_ITEMS = 30
MAX_LEN = 8
TEXT_DIM = 12
CF_RANK = 6
MODEL_CONF = {"hidden": 32, "layers": 2, "heads": 2, "dropout": 0.1,
              "use_text": True, "use_context": True, "use_social": True, "use_cf": True,
              "cf_factors": {"alpha": 10.0, "reg": 0.05}}


def text_table(seed: int = 0) -> np.ndarray:
    """Random text embeddings with row 0 (padding) and every fifth item left without text."""
    table = np.random.default_rng(seed).normal(size=(N_ITEMS + 1, TEXT_DIM)).astype(np.float32)
    table[0] = 0
    table[::5] = 0
    return table


def cf_table() -> np.ndarray:
    """Random collaborative factors with row 0 (padding) and every seventh item left without factors."""
    table = np.random.default_rng(3).normal(size=(N_ITEMS + 1, CF_RANK)).astype(np.float32)
    table[::7] = 0
    return table


def make_model(**flags) -> SocialSequenceRecommender:
    torch.manual_seed(0)
    conf = {**MODEL_CONF, **flags}
    return SocialSequenceRecommender(conf, N_ITEMS, MAX_LEN, text_table() if conf["use_text"] else None,
                                     cf_factors=cf_table() if conf["use_cf"] else None)


def make_batch(batch_size: int = 4, seed: int = 1, n_friends: int = 5) -> dict[str, torch.Tensor]:
    """Left-padded windows of varying length with context codes inside their documented ranges."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, MAX_LEN + 1, (batch_size,), generator=gen)
    real = torch.arange(MAX_LEN).unsqueeze(0) >= (MAX_LEN - lengths).unsqueeze(1)

    def codes(high):
        return torch.randint(1, high, (batch_size, MAX_LEN), generator=gen) * real

    friend_items = torch.randint(1, N_ITEMS + 1, (batch_size, n_friends), generator=gen)
    friend_items[:, : n_friends // 2] = 0  # left padding of the friend list
    return {"items": codes(N_ITEMS + 1), "event_types": codes(9), "hours": codes(25), "gaps": codes(22),
            "friend_items": friend_items}


def test_shapes_and_padding_column():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        assert model.item_representations().shape == (N_ITEMS + 1, 32 + CF_RANK)  # ALS factors follow
        assert model.sequence_states(batch).shape == (4, MAX_LEN, 32)
        assert model.user_vectors(batch).shape == (4, 32 + CF_RANK)
        scores = model.score_all(batch)
    assert scores.shape == (4, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize(("feature", "missing"), [("text", [5, 10, 15]), ("cf", [7, 14, 21])])
def test_items_without_a_frozen_feature_get_only_their_id_embedding(feature, missing):
    model = make_model(**{"use_text": feature == "text", "use_cf": feature == "cf"}).eval()
    with torch.no_grad():
        representations = model.input_representations()
        table = getattr(model, f"{feature}_embeddings")
        projected = getattr(model, f"{feature}_projection")(table / model.cf_scale if feature == "cf" else table)
    missing = torch.tensor(missing)
    assert torch.equal(representations[missing], model.item_embedding.weight[missing])
    assert torch.allclose(representations[1], model.item_embedding.weight[1] + projected[1])
    assert torch.equal(representations[0], torch.zeros(32))


def test_text_and_cf_add_up_in_the_item_representation():
    model = make_model().eval()
    with torch.no_grad():
        expected = (model.item_embedding.weight[1] + model.text_projection(model.text_embeddings)[1]
                    + model.cf_projection(model.cf_embeddings / model.cf_scale)[1])
        assert torch.allclose(model.input_representations()[1], expected, atol=1e-6)


def test_future_steps_do_not_change_earlier_states():
    model = make_model().eval()
    batch = make_batch(batch_size=1)
    batch["items"][0] = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10])
    changed = {key: value.clone() for key, value in batch.items()}
    changed["items"][0, 5] = 20
    changed["hours"][0, 6] = 1 + (changed["hours"][0, 6] % 24)
    with torch.no_grad():
        before, after = model.sequence_states(batch), model.sequence_states(changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-4)


def test_padding_content_does_not_reach_states_or_loss():
    model = make_model().eval()
    batch = make_batch()
    noisy = {key: value.clone() for key, value in batch.items()}
    padding = batch["items"] == 0
    for key in ("event_types", "hours", "gaps"):
        noisy[key][padding] = 3  # garbage codes where there is no step
    with torch.no_grad():
        real = ~padding
        assert torch.allclose(model.sequence_states(batch)[real], model.sequence_states(noisy)[real], atol=1e-6)
        assert torch.allclose(model.training_loss(batch), model.training_loss(noisy), atol=1e-6)


def test_loss_counts_only_pairs_of_real_steps():
    model = make_model().eval()
    batch = make_batch()
    one_step = {key: value.clone() for key, value in batch.items()}
    one_step["items"][:, :-1] = 0  # one real step per user: nothing to predict
    with torch.no_grad():
        assert model.training_loss(one_step).item() == 0.0
        loss = model.training_loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0


def test_gate_falls_back_to_behaviour_state_without_friends():
    model = make_model(use_cf=False).eval()  # user vectors are then the fused states alone
    batch = make_batch()
    batch["friend_items"][1] = 0  # user 1 has no friend items
    with torch.no_grad():
        behaviour = model.sequence_states(batch)[:, -1]
        fused = model.user_vectors(batch)
        no_friend_column = model.user_vectors({**batch, "friend_items": batch["friend_items"][:, :0]})
    assert torch.equal(fused[1], behaviour[1])
    assert not torch.allclose(fused[0], behaviour[0])
    assert torch.equal(no_friend_column, behaviour)


@pytest.mark.parametrize("flag", ["use_text", "use_context", "use_social", "use_cf", "all"])
def test_each_component_can_be_switched_off(flag):
    flags = ({"use_text": False, "use_context": False, "use_social": False, "use_cf": False} if flag == "all"
             else {flag: False})
    model = make_model(**flags)
    batch = make_batch()
    for key, used in (("friend_items", "use_social"), ("event_types", "use_context")):
        if not model.model_conf[used]:
            batch.pop(key)
    model.training_loss(batch).backward()
    assert model.score_all(batch).shape == (4, N_ITEMS + 1)
    assert hasattr(model, "text_projection") == model.use_text
    assert hasattr(model, "hour_embedding") == model.use_context
    assert hasattr(model, "social_gate") == model.use_social
    assert hasattr(model, "cf_projection") == model.use_cf


def test_without_item_ids_items_are_their_projected_features_alone():
    model = make_model(use_item_id=False).eval()
    with torch.no_grad():
        expected = (model.text_projection(model.text_embeddings) * model.has_text.unsqueeze(1)
                    + model.cf_projection(model.cf_embeddings / model.cf_scale) * model.has_cf.unsqueeze(1))
        assert torch.allclose(model.input_representations(), expected, atol=1e-6)
    assert not hasattr(model, "item_embedding")
    assert not any(name.startswith("item_embedding") for name in model.state_dict())
    batch = make_batch()
    model.train()
    model.training_loss(batch).backward()
    assert model.cf_projection.weight.grad.abs().sum() > 0


def test_an_item_without_id_or_feature_is_refused():
    with pytest.raises(ValueError, match="use_item_id is off and no item feature"):
        make_model(use_item_id=False, use_text=False, use_cf=False)


def test_scores_add_the_weighted_als_score_of_the_folded_in_user():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        model.cf_log_weight.fill_(math.log(2.5))
        inputs = model.input_representations()
        states = model._fuse_social(model.sequence_states(batch)[:, -1:], batch, ItemTable(inputs))[:, 0]
        als = model.fold_in(batch["items"])[:, -1] @ model.cf_embeddings[1:].T
        assert torch.allclose(model.score_all(batch)[:, 1:], states @ inputs[1:].T + 2.5 * als, atol=1e-4)


def test_replaced_als_term_factors_change_the_als_term_only_and_survive_a_checkpoint(tmp_path):
    model = make_model().eval()
    batch = make_batch()
    refitted = cf_table() + np.random.default_rng(9).normal(scale=0.3, size=cf_table().shape).astype(np.float32)
    with torch.no_grad():
        inputs_before = model.input_representations()
        model.replace_als_term_factors(refitted)
        assert torch.equal(model.input_representations(), inputs_before)  # the transformer's item feature is kept
        states = model._fuse_social(model.sequence_states(batch)[:, -1:], batch, ItemTable(inputs_before))[:, 0]
        als = model.fold_in(batch["items"])[:, -1] @ torch.from_numpy(refitted)[1:].T
        scores = model.score_all(batch)[:, 1:]
        assert torch.allclose(scores, states @ inputs_before[1:].T + model.cf_log_weight.exp() * als, atol=1e-4)
        rebuilt = SocialSequenceRecommender(MODEL_CONF, N_ITEMS, MAX_LEN, text_table(), cf_factors=cf_table(),
                                            als_term_factors=refitted)
        assert torch.allclose(rebuilt.fold_in(batch["items"]), model.fold_in(batch["items"]), atol=1e-5)
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 0})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.allclose(loaded.score_all(batch)[:, 1:], scores, atol=1e-5)
    with pytest.raises(ValueError, match="ALS term factors must be"):
        model.replace_als_term_factors(refitted[:, :-1])


def test_a_checkpoint_from_before_the_als_term_table_loads_with_the_input_factors(tmp_path):
    model = make_model().eval()
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 0})
    state = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=True)
    del state["als_term_factors"]
    torch.save(state, tmp_path / "ckpt" / "model.pt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    batch = make_batch()
    with torch.no_grad():
        assert torch.allclose(loaded.score_all(batch)[:, 1:], model.score_all(batch)[:, 1:], atol=1e-5)


def test_the_fold_in_of_a_step_sees_no_later_step():
    model = make_model().eval()
    items = make_batch()["items"]
    changed = items.clone()
    changed[:, -1] = torch.where(changed[:, -1] == 1, 2, 1)
    with torch.no_grad():
        assert torch.equal(model.fold_in(items)[:, :-1], model.fold_in(changed)[:, :-1])
        assert not torch.equal(model.fold_in(items)[:, -1], model.fold_in(changed)[:, -1])


def test_a_switched_on_feature_without_its_table_is_refused():
    with pytest.raises(ValueError, match="use_text is on but no text table"):
        SocialSequenceRecommender(MODEL_CONF, N_ITEMS, MAX_LEN, None, cf_factors=cf_table())
    with pytest.raises(ValueError, match="use_cf is on but no cf table"):
        SocialSequenceRecommender(MODEL_CONF, N_ITEMS, MAX_LEN, text_table())
    with pytest.raises(ValueError, match=r"cf table must be \[n_items \+ 1"):
        SocialSequenceRecommender(MODEL_CONF, N_ITEMS, MAX_LEN, text_table(), cf_factors=cf_table()[:-1])


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    model = make_model()
    model.training_loss(make_batch()).backward()  # any non-initial state will do
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 3, "metrics": {"ndcg@10": 0.5}})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(model.score_all(batch), loaded.score_all(batch))
    assert meta["epoch"] == 3 and meta["n_items"] == N_ITEMS and meta["max_len"] == MAX_LEN
    assert meta["text_dim"] == TEXT_DIM and meta["model_conf"] == MODEL_CONF


def successor_batch(gen: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
    """Item k is always followed by k + 1 (wrapping after N_ITEMS), from a random start and length."""
    starts = torch.randint(0, N_ITEMS, (batch_size, 1), generator=gen)
    items = (starts + torch.arange(MAX_LEN)) % N_ITEMS + 1
    lengths = torch.randint(1, MAX_LEN + 1, (batch_size, 1), generator=gen)
    items = items * (torch.arange(MAX_LEN) >= MAX_LEN - lengths)
    context = (items > 0).long()
    return {"items": items, "event_types": context, "hours": context, "gaps": context,
            "friend_items": torch.randint(0, N_ITEMS + 1, (batch_size, 4), generator=gen)}


def successor_accuracy(model: SocialSequenceRecommender, steps: int = 300) -> float:
    """Train on successor batches, then the share of users whose best unseen item is the successor (seen items
    are ranked out, as scoring does: exclude_seen never trains them as negatives)."""
    torch.set_num_threads(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model.training_loss(successor_batch(gen, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch = successor_batch(gen, 256)
    with torch.no_grad():
        predicted = model.score_all(batch).scatter(1, batch["items"], float("-inf")).argmax(dim=1)
    return (predicted == batch["items"][:, -1] % N_ITEMS + 1).float().mean().item()


def test_learns_the_successor_pattern_quickly():
    started = time.perf_counter()
    assert successor_accuracy(make_model()) > 0.9
    assert time.perf_counter() - started < 20


def test_exclude_seen_skips_repeat_targets_and_never_uses_seen_items_as_negatives():
    model = make_model(use_text=False, use_context=False, use_social=False, use_cf=False, exclude_seen=True).eval()
    batch = {"items": torch.tensor([[0, 0, 0, 0, 1, 2, 1, 3]])}
    with torch.no_grad():
        states = model.sequence_states(batch)[0]
        scores = states @ model.item_representations()[1:].T  # column j is item j + 1
        expected = []
        for step, target, seen in ((4, 2, [1]), (6, 3, [1, 2])):  # 2 -> 1 at step 5 repeats item 1: no target
            logits = scores[step].clone()
            logits[[item - 1 for item in seen]] = float("-inf")
            expected.append(-torch.log_softmax(logits, dim=0)[target - 1])
        assert model.training_loss(batch).item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)
        assert model.training_loss(batch, exclude_seen=False).item() != pytest.approx(
            model.training_loss(batch).item(), abs=1e-3)


def test_target_window_one_keeps_the_next_item_as_target():
    items = make_batch()["items"]
    assert torch.equal(make_model(target_window=1)._targets(items, exclude_seen=True), items[:, 1:])


@pytest.mark.parametrize(("window", "expected"), [
    # steps 2..6 hold items 1, 2, 1, 3, 4; item 1 is seen from step 2 on, item 2 from step 3 on
    (2, {2: {2}, 3: {3}, 4: {3, 4}, 5: {4, 5}, 6: {5}}),
    (0, {2: {2, 3, 4, 5}, 3: {3, 4, 5}, 4: {3, 4, 5}, 5: {4, 5}, 6: {5}}),
])
def test_future_targets_are_drawn_uniformly_from_the_window_without_seen_items(window, expected):
    model = make_model(target_window=window)
    items = torch.tensor([[0, 0, 1, 2, 1, 3, 4, 5]]).expand(4000, -1)
    targets = model._targets(items, exclude_seen=True)
    for step, allowed in expected.items():
        drawn, counts = targets[:, step].unique(return_counts=True)
        assert set(drawn.tolist()) == allowed
        assert (counts / len(items) - 1 / len(allowed)).abs().max() < 0.04  # uniform within sampling noise


def test_future_targets_train_with_both_losses():
    batch = make_batch(batch_size=8)
    for model in (make_model(target_window=0), sampled_model(target_window=3)):
        loss = model.training_loss(batch)
        loss.backward()
        assert torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0


def sampled_model(**flags) -> SocialSequenceRecommender:
    torch.manual_seed(0)
    counts = np.arange(N_ITEMS + 1, dtype=np.float64)  # item k was seen k times: a popularity skew
    conf = {**MODEL_CONF, "loss": "sampled", "negatives": 8, "sampling_alpha": 1.0, **flags}
    return SocialSequenceRecommender(conf, N_ITEMS, MAX_LEN, text_table(), item_counts=counts, cf_factors=cf_table())


def test_sampled_softmax_subtracts_log_q_and_masks_accidental_hits():
    model = sampled_model()
    q = model.sampling_probs
    assert q[0] == 0 and torch.allclose(q[1:], torch.arange(2, N_ITEMS + 2) / torch.arange(2, N_ITEMS + 2).sum())
    representations = model.item_representations().detach()
    queries, labels = torch.randn(5, 32 + CF_RANK), torch.tensor([1, 2, 3, 4, 5])
    candidates = torch.tensor([1, 7, 7, 12, 30, 3, 29, 2])
    logits, positive_index = model._sampled_logits(queries, labels, ItemTable(representations), candidates)
    assert logits.shape == (5, 9) and positive_index.tolist() == [0] * 5
    raw = queries @ representations.T
    assert torch.allclose(logits[:, 0], raw[torch.arange(5), labels] - q[labels].log(), atol=1e-5)
    hit = candidates[None, :] == labels[:, None]
    expected = raw[:, candidates] - q[candidates].log()
    assert torch.allclose(logits[:, 1:][~hit], expected[~hit], atol=1e-5)
    assert torch.isneginf(logits[:, 1:][hit]).all()

    every_negative_is_the_label = torch.full((8,), 5)  # only the positive remains
    logits, _ = model._sampled_logits(queries[4:], labels[4:], ItemTable(representations), every_negative_is_the_label)
    assert torch.isneginf(logits[:, 1:]).all() and F_cross_entropy(logits) == 0.0


def test_the_sampled_loss_projects_only_the_batch_items_and_equals_the_full_table_loss(monkeypatch):
    model = sampled_model(dropout=0.0)
    batch = make_batch(batch_size=6)
    table = model.batch_items(batch, torch.tensor([30, 2]))
    touched = set(batch["items"].flatten().tolist()) | set(batch["friend_items"].flatten().tolist()) | {30, 2}
    assert table.ids.tolist() == sorted(touched) and len(table.ids) < N_ITEMS + 1
    with torch.no_grad():
        assert torch.allclose(table[batch["items"]], model.input_representations()[batch["items"]], atol=1e-6)

    def loss_and_gradient():
        model.zero_grad()
        torch.manual_seed(11)  # the same negatives and target draws
        loss = model.training_loss(batch)
        loss.backward()
        return loss.detach(), model.text_projection.weight.grad.clone()

    subset_loss, subset_gradient = loss_and_gradient()
    monkeypatch.setattr(model, "batch_items", lambda batch, *extra: ItemTable(model.input_representations()))
    full_loss, full_gradient = loss_and_gradient()
    assert torch.allclose(subset_loss, full_loss, atol=1e-5)
    assert torch.allclose(subset_gradient, full_gradient, atol=1e-5)


def F_cross_entropy(logits: torch.Tensor) -> float:
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)).item()


def test_sampled_softmax_checkpoint_keeps_the_sampling_distribution(tmp_path):
    model = sampled_model()
    save_checkpoint(tmp_path / "ckpt", model, {"epoch": 0})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(loaded.sampling_probs, model.sampling_probs)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="model.loss"):
        make_model(loss="bpr")


@pytest.mark.parametrize("flags", [{"loss": "sampled", "negatives": 10},
                                   {"loss": "sampled", "negatives": 10, "exclude_seen": True}])
def test_learns_the_successor_pattern_with_sampled_softmax(flags):
    assert successor_accuracy(sampled_model(**flags)) > 0.9


def test_auto_loss_is_full_for_small_catalogues_and_sampled_beyond_the_limit():
    assert make_model(loss="auto", full_softmax_max_items=N_ITEMS).loss == "full"
    model = make_model(loss="auto", full_softmax_max_items=N_ITEMS - 1, negatives=8)
    assert model.loss == "sampled" and model.sampling_probs.shape == (N_ITEMS + 1,)
