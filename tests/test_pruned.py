"""The pruned BERT architecture: conversion, masking equivalence, save/load, Auto loading."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lmshrink.prune import from_bert, prune_to
from lmshrink.pruned import PrunedBertConfig, PrunedBertForSequenceClassification


def tiny_bert(
    attn: str = "eager", layers: int = 4, heads: int = 4
) -> BertForSequenceClassification:
    """A random 4-layer, 4-head BERT classifier (hidden 32, head width 8, FFN 64)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        initializer_range=0.2,  # large weights: logits far from 0, so differences show
        attn_implementation=attn,
    )
    return BertForSequenceClassification(config).eval()


def inputs() -> dict[str, torch.Tensor]:
    """A padded batch: rows of length 9, 6 and 3, with a second segment in row 0."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    types = torch.zeros(3, 9, dtype=torch.long)
    types[0, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_conversion_gives_identical_logits(attn):
    bert = tiny_bert(attn)
    pruned = from_bert(bert)
    assert isinstance(pruned, PrunedBertForSequenceClassification)
    assert pruned.config.heads_per_layer == [4, 4, 4, 4]
    assert pruned.config.intermediate_per_layer == [64] * 4
    batch = inputs()
    with torch.no_grad():
        expected = bert(**batch, output_hidden_states=True)
        got = pruned(**batch, output_hidden_states=True)
    assert torch.equal(got.logits, expected.logits)
    assert len(got.hidden_states) == 5
    for a, b in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert torch.equal(a, b)


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="heads_per_layer has 1 entries"):
        PrunedBertConfig(num_hidden_layers=2, heads_per_layer=[2])
    with pytest.raises(ValueError, match="between 0 and 12"):
        PrunedBertConfig(num_hidden_layers=1, heads_per_layer=[13])


def zeroed_bert(heads: dict[int, list[int]], neurons: dict[int, list[int]]):
    """The stock BERT with the given heads and neurons silenced by zeroing the columns of the
    output projections that read them: an independent reference for pruning."""
    bert = tiny_bert()
    d = 8
    with torch.no_grad():
        for layer_id, ids in heads.items():
            dense = bert.bert.encoder.layer[layer_id].attention.output.dense.weight  # [H, 4d]
            for h in ids:
                dense[:, h * d : (h + 1) * d] = 0
        for layer_id, ids in neurons.items():
            bert.bert.encoder.layer[layer_id].output.dense.weight[:, ids] = 0  # [H, I]
    return bert


def test_pruning_equals_masking():
    removed_heads = {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3], 3: []}
    removed_neurons = {0: list(range(0, 64, 3)), 1: [5], 2: [], 3: list(range(64))}
    keep_heads = {k: [h for h in range(4) if h not in r] for k, r in removed_heads.items()}
    keep_neurons = {k: [i for i in range(64) if i not in r] for k, r in removed_neurons.items()}
    bert = tiny_bert()
    small = prune_to(from_bert(bert), keep_heads, keep_neurons).eval()
    assert small.config.heads_per_layer == [3, 1, 0, 4]
    assert small.config.intermediate_per_layer == [42, 63, 64, 0]
    layer0 = small.layers[0]
    assert layer0.attention.self.query.weight.shape == (24, 32)
    assert layer0.attention.output.dense.weight.shape == (32, 24)
    assert layer0.intermediate.dense.weight.shape == (42, 32)
    assert layer0.output.dense.weight.shape == (32, 42)

    batch = inputs()
    head_mask = [
        torch.tensor([0.0 if h in removed_heads[k] else 1.0 for h in range(4)]) for k in range(4)
    ]
    neuron_mask = [
        torch.tensor([0.0 if i in removed_neurons[k] else 1.0 for i in range(64)]) for k in range(4)
    ]
    with torch.no_grad():
        masked = from_bert(bert)(**batch, head_mask=head_mask, neuron_mask=neuron_mask).logits
        zeroed = zeroed_bert(removed_heads, removed_neurons)(**batch).logits
        got = small(**batch).logits
        unpruned = bert(**batch).logits
    torch.testing.assert_close(got, masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, zeroed, rtol=1e-5, atol=1e-5)
    assert (got - unpruned).abs().max() > 0.1  # the pruning did change the model


def test_uneven_layers_save_load_round_trip(tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import lmshrink  # noqa: F401  (registers the pruned model with the Auto API)

    bert = tiny_bert()
    small = prune_to(from_bert(bert), {0: [0, 3], 1: [], 2: [1]}, {0: [1, 2, 3], 1: [], 3: [7]})
    small.eval()
    small.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).heads_per_layer == [2, 0, 1, 4]
    loaded = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager"
    )
    assert type(loaded) is PrunedBertForSequenceClassification
    assert loaded.config.intermediate_per_layer == [3, 0, 64, 1]
    loaded.eval()
    batch = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, small(**batch).logits)
    # And the unpruned conversion, with every key of BERT's state dict.
    full = from_bert(bert)
    full.save_pretrained(tmp_path / "full")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full").eval()
    assert again.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, bert(**batch).logits)


def test_labels_give_bert_loss_and_attentions_have_kept_heads():
    bert = tiny_bert()
    small = prune_to(from_bert(bert), {1: [2]}, {})
    batch = inputs()
    labels = torch.tensor([0, 2, 1])
    out = from_bert(bert)(**batch, labels=labels)
    torch.testing.assert_close(out.loss, bert(**batch, labels=labels).loss)
    attentions = small(**batch, output_attentions=True).attentions
    assert [a.shape[1] for a in attentions] == [4, 1, 4, 4]


def test_refuses_non_bert():
    from lmshrink.errors import ConfigError
    from lmshrink.students.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

    bilstm = BiLSTMForSequenceClassification(
        BiLSTMConfig(vocab_size=20, embedding_dim=4, hidden_size=4)
    )
    with pytest.raises(ConfigError, match="BiLSTM student.*use distill with a smaller student"):
        from_bert(bilstm)
