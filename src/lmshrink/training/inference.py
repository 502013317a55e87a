"""Running a model over an encoded split in length-sorted batches (evaluation and labelling)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmshrink.data.batching import Encoded, bucketed_batches, collate


def predict(
    model: Any, enc: Encoded, batch_size: int, progress: bool = False, desc: str = "predict"
) -> np.ndarray:
    """Model outputs for every example, in the split's order: logits [N, C] (C=1: score)."""
    import torch
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    batches = bucketed_batches(enc.lengths, batch_size, rng=None)
    out: np.ndarray | None = None
    with torch.inference_mode():
        for indices in tqdm(batches, desc=desc, disable=not progress, leave=False):
            batch = collate(enc, indices)
            batch.pop("labels", None)
            logits = model(**batch).logits.float().numpy()  # [b, C]
            if out is None:
                out = np.zeros((len(enc), logits.shape[1]), dtype=np.float32)
            out[indices] = logits
    model.train(was_training)
    assert out is not None
    return out
