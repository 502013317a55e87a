"""The loss of a sequence-classification head, by Hugging Face's convention, for lmshrink's own
model classes (the BiLSTM student and the pruned BERT)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def sequence_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, config: Any
) -> torch.Tensor:
    """MSE for regression, cross-entropy for single-label, BCE-with-logits for multi-label,
    from the model config's `problem_type` and `num_labels`; a missing `problem_type` is
    inferred as transformers does (without writing it into the config)."""
    num_labels = config.num_labels
    problem = config.problem_type
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    labels = labels.to(logits.device)
    if problem == "regression":
        if num_labels == 1:
            return nn.functional.mse_loss(logits.view(-1), labels.view(-1).to(logits.dtype))
        return nn.functional.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
