"""The pruned BERT architecture: conversion (BERT, RoBERTa, XLM-R), masking equivalence,
save/load, whole-layer removal, Auto loading."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from lmshrink.compress.pruning import from_bert, prune_to, unit_costs
from lmshrink.models.pruned_bert import PrunedBertConfig, PrunedBertForSequenceClassification

# Stock classifier families: (config class, model class). RoBERTa's are as released:
# one token type, padding id 1, positions counted from 2 (so 2 more position embeddings).
FAMILIES = {
    "bert": (BertConfig, BertForSequenceClassification),
    "roberta": (RobertaConfig, RobertaForSequenceClassification),
    "xlm-roberta": (XLMRobertaConfig, XLMRobertaForSequenceClassification),
}


def tiny_bert(attn: str = "eager", layers: int = 4, heads: int = 4, family: str = "bert"):
    """A random 4-layer, 4-head classifier of `family` (hidden 32, head width 8, FFN 64)."""
    torch.manual_seed(0)
    config_class, model_class = FAMILIES[family]
    roberta = family != "bert"
    config = config_class(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=66 if roberta else 64,
        type_vocab_size=1 if roberta else 2,
        num_labels=3,
        initializer_range=0.2,  # large weights: logits far from 0, so differences show
        attn_implementation=attn,
    )
    return model_class(config).eval()


def inputs(family: str = "bert") -> dict[str, torch.Tensor]:
    """A padded batch: rows of length 9, 6 and 3, padded with the family's padding id; BERT's
    has a second segment in row 0, RoBERTa's no token types (it has one)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    if family != "bert":
        # RoBERTa numbers positions from the padding id, so padding must carry it.
        return {"input_ids": ids.masked_fill(mask == 0, 1), "attention_mask": mask}
    types = torch.zeros(3, 9, dtype=torch.long)
    types[0, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_conversion_gives_identical_logits(attn, family):
    bert = tiny_bert(attn, family=family)
    pruned = from_bert(bert)
    assert isinstance(pruned, PrunedBertForSequenceClassification)
    assert pruned.config.family == ("bert" if family == "bert" else "roberta")
    assert pruned.config.heads_per_layer == [4, 4, 4, 4]
    assert pruned.config.intermediate_per_layer == [64] * 4
    batch = inputs(family)
    with torch.no_grad():
        expected = bert(**batch, output_hidden_states=True)
        got = pruned(**batch, output_hidden_states=True)
    assert torch.equal(got.logits, expected.logits)
    assert len(got.hidden_states) == 5
    for a, b in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_head_drops_out_as_the_family_does(family):
    """In training mode, with dropout only in the head, the converted model draws the same
    masks as the stock one: RoBERTa's head drops out before its dense layer too."""
    stock = tiny_bert(family=family)
    stock.config.hidden_dropout_prob = stock.config.attention_probs_dropout_prob = 0.0
    stock.config.classifier_dropout = 0.5
    stock = type(stock)(stock.config)  # rebuilt with those rates
    pruned = from_bert(stock.eval()).train()
    stock.train()
    batch = inputs(family)
    torch.manual_seed(7)
    expected = stock(**batch).logits
    torch.manual_seed(7)
    got = pruned(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, pruned.eval()(**batch).logits)  # dropout did act


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="heads_per_layer has 1 entries"):
        PrunedBertConfig(num_hidden_layers=2, heads_per_layer=[2])
    with pytest.raises(ValueError, match="between 0 and 12"):
        PrunedBertConfig(num_hidden_layers=1, heads_per_layer=[13])
    with pytest.raises(ValueError, match="family must be one of"):
        PrunedBertConfig(family="gpt2")


def zeroed_bert(heads: dict[int, list[int]], neurons: dict[int, list[int]], family: str = "bert"):
    """The stock model with the given heads and neurons silenced by zeroing the columns of the
    output projections that read them: an independent reference for pruning."""
    bert = tiny_bert(family=family)
    d = 8
    layers = bert.base_model.encoder.layer
    with torch.no_grad():
        for layer_id, ids in heads.items():
            dense = layers[layer_id].attention.output.dense.weight  # [H, 4d]
            for h in ids:
                dense[:, h * d : (h + 1) * d] = 0
        for layer_id, ids in neurons.items():
            layers[layer_id].output.dense.weight[:, ids] = 0  # [H, I]
    return bert


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pruning_equals_masking(family):
    removed_heads = {0: [1], 1: [0, 2, 3], 2: [0, 1, 2, 3], 3: []}
    removed_neurons = {0: list(range(0, 64, 3)), 1: [5], 2: [], 3: list(range(64))}
    keep_heads = {k: [h for h in range(4) if h not in r] for k, r in removed_heads.items()}
    keep_neurons = {k: [i for i in range(64) if i not in r] for k, r in removed_neurons.items()}
    bert = tiny_bert(family=family)
    small = prune_to(from_bert(bert), keep_heads, keep_neurons).eval()
    assert small.config.heads_per_layer == [3, 1, 0, 4]
    assert small.config.intermediate_per_layer == [42, 63, 64, 0]
    layer0 = small.layers[0]
    assert layer0.attention.self.query.weight.shape == (24, 32)
    assert layer0.attention.output.dense.weight.shape == (32, 24)
    assert layer0.intermediate.dense.weight.shape == (42, 32)
    assert layer0.output.dense.weight.shape == (32, 42)

    batch = inputs(family)
    head_mask = [
        torch.tensor([0.0 if h in removed_heads[k] else 1.0 for h in range(4)]) for k in range(4)
    ]
    neuron_mask = [
        torch.tensor([0.0 if i in removed_neurons[k] else 1.0 for i in range(64)]) for k in range(4)
    ]
    with torch.no_grad():
        masked = from_bert(bert)(**batch, head_mask=head_mask, neuron_mask=neuron_mask).logits
        zeroed = zeroed_bert(removed_heads, removed_neurons, family)(**batch).logits
        got = small(**batch).logits
        unpruned = bert(**batch).logits
    torch.testing.assert_close(got, masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, zeroed, rtol=1e-5, atol=1e-5)
    assert (got - unpruned).abs().max() > 0.1  # the pruning did change the model


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_uneven_layers_save_load_round_trip(tmp_path, family):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import lmshrink  # noqa: F401  (registers the pruned model with the Auto API)

    bert = tiny_bert(family=family)
    small = prune_to(from_bert(bert), {0: [0, 3], 1: [], 2: [1]}, {0: [1, 2, 3], 1: [], 3: [7]})
    small.eval()
    small.save_pretrained(tmp_path)
    saved = AutoConfig.from_pretrained(tmp_path)
    assert saved.heads_per_layer == [2, 0, 1, 4]
    assert saved.family == family
    loaded = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager"
    )
    assert type(loaded) is PrunedBertForSequenceClassification
    assert loaded.config.intermediate_per_layer == [3, 0, 64, 1]
    loaded.eval()
    batch = inputs(family)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, small(**batch).logits)
    # And the unpruned conversion, with every key of BERT's state dict.
    full = from_bert(bert)
    full.save_pretrained(tmp_path / "full")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full").eval()
    assert again.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, bert(**batch).logits)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_removed_layer_saves_loads_and_predicts(tmp_path, family):
    """A layer losing all its heads and neurons goes as a whole: only its output biases and
    LayerNorms stay, and the saved model loads and predicts what the stock model predicts
    with that layer's heads and neurons masked."""
    from transformers import AutoModelForSequenceClassification

    import lmshrink  # noqa: F401  (registers the pruned model with the Auto API)

    stock = tiny_bert(family=family)
    small = prune_to(from_bert(stock), {2: []}, {2: []}).eval()
    assert small.config.heads_per_layer == [4, 4, 0, 4]
    assert small.config.intermediate_per_layer == [64, 64, 0, 64]
    _, _, fixed = unit_costs(small.config)
    assert sum(p.numel() for p in small.layers[2].parameters()) == fixed
    small.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager"
    ).eval()
    assert loaded.config.heads_per_layer == [4, 4, 0, 4]
    assert sum(p.numel() for p in loaded.layers[2].parameters()) == fixed
    masked = zeroed_bert({2: [0, 1, 2, 3]}, {2: list(range(64))}, family)
    batch = inputs(family)
    with torch.no_grad():
        got = loaded(**batch, output_hidden_states=True)
        assert torch.equal(got.logits, small(**batch).logits)
        torch.testing.assert_close(got.logits, masked(**batch).logits, rtol=1e-5, atol=1e-5)
        assert (got.logits - stock(**batch).logits).abs().max() > 0.1  # the layer mattered
    assert len(got.hidden_states) == 5  # hidden states still line up with the teacher's


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
    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

    bilstm = BiLSTMForSequenceClassification(
        BiLSTMConfig(vocab_size=20, embedding_dim=4, hidden_size=4)
    )
    with pytest.raises(ConfigError, match="BiLSTM student.*use distill with a smaller student"):
        from_bert(bilstm)
