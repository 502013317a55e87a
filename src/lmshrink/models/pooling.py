"""Pooling token vectors into one vector per example, shared by the students that pool (the
static student) and the teacher cache that stores pooled teacher states for them."""

from __future__ import annotations

import torch


def masked_mean(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """vectors [B, T, E], mask [B, T] (1 = counts, any dtype) -> their masked mean [B, E]
    (zeros for a row with nothing to count)."""
    weights = mask[:, :, None].to(vectors.dtype)  # [B, T, 1]
    summed = (vectors * weights).sum(dim=1)  # [B, E]
    return summed / weights.sum(dim=1).clamp(min=1.0)
