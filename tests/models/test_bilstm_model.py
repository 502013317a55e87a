"""The BiLSTM student models: config, forward, pooling, losses, save/load, Auto registration;
the sentence classifier, then the token tagger (NER) with its word-shape input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open

from lmshrink.data.task_kinds import IGNORE_INDEX
from lmshrink.models.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    BiLSTMForTokenClassification,
    StudentOutput,
    register_auto,
)

TEACHER_VOCAB = 60
VOCAB = 25
PAD_ID = 0  # teacher id of the pad token


def make_model(seed: int = 0, **overrides) -> BiLSTMForSequenceClassification:
    """A tiny student with every weight and the token map randomised (in eval mode).

    Randomising everything (zero-initialised attention and segment vectors included) makes
    a test fail if any tensor were re-initialised on load or ignored in forward.
    """
    settings = dict(
        vocab_size=VOCAB,
        teacher_vocab_size=TEACHER_VOCAB,
        embedding_dim=16,
        hidden_size=8,
        num_layers=2,
        dropout=0.1,
        pooling="max",
        pad_token_id=PAD_ID,
        pad_row=0,
        unk_row=1,
        num_labels=3,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return randomised(BiLSTMForSequenceClassification(BiLSTMConfig(**settings)))


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """`model` (a teacher-id student) with every weight and its token map drawn at random
    (from torch's current seed), in eval mode: a tensor re-initialised on load or ignored in
    forward then shows in the tests."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
        teacher_ids = model.token_map.shape[0]
        model.token_map.copy_(torch.randint(0, model.config.vocab_size, (teacher_ids,)))
    return model.eval()


def random_batch(lengths: list[int], seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded teacher ids [B, T], with random garbage ids in the padded positions."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    input_ids = torch.randint(1, TEACHER_VOCAB, (len(lengths), T), generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # [B, T]
    token_type_ids = torch.randint(0, 2, (len(lengths), T), generator=g) * mask
    return {
        "input_ids": input_ids,
        "attention_mask": mask.long(),
        "token_type_ids": token_type_ids,
    }


def take(batch: dict[str, torch.Tensor], row: int, length: int) -> dict[str, torch.Tensor]:
    """One example of a batch alone, cut to its own length (no padding at all)."""
    return {k: v[row : row + 1, :length] for k, v in batch.items()}


# --- config ---------------------------------------------------------------------------


def test_config_round_trips_every_field(tmp_path):
    config = BiLSTMConfig(
        vocab_size=11,
        teacher_vocab_size=40,
        embedding_dim=7,
        hidden_size=5,
        num_layers=3,
        dropout=0.35,
        pooling="attention",
        type_vocab_size=0,
        pad_token_id=3,
        pad_row=2,
        unk_row=4,
        num_labels=1,
        problem_type="regression",
        id2label={0: "score"},
        label2id={"score": 0},
    )
    config.save_pretrained(tmp_path)
    loaded = BiLSTMConfig.from_pretrained(tmp_path)
    own = [f.name for f in dataclasses.fields(BiLSTMConfig) if f.name != "transformers_version"]
    assert "teacher_vocab_size" in own and "unk_row" in own
    for name in own:
        assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.num_labels == 1
    assert loaded.to_dict() == config.to_dict()


def test_config_defaults_teacher_vocab_to_vocab_size():
    assert BiLSTMConfig(vocab_size=17).teacher_vocab_size == 17


@pytest.mark.parametrize(
    "bad",
    [
        {"pooling": "sum"},
        {"unk_row": 25},
        {"pad_row": -1},
        {"num_layers": 0},
        {"dropout": 1.0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        BiLSTMConfig(vocab_size=25, **bad)


# --- forward --------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_prediction_does_not_depend_on_batch_padding(pooling, num_layers):
    """A row alone (unpadded: the no-packing fast path) equals it in a padded batch."""
    model = make_model(pooling=pooling, num_layers=num_layers)
    batch = random_batch([5, 40, 9])
    with torch.no_grad():
        together = model(**batch)
        for row, length in enumerate([5, 40, 9]):
            alone = model(**take(batch, row, length))
            torch.testing.assert_close(alone.logits[0], together.logits[row], rtol=0, atol=1e-6)
            torch.testing.assert_close(alone.pooled[0], together.pooled[row], rtol=0, atol=1e-6)


def test_output_shapes_and_no_loss_without_labels():
    model = make_model(num_labels=4, hidden_size=6)
    out = model(**random_batch([3, 7]))
    assert isinstance(out, StudentOutput)
    assert out.loss is None
    assert out.logits.shape == (2, 4)
    assert out.pooled.shape == (2, 12) and model.config.pooled_size == 12
    assert "pooled_size" not in model.config.to_dict()  # derived, not saved
    as_tuple = model(**random_batch([3, 7]), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)


def test_token_map_sends_teacher_ids_to_rows():
    """Two teacher ids mapped to the same row are the same input to the student."""
    model = make_model()
    with torch.no_grad():
        model.token_map[7] = 3
        model.token_map[8] = 3
        model.token_map[9] = 4
        base = torch.tensor([[2, 7, 5]])
        same = model(input_ids=torch.tensor([[2, 8, 5]])).logits
        other = model(input_ids=torch.tensor([[2, 9, 5]])).logits
        torch.testing.assert_close(model(input_ids=base).logits, same, rtol=0, atol=0)
        assert not torch.allclose(model(input_ids=base).logits, other)


def test_segment_embeddings_used_only_when_configured():
    batch = random_batch([6, 6])
    no_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    with torch.no_grad():
        with_segments = make_model(type_vocab_size=2)
        assert not torch.allclose(with_segments(**batch).logits, with_segments(**no_types).logits)
        without = make_model(type_vocab_size=0)
        assert without.token_type_embeddings is None
        torch.testing.assert_close(without(**batch).logits, without(**no_types).logits)


def test_left_padding_is_refused():
    model = make_model()
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="right padding"):
        model(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=mask)


def test_pooling_reads_valid_positions_only():
    # states [1, 4, 2]: two valid positions, two padded ones holding large values.
    states = torch.tensor([[[-3.0, 1.0], [-1.0, 5.0], [9.0, 9.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, False, False]])
    lengths = torch.tensor([2])
    expected = {
        "max": torch.tensor([[-1.0, 5.0]]),  # a padded 0 or 9 must not win
        "mean": torch.tensor([[-2.0, 3.0]]),
        "attention": torch.tensor([[-2.0, 3.0]]),  # zero scores: the mean of valid rows
    }
    for pooling, want in expected.items():
        model = BiLSTMForSequenceClassification(
            BiLSTMConfig(vocab_size=5, embedding_dim=4, hidden_size=1, pooling=pooling)
        )
        torch.testing.assert_close(model._pool(states, valid, lengths), want)


def test_attention_pooling_weights_by_learned_scores():
    model = BiLSTMForSequenceClassification(
        BiLSTMConfig(vocab_size=5, embedding_dim=4, hidden_size=1, pooling="attention")
    )
    with torch.no_grad():
        model.attention.weight.copy_(torch.tensor([[1.0, 0.0]]))
    states = torch.tensor([[[0.0, 2.0], [1.0, 4.0], [50.0, 50.0]]])  # [1, 3, 2]
    valid = torch.tensor([[True, True, False]])
    weights = torch.softmax(torch.tensor([0.0, 1.0]), dim=0)  # position 2 is padding
    want = weights[0] * states[0, 0] + weights[1] * states[0, 1]
    got = model._pool(states, valid, torch.tensor([2]))
    torch.testing.assert_close(got[0], want)


# --- losses ---------------------------------------------------------------------------


def test_classification_loss_is_cross_entropy():
    model = make_model(num_labels=3, problem_type="single_label_classification")
    batch = random_batch([4, 6, 2])
    labels = torch.tensor([2, 0, 1])
    out = model(**batch, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("problem_type", ["regression", None])
def test_regression_head_and_mse_loss(problem_type):
    model = make_model(num_labels=1, problem_type=problem_type)
    batch = random_batch([4, 6, 2])
    labels = torch.tensor([0.5, 4.2, 2.0])
    out = model(**batch, labels=labels)
    assert out.logits.shape == (3, 1)
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - labels) ** 2).mean())
    assert model.config.problem_type == problem_type  # inferred, not written into the config


# --- layer groups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pooling": "attention", "num_layers": 3}, {"type_vocab_size": 0, "num_layers": 1}],
)
def test_layer_groups_cover_every_parameter_once(overrides):
    model = make_model(**overrides)
    groups = model.layer_groups()
    names = [name for name, _ in groups]
    layers = [f"lstm.{i}" for i in range(model.config.num_layers)]
    pooler = ["pooler"] if model.config.pooling == "attention" else []
    assert names == ["embeddings", *layers, *pooler, "classifier"]
    grouped = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert dict(groups)["lstm.0"] == [model.lstm[0]]
    assert dict(groups)["classifier"] == [model.classifier]


def test_get_input_embeddings_is_the_trimmed_table():
    model = make_model()
    assert model.get_input_embeddings() is model.embeddings
    assert model.get_input_embeddings().weight.shape == (VOCAB, 16)


# --- save / load ----------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_save_load_gives_identical_logits(tmp_path, pooling):
    model = make_model(pooling=pooling)
    batch = random_batch([5, 11, 3])
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        saved = list(f.keys())
    assert "token_map" in saved
    loaded = BiLSTMForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.token_map, model.token_map)
    reloaded = loaded.state_dict()
    assert list(reloaded) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded[name]), name
    with torch.no_grad():
        after = loaded(**batch).logits
    assert torch.equal(before, after)


def test_fresh_model_has_sane_weights():
    config = BiLSTMConfig(
        vocab_size=30, teacher_vocab_size=40, embedding_dim=6, hidden_size=4, unk_row=5
    )
    model = BiLSTMForSequenceClassification(config)
    expected_map = torch.cat([torch.arange(30), torch.full((10,), 5)])
    assert torch.equal(model.token_map, expected_map)
    assert torch.all(model.embeddings.weight[config.pad_row] == 0)
    assert torch.all(model.token_type_embeddings.weight == 0)
    bias = model.lstm[0].bias_ih_l0
    assert torch.equal(bias[4:8], torch.ones(4)) and torch.all(bias[:4] == 0)


def test_auto_classes_load_the_student(tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    register_auto()
    register_auto()  # idempotent
    model = make_model()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is BiLSTMConfig
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(loaded) is BiLSTMForSequenceClassification
    batch = random_batch([4, 2])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded.eval()(**batch).logits)


# --- the token model (NER) -------------------------------------------------------------


def make_tagger(seed: int = 0, **overrides) -> BiLSTMForTokenClassification:
    """A tiny token student, every weight and the token map randomised (in eval mode)."""
    settings = dict(
        vocab_size=VOCAB,
        teacher_vocab_size=TEACHER_VOCAB,
        embedding_dim=16,
        hidden_size=8,
        num_layers=2,
        dropout=0.1,
        pad_token_id=PAD_ID,
        pad_row=0,
        unk_row=1,
        num_labels=5,
        shape_dim=4,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    return randomised(BiLSTMForTokenClassification(BiLSTMConfig(**settings)))


def tagged_batch(lengths: list[int], seed: int = 1) -> dict[str, torch.Tensor]:
    """random_batch plus word-shape ids (1..9 on real tokens, garbage past each row's end)."""
    batch = random_batch(lengths, seed)
    g = torch.Generator().manual_seed(seed + 100)
    batch["word_shape_ids"] = torch.randint(1, 10, batch["input_ids"].shape, generator=g)
    return batch


def test_tagger_outputs_one_row_per_token_and_states_when_asked():
    model = make_tagger(num_layers=2, hidden_size=6, embedding_dim=10, shape_dim=3)
    batch = tagged_batch([3, 7])
    out = model(**batch)
    assert out.loss is None and out.hidden_states is None
    assert out.logits.shape == (2, 7, 5)
    states = model(**batch, output_hidden_states=True).hidden_states
    assert [tuple(s.shape) for s in states] == [(2, 7, 13), (2, 7, 12), (2, 7, 12)]
    assert torch.all(states[-1][0, 3:] == 0)  # padded positions carry no state
    torch.testing.assert_close(model.classifier(states[-1]), out.logits)  # eval: no dropout
    as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_tagger_rows_do_not_depend_on_batch_padding(num_layers):
    model = make_tagger(num_layers=num_layers)
    lengths = [5, 40, 9]
    batch = tagged_batch(lengths)
    with torch.no_grad():
        together = model(**batch, output_hidden_states=True)
        for row, length in enumerate(lengths):
            alone = model(**take(batch, row, length), output_hidden_states=True)
            torch.testing.assert_close(
                alone.logits[0], together.logits[row, :length], rtol=0, atol=1e-6
            )
            for a, b in zip(alone.hidden_states, together.hidden_states, strict=True):
                torch.testing.assert_close(a[0], b[row, :length], rtol=0, atol=1e-6)


def test_tagger_reads_word_shapes_only_when_configured():
    batch = tagged_batch([6, 6])
    other = dict(batch, word_shape_ids=batch["word_shape_ids"] % 9 + 1)  # every id changed
    no_shapes = {k: v for k, v in batch.items() if k != "word_shape_ids"}
    with torch.no_grad():
        shaped = make_tagger(shape_dim=4)
        assert shaped.reads_word_shapes
        assert shaped.lstm[0].input_size == 16 + 4
        assert not torch.allclose(shaped(**batch).logits, shaped(**other).logits)
        with pytest.raises(ValueError, match="word_shapes=True"):
            shaped(**no_shapes)
        plain = make_tagger(shape_dim=0)
        assert not plain.reads_word_shapes and plain.shape_embeddings is None
        torch.testing.assert_close(plain(**batch).logits, plain(**no_shapes).logits)
        torch.testing.assert_close(plain(**batch).logits, plain(**other).logits)


def test_tagger_loss_is_cross_entropy_over_labelled_real_tokens():
    model = make_tagger()
    batch = tagged_batch([4, 6, 2])
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, 1], labels[0, 2] = 3, 0
    labels[1, 1], labels[1, 3], labels[1, 5] = 4, 2, 1
    labels[2, 1] = 0
    labels[2, 4] = 2  # past row 2's length (2 tokens): padding, must not count
    out = model(**batch, labels=labels)
    log_probs = torch.log_softmax(out.logits, dim=-1)  # [3, 6, 5]
    counted = [(0, 1), (0, 2), (1, 1), (1, 3), (1, 5), (2, 1)]
    want = -sum(log_probs[b, t, labels[b, t]] for b, t in counted) / len(counted)
    torch.testing.assert_close(out.loss, want)
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_tagger_loss_without_any_label_is_zero_not_nan():
    model = make_tagger()
    batch = tagged_batch([3, 2])
    out = model(**batch, labels=torch.full((2, 3), IGNORE_INDEX))
    assert out.loss.item() == 0.0
    out.loss.backward()  # still part of the graph


def test_tagger_layer_groups_hold_the_shape_table_with_the_embeddings():
    model = make_tagger(num_layers=2, type_vocab_size=2)
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embeddings", "lstm.0", "lstm.1", "classifier"]
    assert dict(groups)["embeddings"] == [
        model.embeddings,
        model.token_type_embeddings,
        model.shape_embeddings,
    ]
    grouped = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_fresh_tagger_shape_table_has_a_zero_padding_row():
    model = BiLSTMForTokenClassification(
        BiLSTMConfig(vocab_size=8, embedding_dim=4, hidden_size=3, shape_dim=5)
    )
    assert model.shape_embeddings.weight.shape == (10, 5)
    assert torch.all(model.shape_embeddings.weight[0] == 0)
    assert model.shape_embeddings.weight[1:].abs().sum() > 0


@pytest.mark.parametrize("shape_dim", [0, 3])
def test_tagger_auto_round_trip_gives_identical_logits(tmp_path, shape_dim):
    from transformers import AutoConfig, AutoModelForTokenClassification

    register_auto()
    model = make_tagger(shape_dim=shape_dim)
    batch = tagged_batch([5, 11, 3])
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).shape_dim == shape_dim
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is BiLSTMForTokenClassification
    reloaded = loaded.state_dict()
    assert list(reloaded) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded[name]), name
    with torch.no_grad():
        assert torch.equal(before, loaded(**batch).logits)


@pytest.mark.parametrize("bad", [{"shape_dim": -1}, {"shape_vocab_size": 0}])
def test_config_rejects_bad_shape_settings(bad):
    with pytest.raises(ValueError):
        BiLSTMConfig(vocab_size=25, **bad)
