"""The soft-label distillation loss itself, shared by the sentence `soft_kl` loss and the
per-word `token_soft_kl` (its own module: losses.py imports token_losses to register them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over the classes and averaged over the
    rows: student_logits [N, C], teacher_logits [N, C] -> scalar (sentences, or a token
    task's real words)."""
    t = temperature
    student_logp = F.log_softmax(student_logits / t, dim=-1)  # [N, C]
    teacher_logp = F.log_softmax(teacher_logits / t, dim=-1)  # [N, C]
    # sum_c p_t * (log p_t - log p_s); log_target avoids log(0) for confident teachers.
    kl = F.kl_div(student_logp, teacher_logp, reduction="none", log_target=True)  # [N, C]
    return kl.sum(dim=-1).mean() * (t * t)
