"""The static student model: config, masked-mean pooling, the head, losses, save/load, Auto
registration and ONNX export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_bilstm_model import TEACHER_VOCAB, VOCAB, random_batch, randomised

from lmshrink.models.static import (
    BIGRAM_HASH,
    StaticConfig,
    StaticForSequenceClassification,
    register_auto,
)


def make_model(seed: int = 0, **overrides) -> StaticForSequenceClassification:
    """A tiny static student with every weight and the token map randomised (eval mode), so
    that a tensor re-initialised on load or ignored in forward shows."""
    settings = dict(
        vocab_size=VOCAB,
        teacher_vocab_size=TEACHER_VOCAB,
        embedding_dim=8,
        hidden_size=6,
        dropout=0.1,
        pad_token_id=0,
        pad_row=0,
        unk_row=1,
        num_labels=3,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return randomised(StaticForSequenceClassification(StaticConfig(**settings)))


# --- config ---------------------------------------------------------------------------


def test_config_round_trips_every_field(tmp_path):
    config = StaticConfig(
        vocab_size=11,
        teacher_vocab_size=40,
        embedding_dim=7,
        hidden_size=5,
        bigram_buckets=13,
        dropout=0.35,
        pad_token_id=3,
        pad_row=2,
        unk_row=4,
        num_labels=1,
        problem_type="regression",
    )
    config.save_pretrained(tmp_path)
    loaded = StaticConfig.from_pretrained(tmp_path)
    own = [f.name for f in dataclasses.fields(StaticConfig) if f.name != "transformers_version"]
    assert {"teacher_vocab_size", "embedding_dim", "hidden_size", "bigram_buckets"} <= set(own)
    for name in own:
        assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.model_type == "lmshrink_static" and loaded.pooled_size == 7
    assert "pooled_size" not in config.to_dict()  # derived, not saved


def test_config_defaults():
    config = StaticConfig(vocab_size=17)
    assert config.teacher_vocab_size == 17
    assert (config.embedding_dim, config.hidden_size, config.dropout) == (256, 0, 0.1)
    assert config.bigram_buckets == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_size": -1},
        {"bigram_buckets": -1},
        {"embedding_dim": 0},
        {"unk_row": 25},
        {"pad_row": -1},
        {"dropout": 1.0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        StaticConfig(vocab_size=25, **bad)


# --- forward --------------------------------------------------------------------------


def test_pooled_is_the_mean_of_the_real_tokens_vectors():
    model = make_model()
    batch = random_batch([3, 7, 1])
    table = model.embeddings.weight.detach()
    want = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        rows = [int(model.token_map[int(i)]) for i, m in zip(ids, mask, strict=True) if m]
        want.append(torch.stack([table[r] for r in rows]).mean(dim=0))
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out.pooled, torch.stack(want), rtol=0, atol=1e-6)
    # The head reads `pooled`: hidden layer, ReLU, classifier (dropout off in eval).
    hidden = torch.relu(out.pooled @ model.hidden.weight.T + model.hidden.bias)
    logits = hidden @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-6)


def test_without_a_hidden_layer_the_classifier_reads_pooled():
    model = make_model(hidden_size=0)
    assert model.hidden is None and model.classifier.in_features == 8
    with torch.no_grad():
        out = model(**random_batch([4, 2]))
    want = out.pooled @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(out.logits, want, rtol=0, atol=1e-6)


def test_with_a_bigram_table_pooled_adds_the_mean_of_the_adjacent_pairs_vectors():
    model = make_model(bigram_buckets=11)
    batch = random_batch([3, 7, 1])
    tokens = model.embeddings.weight.detach()
    pairs = model.bigrams.weight.detach()
    want = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        rows = [int(model.token_map[int(i)]) for i, m in zip(ids, mask, strict=True) if m]
        mean = torch.stack([tokens[r] for r in rows]).mean(dim=0)
        buckets = [(a * BIGRAM_HASH + b) % 11 for a, b in zip(rows, rows[1:], strict=False)]
        if buckets:  # a one-token text has no pair: its tokens' mean alone
            mean = mean + torch.stack([pairs[k] for k in buckets]).mean(dim=0)
        want.append(mean)
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out.pooled, torch.stack(want), rtol=0, atol=1e-5)
    # The order of a pair counts: swapping two tokens moves the prediction.
    ids = torch.tensor([[5, 9, 14]])
    swapped = torch.tensor([[9, 5, 14]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).pooled, model(input_ids=swapped).pooled)
        plain = make_model(bigram_buckets=0)
        assert torch.equal(plain(input_ids=ids).pooled, plain(input_ids=swapped).pooled)


def test_a_new_bigram_table_is_zero_and_trained_with_the_embeddings():
    model = StaticForSequenceClassification(
        StaticConfig(vocab_size=VOCAB, teacher_vocab_size=TEACHER_VOCAB, bigram_buckets=9)
    )
    assert model.bigrams.weight.shape == (9, 256) and not model.bigrams.weight.any()
    groups = dict(model.layer_groups())
    assert groups["embeddings"] == [model.embeddings, model.bigrams]
    assert make_model().bigrams is None


@pytest.mark.parametrize(("hidden_size", "bigram_buckets"), [(0, 0), (6, 0), (6, 11)])
def test_prediction_does_not_depend_on_batch_padding(hidden_size, bigram_buckets):
    model = make_model(hidden_size=hidden_size, bigram_buckets=bigram_buckets)
    lengths = [5, 40, 9]
    batch = random_batch(lengths)
    with torch.no_grad():
        together = model(**batch)
        for row, length in enumerate(lengths):
            alone = model(**{k: v[row : row + 1, :length] for k, v in batch.items()})
            torch.testing.assert_close(alone.logits[0], together.logits[row], rtol=0, atol=1e-6)
            torch.testing.assert_close(alone.pooled[0], together.pooled[row], rtol=0, atol=1e-6)


def test_token_type_ids_are_ignored():
    model = make_model()
    batch = random_batch([6, 3])
    without = {k: v for k, v in batch.items() if k != "token_type_ids"}
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, model(**without).logits)


def test_unseen_teacher_ids_read_the_unk_row():
    model = StaticForSequenceClassification(
        StaticConfig(vocab_size=VOCAB, teacher_vocab_size=TEACHER_VOCAB, embedding_dim=4, unk_row=3)
    ).eval()
    # A fresh model's map: identity below vocab_size, unk_row for every id past the table.
    assert model.token_map[:VOCAB].tolist() == list(range(VOCAB))
    assert set(model.token_map[VOCAB:].tolist()) == {3}
    with torch.no_grad():
        pooled = model(input_ids=torch.tensor([[VOCAB + 7, TEACHER_VOCAB - 1]])).pooled
    torch.testing.assert_close(pooled[0], model.embeddings.weight[3].detach())


def test_output_shapes_and_tuple_output():
    model = make_model(num_labels=4)
    out = model(**random_batch([3, 7]))
    assert out.loss is None and out.logits.shape == (2, 4) and out.pooled.shape == (2, 8)
    as_tuple = model(**random_batch([3, 7]), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)


# --- losses ---------------------------------------------------------------------------


def test_classification_loss_trains_only_the_rows_it_reads():
    model = make_model(problem_type="single_label_classification")
    batch = random_batch([4, 6, 2])
    labels = torch.tensor([2, 0, 1])
    out = model(**batch, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    out.loss.backward()
    grad = model.embeddings.weight.grad  # [V, E]
    used = model.token_map[batch["input_ids"][batch["attention_mask"].bool()]].unique()
    unused = torch.ones(VOCAB, dtype=torch.bool)
    unused[used] = False
    assert grad[used].abs().sum(dim=1).gt(0).all()
    assert torch.all(grad[unused] == 0)  # garbage ids under padding get no gradient


@pytest.mark.parametrize("problem_type", ["regression", None])
def test_regression_head_and_mse_loss(problem_type):
    model = make_model(num_labels=1, problem_type=problem_type)
    labels = torch.tensor([0.5, 4.2, 2.0])
    out = model(**random_batch([4, 6, 2]), labels=labels)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - labels) ** 2).mean())
    assert model.config.problem_type == problem_type  # inferred, not written


# --- layer groups ---------------------------------------------------------------------


@pytest.mark.parametrize("hidden_size", [0, 6])
def test_layer_groups_cover_every_parameter_once(hidden_size):
    model = make_model(hidden_size=hidden_size)
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embeddings", "classifier"]
    # the hidden layer reads `pooled`, so it sits with the classifier
    assert (model.hidden in groups[1][1]) == (hidden_size > 0)
    ids = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert len(ids) == len(set(ids))


# --- save / load ----------------------------------------------------------------------


def test_save_and_auto_load_give_the_same_logits(tmp_path):
    """Loaded through transformers' Auto class with no explicit `register_auto()` call: the
    registration `import lmshrink` installs (lmshrink.models.autoregister) must cover it."""
    from transformers import AutoModelForSequenceClassification

    from lmshrink.models import autoregister

    autoregister.register_all()  # what lmshrink.models.loading does before loading
    labels = {0: "neg", 1: "neu", 2: "pos"}
    model = make_model(id2label=labels, label2id={v: k for k, v in labels.items()})
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is StaticForSequenceClassification
    assert torch.equal(loaded.token_map, model.token_map)
    assert loaded.config.id2label == labels
    batch = random_batch([5, 2, 9])
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_register_auto_is_idempotent():
    from transformers import AutoConfig

    register_auto()
    register_auto()
    assert type(AutoConfig.for_model("lmshrink_static", vocab_size=3)) is StaticConfig


# --- ONNX -----------------------------------------------------------------------------


def test_onnx_graph_has_dynamic_axes_and_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from lmshrink.compress.onnx import OnnxClassifier, export_onnx, onnx_input_names

    class WritesSegments:  # a BERT tokenizer writes token_type_ids
        model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    model = make_model()
    names = onnx_input_names(model, WritesSegments())
    assert names == ["input_ids", "attention_mask"]  # the model reads no segments
    example = random_batch([6, 3])
    export_onnx(model, {n: example[n] for n in names}, tmp_path / "model.onnx")
    session = OnnxClassifier(tmp_path / "model.onnx")
    assert session.input_names == names
    for lengths in ([1], [4, 17, 2, 9, 11], [30, 30]):  # other batch sizes and lengths
        batch = random_batch(lengths, seed=len(lengths))
        with torch.no_grad():
            want = model(**batch).logits
        assert want.abs().max() > 0.1
        got = session(**batch).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
