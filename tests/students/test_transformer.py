"""The transformer student families (`layers`, `narrow`, `pretrained`) and their shared helpers:
layer subsets, narrow students, pretrained checkpoints, stock folders."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import make_sentences, tiny_bert_config
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from lmshrink.data.tasks import get_task
from lmshrink.errors import ConfigError, ModelError
from lmshrink.models.loading import load_for_training, task_head_settings
from lmshrink.students import STUDENTS, Student
from lmshrink.students.common import find_layer_list, transformer_layer_groups, uniform_layer_ids

SST2 = task_head_settings(get_task("sst2"))
TEXTS = [(s,) for s, _ in make_sentences(120, seed=1)] + [("he sat on the mat", "a dog")] * 4


def make(kind, teacher, tokenizer, texts, task_head, max_length, **settings) -> Student:
    """The `kind` family's student of `teacher`, its settings given as keywords."""
    return STUDENTS.get(kind).build(teacher, tokenizer, texts, task_head, max_length, **settings)


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(tiny_encoder)


def bert_teacher(tokenizer, layers: int = 6, seed: int = 0, scramble: bool = True):
    """A random BERT classifier (hidden 48, 4 heads of 12, FFN 96), in eval mode.

    `scramble` draws every tensor afresh (LayerNorms included), so that a test comparing
    tensors fails if any of them were re-initialised or taken from the wrong layer.
    """
    torch.manual_seed(seed)
    config = tiny_bert_config(
        vocab_size=len(tokenizer),
        hidden_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        **SST2,
    )
    model = BertForSequenceClassification(config)
    if scramble:
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def trained_teacher(tokenizer):
    """A 4-layer BERT trained until it solves the toy sentiment task (about a second)."""
    teacher = bert_teacher(tokenizer, layers=4, scramble=False).train()
    rows = make_sentences(200, seed=1)
    enc = tokenizer([s for s, _ in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([int(label) for _, label in rows])
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(rows), (16,), generator=generator)
        loss = teacher(**{k: v[idx] for k, v in enc.items()}, labels=labels[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher.eval()


@pytest.fixture(scope="module")
def dev(tokenizer):
    """Held-out toy sentences: (encoded batch, gold labels [N])."""
    rows = make_sentences(100, seed=2)
    enc = tokenizer([s for s, _ in rows], padding=True, return_tensors="pt")
    return dict(enc), torch.tensor([int(label) for _, label in rows])


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def layer_state(model, index: int) -> dict[str, torch.Tensor]:
    prefix, layers = find_layer_list(model)
    return layers[index].state_dict()


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- registry and helpers -------------------------------------------------------------------


def test_builders_are_registered_with_their_settings():
    from lmshrink.students.layers import LayerSubsetSettings, build_layer_subset
    from lmshrink.students.narrow import NarrowSettings, build_narrow
    from lmshrink.students.pretrained import PretrainedSettings, build_pretrained

    for kind, make_fn, settings in (
        ("layers", build_layer_subset, LayerSubsetSettings),
        ("narrow", build_narrow, NarrowSettings),
        ("pretrained", build_pretrained, PretrainedSettings),
    ):
        family = STUDENTS.get(kind)
        assert (family.make, family.settings) == (make_fn, settings), kind


@pytest.mark.parametrize(
    ("total", "kept", "expected"),
    [
        (6, 3, [1, 3, 5]),
        (6, 2, [2, 5]),
        (4, 2, [1, 3]),
        (12, 6, [1, 3, 5, 7, 9, 11]),
        (6, 4, [0, 2, 3, 5]),
        (5, 1, [4]),
        (3, 3, [0, 1, 2]),
    ],
)
def test_uniform_layer_ids_are_evenly_spaced_and_end_with_the_last(total, kept, expected):
    assert uniform_layer_ids(total, kept) == expected


# --- (a) layer subsets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "settings", "expected"),
    [
        (6, {}, [1, 3, 5]),  # the default: 3 layers
        (6, {"layers": 2}, [2, 5]),
        (4, {"layers": 2}, [1, 3]),
        (6, {"layer_ids": [0, 4]}, [0, 4]),
        (6, {"layers": 2, "layer_ids": [2, 3]}, [2, 3]),
    ],
)
def test_layer_subset_keeps_exactly_the_chosen_layers(tokenizer, total, settings, expected):
    teacher = bert_teacher(tokenizer, layers=total)
    built = make("layers", teacher, tokenizer, TEXTS, SST2, 32, **settings)
    student = built.model
    assert type(student) is BertForSequenceClassification
    assert student.config.num_hidden_layers == len(expected)
    assert built.teacher_layers == expected
    assert built.tokenizer is tokenizer and built.compares_tokens
    for j, i in enumerate(expected):
        assert_same_tensors(layer_state(student, j), layer_state(teacher, i))
    # Everything outside the layer stack is the teacher's.
    for name in ("bert.embeddings", "bert.pooler", "classifier"):
        assert_same_tensors(
            student.get_submodule(name).state_dict(), teacher.get_submodule(name).state_dict()
        )


def test_layer_subset_of_all_layers_is_the_teacher(tokenizer, dev):
    teacher = bert_teacher(tokenizer, layers=4)
    student = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=4).model
    torch.testing.assert_close(logits(student, dev[0]), logits(teacher, dev[0]))
    fewer = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=2).model
    assert not torch.allclose(logits(fewer, dev[0]), logits(teacher, dev[0]), atol=1e-3)


def test_layer_subset_sets_the_task_head(tokenizer):
    student = make("layers", bert_teacher(tokenizer), tokenizer, TEXTS, SST2, 32, layers=2).model
    assert student.config.id2label == {0: "0", 1: "1"}
    assert student.config.label2id == {"0": 0, "1": 1}
    assert student.config.problem_type == "single_label_classification"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layer_ids": [0, 6]}, r"layer_ids \[6\] out of range: the teacher has 6 layers, "),
        ({"layer_ids": [-1]}, r"numbered 0 to 5"),
        ({"layers": 7}, r"layers=7 out of range: the teacher has 6 layers"),
        ({"layers": 0}, r"layers=0 out of range"),
        ({"layer_ids": [3, 1]}, r"increasing without repeats"),
        ({"layer_ids": [1, 1]}, r"increasing without repeats"),
        ({"layer_ids": [True]}, r"non-empty list of layer numbers"),
        ({"layers": 3, "layer_ids": [1, 2]}, r"disagrees with layer_ids"),
        ({"embedding_dim": 300}, r"embedding_dim do not apply to the layers student; it takes "),
    ],
)
def test_layer_subset_rejects_bad_settings(tokenizer, settings, message):
    with pytest.raises(ConfigError, match=message):
        make("layers", bert_teacher(tokenizer), tokenizer, TEXTS, SST2, 32, **settings)


def test_layer_subset_needs_a_classifier_with_the_tasks_outputs(tokenizer):
    teacher = bert_teacher(tokenizer)
    with pytest.raises(ModelError, match="not a sequence or token classifier"):
        make("layers", teacher.bert, tokenizer, TEXTS, SST2, 32)
    with pytest.raises(ModelError, match="has 2 output"):
        make("layers", teacher, tokenizer, TEXTS, task_head_settings(get_task("mnli")), 32)


def test_layer_subset_of_roberta_and_distilbert(tokenizer, dev):
    torch.manual_seed(0)
    roberta = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=70,
            pad_token_id=0,
            **SST2,
        )
    ).eval()
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=32,
            n_layers=4,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=64,
            **SST2,
        )
    ).eval()
    for teacher in (roberta, distil):
        student = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layer_ids=[0, 3]).model
        assert type(student) is type(teacher)
        assert student.config.num_hidden_layers == 2
        assert_same_tensors(layer_state(student, 1), layer_state(teacher, 3))
        full = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=4).model
        torch.testing.assert_close(logits(full, dev[0]), logits(teacher, dev[0]))


def test_layer_subset_on_the_fixture_encoder(tiny_encoder):
    tokenizer, teacher = load_for_training(str(tiny_encoder), get_task("sst2"))
    built = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=1)
    assert built.teacher_layers == [1]
    assert_same_tensors(layer_state(built.model, 0), layer_state(teacher, 1))


# --- (b) narrow students --------------------------------------------------------------------


def test_narrow_config_and_shapes(tokenizer):
    teacher = bert_teacher(tokenizer, layers=6)
    built = make("narrow", teacher, tokenizer, TEXTS, SST2, 32, layers=3, hidden_size=24)
    student = built.model
    config = student.config
    # Head size 12 is kept: 48 / 4 heads -> 24 / 2 heads; FFN defaults to 4 x hidden.
    assert (config.hidden_size, config.num_attention_heads) == (24, 2)
    assert (config.num_hidden_layers, config.intermediate_size) == (3, 96)
    assert built.teacher_layers == [1, 3, 5]
    assert built.tokenizer is tokenizer and built.compares_tokens
    assert student.bert.embeddings.word_embeddings.weight.shape == (len(tokenizer), 24)
    assert student.bert.encoder.layer[0].intermediate.dense.weight.shape == (96, 24)
    assert student.classifier.weight.shape == (2, 24)
    assert student.config.id2label == {0: "0", 1: "1"}


@pytest.mark.parametrize(
    ("settings", "heads"),
    [
        ({"hidden_size": 36}, 3),  # 36 / 12 = 3 heads of the teacher's size
        ({"hidden_size": 20}, 2),  # 12 does not divide 20: heads of 10 are the closest
        ({"hidden_size": 24, "num_heads": 4}, 4),
    ],
)
def test_narrow_head_count(tokenizer, settings, heads):
    teacher = bert_teacher(tokenizer, layers=2)
    student = make("narrow", teacher, tokenizer, TEXTS, SST2, 32, **settings).model
    assert student.config.num_attention_heads == heads


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hidden_size": 64}, r"hidden_size=64 exceeds the teacher's 48"),
        ({"layers": 7}, r"layers=7 out of range: the teacher has 6 layers"),
        ({"hidden_size": 24, "num_heads": 5}, r"not divisible by num_heads=5"),
        ({"hidden_size": 0}, r"hidden_size must be a positive integer"),
        ({"pooling": "max"}, r"pooling do not apply to the narrow student; it takes layers, "),
    ],
)
def test_narrow_rejects_bad_settings(tokenizer, settings, message):
    with pytest.raises(ConfigError, match=message):
        make("narrow", bert_teacher(tokenizer), tokenizer, TEXTS, SST2, 32, **settings)


def test_narrow_needs_texts_and_a_bert_layout(tokenizer):
    with pytest.raises(ConfigError, match="got no texts"):
        make("narrow", bert_teacher(tokenizer), tokenizer, [], SST2, 32, hidden_size=24)
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, **SST2)
    )
    with pytest.raises(ConfigError, match="supports BERT-style encoders"):
        make("narrow", distil, tokenizer, TEXTS, SST2, 32, hidden_size=16)


def test_narrow_at_full_size_is_the_teacher(tokenizer, dev):
    """At the teacher's size the projection is the identity and nothing is dropped, so every
    derived tensor must reproduce the teacher exactly: this pins the algebra (the query-key
    and value-output factoring, the bias folding, the LayerNorm fit)."""
    teacher = bert_teacher(tokenizer, layers=3)
    settings = {"layers": 3, "hidden_size": 48, "intermediate_size": 96}
    student = make("narrow", teacher, tokenizer, TEXTS, SST2, 32, **settings).model
    torch.testing.assert_close(logits(student, dev[0]), logits(teacher, dev[0]), atol=1e-4, rtol=0)


def test_narrow_roberta_at_full_size_is_the_teacher(tokenizer, dev):
    torch.manual_seed(0)
    teacher = RobertaForSequenceClassification(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=70,
            pad_token_id=0,
            **SST2,
        )
    ).eval()
    with torch.no_grad():
        for param in teacher.parameters():
            param.normal_(0.0, 0.2)
    settings = {"layers": 2, "hidden_size": 32, "intermediate_size": 64}
    student = make("narrow", teacher, tokenizer, TEXTS, SST2, 32, **settings).model
    assert type(student) is RobertaForSequenceClassification
    torch.testing.assert_close(logits(student, dev[0]), logits(teacher, dev[0]), atol=1e-4, rtol=0)
    smaller = make("narrow", teacher, tokenizer, TEXTS, SST2, 32, layers=1, hidden_size=16).model
    assert smaller.classifier.out_proj.weight.shape == (2, 16)


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A random P [rows, cols] with orthonormal columns (float64)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))[0]


def stream(P: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(student input s [2, 5, Hs], teacher input x = s P^T + m [2, 5, Ht], m [Ht]): the
    teacher's stream is the student's seen through P, plus a constant m that P drops."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 5, P.shape[1], generator=g, dtype=torch.float64)
    r = torch.randn(P.shape[0], generator=g, dtype=torch.float64)
    m = r - P @ (P.T @ r)
    return s, s @ P.T + m, m


def bert_layer(hidden: int, heads: int, ffn: int, seed: int) -> torch.nn.Module:
    from transformers.models.bert.modeling_bert import BertLayer

    config = tiny_bert_config(
        hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn, hidden_act="gelu"
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    layer = BertLayer(config).double().eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.3)
    return layer


@pytest.mark.parametrize("student_heads", [4, 2])
def test_narrow_attention_is_exact_when_the_student_can_hold_the_heads(student_heads):
    """A teacher (48 wide, 4 heads of 12) whose heads 0 and 1 have rank-6 query (bias
    included) and value maps, and whose heads 2 and 3 output a constant (zero value
    weights), fits exactly in 24 student dimensions: as 4 heads of 6 (factored to a smaller
    head, rescaled for 1 / sqrt(6)) or as 2 heads of 12 (heads 0 and 1 kept by their scores,
    the constant heads replaced by their mean output). The student's attention output must
    be the teacher's seen through P, biases and the constant m that P drops included."""
    from lmshrink.students.narrow import _narrow_attention

    teacher = bert_layer(48, 4, 96, seed=0)
    student = bert_layer(24, student_heads, 96, seed=1)
    g = torch.Generator().manual_seed(2)
    att = teacher.attention
    with torch.no_grad():
        for h in (0, 1):
            rows = slice(h * 12, (h + 1) * 12)
            for linear in (att.self.query, att.self.value):
                low = torch.randn(12, 6, generator=g, dtype=torch.float64)
                linear.weight[rows] = low @ torch.randn(6, 48, generator=g, dtype=torch.float64)
                linear.bias[rows] = low @ torch.randn(6, generator=g, dtype=torch.float64)
        att.self.value.weight[24:] = 0.0  # heads 2 and 3: their context is their value bias
    P = orthonormal(48, 24, seed=3)
    s, x, m = stream(P, seed=4)
    scores = torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    context_mean = torch.cat([torch.randn(24, dtype=torch.float64), att.self.value.bias[24:]])
    _narrow_attention(teacher, student, P, m, scores, context_mean)

    with torch.no_grad():
        expected = att.output.dense(att.self(x)[0]) @ P  # [2, 5, 24]
        got = student.attention.output.dense(student.attention.self(s)[0])
    torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("student_ffn", [96, 48, 120])
def test_narrow_feed_forward_is_exact_when_the_student_can_hold_the_neurons(student_ffn):
    """A teacher FFN (96 neurons) whose neurons 48-95 are constant (zero input weights) fits
    exactly in a student FFN of 96 (all kept), 48 (neurons 0-47 kept by their scores, the
    constant ones replaced by their mean) or 120 (extra neurons get zero output weights)."""
    from lmshrink.students.narrow import _narrow_feed_forward

    teacher = bert_layer(48, 4, 96, seed=0)
    student = bert_layer(24, 2, student_ffn, seed=1)
    dense = teacher.intermediate.dense
    with torch.no_grad():
        dense.weight[48:] = 0.0
        constant = teacher.intermediate.intermediate_act_fn(dense.bias[48:])  # [48]
    P = orthonormal(48, 24, seed=3)
    s, x, m = stream(P, seed=4)
    scores = torch.cat([torch.ones(48), torch.zeros(48)]).double()  # mean |activation|
    means = torch.cat([torch.randn(48, dtype=torch.float64), constant])
    _narrow_feed_forward(teacher, student, P, m, scores, means)

    with torch.no_grad():
        expected = teacher.output.dense(teacher.intermediate(x)) @ P  # [2, 5, 24]
        got = student.output.dense(student.intermediate(s))
    torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-8)


def test_calibration_records_the_teachers_activations(tokenizer):
    """The hooks' statistics equal the same quantities recomputed without hooks (texts of
    5 known words: 7 tokens each, so no padding)."""
    from lmshrink.students.calibration import calibrate
    from lmshrink.students.narrow import bert_layout

    teacher = bert_teacher(tokenizer, layers=3)
    texts = [(s,) for s, _ in make_sentences(40, seed=3)]
    calib = calibrate(teacher, bert_layout(teacher), tokenizer, texts, 32, kept=[0, 2])
    sample = random.Random(0).sample(texts, len(texts))  # the order calibrate reads them in
    batch = tokenizer([t[0] for t in sample], return_tensors="pt")
    layers = teacher.bert.encoder.layer
    with torch.no_grad():
        hidden = teacher(**batch, output_hidden_states=True).hidden_states  # 4 x [40, 7, 48]
        flat = [h.reshape(-1, 48) for h in hidden]
        assert set(calib.norm_out) == {"emb", "0.attn", "0.out", "2.attn", "2.out"}
        torch.testing.assert_close(calib.norm_out["emb"], flat[0])
        torch.testing.assert_close(calib.norm_out["2.out"], flat[3])
        attn_sum = layers[0].attention.output.dense(layers[0].attention.self(hidden[0])[0])
        torch.testing.assert_close(  # the attention LayerNorm's input: residual + attention
            calib.norm_in["0.attn"], (attn_sum + hidden[0]).reshape(-1, 48)
        )
        torch.testing.assert_close(calib.out_mean["1.out"], flat[2].double().mean(0))
        torch.testing.assert_close(calib.cls_mean, hidden[3][:, 0].double().mean(0))
        ffn = layers[2].intermediate(calib.norm_out["2.attn"]).double()  # [N, 96]
        torch.testing.assert_close(calib.neuron_abs[2], ffn.abs().mean(0))
        torch.testing.assert_close(calib.neuron_mean[2], ffn.mean(0))
        context = layers[0].attention.self(hidden[0])[0].reshape(-1, 4, 12).double()
        w = layers[0].attention.output.dense.weight.double().view(48, 4, 12)
        per_head = torch.einsum("ohd,nhd->nho", w, context).norm(dim=-1)  # [N, 4]
        torch.testing.assert_close(calib.head_score[0], per_head.mean(0))
        torch.testing.assert_close(calib.context_mean[0], context.reshape(-1, 48).mean(0))
        pooled = teacher.bert.pooler(hidden[3]).double()  # [40, 48]
        torch.testing.assert_close(calib.unit_abs, pooled.abs().mean(0))
        assert 1 not in calib.head_score  # statistics only for the kept layers


def kl_to(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    return F.kl_div(
        student_logits.log_softmax(-1),
        teacher_logits.log_softmax(-1),
        log_target=True,
        reduction="batchmean",
    ).item()


@pytest.mark.parametrize(
    "settings",
    [
        {"layers": 2, "hidden_size": 24},  # teacher head size kept: 2 heads of 12
        {"layers": 2, "hidden_size": 24, "num_heads": 4},  # heads of 6: truncated factors
    ],
)
def test_narrow_student_starts_from_the_teachers_predictions(
    tokenizer, trained_teacher, dev, settings
):
    """Half as wide and half as deep, before any training the narrow student already solves
    the teacher's task on held-out sentences, while randomly initialised students of the same
    shape are at chance. A wrongly oriented projection or head factoring fails this."""
    batch, labels = dev
    teacher_logits = logits(trained_teacher, batch)
    assert F.cross_entropy(teacher_logits, labels).item() < 0.05

    torch.manual_seed(0)
    student = make("narrow", trained_teacher, tokenizer, TEXTS, SST2, 32, **settings).model
    student_logits = logits(student, batch)
    assert F.cross_entropy(student_logits, labels).item() < 0.2
    assert kl_to(teacher_logits, student_logits) < 0.2
    assert (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean() >= 0.95

    for seed in range(3):
        torch.manual_seed(seed)
        random_student = BertForSequenceClassification(student.config)
        random_logits = logits(random_student, batch)
        assert F.cross_entropy(random_logits, labels).item() > 0.6
        assert kl_to(teacher_logits, random_logits) > 0.5


def test_narrow_is_deterministic_and_leaves_the_teacher_alone(tokenizer):
    teacher = bert_teacher(tokenizer, layers=4).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    students = []
    for _ in range(2):
        torch.manual_seed(3)
        students.append(make("narrow", teacher, tokenizer, TEXTS, SST2, 32, hidden_size=24).model)
    assert_same_tensors(students[0].state_dict(), students[1].state_dict())
    assert_same_tensors(teacher.state_dict(), before)
    assert teacher.training  # its mode is restored
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules())


# --- (c) pretrained checkpoints -------------------------------------------------------------


def save_other_encoder(folder, heads: int | None = None):
    """A tiny BERT with its own, different vocabulary (cased, other words), saved with its
    tokenizer; with `heads` labels it is saved as a classifier instead of a bare encoder."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Good", "Bad", "film", "Film"]
    vocab += [chr(c) for c in range(ord("A"), ord("z") + 1) if chr(c).isalpha()]
    vocab += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)
    torch.manual_seed(5)
    config = tiny_bert_config(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    if heads is None:
        model = BertModel(config)
    else:
        config.num_labels = heads
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_pretrained_student_keeps_its_own_tokenizer(tmp_path, tokenizer):
    encoder = save_other_encoder(tmp_path / "other")
    teacher = bert_teacher(tokenizer, layers=2)
    built = make("pretrained", teacher, tokenizer, TEXTS, SST2, 32, model=str(tmp_path / "other"))
    student, own = built.model, built.tokenizer
    assert type(student) is BertForSequenceClassification
    assert own is not tokenizer and not built.teacher_tokenizer and not built.compares_tokens
    assert own.get_vocab() != tokenizer.get_vocab()
    assert own.convert_tokens_to_ids("Film") == 8  # cased, and ids of its own vocabulary
    assert built.teacher_layers is None
    assert student.config.id2label == {0: "0", 1: "1"}
    assert student.config.problem_type == "single_label_classification"
    assert student.training
    # The encoder is the checkpoint's, not a random one.
    assert_same_tensors(student.bert.state_dict(), encoder.state_dict())


def test_pretrained_student_replaces_a_head_of_another_size(tmp_path, tokenizer):
    source = save_other_encoder(tmp_path / "three", heads=3)
    teacher = bert_teacher(tokenizer, layers=2)
    student = make("pretrained", teacher, tokenizer, TEXTS, SST2, 32, model=str(tmp_path / "three"))
    student = student.model
    assert student.classifier.weight.shape == (2, 16)
    assert student.config.num_labels == 2
    assert_same_tensors(student.bert.state_dict(), source.bert.state_dict())


def test_pretrained_student_errors(tmp_path, tokenizer):
    save_other_encoder(tmp_path / "other")
    teacher = bert_teacher(tokenizer, layers=2)
    with pytest.raises(ConfigError, match="needs model"):
        make("pretrained", teacher, tokenizer, TEXTS, SST2, 32)
    with pytest.raises(ConfigError, match="reads at most 40 tokens but max_length is 64"):
        make("pretrained", teacher, tokenizer, TEXTS, SST2, 64, model=str(tmp_path / "other"))
    with pytest.raises(ModelError, match="does not exist"):
        make("pretrained", teacher, tokenizer, TEXTS, SST2, 32, model=str(tmp_path / "missing"))


# --- layer groups ---------------------------------------------------------------------------


def test_layer_groups_cover_every_parameter_once(tokenizer):
    teacher = bert_teacher(tokenizer, layers=4)
    built = make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=2)
    student, groups = built.model, transformer_layer_groups(built.model)
    assert [name for name, _ in built.layer_groups] == [name for name, _ in groups]
    assert [name for name, _ in groups] == ["embeddings", "layer.0", "layer.1", "classifier"]
    ids = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in student.parameters()}
    top = {id(p) for m in groups[-1][1] for p in m.parameters()}
    assert top == {
        id(p) for p in (*student.bert.pooler.parameters(), *student.classifier.parameters())
    }
    assert groups[1][1] == [student.bert.encoder.layer[0]]


# --- stock folders --------------------------------------------------------------------------

LOAD_WITHOUT_LMSHRINK = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification
result = {}
for folder, ids in json.loads(sys.argv[1]).items():
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        result[folder] = model(input_ids=torch.tensor(ids)).logits.tolist()
assert "lmshrink" not in sys.modules, "lmshrink was imported"
print(json.dumps(result))
"""


def test_students_load_as_stock_folders_without_lmshrink(tmp_path, tokenizer):
    save_other_encoder(tmp_path / "other")
    teacher = bert_teacher(tokenizer, layers=4)
    students = {
        "layers": make("layers", teacher, tokenizer, TEXTS, SST2, 32, layers=2),
        "narrow": make("narrow", teacher, tokenizer, TEXTS, SST2, 32, hidden_size=24),
        "pretrained": make(
            "pretrained", teacher, tokenizer, TEXTS, SST2, 32, model=str(tmp_path / "other")
        ),
    }
    sentences = ["the film was good", "Bad film"]
    inputs, expected = {}, {}
    for name, student in students.items():
        folder = tmp_path / name
        student.model.save_pretrained(folder)
        student.tokenizer.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["BertForSequenceClassification"]
        assert "auto_map" not in config
        ids = student.tokenizer(sentences, padding=True)["input_ids"]
        inputs[str(folder)] = ids
        expected[str(folder)] = logits(student.model, {"input_ids": torch.tensor(ids)})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_LMSHRINK, json.dumps(inputs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    for folder, values in loaded.items():
        torch.testing.assert_close(torch.tensor(values), expected[folder], atol=1e-5, rtol=0)


# --- token classification (NER) teachers ----------------------------------------------------

CONLL = task_head_settings(get_task("conll2003"))
WORD_TEXTS = [text.split() for (text, *_rest) in TEXTS]  # a token task's texts: word lists


def token_teacher(tokenizer, layers: int = 3, hidden: int = 48):
    """A random BERT tagger (9 CoNLL tags), every tensor drawn afresh, in eval mode."""
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    config = tiny_bert_config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        **CONLL,
    )
    model = BertForTokenClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def test_transformer_students_of_a_token_teacher_tag_every_token(tokenizer, dev):
    """A token teacher's `layers` and `narrow` students are token classifiers of its class
    with its head; keeping every layer (or the full width) gives back the teacher's
    per-token logits exactly."""
    from transformers import BertForTokenClassification

    teacher = token_teacher(tokenizer)
    want = logits(teacher, dev[0])  # [N, T, 9]
    kept = make("layers", teacher, tokenizer, WORD_TEXTS, CONLL, 32, layers=3)
    full = {"layers": 3, "hidden_size": 48, "intermediate_size": 96}
    narrow = make("narrow", teacher, tokenizer, WORD_TEXTS, CONLL, 32, **full)
    for built in (kept, narrow):
        assert type(built.model) is BertForTokenClassification and built.compares_tokens
        assert built.model.config.id2label == CONLL["id2label"]
        torch.testing.assert_close(logits(built.model, dev[0]), want, atol=1e-4, rtol=0)
    one = make("layers", teacher, tokenizer, WORD_TEXTS, CONLL, 32, layers=1).model
    assert logits(one, dev[0]).shape == want.shape
    assert_same_tensors(one.classifier.state_dict(), teacher.classifier.state_dict())


def test_a_narrow_token_student_starts_near_the_teachers_per_token_logits(tokenizer, dev):
    """Half as wide, the narrow tagger (its head reading the student's states through the
    projection, with what it drops folded into the bias) is far closer to the teacher's
    per-token logits than random taggers of its shape."""
    from transformers import BertForTokenClassification

    teacher = token_teacher(tokenizer, layers=2)
    batch = dev[0]
    real = batch["attention_mask"].bool()
    want = logits(teacher, batch)[real]  # [tokens, 9]
    torch.manual_seed(0)
    student = make("narrow", teacher, tokenizer, WORD_TEXTS, CONLL, 32, layers=2, hidden_size=24)
    error = F.mse_loss(logits(student.model, batch)[real], want).item()
    for seed in range(3):
        torch.manual_seed(seed)
        random_student = BertForTokenClassification(student.model.config)
        assert error < 0.02 * F.mse_loss(logits(random_student, batch)[real], want).item()


def test_pretrained_student_of_a_token_teacher_is_a_token_classifier(tmp_path, tokenizer):
    from transformers import BertForTokenClassification

    save_other_encoder(tmp_path / "other")
    built = make(
        "pretrained",
        token_teacher(tokenizer),
        tokenizer,
        WORD_TEXTS,
        CONLL,
        32,
        model=str(tmp_path / "other"),
    )
    assert type(built.model) is BertForTokenClassification
    assert built.model.config.num_labels == 9 and not built.compares_tokens
