"""Every distillation loss of the stage-wise (XtremeDistil-style) pipeline.

Each loss is an `nn.Module` registered in `LOSSES` under a short name. Its `forward` takes
named tensors with documented shapes as keyword arguments (never a dict), and returns a
scalar. The class attribute `inputs` names those keyword tensors, so the training loop can
pass exactly what a loss needs:

    loss_fn = build_loss("soft_kl", temperature=2.0)
    loss = loss_fn(**{name: batch[name] for name in loss_fn.inputs})

Shapes: B is the batch size, C the number of classes, Ds and Dt the student's and the
teacher's representation sizes. Teacher tensors are targets: give them without gradient
(from the cache, or computed under `torch.no_grad()`).

A loss with no example left to learn from (all rows unlabeled, or all below a confidence
threshold) returns a zero that is still connected to the student's graph, so that
`loss.backward()` works the same for every batch.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmshrink.errors import ConfigError
from lmshrink.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")

IGNORE_INDEX = -100  # a `labels` value that marks an unlabeled row (classification)


def _zero_like_graph(student: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that keeps `student` in its graph, so backward() works on an empty batch."""
    return student.sum() * 0.0


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    # Broadcasting would silently compare every row with every other one.
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; "
            "they must match."
        )


def _scores(name: str, x: torch.Tensor) -> torch.Tensor:
    """A regression output [B, 1] or [B] as [B]."""
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]  # [B]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape [B] or [B, 1], got {tuple(x.shape)}.")
    return x


@LOSSES.register("soft_kl")
class SoftKLLoss(nn.Module):
    """KL(softmax(t/T) || softmax(s/T)) * T^2: the student matches the teacher's soft labels.

    Summed over classes, averaged over the batch. A temperature T > 1 softens both
    distributions so the student also learns the teacher's ranking of wrong classes; the
    T^2 factor keeps the gradient size independent of T (Hinton et al., 2015).
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "teacher_logits")

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
        _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        t = self.temperature
        student_logp = F.log_softmax(student_logits / t, dim=-1)  # [B, C]
        teacher_logp = F.log_softmax(teacher_logits / t, dim=-1)  # [B, C]
        # sum_c p_t * (log p_t - log p_s); log_target avoids log(0) for confident teachers.
        kl = F.kl_div(student_logp, teacher_logp, reduction="none", log_target=True)  # [B, C]
        return kl.sum(dim=-1).mean() * (t * t)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@LOSSES.register("logit_mse")
class LogitMSELoss(nn.Module):
    """Mean squared error between student and teacher logits, over all elements.

    Matches the raw logits, not just their softmax (used by XtremeDistil's logit stage).
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "teacher_logits")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        return F.mse_loss(student_logits, teacher_logits, reduction="mean")


@LOSSES.register("hard_label")
class HardPseudoLabelLoss(nn.Module):
    """Cross-entropy against the teacher's argmax class (hard pseudo-labels).

    Rows where the teacher's top softmax probability is below `threshold` are left out,
    so that the student does not learn the teacher's guesses on the transfer set. The mean
    is over the rows kept; with none kept the loss is a zero connected to the graph.
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "teacher_logits")

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ConfigError(
                f"hard_label threshold must be a probability in [0, 1], got {threshold!r}."
            )
        self.threshold = float(threshold)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, C], teacher_logits [B, C] -> scalar."""
        _check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
        with torch.no_grad():
            confidence, pseudo = teacher_logits.float().softmax(dim=-1).max(dim=-1)  # [B], [B]
            keep = confidence >= self.threshold  # [B] bool
        if not bool(keep.any()):
            return _zero_like_graph(student_logits)
        return F.cross_entropy(student_logits[keep], pseudo[keep])  # mean over kept rows

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


@LOSSES.register("gold_ce")
class GoldCrossEntropyLoss(nn.Module):
    """Cross-entropy against gold class labels; rows labeled -100 are unlabeled and ignored.

    Lets one batch mix labeled task rows with unlabeled transfer rows. The mean is over the
    labeled rows; with none the loss is a zero connected to the graph.
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "labels")

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
            return _zero_like_graph(student_logits)
        return F.cross_entropy(student_logits[keep], labels[keep])  # mean over labeled rows


@LOSSES.register("score_mse")
class ScoreMSELoss(nn.Module):
    """Regression tasks (STS-B): mean squared error between student and teacher scores."""

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "teacher_logits")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """student_logits [B, 1] or [B], teacher_logits [B, 1] or [B] -> scalar."""
        student = _scores("student_logits", student_logits)  # [B]
        teacher = _scores("teacher_logits", teacher_logits)  # [B]
        _check_same_shape("student_logits", student, "teacher_logits", teacher)
        return F.mse_loss(student, teacher, reduction="mean")


@LOSSES.register("gold_mse")
class GoldMSELoss(nn.Module):
    """Regression tasks: mean squared error against gold scores; NaN labels are ignored.

    NaN marks an unlabeled row in a mixed batch. The mean is over the labeled rows; with
    none the loss is a zero connected to the graph.
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_logits", "labels")

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """student_logits [B, 1] or [B], labels [B] float (score, or NaN) -> scalar."""
        student = _scores("student_logits", student_logits)  # [B]
        _check_same_shape("student_logits", student, "labels", labels)
        keep = ~torch.isnan(labels)  # [B] bool
        if not bool(keep.any()):
            return _zero_like_graph(student_logits)
        # Index rather than mask by multiplication: 0 * NaN would still be NaN.
        return F.mse_loss(student[keep], labels[keep].to(student.dtype), reduction="mean")


@LOSSES.register("representation")
class RepresentationLoss(nn.Module):
    """Match the teacher's pooled representation through a learned linear projection.

    XtremeDistil's first stage: the student's pooled state [B, Ds] is projected to the
    teacher's size Dt, then compared by MSE (mean over elements) or cosine (mean of
    1 - cosine similarity, which ignores the scale).

    This loss HAS PARAMETERS (the projection): the training loop must add
    `loss.parameters()` to the optimiser, and move the loss to the student's device.
    The projection is only needed for training and is not part of the saved student.
    """

    inputs: ClassVar[tuple[str, ...]] = ("student_repr", "teacher_repr")
    KINDS: ClassVar[tuple[str, ...]] = ("mse", "cosine")

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "mse") -> None:
        super().__init__()
        for name, dim in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ConfigError(
                    f"representation {name} must be a positive whole number, got {dim!r}."
                )
        if kind not in self.KINDS:
            raise ConfigError(
                f"representation kind {kind!r} is unknown; use one of: {', '.join(self.KINDS)}."
            )
        self.kind = kind
        self.projection = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_repr: torch.Tensor, teacher_repr: torch.Tensor) -> torch.Tensor:
        """student_repr [B, Ds], teacher_repr [B, Dt] -> scalar."""
        projected = self.projection(student_repr)  # [B, Dt]
        _check_same_shape("projected student_repr", projected, "teacher_repr", teacher_repr)
        if self.kind == "mse":
            return F.mse_loss(projected, teacher_repr, reduction="mean")
        cosine = F.cosine_similarity(projected, teacher_repr, dim=-1)  # [B]
        return (1.0 - cosine).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def build_loss(name: str, **params: Any) -> nn.Module:
    """Construct the loss registered as `name` with `params`, checking the parameter names.

    An unknown loss, an unknown parameter or a missing required one raises `ConfigError`
    naming the loss and the parameters it accepts.
    """
    cls = LOSSES.get(name)
    signature = inspect.signature(cls)
    accepted = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    accepts = f"it accepts: {', '.join(accepted)}" if accepted else "it takes no parameters"
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {name!r} has no parameter {', '.join(map(repr, unknown))}; {accepts}."
        )
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name in accepted and p.default is p.empty and p.name not in params
    ]
    if missing:
        raise ConfigError(
            f"loss {name!r} needs parameter {', '.join(map(repr, missing))}; {accepts}."
        )
    return cls(**params)
