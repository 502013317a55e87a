"""The learned projection that representation losses share: a student state [N, Ds]
projected to the teacher's width Dt and compared with the teacher's state [N, Dt]."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lmshrink.distillation.loss_registry import check_same_shape
from lmshrink.errors import ConfigError


class ProjectedComparison(nn.Module):
    """MSE (mean over elements) or the mean of 1 - cosine similarity (which ignores the
    scale) between the projected student states and the teacher's. Subclasses are losses:
    their `forward` picks the rows (pooled sentences, or real words) and calls `compare`.

    It HAS PARAMETERS (the projection): the training loop adds them to the optimiser and
    moves them to the student's device; they are not part of the saved student.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("mse", "cosine")
    loss_name: ClassVar[str] = "representation"  # in error messages; each loss names itself

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "mse") -> None:
        super().__init__()
        for name, dim in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ConfigError(
                    f"{self.loss_name} {name} must be a positive whole number, got {dim!r}."
                )
        if kind not in self.KINDS:
            raise ConfigError(
                f"{self.loss_name} kind {kind!r} is unknown; use one of: {', '.join(self.KINDS)}."
            )
        self.kind = kind
        self.projection = nn.Linear(student_dim, teacher_dim)

    def compare(
        self, student: torch.Tensor, teacher: torch.Tensor, names: tuple[str, str]
    ) -> torch.Tensor:
        """student [N, Ds] projected to [N, Dt] and compared with teacher [N, Dt]: the MSE
        over all elements, or the mean of 1 - cosine similarity over the N rows."""
        projected = self.projection(student)  # [N, Dt]
        check_same_shape(f"projected {names[0]}", projected, names[1], teacher)
        if self.kind == "mse":
            return F.mse_loss(projected, teacher, reduction="mean")
        cosine = F.cosine_similarity(projected, teacher, dim=-1)  # [N]
        return (1.0 - cosine).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
