"""Pieces every training workflow shares: seeding, optimiser and schedule."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from lmshrink.config import OptimSettings


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: Any, cfg: OptimSettings, total_steps: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and norm weights) with linear warmup then linear decay."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm_or_bias = param.ndim < 2 or "norm" in name.lower()
        (no_decay if is_norm_or_bias else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    warmup = int(total_steps * cfg.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
