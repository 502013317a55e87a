"""The student and a stage's weighted losses as one module.

Wrapping both in one `nn.Module` lets `accelerate` (DDP) synchronise the gradients of the
student and of loss parameters (the representation projection) in one backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmshrink.losses import build_loss


class Objective(nn.Module):
    """forward(batch, targets) -> (weighted total loss, {loss name: value})."""

    def __init__(self, student: nn.Module, specs: list[Any], teacher_dim: int) -> None:
        super().__init__()
        self.student = student
        student_dim = pooled_size(student)
        self.losses = nn.ModuleList()
        self.names = [s.name for s in specs]
        self.weights = [s.weight for s in specs]
        for spec in specs:
            params = dict(spec.params)
            if spec.name == "representation":  # sizes come from the models, not the user
                params.update(student_dim=student_dim, teacher_dim=teacher_dim)
            self.losses.append(build_loss(spec.name, **params))

    @property
    def needs(self) -> set[str]:
        """Every named tensor the stage's losses read."""
        return {name for loss in self.losses for name in loss.inputs}

    def forward(
        self, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        wants_repr = "student_repr" in self.needs
        pooled = None
        if hasattr(self.student, "layer_groups"):  # lmshrink's BiLSTM returns `pooled`
            out = self.student(**batch)
            pooled = out.pooled
        else:  # a transformer: its [CLS] state of the last layer, like the teacher's
            out = self.student(**batch, output_hidden_states=wants_repr)
            pooled = out.hidden_states[-1][:, 0] if wants_repr else None  # [B, H]
        named = {"student_logits": out.logits, "student_repr": pooled, **targets}
        total = out.logits.new_zeros(())
        parts = {}
        for name, weight, loss_fn in zip(self.names, self.weights, self.losses, strict=True):
            value = loss_fn(**{k: named[k] for k in loss_fn.inputs})  # scalar
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts


def pooled_size(student: nn.Module) -> int:
    """Size of the student's sentence vector: 2 x hidden for the BiLSTM, hidden otherwise."""
    config = student.config
    return 2 * config.hidden_size if config.model_type == "lmshrink_bilstm" else config.hidden_size
