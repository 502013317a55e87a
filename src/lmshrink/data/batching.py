"""Tokenizing a split once, and batching it by length with dynamic padding."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from lmshrink.data.splits import Split


@dataclasses.dataclass
class Encoded:
    """Token ids of a split, unpadded: `features[name][i]` is a list of ints."""

    features: dict[str, list[list[int]]]
    labels: list[int] | list[float] | None
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.features["input_ids"])

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.features["input_ids"]]


def encode(tokenizer: Any, split: Split, max_length: int) -> Encoded:
    """Tokenize every example once (pairs as a pair), truncating to `max_length` tokens."""
    firsts = [t[0] for t in split.texts]
    seconds = [t[1] for t in split.texts] if split.texts and len(split.texts[0]) > 1 else None
    out = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    features = {k: list(v) for k, v in out.items() if k in ("input_ids", "token_type_ids")}
    return Encoded(features, split.labels, tokenizer.pad_token_id or 0)


def bucketed_batches(
    lengths: list[int], batch_size: int, rng: random.Random | None, bucket_batches: int = 50
) -> list[list[int]]:
    """Index batches of similar length, so that padding wastes little compute.

    With `rng`, indices are shuffled, then sorted by length inside windows of
    `bucket_batches` batches, and the batches are shuffled: random but length-homogeneous.
    Without `rng` (evaluation), all indices are sorted by length.
    """
    order = list(range(len(lengths)))
    if rng is None:
        order.sort(key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(enc: Encoded, indices: list[int]) -> dict[str, Any]:
    """Pad the examples at `indices` to their longest length; tensors for a model call."""
    import torch

    width = max(len(enc.features["input_ids"][i]) for i in indices)
    batch: dict[str, Any] = {}
    for name, rows in enc.features.items():
        pad = enc.pad_token_id if name == "input_ids" else 0
        batch[name] = torch.tensor([rows[i] + [pad] * (width - len(rows[i])) for i in indices])
    lengths = torch.tensor([len(enc.features["input_ids"][i]) for i in indices])
    batch["attention_mask"] = (torch.arange(width)[None, :] < lengths[:, None]).long()
    if enc.labels is not None:
        values = [enc.labels[i] for i in indices]
        dtype = torch.float if isinstance(values[0], float) else torch.long
        batch["labels"] = torch.tensor(values, dtype=dtype)
    return batch
