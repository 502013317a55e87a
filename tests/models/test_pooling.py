"""masked_mean: the one pooling rule of the static student and the teacher cache."""

from __future__ import annotations

import torch

from lmshrink.models.pooling import masked_mean


def test_masked_mean_counts_only_the_masked_positions_and_gives_zeros_for_an_empty_row():
    vectors = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0]] * 3])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])  # an integer mask, as tokenizers give it
    pooled = masked_mean(vectors, mask)
    assert pooled.dtype == torch.float32
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_the_teacher_cache_mean_pooling_is_masked_mean():
    from lmshrink.distillation.teacher_cache import pooled_representation

    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.equal(pooled_representation(hidden, mask, "mean"), masked_mean(hidden, mask))
    assert torch.equal(pooled_representation(hidden, mask, "cls"), hidden[:, 0])
