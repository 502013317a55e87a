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


def test_the_teacher_cache_pools_the_mean_of_real_tokens_or_the_first_one():
    from lmshrink.distillation.teacher_cache import pooled_representation

    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # the mean of each row's real positions, computed by hand (masked_mean is what the cache
    # calls, so comparing with it would hold whatever it did)
    by_hand = torch.stack([hidden[0, :3].mean(dim=0), hidden[1, 0]])
    assert torch.allclose(pooled_representation(hidden, mask, "mean"), by_hand)
    assert torch.equal(pooled_representation(hidden, mask, "cls"), hidden[:, 0])
