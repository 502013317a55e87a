"""Running a model over an encoded split in batches: the one place that turns an `Encoded`
split into model-call batches outside training (evaluation, teacher labelling, importance
estimation, speed measurement, export parity)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from lmshrink.data.batching import Encoded, bucketed_batches, collate


def eval_batches(
    enc: Encoded,
    batch_size: int,
    *,
    order: str = "length",
    limit: int | None = None,
    device: Any = None,
    progress: bool = False,
    desc: str = "predict",
) -> Iterator[tuple[list[int], dict[str, Any], Any]]:
    """(indices, model inputs, gold labels or None) per batch, without gradients' concerns.

    `order="length"` sorts the examples by length, so that batches waste little padding
    (scores, labelling); `order="dataset"` keeps the split's order, so that batches hold real
    padding (speed, parity). `limit` takes only the first examples in that order. Inputs go to
    `device` when given; the labels never go into the inputs. `progress`: shown as a transient
    step (`reporting.progress`), named `desc`.
    """
    from lmshrink.reporting.progress import track

    if order not in ("length", "dataset"):
        raise ValueError(f"order must be 'length' or 'dataset', not {order!r}")
    n = len(enc) if limit is None else min(limit, len(enc))
    if order == "length":
        index_batches = bucketed_batches(enc.lengths[:n], batch_size, rng=None)
    else:
        index_batches = [list(range(lo, min(n, lo + batch_size))) for lo in range(0, n, batch_size)]
    # (no wrapper at all when not shown: speed timing runs through here)
    shown = track(index_batches, desc, unit="batches", transient=True) if progress else None
    for indices in index_batches if shown is None else shown:
        batch = collate(enc, indices)
        labels = batch.pop("labels", None)
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        yield indices, batch, labels


def predict(
    model: Any, enc: Encoded, batch_size: int, progress: bool = False, desc: str = "predict"
) -> np.ndarray:
    """Model outputs for every example, in the split's order: logits [N, C] (C=1: score)."""
    import torch

    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    with torch.inference_mode():
        for indices, batch, _ in eval_batches(enc, batch_size, progress=progress, desc=desc):
            logits = model(**batch).logits.float().numpy()  # [b, C]
            if out is None:
                out = np.zeros((len(enc), logits.shape[1]), dtype=np.float32)
            out[indices] = logits
    model.train(was_training)
    assert out is not None
    return out


def predict_words(
    model: Any,
    enc: Encoded,
    batch_size: int,
    progress: bool = False,
    desc: str = "predict",
    outside: int = 0,
) -> list[np.ndarray]:
    """A token model's outputs at each word's first sub-token, in the split's order: one array
    [W_i, C] per sentence (W_i: the words truncation kept; `enc` from `encode_words`).

    A kept word without any sub-token (`enc.empty_words`: the tokenizer deleted all of it)
    has no output to read: its row is 1 at `outside` (the task's O tag id; lmshrink's label
    sets put O first) and 0 elsewhere, so it is predicted O, as a server that reads each
    word's tag at its first sub-token reads it, and every later word keeps its own row."""
    import torch

    if enc.word_starts is None:
        raise ValueError("predict_words needs an encoding of words (data.batching.encode_words)")
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = [np.zeros((0, 0), dtype=np.float32)] * len(enc)
    with torch.inference_mode():
        for indices, batch, _ in eval_batches(enc, batch_size, progress=progress, desc=desc):
            logits = model(**batch).logits.float().numpy()  # [b, T, C]
            for row, i in enumerate(indices):
                out[i] = logits[row, enc.word_starts[i]]  # [W_i, C]
                if enc.empty_words is not None and enc.empty_words[i]:
                    out[i] = _with_empty_words(out[i], enc.empty_words[i], outside)
    model.train(was_training)
    return out


def _with_empty_words(rows: np.ndarray, empty: list[int], outside: int) -> np.ndarray:
    """`rows` [K, C] of the words that have sub-tokens, with a row predicting `outside`
    inserted at each index of `empty`: [K + len(empty), C], one row per kept word."""
    full = np.zeros((len(rows) + len(empty), rows.shape[1]), dtype=rows.dtype)  # [W_i, C]
    has_tokens = np.ones(len(full), dtype=bool)
    has_tokens[empty] = False
    full[has_tokens] = rows
    full[empty, outside] = 1.0
    return full
