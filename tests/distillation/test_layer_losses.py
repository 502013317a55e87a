"""Layer-wise losses and the Sinkhorn logit loss, pinned against plain-Python loops.

Every expected value here is computed element by element in plain Python (lists and
`math`), not by the vectorised expressions of `lmshrink.distillation.layer_losses`. Padding must
not change a token-level loss: each such loss is also run with extra padded positions full of
garbage.
"""

import math
import random

import pytest
import torch
from conftest import tiny_bert_config
from torch import nn

from lmshrink.distillation.layer_losses import (
    AttentionKLLoss,
    AttentionMSELoss,
    EmbeddingMSELoss,
    HiddenStateMSELoss,
    ValueRelationLoss,
)
from lmshrink.distillation.loss_registry import forward_inputs
from lmshrink.distillation.losses import LOSSES, SinkhornLoss, build_loss
from lmshrink.distillation.probes import capture_values
from lmshrink.errors import ConfigError, ModelError

# Two sequences of length 3; the second has one padded position.
MASK = [[1, 1, 1], [1, 1, 0]]


# --- plain-Python helpers (no torch) ----------------------------------------------------


def rand_matrix(rng: random.Random, *shape: int) -> list:
    """A nested list of the given shape with values in [-1.5, 1.5)."""
    if len(shape) == 1:
        return [rng.uniform(-1.5, 1.5) for _ in range(shape[0])]
    return [rand_matrix(rng, *shape[1:]) for _ in range(shape[0])]


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True) if pc > 0)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def valid_positions(mask: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(sequence, its real positions) for each sequence."""
    return [(b, [i for i, m in enumerate(row) if m]) for b, row in enumerate(mask)]


def attention_probs(rng: random.Random, heads: int, mask: list[list[int]]) -> list:
    """[B][H][T][T] probabilities like a Hugging Face model's: softmax over real keys, 0 on
    padded keys; padded query rows hold arbitrary values."""
    length = len(mask[0])
    out = []
    for _b, real in valid_positions(mask):
        per_head = []
        for _ in range(heads):
            rows = []
            for _i in range(length):
                probs = softmax([rng.uniform(-2, 2) for _ in real])
                row = [0.0] * length
                for j, p in zip(real, probs, strict=True):
                    row[j] = p
                rows.append(row)
            per_head.append(rows)
        out.append(per_head)
    return out


def pad_tokens(x: torch.Tensor, extra: int, token_dims: tuple[int, ...], seed: int) -> torch.Tensor:
    """Append `extra` positions of garbage (large random values) along each token dim."""
    gen = torch.Generator().manual_seed(seed)
    for dim in token_dims:
        shape = list(x.shape)
        shape[dim] = extra
        garbage = 50 * torch.rand(shape, generator=gen) + 3.0
        x = torch.cat([x, garbage], dim=dim)
    return x


def pad_mask(mask: list[list[int]], extra: int) -> torch.Tensor:
    return torch.tensor([row + [0] * extra for row in mask])


def t(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


# --- hidden_mse -------------------------------------------------------------------------


def hidden_mse_reference(student, teacher, mask, pairs, projections) -> float:
    """Mean over pairs of the mean squared error over real tokens and teacher features.

    projections[k] = (W [Dt][Ds], bias [Dt]) or None for the identity.
    """
    per_pair = []
    for k, (s, tt) in enumerate(pairs):
        squares = []
        for b, real in valid_positions(mask):
            for i in real:
                x = student[s][b][i]
                if projections[k] is not None:
                    weight, bias = projections[k]
                    x = [
                        sum(w * v for w, v in zip(wr, x, strict=True)) + c
                        for wr, c in zip(weight, bias, strict=True)
                    ]
                squares += [(xv - yv) ** 2 for xv, yv in zip(x, teacher[tt][b][i], strict=True)]
        per_pair.append(mean(squares))
    return mean(per_pair)


def hidden_example(seed: int = 0, ds: int = 2, dt: int = 3):
    rng = random.Random(seed)
    student = [rand_matrix(rng, 2, 3, ds) for _ in range(3)]  # embeddings + 2 layers
    teacher = [rand_matrix(rng, 2, 3, dt) for _ in range(5)]  # embeddings + 4 layers
    return student, teacher


def set_projections(loss: HiddenStateMSELoss, seed: int) -> list:
    rng = random.Random(seed)
    params = []
    for proj in loss.projections:
        weight = rand_matrix(rng, proj.out_features, proj.in_features)
        bias = rand_matrix(rng, proj.out_features)
        with torch.no_grad():
            proj.weight.copy_(t(weight))
            proj.bias.copy_(t(bias))
        params.append((weight, bias))
    return params


def test_hidden_mse_pins_the_value_through_one_projection_per_pair():
    student, teacher = hidden_example()
    pairs = [(1, 2), (2, 4)]
    loss_fn = HiddenStateMSELoss(student_dim=2, teacher_dim=3, pairs=pairs)
    assert len(loss_fn.projections) == 2
    projections = set_projections(loss_fn, seed=5)
    got = loss_fn(
        student_hidden_states=[t(x) for x in student],
        teacher_hidden_states=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    expected = hidden_mse_reference(student, teacher, MASK, pairs, projections)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # The example tells apart the variant that also counts the padded position.
    with_padding = hidden_mse_reference(student, teacher, [[1, 1, 1]] * 2, pairs, projections)
    assert expected != pytest.approx(with_padding, rel=1e-3)


def test_hidden_mse_with_equal_widths_has_no_parameters_and_pins_plain_mse():
    # Real tokens of layer 1 vs teacher layer 1: differences 1, 0, -2, 3 over 2 tokens x 2
    # features -> (1 + 0 + 4 + 9) / 4; the padded token (100 vs 0) is left out.
    student = [torch.zeros(1, 3, 2), t([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])]
    teacher = [torch.zeros(1, 3, 2), t([[[0.0, 2.0], [5.0, 1.0], [0.0, 0.0]]])]
    loss_fn = HiddenStateMSELoss(student_dim=2, teacher_dim=2, pairs=[[1, 1]])
    assert list(loss_fn.parameters()) == []
    got = loss_fn(
        student_hidden_states=student,
        teacher_hidden_states=teacher,
        attention_mask=torch.tensor([[1, 1, 0]]),
    )
    assert got.item() == pytest.approx(14 / 4)


def test_hidden_mse_ignores_padded_positions_holding_garbage():
    student, teacher = hidden_example(seed=1)
    loss_fn = HiddenStateMSELoss(student_dim=2, teacher_dim=3, pairs=[(0, 0), (2, 3)])
    kwargs = dict(
        student_hidden_states=[t(x) for x in student],
        teacher_hidden_states=[t(x) for x in teacher],
    )
    clean = loss_fn(**kwargs, attention_mask=torch.tensor(MASK))
    padded = loss_fn(
        student_hidden_states=[
            pad_tokens(x, 2, (1,), seed=k) for k, x in enumerate(kwargs["student_hidden_states"])
        ],
        teacher_hidden_states=[
            pad_tokens(x, 2, (1,), seed=9 + k)
            for k, x in enumerate(kwargs["teacher_hidden_states"])
        ],
        attention_mask=pad_mask(MASK, 2),
    )
    assert padded.item() == pytest.approx(clean.item(), rel=1e-6)


def test_hidden_mse_gradients_reach_every_projection_and_the_student():
    student, teacher = hidden_example(seed=2)
    loss_fn = HiddenStateMSELoss(student_dim=2, teacher_dim=3, pairs=[(1, 2), (2, 4)])
    states = [t(x, requires_grad=True) for x in student]
    loss = loss_fn(
        student_hidden_states=states,
        teacher_hidden_states=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    loss.backward()
    for proj in loss_fn.projections:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
        assert proj.bias.grad is not None and proj.bias.grad.abs().sum() > 0
    assert states[1].grad[:, :2].abs().sum() > 0
    assert states[1].grad[1, 2].abs().sum() == 0  # the padded token gets no gradient
    assert states[0].grad is None  # the embedding output is not mapped


def test_hidden_mse_refuses_bad_pairs_and_mismatched_inputs():
    with pytest.raises(ConfigError, match="hidden_mse pairs must be a non-empty list"):
        HiddenStateMSELoss(2, 3, pairs=[])
    with pytest.raises(ConfigError, match="pairs"):
        HiddenStateMSELoss(2, 3, pairs=[[1, 2, 3]])
    with pytest.raises(ConfigError, match="student_dim"):
        HiddenStateMSELoss(0, 3, pairs=[[1, 1]])
    student, teacher = hidden_example()
    loss_fn = HiddenStateMSELoss(2, 3, pairs=[(1, 7)])
    with pytest.raises(ValueError, match="teacher_hidden_states has 5 entries"):
        loss_fn(
            student_hidden_states=[t(x) for x in student],
            teacher_hidden_states=[t(x) for x in teacher],
            attention_mask=torch.tensor(MASK),
        )
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        loss_fn(student_hidden_states=None, teacher_hidden_states=None, attention_mask=None)
    with pytest.raises(ValueError, match="built with student_dim 4"):
        HiddenStateMSELoss(4, 3, pairs=[(1, 1)])(
            student_hidden_states=[t(x) for x in student],
            teacher_hidden_states=[t(x) for x in teacher],
            attention_mask=torch.tensor(MASK),
        )
    with pytest.raises(ValueError, match="attention_mask has shape"):
        HiddenStateMSELoss(2, 3, pairs=[(1, 1)])(
            student_hidden_states=[t(x) for x in student],
            teacher_hidden_states=[t(x) for x in teacher],
            attention_mask=torch.ones(2, 4),
        )


# --- embedding_mse ----------------------------------------------------------------------


def test_embedding_mse_compares_only_the_embedding_outputs():
    student, teacher = hidden_example(seed=3)
    loss_fn = EmbeddingMSELoss(student_dim=2, teacher_dim=3)
    assert loss_fn.pairs == ((0, 0),)
    projections = set_projections(loss_fn, seed=6)
    states = [t(x) for x in student]
    got = loss_fn(
        student_hidden_states=states,
        teacher_hidden_states=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    expected = hidden_mse_reference(student, teacher, MASK, [(0, 0)], projections)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Changing a transformer layer's output changes nothing.
    states[1] = states[1] + 10.0
    again = loss_fn(
        student_hidden_states=states,
        teacher_hidden_states=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    assert again.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="embedding_mse teacher_dim"):
        EmbeddingMSELoss(2, -1)


# --- attention_kl -----------------------------------------------------------------------


def attention_kl_reference(student, teacher, mask, pairs) -> float:
    """Mean over pairs of KL(teacher row || student row), averaged over heads, real rows
    and batch, each row summed over real keys."""
    per_pair = []
    for s, tt in pairs:
        rows = []
        for b, real in valid_positions(mask):
            for h in range(len(student[s - 1][b])):
                for i in real:
                    p = [teacher[tt - 1][b][h][i][j] for j in real]
                    q = [student[s - 1][b][h][i][j] for j in real]
                    rows.append(kl(p, q))
        per_pair.append(mean(rows))
    return mean(per_pair)


def attention_example(seed: int, heads: int = 2):
    rng = random.Random(seed)
    student = [attention_probs(rng, heads, MASK) for _ in range(2)]  # 2 layers
    teacher = [attention_probs(rng, heads, MASK) for _ in range(4)]  # 4 layers
    return student, teacher


def test_attention_kl_pins_kl_teacher_student_over_real_rows_and_keys():
    student, teacher = attention_example(seed=0)
    pairs = [(1, 2), (2, 4)]
    got = AttentionKLLoss(pairs=pairs)(
        student_attentions=[t(x) for x in student],
        teacher_attentions=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    expected = attention_kl_reference(student, teacher, MASK, pairs)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    reverse = attention_kl_reference(teacher, student, MASK, [(2, 1), (4, 2)])
    assert expected != pytest.approx(reverse, rel=1e-3)  # KL(student || teacher)


def test_attention_kl_is_zero_for_equal_attentions_and_skips_the_embedding_pair():
    student, _ = attention_example(seed=1)
    maps = [t(x) for x in student]
    loss_fn = AttentionKLLoss(pairs=[(0, 0), (1, 1), (2, 2)])
    assert loss_fn.pairs == ((1, 1), (2, 2))
    got = loss_fn(
        student_attentions=maps, teacher_attentions=maps, attention_mask=torch.tensor(MASK)
    )
    assert got.item() == pytest.approx(0.0, abs=1e-6)


def test_attention_kl_ignores_padded_positions_holding_garbage():
    student, teacher = attention_example(seed=2)
    loss_fn = AttentionKLLoss(pairs=[(1, 1), (2, 3)])
    clean = loss_fn(
        student_attentions=[t(x) for x in student],
        teacher_attentions=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    padded = loss_fn(
        student_attentions=[pad_tokens(t(x), 2, (2, 3), seed=k) for k, x in enumerate(student)],
        teacher_attentions=[pad_tokens(t(x), 2, (2, 3), seed=7 + k) for k, x in enumerate(teacher)],
        attention_mask=pad_mask(MASK, 2),
    )
    assert padded.item() == pytest.approx(clean.item(), rel=1e-6)


def test_attention_kl_survives_a_student_probability_of_zero_and_gives_gradients():
    teacher = t([[[[0.5, 0.5], [0.2, 0.8]]]])  # [B=1, H=1, T=2, T=2]
    student = t([[[[1.0, 0.0], [0.2, 0.8]]]], requires_grad=True)
    loss = AttentionKLLoss(pairs=[(1, 1)])(
        student_attentions=[student], teacher_attentions=[teacher], attention_mask=torch.ones(1, 2)
    )
    assert torch.isfinite(loss) and loss.item() > 10  # 0.5 * log(0.5 / tiny) / 2 rows
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_attention_losses_refuse_unequal_heads_and_embedding_pairs():
    student, _ = attention_example(seed=3, heads=2)
    _, teacher = attention_example(seed=3, heads=3)
    with pytest.raises(ValueError, match="head counts must be equal"):
        AttentionKLLoss(pairs=[(1, 1)])(
            student_attentions=[t(x) for x in student],
            teacher_attentions=[t(x) for x in teacher],
            attention_mask=torch.tensor(MASK),
        )
    with pytest.raises(ConfigError, match=r"attention_kl pair \(0, 3\) joins the embedding"):
        AttentionKLLoss(pairs=[(0, 3)])
    with pytest.raises(ConfigError, match="attention_mse needs at least one pair"):
        AttentionMSELoss(pairs=[(0, 0)])
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        AttentionKLLoss(pairs=[(1, 1)])(
            student_attentions=(), teacher_attentions=(), attention_mask=torch.tensor(MASK)
        )


# --- attention_mse ----------------------------------------------------------------------


def attention_mse_reference(student, teacher, mask, pairs, floor) -> float:
    """Mean over pairs of the mean over (b, h, real i, real j) of the squared difference of
    row-centred log(p + floor)."""
    per_pair = []
    for s, tt in pairs:
        squares = []
        for b, real in valid_positions(mask):
            for h in range(len(student[s - 1][b])):
                for i in real:
                    centred = []
                    for maps, layer in ((student, s), (teacher, tt)):
                        logs = [math.log(maps[layer - 1][b][h][i][j] + floor) for j in real]
                        centred.append([v - mean(logs) for v in logs])
                    squares += [(a - c) ** 2 for a, c in zip(*centred, strict=True)]
        per_pair.append(mean(squares))
    return mean(per_pair)


def test_attention_mse_pins_the_centred_log_probability_mse():
    student, teacher = attention_example(seed=4)
    pairs = [(1, 3), (2, 4)]
    got = AttentionMSELoss(pairs=pairs, floor=1e-3)(
        student_attentions=[t(x) for x in student],
        teacher_attentions=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    expected = attention_mse_reference(student, teacher, MASK, pairs, floor=1e-3)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    uncentred = []  # MSE of raw log-probabilities, the variant this loss is not
    for s, tt in pairs:
        for b, real in valid_positions(MASK):
            for h in range(2):
                for i in real:
                    uncentred += [
                        (
                            math.log(student[s - 1][b][h][i][j] + 1e-3)
                            - math.log(teacher[tt - 1][b][h][i][j] + 1e-3)
                        )
                        ** 2
                        for j in real
                    ]
    assert expected != pytest.approx(mean(uncentred), rel=1e-3)


def test_attention_mse_equals_tinybert_score_mse_up_to_each_rows_shift():
    # Scores z (one head, one sequence of 3): the teacher's rows are shifted by a different
    # constant per row, which its softmax forgets; the loss sees only the probabilities.
    zs = [[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [0.3, 0.3, 1.2]]
    zt = [[1.0, 0.0, 1.0], [2.0, 1.5, 0.0], [-1.0, 0.5, 0.2]]
    shifts = [3.0, -7.0, 0.25]
    zt_shifted = [[v + c for v in row] for row, c in zip(zt, shifts, strict=True)]
    expected = mean(
        [
            ((a - mean(rs)) - (c - mean(rt))) ** 2
            for rs, rt in zip(zs, zt, strict=True)
            for a, c in zip(rs, rt, strict=True)
        ]
    )
    student = t([[[softmax(row) for row in zs]]])
    teacher = t([[[softmax(row) for row in zt_shifted]]])
    got = AttentionMSELoss(pairs=[(1, 1)], floor=1e-9)(
        student_attentions=[student], teacher_attentions=[teacher], attention_mask=torch.ones(1, 3)
    )
    assert got.item() == pytest.approx(expected, rel=1e-3)


def test_attention_mse_ignores_padded_positions_holding_garbage():
    student, teacher = attention_example(seed=5)
    loss_fn = AttentionMSELoss(pairs=[(2, 4)])
    clean = loss_fn(
        student_attentions=[t(x) for x in student],
        teacher_attentions=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    padded = loss_fn(
        student_attentions=[pad_tokens(t(x), 3, (2, 3), seed=k) for k, x in enumerate(student)],
        teacher_attentions=[pad_tokens(t(x), 3, (2, 3), seed=5 + k) for k, x in enumerate(teacher)],
        attention_mask=pad_mask(MASK, 3),
    )
    assert padded.item() == pytest.approx(clean.item(), rel=1e-6)
    assert clean.item() > 0


def test_attention_mse_gives_gradients_and_refuses_a_bad_floor():
    student, teacher = attention_example(seed=6)
    maps = [t(x, requires_grad=True) for x in student]
    loss = AttentionMSELoss(pairs=[(1, 1)])(
        student_attentions=maps,
        teacher_attentions=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    loss.backward()
    assert maps[0].grad.abs().sum() > 0
    assert maps[0].grad[1, :, 2].abs().sum() == 0  # padded query row
    assert maps[0].grad[1, :, :, 2].abs().sum() == 0  # padded key
    with pytest.raises(ConfigError, match="floor"):
        AttentionMSELoss(pairs=[(1, 1)], floor=0.0)


# --- value_relation ---------------------------------------------------------------------


def relation_rows(values, b, real, heads) -> list[list[list[float]]]:
    """[relation head][real query][real key] softmax(v_i . v_j / sqrt(d)) in plain Python."""
    width = len(values[b][0])
    d = width // heads
    out = []
    for r in range(heads):
        vec = {i: values[b][i][r * d : (r + 1) * d] for i in real}
        rows = []
        for i in real:
            dots = [
                sum(x * y for x, y in zip(vec[i], vec[j], strict=True)) / math.sqrt(d) for j in real
            ]
            rows.append(softmax(dots))
        out.append(rows)
    return out


def value_relation_reference(student, teacher, mask, pairs, heads) -> float:
    per_pair = []
    for s, tt in pairs:
        rows = []
        for b, real in valid_positions(mask):
            rs = relation_rows(student[s - 1], b, real, heads)
            rt = relation_rows(teacher[tt - 1], b, real, heads)
            for r in range(heads):
                rows += [kl(p, q) for p, q in zip(rt[r], rs[r], strict=True)]
        per_pair.append(mean(rows))
    return mean(per_pair)


def value_example(seed: int):
    rng = random.Random(seed)
    student = [rand_matrix(rng, 2, 3, 4) for _ in range(2)]  # 2 layers, width 4
    teacher = [rand_matrix(rng, 2, 3, 6) for _ in range(3)]  # 3 layers, width 6
    return student, teacher


def test_value_relation_pins_kl_between_relations_of_different_widths():
    student, teacher = value_example(seed=0)
    pairs = [(1, 2), (2, 3)]
    got = ValueRelationLoss(pairs=pairs, relation_heads=2)(
        student_values=[t(x) for x in student],
        teacher_values=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    expected = value_relation_reference(student, teacher, MASK, pairs, heads=2)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    one_head = value_relation_reference(student, teacher, MASK, pairs, heads=1)
    assert expected != pytest.approx(one_head, rel=1e-3)  # the split into heads matters


def test_value_relation_is_zero_for_equal_values_and_skips_the_embedding_pair():
    student, _ = value_example(seed=1)
    values = [t(x) for x in student]
    loss_fn = ValueRelationLoss(pairs=[[0, 0], [2, 2]], relation_heads=2)
    assert loss_fn.pairs == ((2, 2),)
    got = loss_fn(student_values=values, teacher_values=values, attention_mask=torch.tensor(MASK))
    assert got.item() == pytest.approx(0.0, abs=1e-6)


def test_value_relation_ignores_padded_positions_holding_garbage():
    student, teacher = value_example(seed=2)
    loss_fn = ValueRelationLoss(pairs=[(1, 1), (2, 3)], relation_heads=2)
    clean = loss_fn(
        student_values=[t(x) for x in student],
        teacher_values=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    padded = loss_fn(
        student_values=[pad_tokens(t(x), 2, (1,), seed=k) for k, x in enumerate(student)],
        teacher_values=[pad_tokens(t(x), 2, (1,), seed=4 + k) for k, x in enumerate(teacher)],
        attention_mask=pad_mask(MASK, 2),
    )
    assert padded.item() == pytest.approx(clean.item(), rel=1e-6)


def test_value_relation_gives_gradients_and_refuses_indivisible_widths():
    student, teacher = value_example(seed=3)
    values = [t(x, requires_grad=True) for x in student]
    loss = ValueRelationLoss(pairs=[(2, 3)], relation_heads=2)(
        student_values=values,
        teacher_values=[t(x) for x in teacher],
        attention_mask=torch.tensor(MASK),
    )
    loss.backward()
    assert torch.isfinite(values[1].grad).all() and values[1].grad.abs().sum() > 0
    assert values[1].grad[1, 2].abs().sum() == 0  # padded token
    with pytest.raises(ValueError, match="3 relation heads do not divide"):
        ValueRelationLoss(pairs=[(1, 1)], relation_heads=3)(
            student_values=[t(x) for x in student],
            teacher_values=[t(x) for x in teacher],
            attention_mask=torch.tensor(MASK),
        )
    with pytest.raises(ConfigError, match="relation_heads must be a positive"):
        ValueRelationLoss(pairs=[(1, 1)], relation_heads=0)
    with pytest.raises(ValueError, match="capture_values"):
        ValueRelationLoss(pairs=[(1, 1)], relation_heads=2)(
            student_values=[], teacher_values=[], attention_mask=torch.tensor(MASK)
        )


# --- sinkhorn ---------------------------------------------------------------------------


def sinkhorn_reference(student, teacher, temperature, epsilon, iterations) -> float:
    """<P, M> with M_ij = |s_i - t_j|_1 and P from Sinkhorn's scaling iterations
    (u = a / K v, v = b / K^T u from v = 1), K = exp(-M / epsilon), a = b = 1/B."""
    s = [softmax([v / temperature for v in row]) for row in student]
    q = [softmax([v / temperature for v in row]) for row in teacher]
    n = len(s)
    cost = [
        [sum(abs(x - y) for x, y in zip(s[i], q[j], strict=True)) for j in range(n)]
        for i in range(n)
    ]
    kernel = [[math.exp(-cost[i][j] / epsilon) for j in range(n)] for i in range(n)]
    u, v = [1.0] * n, [1.0] * n
    for _ in range(iterations):
        u = [(1 / n) / sum(kernel[i][j] * v[j] for j in range(n)) for i in range(n)]
        v = [(1 / n) / sum(kernel[i][j] * u[i] for i in range(n)) for j in range(n)]
    return sum(u[i] * kernel[i][j] * v[j] * cost[i][j] for i in range(n) for j in range(n))


def test_sinkhorn_pins_a_two_by_two_example():
    student = [[1.0, -0.5], [0.2, 0.4]]
    teacher = [[2.0, 0.0], [-1.0, 1.0]]
    expected = sinkhorn_reference(student, teacher, temperature=1.0, epsilon=0.5, iterations=20)
    got = SinkhornLoss(temperature=1.0, epsilon=0.5, iterations=20)(
        student_logits=t(student), teacher_logits=t(teacher)
    )
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Entropic blur: the plan differs from the diagonal (sample-wise) pairing.
    diagonal = mean(
        [
            sum(abs(x - y) for x, y in zip(softmax(a), softmax(b), strict=True))
            for a, b in zip(student, teacher, strict=True)
        ]
    )
    assert expected != pytest.approx(diagonal, rel=1e-3)


def test_sinkhorn_pins_a_batch_of_four_with_temperature_and_default_epsilon():
    rng = random.Random(4)
    student, teacher = rand_matrix(rng, 4, 3), rand_matrix(rng, 4, 3)
    expected = sinkhorn_reference(student, teacher, temperature=2.0, epsilon=0.1, iterations=20)
    got = SinkhornLoss(temperature=2.0)(student_logits=t(student), teacher_logits=t(teacher))
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_sinkhorn_of_one_example_is_the_l1_distance_of_the_distributions():
    # B = 1: the only plan moves all mass from s to t; softmax([0, 0]) = (1/2, 1/2) and
    # softmax([log 3, 0]) = (3/4, 1/4): |1/2 - 3/4| + |1/2 - 1/4| = 1/2.
    got = SinkhornLoss()(student_logits=t([[0.0, 0.0]]), teacher_logits=t([[math.log(3), 0.0]]))
    assert got.item() == pytest.approx(0.5, rel=1e-5)


def test_sinkhorn_is_non_negative_smallest_for_identical_inputs_and_differentiable():
    gen = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(8, 4, generator=gen)
    loss_fn = SinkhornLoss()
    same = loss_fn(student_logits=teacher.clone(), teacher_logits=teacher)
    assert 0 <= same.item() < 0.05
    for k in range(5):
        other = 3 * torch.randn(8, 4, generator=gen)
        different = loss_fn(student_logits=other, teacher_logits=teacher)
        assert different.item() > same.item() + 0.05, k
    student = (teacher + torch.randn(8, 4, generator=gen)).requires_grad_()
    loss = loss_fn(student_logits=student, teacher_logits=teacher)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_sinkhorn_refuses_bad_parameters_and_regression_outputs():
    for params in ({"epsilon": 0.0}, {"temperature": -1.0}, {"iterations": 0}):
        with pytest.raises(ConfigError, match=next(iter(params))):
            SinkhornLoss(**params)
    with pytest.raises(ValueError, match="score_mse for regression"):
        SinkhornLoss()(student_logits=torch.zeros(3, 1), teacher_logits=torch.zeros(3, 1))


# --- registry and build_loss ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "needs_pairs", "widths", "teacher_layers", "targets"),
    [
        ("hidden_mse", HiddenStateMSELoss, True, "hidden", "mapped", ("hidden",)),
        ("embedding_mse", EmbeddingMSELoss, False, "hidden", "embeddings", ("hidden",)),
        ("attention_kl", AttentionKLLoss, True, None, "mapped", ("attentions",)),
        ("attention_mse", AttentionMSELoss, True, None, "mapped", ("attentions",)),
        ("value_relation", ValueRelationLoss, True, None, "mapped", ("values",)),
    ],
)
def test_layer_losses_declare_what_they_read_and_need(
    name, cls, needs_pairs, widths, teacher_layers, targets
):
    entry = LOSSES.get(name)
    assert entry.cls is cls and entry.per_token and entry.inputs[-1] == "attention_mask"
    assert (entry.needs_pairs, entry.widths, entry.teacher_layers) == (
        needs_pairs,
        widths,
        teacher_layers,
    )
    assert entry.teacher_targets == targets
    assert entry.reads_attentions == (targets == ("attentions",))
    assert not entry.reads_teacher and not entry.reads_labels


def test_shape_checks_run_from_the_entries():
    from lmshrink.distillation.layer_map import LayerShape

    student, teacher = LayerShape(2, 32, 2), LayerShape(4, 48, 4)
    with pytest.raises(ConfigError, match="attention losses compare head by head"):
        LOSSES.get("attention_kl").check({}, student, teacher)
    LOSSES.get("attention_kl").check({}, student, LayerShape(4, 48, 2))  # equal heads: fine
    with pytest.raises(ConfigError, match="cannot split the value vectors into 3 relation"):
        LOSSES.get("value_relation").check({"relation_heads": 3}, student, teacher)
    LOSSES.get("value_relation").check({"relation_heads": 8}, student, teacher)
    assert LOSSES.get("hidden_mse").check is None


def test_build_loss_constructs_each_new_loss_with_its_params():
    hidden = build_loss("hidden_mse", student_dim=4, teacher_dim=8, pairs=[[1, 2], [2, 4]])
    assert isinstance(hidden, HiddenStateMSELoss) and hidden.pairs == ((1, 2), (2, 4))
    assert [p.in_features for p in hidden.projections] == [4, 4]
    embedding = build_loss("embedding_mse", student_dim=4, teacher_dim=4)
    assert isinstance(embedding, EmbeddingMSELoss) and embedding.projections is None
    assert build_loss("attention_kl", pairs=[[2, 6]]).pairs == ((2, 6),)
    attention_mse = build_loss("attention_mse", pairs=[[1, 2]], floor=1e-4)
    assert isinstance(attention_mse, AttentionMSELoss) and attention_mse.floor == 1e-4
    relation = build_loss("value_relation", pairs=[[3, 6]], relation_heads=8)
    assert isinstance(relation, ValueRelationLoss) and relation.relation_heads == 8
    sinkhorn = build_loss("sinkhorn", temperature=2.0, epsilon=0.05, iterations=30)
    assert (sinkhorn.temperature, sinkhorn.epsilon, sinkhorn.iterations) == (2.0, 0.05, 30)
    with pytest.raises(ConfigError, match="'value_relation' needs parameter 'relation_heads'"):
        build_loss("value_relation", pairs=[[1, 1]])
    with pytest.raises(ConfigError, match="'embedding_mse' has no parameter 'pairs'"):
        build_loss("embedding_mse", student_dim=4, teacher_dim=4, pairs=[[0, 0]])


# --- with real (tiny) BERT models -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tiny_encoder):
    """The tiny BERT as teacher (eager attention, eval) and a 1-layer, hidden-16 student."""
    from transformers import BertModel

    teacher = BertModel.from_pretrained(tiny_encoder, attn_implementation="eager").eval()
    torch.manual_seed(0)
    config = tiny_bert_config(
        vocab_size=teacher.config.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        intermediate_size=32,
        attention_probs_dropout_prob=0.0,
    )
    student = BertModel._from_config(config, attn_implementation="eager")
    return teacher, student


BATCH = {
    "input_ids": torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
}


def test_capture_values_returns_each_layers_value_projection(tiny_models):
    teacher, _ = tiny_models
    with torch.no_grad(), capture_values(teacher) as values:
        assert values == [None, None]
        out = teacher(**BATCH, output_hidden_states=True)
        for layer in range(2):
            value = teacher.encoder.layer[layer].attention.self.value
            # Layer i's attention reads hidden_states[i - 1] (0: the embedding output).
            assert torch.allclose(values[layer], value(out.hidden_states[layer]), atol=1e-6)
            assert values[layer].shape == (2, 5, 32)
        first = values[0]
        teacher(input_ids=BATCH["input_ids"][:1])
        assert values[0].shape == (1, 5, 32) and values[0] is not first  # overwritten
    for layer in teacher.encoder.layer:
        assert not layer.attention.self.value._forward_hooks  # removed on exit


def test_capture_values_refuses_a_model_without_value_projections():
    refused = pytest.raises(ModelError, match="Linear has no self-attention value projection")
    with refused, capture_values(nn.Linear(2, 2)):
        pass


def test_layer_losses_run_on_real_models_and_reach_the_student(tiny_models):
    teacher, student = tiny_models
    student.zero_grad()
    with torch.no_grad(), capture_values(teacher) as teacher_values:
        t_out = teacher(**BATCH, output_hidden_states=True, output_attentions=True)
    with capture_values(student) as student_values:
        s_out = student(**BATCH, output_hidden_states=True, output_attentions=True)
    assert len(s_out.attentions) == 1 and s_out.attentions[0].shape == (2, 2, 5, 5)
    named = {
        "student_hidden_states": s_out.hidden_states,
        "teacher_hidden_states": t_out.hidden_states,
        "student_attentions": s_out.attentions,
        "teacher_attentions": t_out.attentions,
        "student_values": student_values,
        "teacher_values": teacher_values,
        "attention_mask": BATCH["attention_mask"],
    }
    losses = [
        HiddenStateMSELoss(16, 32, pairs=[(0, 0), (1, 2)]),
        AttentionKLLoss(pairs=[(1, 2)]),
        AttentionMSELoss(pairs=[(1, 2)]),
        ValueRelationLoss(pairs=[(1, 2)], relation_heads=2),
    ]
    total = sum(
        loss_fn(**{k: named[k] for k in forward_inputs(type(loss_fn))}) for loss_fn in losses
    )
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    grads = [p.grad for p in student.encoder.layer[0].attention.self.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # A model compared with itself gives zero for every layer loss.
    self_named = {**named, "student_hidden_states": t_out.hidden_states}
    self_named.update(student_attentions=t_out.attentions, student_values=teacher_values)
    for loss_fn in (
        HiddenStateMSELoss(32, 32, pairs=[(1, 1), (2, 2)]),
        AttentionKLLoss(pairs=[(1, 1), (2, 2)]),
        AttentionMSELoss(pairs=[(2, 2)]),
        ValueRelationLoss(pairs=[(1, 1)], relation_heads=4),
    ):
        value = loss_fn(**{k: self_named[k] for k in forward_inputs(type(loss_fn))})
        assert value.item() == pytest.approx(0.0, abs=1e-5), type(loss_fn).__name__


def test_default_sdpa_attention_returns_none_and_the_loss_says_to_use_eager(tiny_encoder):
    from transformers import BertModel

    model = BertModel.from_pretrained(tiny_encoder).eval()  # transformers 5 default: sdpa
    with torch.no_grad():
        out = model(**BATCH, output_attentions=True)
    assert not out.attentions  # sdpa cannot return attention probabilities
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        AttentionKLLoss(pairs=[(1, 1)])(
            student_attentions=out.attentions,
            teacher_attentions=out.attentions,
            attention_mask=BATCH["attention_mask"],
        )
