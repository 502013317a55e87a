"""Each loss's value is pinned against a plain-Python computation of its definition."""

import math

import pytest
import torch

from lmshrink.distillation.losses import (
    LOSSES,
    GoldCrossEntropyLoss,
    GoldMSELoss,
    HardPseudoLabelLoss,
    LogitMSELoss,
    RepresentationLoss,
    ScoreMSELoss,
    SoftKLLoss,
    build_loss,
)
from lmshrink.errors import ConfigError

NAN = float("nan")


# --- plain-Python references (no torch) -------------------------------------------------


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) = sum_c p_c * log(p_c / q_c)."""
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True))


def cross_entropy(row: list[float], target: int) -> float:
    """-log softmax(row)[target], written as logsumexp(row) - row[target]."""
    return math.log(sum(math.exp(v) for v in row)) - row[target]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def tensor(rows, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=requires_grad)


# --- soft_kl ----------------------------------------------------------------------------

S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[3.0, 0.5, -1.0], [0.2, 0.1, 2.5]]


def test_soft_kl_pins_kl_teacher_student_times_t_squared_batch_mean():
    temp = 2.0
    soft_s = [softmax([v / temp for v in row]) for row in S]
    soft_t = [softmax([v / temp for v in row]) for row in T]
    per_row = [kl(p, q) for p, q in zip(soft_t, soft_s, strict=True)]  # KL(teacher || student)
    expected = mean(per_row) * temp**2
    got = SoftKLLoss(temperature=temp)(student_logits=tensor(S), teacher_logits=tensor(T))
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # The example tells the wrong variants apart, so the pin above can fail.
    reverse = mean([kl(p, q) for p, q in zip(soft_s, soft_t, strict=True)])
    assert expected != pytest.approx(reverse * temp**2, rel=1e-3)  # KL(s || t)
    assert expected != pytest.approx(mean(per_row), rel=1e-3)  # no T^2
    assert expected != pytest.approx(sum(per_row) * temp**2, rel=1e-3)  # batch sum
    assert expected != pytest.approx(mean(per_row) * temp**2 / 3, rel=1e-3)  # mean over C


def test_soft_kl_pins_a_two_class_closed_form_at_t1():
    # p = (1/2, 1/2) from the teacher, q = (sigmoid(2), sigmoid(-2)) from the student:
    # KL = log(1/2) - 1/2 * log(q0 * q1) = -log 2 + log(1 + e^2) - 1 (since q0*q1 = e^2/(1+e^2)^2).
    expected = -math.log(2) + math.log(1 + math.e**2) - 1
    got = SoftKLLoss()(student_logits=tensor([[2.0, 0.0]]), teacher_logits=tensor([[5.0, 5.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_kl_is_zero_for_equal_logits_and_has_gradients():
    student = tensor(S, requires_grad=True)
    assert SoftKLLoss(3.0)(student_logits=student, teacher_logits=tensor(S)).item() == (
        pytest.approx(0.0, abs=1e-6)
    )
    loss = SoftKLLoss(2.0)(student_logits=student, teacher_logits=tensor(T))
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
def test_soft_kl_refuses_a_non_positive_temperature(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        SoftKLLoss(temperature)


def test_mismatched_logit_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        SoftKLLoss()(student_logits=torch.zeros(2, 3), teacher_logits=torch.zeros(2, 2))


# --- logit_mse --------------------------------------------------------------------------


def test_logit_mse_pins_the_mean_over_all_elements():
    # differences 1, 0, -2, 3 -> squares 1, 0, 4, 9 -> mean 14 / 4
    got = LogitMSELoss()(
        student_logits=tensor([[1.0, 2.0], [3.0, 4.0]]),
        teacher_logits=tensor([[0.0, 2.0], [5.0, 1.0]]),
    )
    assert got.item() == pytest.approx(3.5)


# --- hard_label -------------------------------------------------------------------------

# Teacher argmax: row 0 -> class 0 (confident), row 1 -> class 2 (unsure), row 2 -> class 1.
HARD_T = [[4.0, 0.0, 0.0], [0.0, 0.1, 0.2], [0.0, 3.0, 1.0]]
HARD_S = [[0.5, 1.0, -1.0], [2.0, 0.0, 1.0], [0.3, 0.3, 0.9]]


def test_hard_label_pins_cross_entropy_against_the_teacher_argmax():
    expected = mean(
        [cross_entropy(HARD_S[0], 0), cross_entropy(HARD_S[1], 2), cross_entropy(HARD_S[2], 1)]
    )
    got = HardPseudoLabelLoss()(student_logits=tensor(HARD_S), teacher_logits=tensor(HARD_T))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hard_label_threshold_leaves_out_unsure_teacher_rows():
    confidences = [max(softmax(row)) for row in HARD_T]
    assert confidences[0] > 0.9 and confidences[1] < 0.4 and 0.8 < confidences[2] < 0.9
    student = tensor(HARD_S, requires_grad=True)
    loss = HardPseudoLabelLoss(threshold=0.85)(
        student_logits=student, teacher_logits=tensor(HARD_T)
    )
    # Only row 0 (confidence ~0.97) passes 0.85; the mean is over kept rows only.
    assert loss.item() == pytest.approx(cross_entropy(HARD_S[0], 0), rel=1e-5)
    loss.backward()
    assert student.grad[0].abs().sum() > 0
    assert torch.equal(student.grad[1:], torch.zeros(2, 3))

    loss = HardPseudoLabelLoss(threshold=0.5)(
        student_logits=tensor(HARD_S), teacher_logits=tensor(HARD_T)
    )
    expected = mean([cross_entropy(HARD_S[0], 0), cross_entropy(HARD_S[2], 1)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_hard_label_keeps_a_row_whose_confidence_equals_the_threshold():
    # Teacher [0, 0] has confidence exactly 0.5 (also in float32): "below" leaves it in.
    student = [[0.5, 0.0], [0.0, 2.0]]
    loss = HardPseudoLabelLoss(threshold=0.5)(
        student_logits=tensor(student), teacher_logits=tensor([[0.0, 0.0], [0.0, 3.0]])
    )
    # torch's argmax of a tie is the first class.
    expected = mean([cross_entropy(student[0], 0), cross_entropy(student[1], 1)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_hard_label_with_no_row_kept_is_a_zero_with_a_gradient():
    student = tensor(HARD_S, requires_grad=True)
    loss = HardPseudoLabelLoss(threshold=0.99)(
        student_logits=student, teacher_logits=tensor(HARD_T)
    )
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(3, 3))


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_hard_label_refuses_a_threshold_outside_zero_one(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        HardPseudoLabelLoss(threshold)


# --- gold_ce ----------------------------------------------------------------------------


def test_gold_ce_pins_the_mean_over_labeled_rows_and_ignores_minus_100():
    logits = [[1.0, 0.0, -1.0], [9.0, -9.0, 0.0], [0.2, 0.4, 0.6]]
    student = tensor(logits, requires_grad=True)
    loss = GoldCrossEntropyLoss()(student_logits=student, labels=torch.tensor([2, -100, 0]))
    expected = mean([cross_entropy(logits[0], 2), cross_entropy(logits[2], 0)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.equal(student.grad[1], torch.zeros(3))
    assert student.grad[0].abs().sum() > 0


def test_gold_ce_with_only_unlabeled_rows_is_a_zero_with_a_gradient():
    student = tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = GoldCrossEntropyLoss()(student_logits=student, labels=torch.tensor([-100, -100]))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(2, 2))


# --- score_mse and gold_mse -------------------------------------------------------------


@pytest.mark.parametrize("student_shape", ["[B,1]", "[B]"])
@pytest.mark.parametrize("teacher_shape", ["[B,1]", "[B]"])
def test_score_mse_pins_the_value_for_both_shapes(student_shape, teacher_shape):
    s, t = [1.0, 2.5, -1.0], [0.0, 3.0, 1.0]
    # squares 1, 0.25, 4 -> mean 5.25 / 3 (broadcasting [3,1] against [3] would average 9 pairs)
    student = tensor(s).unsqueeze(1) if student_shape == "[B,1]" else tensor(s)
    teacher = tensor(t).unsqueeze(1) if teacher_shape == "[B,1]" else tensor(t)
    got = ScoreMSELoss()(student_logits=student, teacher_logits=teacher)
    assert got.dim() == 0
    assert got.item() == pytest.approx(5.25 / 3)


def test_score_mse_refuses_a_multi_column_output():
    with pytest.raises(ValueError, match=r"\[B\] or \[B, 1\]"):
        ScoreMSELoss()(student_logits=torch.zeros(3, 2), teacher_logits=torch.zeros(3))


def test_gold_mse_pins_the_mean_over_labeled_rows_and_ignores_nan():
    student = tensor([[1.0], [7.0], [2.0], [0.0]], requires_grad=True)
    loss = GoldMSELoss()(student_logits=student, labels=tensor([3.0, NAN, 2.5, NAN]))
    # squares (1-3)^2 = 4 and (2-2.5)^2 = 0.25 -> mean 2.125
    assert loss.item() == pytest.approx(2.125)
    loss.backward()
    assert not torch.isnan(student.grad).any()
    assert student.grad[1].item() == 0.0 and student.grad[3].item() == 0.0
    assert student.grad[0].item() == pytest.approx(2 * (1.0 - 3.0) / 2)


def test_gold_mse_with_only_nan_labels_is_a_zero_with_a_gradient():
    student = tensor([0.5, -0.5], requires_grad=True)
    loss = GoldMSELoss()(student_logits=student, labels=tensor([NAN, NAN]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(2))


# --- representation ---------------------------------------------------------------------


def set_projection(loss: RepresentationLoss, weight: list[list[float]]) -> None:
    with torch.no_grad():
        loss.projection.weight.copy_(tensor(weight))
        loss.projection.bias.zero_()


def test_representation_mse_pins_the_value_through_the_projection():
    loss_fn = RepresentationLoss(student_dim=2, teacher_dim=3, kind="mse")
    # W [Dt=3, Ds=2]: projected = (x0 + x1, 2 x0, -x1)
    set_projection(loss_fn, [[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
    student = tensor([[1.0, 2.0], [0.0, -1.0]])
    teacher = tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # projected rows (3, 2, -2) and (-1, 0, 1): squared errors 0, 4, 4, 4, 1, 0 -> 13 / 6
    got = loss_fn(student_repr=student, teacher_repr=teacher)
    assert got.item() == pytest.approx(13 / 6, rel=1e-6)


def test_representation_cosine_pins_identical_orthogonal_and_opposite_directions():
    loss_fn = RepresentationLoss(student_dim=3, teacher_dim=3, kind="cosine")
    set_projection(loss_fn, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    teacher = tensor([[1.0, -2.0, 0.5]])
    same = loss_fn(student_repr=2.5 * teacher, teacher_repr=teacher)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    orthogonal = loss_fn(student_repr=tensor([[2.0, 1.0, 0.0]]), teacher_repr=teacher)
    assert orthogonal.item() == pytest.approx(1.0, abs=1e-6)
    opposite = loss_fn(student_repr=-teacher, teacher_repr=teacher)
    assert opposite.item() == pytest.approx(2.0, abs=1e-6)
    # Batch mean of 1 - cos: rows (same, orthogonal) -> (0 + 1) / 2
    both = loss_fn(
        student_repr=torch.cat([teacher, tensor([[2.0, 1.0, 0.0]])]),
        teacher_repr=torch.cat([teacher, teacher]),
    )
    assert both.item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_representation_gradients_reach_the_projection_and_the_student(kind):
    torch.manual_seed(0)
    loss_fn = RepresentationLoss(student_dim=4, teacher_dim=6, kind=kind)
    assert {n for n, _ in loss_fn.named_parameters()} == {"projection.weight", "projection.bias"}
    student = torch.randn(5, 4, requires_grad=True)
    loss = loss_fn(student_repr=student, teacher_repr=torch.randn(5, 6))
    loss.backward()
    assert loss_fn.projection.weight.grad is not None
    assert loss_fn.projection.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_representation_refuses_an_unknown_kind_and_bad_sizes():
    with pytest.raises(ConfigError, match="kind 'l1' is unknown; use one of: mse, cosine"):
        RepresentationLoss(4, 6, kind="l1")
    with pytest.raises(ConfigError, match="student_dim"):
        RepresentationLoss(0, 6)


def test_representation_refuses_a_teacher_of_another_size():
    loss_fn = RepresentationLoss(student_dim=4, teacher_dim=6)
    with pytest.raises(ValueError, match="teacher_repr"):
        loss_fn(student_repr=torch.zeros(2, 4), teacher_repr=torch.zeros(2, 5))


# --- registry and build_loss ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "inputs"),
    [
        ("soft_kl", SoftKLLoss, ("student_logits", "teacher_logits")),
        ("logit_mse", LogitMSELoss, ("student_logits", "teacher_logits")),
        ("hard_label", HardPseudoLabelLoss, ("student_logits", "teacher_logits")),
        ("gold_ce", GoldCrossEntropyLoss, ("student_logits", "labels")),
        ("score_mse", ScoreMSELoss, ("student_logits", "teacher_logits")),
        ("gold_mse", GoldMSELoss, ("student_logits", "labels")),
        ("representation", RepresentationLoss, ("student_repr", "teacher_repr")),
    ],
)
def test_each_loss_is_registered_with_the_tensors_its_forward_reads(name, cls, inputs):
    entry = LOSSES.get(name)
    assert (entry.cls, entry.inputs) == (cls, inputs)
    assert not entry.per_token and not entry.needs_pairs and entry.teacher_layers is None
    assert entry.reads_labels == ("labels" in inputs)
    assert entry.reads_teacher == ("labels" not in inputs)
    # Only the representation loss projects between widths (the pooled vectors').
    assert entry.widths == ("representation" if name == "representation" else None)


def test_build_loss_constructs_with_params():
    loss = build_loss("soft_kl", temperature=2.0)
    assert isinstance(loss, SoftKLLoss) and loss.temperature == 2.0
    rep = build_loss("representation", student_dim=3, teacher_dim=5, kind="cosine")
    assert rep.projection.in_features == 3 and rep.projection.out_features == 5
    assert isinstance(build_loss("gold_ce"), GoldCrossEntropyLoss)


def test_build_loss_bad_parameter_names_the_loss_and_its_parameters():
    with pytest.raises(ConfigError) as info:
        build_loss("soft_kl", temp=2.0)
    assert str(info.value) == "loss 'soft_kl' has no parameter 'temp'; it accepts: temperature."
    with pytest.raises(ConfigError, match="'logit_mse' has no parameter 'scale'; it takes no"):
        build_loss("logit_mse", scale=1.0)


def test_build_loss_missing_parameter_and_unknown_loss():
    with pytest.raises(ConfigError, match="'representation' needs parameter 'teacher_dim'"):
        build_loss("representation", student_dim=3)
    with pytest.raises(ConfigError, match="unknown loss 'sofkl'.*known losses: attention_kl"):
        build_loss("sofkl")
