"""The fp16 cache of the teacher's per-token targets of layer-wise losses."""

import pytest
import torch
from conftest import make_sentences, tiny_bert_config

from lmshrink.data.batching import collate, encode
from lmshrink.data.splits import Split
from lmshrink.data.tasks import get_task
from lmshrink.distillation.layer_cache import (
    LayerNeeds,
    LayerTargets,
    estimated_bytes,
    label_layer_targets,
    layer_needs,
)
from lmshrink.distillation.objective import Objective, prepare_for_attention_losses
from lmshrink.distillation.probes import capture_values
from lmshrink.distillation.stages import LossSpec
from lmshrink.distillation.teacher_cache import TeacherCache
from lmshrink.models.loading import load_for_training

# Varied lengths, so that batches carry padding.
TEXTS = [(" ".join([s] * (1 + i % 3)),) for i, (s, _) in enumerate(make_sentences(40, seed=5))]
NEEDS = LayerNeeds(hidden=(0, 2), attentions=(1,), values=(0, 1))


@pytest.fixture(scope="module")
def teacher(tiny_encoder):
    torch.manual_seed(0)
    tok, model = load_for_training(str(tiny_encoder), get_task("sst2"))
    prepare_for_attention_losses(model)
    return tok, model.eval()


@pytest.fixture(scope="module")
def cached(teacher, tmp_path_factory):
    tok, model = teacher
    cache = TeacherCache(tmp_path_factory.mktemp("layers"), {"t": 1}, len(TEXTS), shard_size=16)
    stats = label_layer_targets(model, tok, TEXTS, cache, NEEDS, 32, 8, progress=False)
    assert (stats.reused, stats.shards_total) == (False, 3)
    return cache, LayerTargets.load(cache, NEEDS, heads=model.config.num_attention_heads)


def test_layer_needs_lists_exactly_the_teacher_layers_each_loss_reads():
    pairs = [(0, 0), (1, 2), (2, 4)]
    assert layer_needs(["soft_kl", "representation"], pairs) == LayerNeeds()
    assert not layer_needs(["gold_ce"], None)
    assert layer_needs(["embedding_mse", "hidden_mse", "attention_mse"], pairs) == LayerNeeds(
        hidden=(0, 2, 4), attentions=(1, 3)
    )
    assert layer_needs(["value_relation", "attention_kl"], [(3, 6)]) == LayerNeeds(
        attentions=(5,), values=(5,)
    )


def test_cached_targets_equal_the_teachers_forward_on_a_padded_batch(teacher, cached):
    tok, model = teacher
    _, layers = cached
    indices = [3, 17, 38, 0, 21]  # across the three shards
    enc = encode(tok, Split("x", "x", "", TEXTS, None), 32)
    batch = collate(enc, indices)
    batch.pop("labels", None)
    width = batch["input_ids"].shape[1]
    with torch.no_grad(), capture_values(model) as values:
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    got = layers.take(indices, width)
    assert len(got["teacher_hidden_states"]) == 3 and got["teacher_hidden_states"][1] is None
    mask = batch["attention_mask"].bool()  # [B, T]
    assert not mask.all()  # the batch has padding
    for name, direct, layer in (
        ("teacher_hidden_states", out.hidden_states, 0),
        ("teacher_hidden_states", out.hidden_states, 2),
        ("teacher_values", values, 0),
        ("teacher_values", values, 1),
    ):
        cached_tensor = got[name][layer]  # [B, T, H]
        assert cached_tensor.shape == direct[layer].shape
        real = mask[..., None].expand_as(cached_tensor)
        assert torch.allclose(cached_tensor[real], direct[layer][real], atol=2e-3, rtol=1e-3)
        assert cached_tensor[~real].abs().sum() == 0  # padding holds zeros
    attention = got["teacher_attentions"][1]  # [B, heads, T, T]
    pair = mask[:, None, :, None] & mask[:, None, None, :]  # real query and key
    real = pair.expand_as(attention)
    assert torch.allclose(attention[real], out.attentions[1][real], atol=1e-3)
    assert attention[~real].abs().sum() == 0


def test_estimated_size_is_the_stored_size(teacher, cached):
    tok, model = teacher
    cache, layers = cached
    lengths = encode(tok, Split("x", "x", "", TEXTS, None), 32).lengths
    assert layers.lengths.tolist() == list(lengths)
    stored = sum(t.numel() * t.element_size() for t in layers.flat.values())
    c = model.config
    assert estimated_bytes(lengths, NEEDS, c.hidden_size, c.num_attention_heads, 32) == stored


def test_layer_losses_on_cached_targets_equal_those_on_the_online_teacher(teacher, cached):
    from transformers import BertForSequenceClassification

    tok, model = teacher
    _, layers = cached
    torch.manual_seed(1)
    config = tiny_bert_config(
        vocab_size=model.config.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
    )
    student = BertForSequenceClassification._from_config(config)
    prepare_for_attention_losses(student)
    specs = [
        LossSpec(name="embedding_mse"),
        LossSpec(name="hidden_mse"),
        LossSpec(name="attention_mse"),
        LossSpec(name="value_relation", params={"relation_heads": 2}),
    ]
    pairs = [(0, 0), (1, 2)]
    # The cache holds these (and value layer 0, which no loss here reads).
    needed = LayerNeeds(hidden=(0, 2), attentions=(1,), values=(1,))
    assert layer_needs([s.name for s in specs], pairs) == needed
    objective = Objective(student, specs, model, pairs=pairs)
    indices = [5, 30, 12, 33]
    batch = collate(encode(tok, Split("x", "x", "", TEXTS, None), 32), indices)
    batch.pop("labels", None)
    online_total, online = objective(batch, {})
    from_cache = layers.take(indices, batch["input_ids"].shape[1])
    cached_total, parts = objective(batch, from_cache)
    assert online_total.item() > 0
    for name, value in parts.items():
        assert value.item() == pytest.approx(online[name].item(), rel=2e-3, abs=1e-5), name
    # The cached run never called the teacher: its targets came from the cache.
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        objective(batch, from_cache)
        assert not calls
        objective(batch, {})
        assert calls
    finally:
        hook.remove()
