"""Pruning a token tagger (NER): the pruned BERT with a token head computes the stock
tagger's logits, `lmshrink prune` recovers it word by word, and the pruned tagger loads,
scores entity F1 and exports to ONNX with its per-word parity check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_distill_tokens import write_conll_folder
from test_prune import prune_config

from lmshrink.compress.pruning import encoder_parameters, from_bert, prune_to

TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    initializer_range=0.2,
)


def padded_batch(vocab: int, first: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(first, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_converted_tagger_computes_the_stock_taggers_logits(family):
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        RobertaConfig,
        RobertaForTokenClassification,
    )

    from lmshrink.models.pruned_bert import PrunedBertForTokenClassification

    torch.manual_seed(0)
    if family == "bert":
        stock = BertForTokenClassification(BertConfig(vocab_size=40, num_labels=5, **TINY))
    else:
        config = RobertaConfig(
            vocab_size=40, num_labels=5, max_position_embeddings=66, type_vocab_size=1, **TINY
        )
        stock = RobertaForTokenClassification(config)
    stock.eval()
    pruned = from_bert(stock).eval()
    assert type(pruned) is PrunedBertForTokenClassification
    assert not hasattr(pruned.bert, "pooler")  # a token head reads no pooler
    batch = padded_batch(40)
    with torch.no_grad():
        expected = stock(**batch).logits  # [3, 9, 5]
        got = pruned(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Removing units keeps the class and shape of the output.
    smaller = prune_to(pruned, {0: [1, 2], 3: []}, {1: list(range(10))})
    assert type(smaller) is PrunedBertForTokenClassification
    assert smaller.config.heads_per_layer == [2, 4, 4, 0]
    assert smaller(**batch).logits.shape == (3, 9, 5)
    labels = torch.full((3, 9), -100)
    labels[:, 1] = 2
    loss = smaller(**batch, labels=labels).loss  # cross-entropy over the tagged tokens only
    by_hand = torch.nn.functional.cross_entropy(smaller(**batch).logits[:, 1], labels[:, 1])
    torch.testing.assert_close(loss, by_hand)


@pytest.fixture(scope="module")
def ner_tagger(tiny_encoder, tmp_path_factory) -> dict[str, Path]:
    """A 4-layer, 4-head tiny BERT tagger fine-tuned on 120 made-up CoNLL sentences."""
    from conftest import tiny_bert_config
    from transformers import BertModel, BertTokenizer

    from lmshrink.config import DataConfig, TrainConfig
    from lmshrink.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("ner-prune")
    write_conll_folder(root / "data", train=120, dev=40)
    tokenizer = BertTokenizer.from_pretrained(tiny_encoder)
    torch.manual_seed(0)
    config = tiny_bert_config(
        vocab_size=tokenizer.vocab_size, num_hidden_layers=4, num_attention_heads=4
    )
    BertModel(config).save_pretrained(root / "base")  # an encoder: finetune adds the head
    tokenizer.save_pretrained(root / "base")
    finetune(
        FinetuneConfig(
            model=str(root / "base"),
            out=str(root / "teacher"),
            seed=42,
            progress=False,
            data=DataConfig(task="conll2003", data_dir=str(root / "data"), max_length=32),
            train=TrainConfig(epochs=12, batch_size=16, lr=4e-3, eval_batch_size=64),
        )
    )
    return {"teacher": root / "teacher", "data": root / "data"}


def test_prune_a_tagger_then_score_and_export_it(ner_tagger, tmp_path):
    from transformers import AutoModelForTokenClassification

    import lmshrink  # noqa: F401
    from lmshrink.config import DataConfig
    from lmshrink.export import ExportConfig, export
    from lmshrink.models.pruned_bert import PrunedBertForTokenClassification
    from lmshrink.prune import prune

    data = DataConfig(task="conll2003", data_dir=str(ner_tagger["data"]), max_length=32)
    out = tmp_path / "pruned"
    settings = dict(target_params=0.5, recovery_steps=30, importance_examples=64, data=data)
    report = prune(prune_config(ner_tagger["teacher"], ner_tagger["data"], out, **settings))
    kept, total = report["encoder_parameters"]["pruned"], report["encoder_parameters"]["unpruned"]
    assert kept <= 0.5 * total
    assert all(h["recovery_loss"] > 0 for h in report["history"])
    # scored as a tagger: entity F1 of the pruned and the unpruned model on dev
    assert set(report["dev"]["pruned"]) == {"entity_f1"}
    unpruned_f1 = report["dev"]["unpruned"]["entity_f1"]
    assert unpruned_f1 > 0.5  # the tiny teacher learned the made-up entities
    # recovery kept most of it at half the encoder
    assert report["dev"]["pruned"]["entity_f1"] >= 0.8 * unpruned_f1

    loaded = AutoModelForTokenClassification.from_pretrained(out)
    assert type(loaded) is PrunedBertForTokenClassification
    assert encoder_parameters(loaded) == kept
    assert json.loads((out / "lmshrink.json").read_text())["task"] == "conll2003"

    onnx = tmp_path / "onnx"
    export(ExportConfig(model=str(out), out=str(onnx), progress=False, data=data))
    meta = json.loads((onnx / "export.json").read_text())
    assert meta["task_kind"] == "token_classification"
    assert meta["parity"]["passed"] and meta["parity"]["agreement"] == 1.0
