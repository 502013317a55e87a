"""The per-word losses of token tasks, pinned against plain-Python loops over real words.

Each expected value is computed element by element in plain Python (lists and `math`) over
the positions the word mask marks real; padded word positions hold garbage (large values,
other tags), so a loss that read them would miss its pinned value.
"""

import math
import random

import pytest
import torch

from lmshrink.data.task_kinds import IGNORE_INDEX
from lmshrink.distillation.loss_registry import LOSSES, SENTENCE, WORD
from lmshrink.distillation.losses import build_loss
from lmshrink.distillation.objective import gather_words
from lmshrink.distillation.token_losses import (
    TokenGoldCrossEntropyLoss,
    TokenLogitMSELoss,
    TokenRepresentationLoss,
    TokenSoftKLLoss,
)
from lmshrink.errors import ConfigError

# Two sentences of 3 word slots: the first has 3 words, the second 2 (one padded slot).
WORD_MASK = [[True, True, True], [True, True, False]]
C = 4  # tags


def rand_words(rng: random.Random, width: int) -> list:
    """[B][W][width] values; padded slots get huge values a masked loss must never see."""
    return [
        [
            [rng.uniform(-2, 2) if real else 1e4 * rng.uniform(-1, 1) for _ in range(width)]
            for real in row
        ]
        for row in WORD_MASK
    ]


def real_words(values: list) -> list:
    """The rows of real words, in order."""
    return [values[b][w] for b, row in enumerate(WORD_MASK) for w, real in enumerate(row) if real]


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def tensor(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


MASK = torch.tensor(WORD_MASK)


def test_token_gold_ce_averages_cross_entropy_over_real_tagged_words():
    rng = random.Random(0)
    student = rand_words(rng, C)
    # The last real word is untagged (-100); the padded slot carries a tag that must be skipped.
    labels = [[2, 0, 3], [1, IGNORE_INDEX, 2]]
    expected = mean(
        [
            math.log(sum(math.exp(v) for v in student[b][w])) - student[b][w][labels[b][w]]
            for b, w in [(0, 0), (0, 1), (0, 2), (1, 0)]
        ]
    )
    got = TokenGoldCrossEntropyLoss()(
        student_word_logits=tensor(student),
        word_labels=torch.tensor(labels),
        word_mask=MASK,
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_token_gold_ce_with_no_real_word_is_a_connected_zero():
    student = tensor(rand_words(random.Random(1), C), requires_grad=True)
    got = TokenGoldCrossEntropyLoss()(
        student_word_logits=student,
        word_labels=torch.full((2, 3), IGNORE_INDEX),
        word_mask=MASK,
    )
    got.backward()
    assert got.item() == 0.0 and student.grad is not None


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_token_soft_kl_is_kl_teacher_student_times_t_squared_mean_over_real_words(temperature):
    rng = random.Random(2)
    student, teacher = rand_words(rng, C), rand_words(rng, C)
    per_word = []
    for s, t in zip(real_words(student), real_words(teacher), strict=True):
        ps = softmax([v / temperature for v in s])
        pt = softmax([v / temperature for v in t])
        per_word.append(sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)))
    expected = mean(per_word) * temperature**2
    loss = build_loss("token_soft_kl", temperature=temperature)
    got = loss(
        student_word_logits=tensor(student), teacher_word_logits=tensor(teacher), word_mask=MASK
    )
    assert isinstance(loss, TokenSoftKLLoss)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_token_logit_mse_averages_over_real_words_and_tags():
    rng = random.Random(3)
    student, teacher = rand_words(rng, C), rand_words(rng, C)
    expected = mean(
        [
            (a - b) ** 2
            for s, t in zip(real_words(student), real_words(teacher), strict=True)
            for a, b in zip(s, t, strict=True)
        ]
    )
    got = TokenLogitMSELoss()(
        student_word_logits=tensor(student), teacher_word_logits=tensor(teacher), word_mask=MASK
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_token_representation_projects_each_real_word_then_compares(kind):
    rng = random.Random(4)
    ds, dt = 3, 2
    student, teacher = rand_words(rng, ds), rand_words(rng, dt)
    loss = TokenRepresentationLoss(student_dim=ds, teacher_dim=dt, kind=kind)
    weight = [[rng.uniform(-1, 1) for _ in range(ds)] for _ in range(dt)]
    bias = [rng.uniform(-1, 1) for _ in range(dt)]
    with torch.no_grad():
        loss.projection.weight.copy_(tensor(weight))
        loss.projection.bias.copy_(tensor(bias))
    terms = []
    for s, t in zip(real_words(student), real_words(teacher), strict=True):
        p = [sum(weight[o][i] * s[i] for i in range(ds)) + bias[o] for o in range(dt)]
        if kind == "mse":
            terms.extend((a - b) ** 2 for a, b in zip(p, t, strict=True))
        else:
            dot = sum(a * b for a, b in zip(p, t, strict=True))
            norms = math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in t))
            terms.append(1 - dot / norms)
    got = loss(
        student_word_states=tensor(student), teacher_word_repr=tensor(teacher), word_mask=MASK
    )
    assert got.item() == pytest.approx(mean(terms), rel=1e-5)


def test_padding_gets_no_gradient():
    rng = random.Random(5)
    student = tensor(rand_words(rng, C), requires_grad=True)
    teacher = tensor(rand_words(rng, C))
    TokenSoftKLLoss(2.0)(
        student_word_logits=student, teacher_word_logits=teacher, word_mask=MASK
    ).backward()
    assert torch.all(student.grad[1, 2] == 0) and torch.any(student.grad[1, 1] != 0)


def test_token_losses_refuse_bad_shapes_and_settings():
    logits = torch.zeros(2, 3, C)
    with pytest.raises(ValueError, match="word_mask has shape"):
        TokenLogitMSELoss()(
            student_word_logits=logits, teacher_word_logits=logits, word_mask=MASK[:, :2]
        )
    with pytest.raises(ValueError, match="must match"):
        TokenSoftKLLoss()(
            student_word_logits=logits, teacher_word_logits=logits[:, :2], word_mask=MASK
        )
    with pytest.raises(ConfigError, match="token_soft_kl temperature must be a positive"):
        build_loss("token_soft_kl", temperature=0)
    with pytest.raises(ConfigError, match="token_representation kind 'l1' is unknown"):
        build_loss("token_representation", student_dim=2, teacher_dim=2, kind="l1")


def test_registry_entries_say_which_task_each_loss_fits():
    levels = {name: LOSSES.get(name).level for name in LOSSES.names()}
    for name in ("token_gold_ce", "token_soft_kl", "token_logit_mse", "token_representation"):
        assert levels[name] == WORD
    for name in ("gold_ce", "soft_kl", "logit_mse", "representation", "gold_mse"):
        assert levels[name] == SENTENCE
    assert levels["hidden_mse"] is None and levels["attention_kl"] is None  # both kinds
    entry = LOSSES.get("token_representation")
    assert entry.widths == "word" and entry.reads_teacher and not entry.per_token
    assert LOSSES.get("token_gold_ce").reads_labels


def test_gather_words_reads_each_words_first_sub_token():
    values = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)  # [B, T, D]
    index = torch.tensor([[1, 3, 4], [1, 2, 0]])  # [B, W]: padded slot at 0
    got = gather_words(values, index)
    assert got.shape == (2, 3, 2)
    assert got[0, 1].tolist() == values[0, 3].tolist()
    assert got[1, 1].tolist() == values[1, 2].tolist()
    labels = torch.tensor([[-100, 5, -100, 7, 8], [-100, 1, 2, -100, -100]])
    assert gather_words(labels, index).tolist() == [[5, 7, 8], [1, 2, -100]]
