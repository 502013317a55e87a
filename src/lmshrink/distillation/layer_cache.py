"""The teacher's per-token targets of layer-wise losses, cached on disk in fp16.

Layer-wise losses (TinyBERT, MiniLM) compare the student's hidden states, attention maps or
value vectors with the teacher's on the same batch. Without a cache the teacher runs a
forward pass on every training batch of every epoch. With it, the teacher runs once over
the transfer set and stores, for each example at its real length (no padding), only the
layers the stages' losses read:

- hidden states [n, H] for the mapped hidden-state indices (0: the embedding output);
- attention probabilities [heads, n, n] for the mapped transformer layers;
- value vectors [n, D] for the mapped transformer layers.

A batch gets them back padded with zeros to its width; every layer-wise loss masks padded
tokens and keys, so the zeros are never compared. Attention maps grow with the square of
the length, so the cache is used only when its estimated size stays under a cap
(`labelling.layer_cache_gb`); above it the teacher runs online, as before. Shards, the
fingerprint and resumption are those of `lmshrink.distillation.teacher_cache.TeacherCache`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lmshrink.distillation.loss_registry import LOSSES, TARGET_NAMES
from lmshrink.distillation.teacher_cache import TeacherCache, fill_cache

BYTES_PER_VALUE = 2  # fp16


@dataclasses.dataclass(frozen=True)
class LayerNeeds:
    """Which teacher layers the losses read, as positions in the model's output lists:
    `hidden` indexes `hidden_states` (0: embeddings), `attentions` and `values` index the
    per-layer lists (0: the first transformer layer)."""

    hidden: tuple[int, ...] = ()
    attentions: tuple[int, ...] = ()
    values: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.hidden or self.attentions or self.values)

    def as_key(self) -> dict[str, list[int]]:
        return {kind: list(getattr(self, kind)) for kind in TARGET_NAMES}


def uncached_losses(loss_names: Sequence[str]) -> list[str]:
    """The losses that read per-token teacher targets without declaring which teacher layers
    (their registry entry's `teacher_layers`): the cache cannot hold their targets, so the
    teacher runs on every batch instead."""
    entries = [LOSSES.get(name) for name in loss_names]
    return sorted({e.name for e in entries if e.teacher_targets and e.teacher_layers is None})


def layer_needs(loss_names: Sequence[str], pairs: Sequence[Sequence[int]] | None) -> LayerNeeds:
    """The teacher layers that the losses named `loss_names` read, with `pairs` the
    (student, teacher) layer map in `hidden_states` numbering, from each loss's registry
    entry: the kinds of per-token targets it reads at its declared `teacher_layers`."""
    mapped = [t for _, t in pairs or ()]
    found: dict[str, set[int]] = {kind: set() for kind in TARGET_NAMES}
    for name in loss_names:
        entry = LOSSES.get(name)
        if entry.teacher_layers is None:
            continue
        indices = [0] if entry.teacher_layers == "embeddings" else mapped  # hidden_states
        for kind in entry.teacher_targets:
            # Attentions and value vectors have no entry for the embedding output (index 0).
            found[kind].update(indices if kind == "hidden" else (t - 1 for t in indices if t > 0))
    return LayerNeeds(**{kind: tuple(sorted(found[kind])) for kind in TARGET_NAMES})


def estimated_bytes(
    lengths: Sequence[int], needs: LayerNeeds, hidden_size: int, heads: int, value_size: int
) -> int:
    """Bytes the cache of `needs` takes for examples of the given token lengths."""
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    per_value = (
        len(needs.hidden) * tokens * hidden_size
        + len(needs.attentions) * heads * squares
        + len(needs.values) * tokens * value_size
    )
    return per_value * BYTES_PER_VALUE


class _LayerCollector:
    """One shard's per-token teacher tensors, each example cut to its real length."""

    def __init__(self, n: int, needs: LayerNeeds, values: list[Any]) -> None:
        self.needs = needs
        self.values = values  # filled by capture_values during each teacher call
        self.lengths = [0] * n
        self.rows: dict[str, list[Any]] = {
            f"{kind}.{layer}": [None] * n for kind in TARGET_NAMES for layer in getattr(needs, kind)
        }

    def teacher_kwargs(self) -> dict[str, Any]:
        return {
            "output_hidden_states": bool(self.needs.hidden),
            "output_attentions": bool(self.needs.attentions),
        }

    def add(self, indices: list[int], batch: dict[str, Any], out: Any) -> None:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        sources = {"hidden": out.hidden_states, "attentions": out.attentions, "values": self.values}
        for kind in TARGET_NAMES:
            for layer in getattr(self.needs, kind):
                tensor = sources[kind][layer]  # [b, T, H] or [b, heads, T, T]
                rows = self.rows[f"{kind}.{layer}"]
                for b, (i, n) in enumerate(zip(indices, lengths, strict=True)):
                    if kind == "attentions":
                        rows[i] = tensor[b, :, :n, :n].reshape(-1).half()  # [heads * n * n]
                    else:
                        rows[i] = tensor[b, :n].half()  # [n, H]
        for i, n in zip(indices, lengths, strict=True):
            self.lengths[i] = n

    def tensors(self) -> dict[str, Any]:
        import torch

        out = {name: torch.cat(rows) for name, rows in self.rows.items()}
        out["lengths"] = torch.tensor(self.lengths, dtype=torch.long)
        return out


def label_layer_targets(
    teacher: Any,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    cache: TeacherCache,
    needs: LayerNeeds,
    max_length: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    words: bool = False,
) -> Any:
    """Fill `cache` with the teacher's per-token tensors of `needs` on `texts` (this process's
    shards; with `words`, `texts` are a token task's word lists, encoded as the student
    reads them). Attention maps need the teacher on eager attention
    (`lmshrink.distillation.objective.prepare_for_attention_losses`). Returns the `LabelStats`."""
    import contextlib

    from lmshrink.distillation.probes import capture_values

    # One set of hooks for the whole pass: each teacher call overwrites `values` in place.
    hooks = capture_values(teacher) if needs.values else contextlib.nullcontext([])
    with hooks as values:
        return fill_cache(
            teacher,
            tokenizer,
            texts,
            cache,
            max_length,
            batch_size,
            lambda enc: _LayerCollector(len(enc), needs, values),
            rank,
            world_size,
            progress,
            desc="teacher layer targets",
            words=words,
        )


class LayerTargets:
    """The cached per-token tensors of a whole transfer set, handed out batch by batch."""

    def __init__(self, needs: LayerNeeds, lengths: Any, flat: dict[str, Any], heads: int) -> None:
        import torch

        self.needs, self.lengths, self.flat, self.heads = needs, lengths, flat, heads
        zero = torch.zeros(1, dtype=torch.long)
        self.token_offsets = torch.cat([zero, lengths.cumsum(0)])  # [N + 1]
        self.square_offsets = torch.cat([zero, (heads * lengths * lengths).cumsum(0)])

    @classmethod
    def load(cls, cache: TeacherCache, needs: LayerNeeds, heads: int) -> LayerTargets:
        from safetensors import safe_open

        paths = [str(cache.shard_path(k)) for k in range(cache.num_shards)]
        with safe_open(paths[0], framework="pt") as f:
            names = list(f.keys())
        flat = {}
        for name in names:
            # Copied shard by shard into one tensor: memory peaks at the cache plus one
            # shard's part, not at twice the cache as a concatenation would.
            shapes = []
            for path in paths:
                with safe_open(path, framework="pt") as f:
                    shapes.append(f.get_slice(name).get_shape())
            out, row = None, 0
            for path, shape in zip(paths, shapes, strict=True):
                with safe_open(path, framework="pt") as f:
                    part = f.get_tensor(name)
                if out is None:
                    out = part.new_empty(sum(s[0] for s in shapes), *part.shape[1:])
                out[row : row + shape[0]] = part
                row += shape[0]
            flat[name] = out
        return cls(needs, flat.pop("lengths"), flat, heads)

    def take(self, indices: Sequence[int], width: int, device: Any = None) -> dict[str, list]:
        """The named target lists of the examples at `indices`, padded to `width` tokens:
        {teacher_hidden_states: [None or [B, width, H]] ...}, with None at the layers no
        loss reads (a loss reads only its mapped layers)."""

        out: dict[str, list] = {}
        for kind, name in TARGET_NAMES.items():
            layers = getattr(self.needs, kind)
            if not layers:
                continue
            slots: list[Any] = [None] * (max(layers) + 1)
            for layer in layers:
                slots[layer] = self._padded(kind, layer, indices, width).to(device)
            out[name] = slots
        return out

    def _padded(self, kind: str, layer: int, indices: Sequence[int], width: int) -> Any:
        import torch

        flat = self.flat[f"{kind}.{layer}"]
        if kind == "attentions":
            batch = torch.zeros(len(indices), self.heads, width, width)
            for b, i in enumerate(indices):
                n = int(self.lengths[i])
                lo = int(self.square_offsets[i])
                batch[b, :, :n, :n] = flat[lo : lo + self.heads * n * n].view(self.heads, n, n)
            return batch
        batch = torch.zeros(len(indices), width, flat.shape[-1])
        for b, i in enumerate(indices):
            lo, hi = int(self.token_offsets[i]), int(self.token_offsets[i + 1])
            batch[b, : hi - lo] = flat[lo:hi]
        return batch
