"""The logit, label and representation losses of stage-wise (XtremeDistil-style) distillation.

Each loss is an `nn.Module` registered with `register_loss` under a short name; its registry
entry (`lmshrink.distillation.loss_registry`) records what it reads and needs. Its `forward`
takes named tensors with documented shapes as keyword arguments (never a dict) and returns a
scalar; the names of its `forward` parameters are the tensors it reads, so the training loop
passes exactly those:

    entry = LOSSES.get("soft_kl")
    loss_fn = entry.build(temperature=2.0)
    loss = loss_fn(**{name: batch[name] for name in entry.inputs})

Shapes: B is the batch size, C the number of classes, Ds and Dt the student's and the
teacher's representation sizes. Teacher tensors are targets: give them without gradient
(from the cache, or computed under `torch.no_grad()`).

A loss with no example left to learn from (all rows unlabeled, or all below a confidence
threshold) returns a zero that is still connected to the student's graph, so that
`loss.backward()` works the same for every batch.

The layer-wise losses (TinyBERT, MiniLM) live in `lmshrink.distillation.layer_losses`, the
per-word losses of token tasks in `lmshrink.distillation.token_losses`; importing this
module registers them too, so every built-in loss is known.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmshrink.data.task_kinds import IGNORE_INDEX  # a `labels` value no loss reads
from lmshrink.distillation import (
    layer_losses,  # noqa: F401  (registers the layer-wise losses)
    token_losses,  # noqa: F401  (registers the per-word losses)
)
from lmshrink.distillation.loss_registry import (
    LOSSES,
    build_loss,
    check_same_shape,
    register_loss,
    zero_like_graph,
)
from lmshrink.distillation.projection import ProjectedComparison
from lmshrink.distillation.soft_targets import soft_kl
from lmshrink.errors import ConfigError

__all__ = ["IGNORE_INDEX", "LOSSES", "build_loss", "register_loss"]


def _scores(name: str, x: torch.Tensor) -> torch.Tensor:
    """A regression output [B, 1] or [B] as [B]."""
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]  # [B]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape [B] or [B, 1], got {tuple(x.shape)}.")
    return x


@register_loss("soft_kl")
class SoftKLLoss(nn.Module):
    """KL(softmax(t/T) || softmax(s/T)) * T^2: the student matches the teacher's soft labels.

    Summed over classes, averaged over the batch. A temperature T > 1 softens both
    distributions so the student also learns the teacher's ranking of wrong classes; the
    T^2 factor keeps the gradient size independent of T (Hinton et al., 2015).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or (
            temperature <= 0
        ):
            raise ConfigError(
                f"soft_kl temperature must be a positive number, got {temperature!r}."
            )
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        return soft_kl(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@register_loss("logit_mse")
class LogitMSELoss(nn.Module):
    """Mean squared error between student and teacher logits, over all elements.

    Matches the raw logits, not just their softmax (used by XtremeDistil's logit stage).
    """

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        return F.mse_loss(student_logits, teacher_logits, reduction="mean")


@register_loss("hard_label")
class HardPseudoLabelLoss(nn.Module):
    """Cross-entropy against the teacher's argmax class (hard pseudo-labels).

    Rows where the teacher's top softmax probability is below `threshold` are left out,
    so that the student does not learn the teacher's guesses on the transfer set. The mean
    is over the rows kept; with none kept the loss is a zero connected to the graph.
    """

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ConfigError(
                f"hard_label threshold must be a probability in [0, 1], got {threshold!r}."
            )
        self.threshold = float(threshold)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        with torch.no_grad():
            confidence, pseudo = teacher_logits.float().softmax(dim=-1).max(dim=-1)  # [B], [B]
            keep = confidence >= self.threshold  # [B] bool
        if not bool(keep.any()):
            return zero_like_graph(student_logits)
        return F.cross_entropy(student_logits[keep], pseudo[keep])  # mean over kept rows

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


@register_loss("gold_ce")
class GoldCrossEntropyLoss(nn.Module):
    """Cross-entropy against gold class labels; rows labeled -100 are unlabeled and ignored.

    Lets one batch mix labeled task rows with unlabeled transfer rows. The mean is over the
    labeled rows; with none the loss is a zero connected to the graph.
    """

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], labels [B] long (class id, or -100) -> scalar."""
        if labels.shape != student_logits.shape[:1]:
            raise ValueError(
                f"labels must have shape [B] = {tuple(student_logits.shape[:1])}, "
                f"got {tuple(labels.shape)}."
            )
        keep = labels != IGNORE_INDEX  # [B] bool
        if not bool(keep.any()):
            # cross_entropy would return 0/0 = nan here.
            return zero_like_graph(student_logits)
        return F.cross_entropy(student_logits[keep], labels[keep])  # mean over labeled rows


@register_loss("score_mse")
class ScoreMSELoss(nn.Module):
    """Regression tasks (STS-B): mean squared error between student and teacher scores."""

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, 1] or [B], teacher_logits [B, 1] or [B] -> scalar."""
        student = _scores("student_logits", student_logits)  # [B]
        teacher = _scores("teacher_logits", teacher_logits)  # [B]
        check_same_shape("student_logits", student, "teacher_logits", teacher)
        return F.mse_loss(student, teacher, reduction="mean")


@register_loss("gold_mse")
class GoldMSELoss(nn.Module):
    """Regression tasks: mean squared error against gold scores; NaN labels are ignored.

    NaN marks an unlabeled row in a mixed batch. The mean is over the labeled rows; with
    none the loss is a zero connected to the graph.
    """

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """student_logits [B, 1] or [B], labels [B] float (score, or NaN) -> scalar."""
        student = _scores("student_logits", student_logits)  # [B]
        check_same_shape("student_logits", student, "labels", labels)
        keep = ~torch.isnan(labels)  # [B] bool
        if not bool(keep.any()):
            return zero_like_graph(student_logits)
        # Index rather than mask by multiplication: 0 * NaN would still be NaN.
        return F.mse_loss(student[keep], labels[keep].to(student.dtype), reduction="mean")


@register_loss("representation", widths="representation")
class RepresentationLoss(ProjectedComparison):
    """Match the teacher's pooled representation through a learned linear projection.

    XtremeDistil's first stage: the student's pooled state [B, Ds] is projected to the
    teacher's size Dt, then compared by MSE (mean over elements) or cosine (mean of
    1 - cosine similarity, which ignores the scale).

    This loss HAS PARAMETERS (the projection): the training loop must add
    `loss.parameters()` to the optimiser, and move the loss to the student's device.
    The projection is only needed for training and is not part of the saved student.
    """

    loss_name: ClassVar[str] = "representation"

    def forward(self, student_repr: torch.Tensor, teacher_repr: torch.Tensor) -> torch.Tensor:
        """student_repr [B, Ds], teacher_repr [B, Dt] -> scalar."""
        return self.compare(student_repr, teacher_repr, ("student_repr", "teacher_repr"))


@register_loss("sinkhorn")
class SinkhornLoss(nn.Module):
    """SinKD (Cui et al., 2024): the Sinkhorn distance between the batch's student and
    teacher predictions, a logit loss beside soft_kl and logit_mse.

    SinKD's batch-wise reformulation: rather than comparing each example's two
    distributions on their own (as KL does), it treats the B examples of the batch as the
    support of two empirical distributions, the student's {s_1..s_B} and the teacher's
    {t_1..t_B}, with s_i = softmax(student_logits_i / temperature) and t_j likewise, each
    weighted 1/B. The cost of moving student example i to teacher example j is their L1
    distance over the classes,

        M_ij = sum_c |s_i(c) - t_j(c)|   (in [0, 2]),

    and the loss is the transport cost <P, M> = sum_ij P_ij M_ij of the entropic optimal
    plan P = argmin_{P 1 = 1/B, P^T 1 = 1/B} <P, M> - epsilon * H(P) (Cuturi's Sinkhorn
    distance). P is found by `iterations` Sinkhorn iterations in the log domain, with dual
    potentials f, g (starting at g = 0):

        f_i = epsilon * (log(1/B) - logsumexp_j((g_j - M_ij) / epsilon))
        g_j = epsilon * (log(1/B) - logsumexp_i((f_i - M_ij) / epsilon))
        P_ij = exp((f_i + g_j - M_ij) / epsilon)

    The gradient flows through the unrolled iterations. The value is >= 0 (P, M >= 0), a
    per-example average with uniform weights 1/B, so it does not grow with the batch size;
    with B = 1 it is the L1 distance between the two distributions. When student == teacher
    the diagonal costs are 0 and only the entropic blur (mass exp(-M_ij / epsilon) moved to
    other examples) remains, a small positive value that shrinks with epsilon. The L1 cost
    follows the L1 pairwise distance of the paper's batch formulation as we read it; no
    T^2 factor is applied (unlike soft_kl). Not for regression (one output column).
    """

    def __init__(
        self, temperature: float = 1.0, epsilon: float = 0.1, iterations: int = 20
    ) -> None:
        super().__init__()
        for arg, value in (("temperature", temperature), ("epsilon", epsilon)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value <= 0:
                raise ConfigError(f"sinkhorn {arg} must be a positive number, got {value!r}.")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
            raise ConfigError(
                f"sinkhorn iterations must be a positive whole number, got {iterations!r}."
            )
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.iterations = iterations

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        if student_logits.dim() != 2 or student_logits.shape[1] < 2:
            raise ValueError(
                f"sinkhorn needs class logits [B, C] with C >= 2, got shape "
                f"{tuple(student_logits.shape)}; use score_mse for regression."
            )
        eps = self.epsilon
        s = F.softmax(student_logits.float() / self.temperature, dim=-1)  # [B, C]
        t = F.softmax(teacher_logits.float() / self.temperature, dim=-1)  # [B, C]
        cost = (s[:, None, :] - t[None, :, :]).abs().sum(dim=-1)  # [B, B], M_ij
        batch = cost.shape[0]
        log_weight = -math.log(batch)  # log(1/B), both marginals uniform
        g = cost.new_zeros(batch)  # [B]
        for _ in range(self.iterations):
            f = eps * (log_weight - torch.logsumexp((g[None, :] - cost) / eps, dim=1))  # [B]
            g = eps * (log_weight - torch.logsumexp((f[:, None] - cost) / eps, dim=0))  # [B]
        plan = torch.exp((f[:, None] + g[None, :] - cost) / eps)  # [B, B]
        return (plan * cost).sum()

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, iterations={self.iterations}"
        )
