"""The teacher labels a run's texts once, into the on-disk cache.

Two passes, both resumable and reused by later runs with the same inputs (see
`lmshrink.distillation.teacher_cache`):

- logits (and, for representation stages, a pooled hidden state) on the transfer set and on
  dev, for every run with a stage on transfer data; for a token task, per word (at each
  word's first sub-token), stored ragged and handed to the stages as `WordTargets`;
- the per-token targets of layer-wise losses on the transfer set (`layer_cache`), when the
  stages' losses declare which teacher layers they read and the cache fits under
  `labelling.layer_cache_gb`; otherwise the teacher runs on every training batch instead.

This module imports no torch; the passes import what they need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmshrink.config import option
from lmshrink.distillation.stages import StageConfig, loss_entries


@dataclasses.dataclass
class LabellingConfig:
    """How the teacher labels the transfer set."""

    batch_size: int = option(128, "teacher batch size when labelling.", flag="label_batch_size")
    repr_layer: int = option(
        -1,
        "teacher hidden-state index matched by representation "
        "losses (0: embeddings, -1: last layer).",
    )
    repr_pooling: str = option(
        "cls", "how the teacher's token states become one vector: cls or mean."
    )
    shard_size: int = option(4096, "examples per cache shard (the unit of resumption).")
    cache_dir: str = option(
        "",
        "where the teacher's outputs are cached (empty: the run folder's cache/); runs that "
        "share one (lmshrink shrink's candidates) label each transfer set once.",
        flag="teacher_cache_dir",
    )
    layer_cache_gb: float = option(
        4.0,
        "largest cache of the teacher's per-token targets of layer-wise losses (hidden "
        "states, attentions, value vectors; fp16, held in memory by each process); a larger "
        "one, or 0, runs the teacher on every batch instead.",
    )


def named_targets(outputs: Any | None) -> dict[str, Any]:
    """A split's cached teacher outputs (`TeacherOutputs`, or None when nothing was
    labelled) as the named loss targets `teacher_logits` [N, C] and `teacher_repr` [N, D];
    nothing for a token task's outputs (see `word_targets`)."""
    if outputs is None or outputs.word_counts is not None:
        return {}
    named = {"teacher_logits": outputs.logits, "teacher_repr": outputs.representation}
    return {k: v for k, v in named.items() if v is not None}


def word_targets(outputs: Any | None) -> WordTargets | None:
    """A token task's cached teacher outputs as `WordTargets` (None for a sentence task's, or
    when nothing was labelled)."""
    if outputs is None or outputs.word_counts is None:
        return None
    return WordTargets(outputs.logits, outputs.representation, outputs.word_counts)


class WordTargets:
    """The teacher's per-word outputs on a token task's examples, stored ragged (flat rows,
    example after example) and handed out padded, batch by batch."""

    def __init__(self, logits: Any, representation: Any, word_counts: Any) -> None:
        import torch

        self.logits = logits  # [total words, C]
        self.representation = representation  # [total words, D] or None
        self.counts = word_counts  # [N]
        self.offsets = torch.cat([word_counts.new_zeros(1), word_counts.cumsum(0)])  # [N + 1]

    def take(self, indices: list[int], width: int, device: Any = None) -> dict[str, Any]:
        """The examples' targets padded (with zeros) or cut to `width` words:
        `teacher_word_logits` [B, W, C], `teacher_word_repr` [B, W, D] when cached, and
        `teacher_word_mask` [B, W] (True at the words the teacher labelled)."""
        import torch

        b = len(indices)
        logits = self.logits.new_zeros(b, width, self.logits.shape[-1])
        rep = None
        if self.representation is not None:
            rep = torch.zeros(b, width, self.representation.shape[-1])
        mask = torch.zeros(b, width, dtype=torch.bool)
        for row, i in enumerate(indices):
            lo = int(self.offsets[i])
            n = min(int(self.counts[i]), width)
            logits[row, :n] = self.logits[lo : lo + n]
            if rep is not None:
                rep[row, :n] = self.representation[lo : lo + n]
            mask[row, :n] = True
        out = {"teacher_word_logits": logits, "teacher_word_mask": mask}
        if rep is not None:
            out["teacher_word_repr"] = rep
        return {k: v.to(device) for k, v in out.items()}


@dataclasses.dataclass
class Labeller:
    """The teacher of a run, and where and how it labels texts.

    Every process of the run makes one; each labels the cache shards it owns, then waits for
    the others, so that all processes load the same complete cache."""

    teacher: Any
    tokenizer: Any
    teacher_dir: str
    cache_root: Path
    max_length: int
    settings: LabellingConfig
    stages: list[StageConfig]
    accelerator: Any
    progress: bool
    log: Callable[[str], None]
    # a token task: its examples are word lists, labelled per word
    words: bool = False

    def __post_init__(self) -> None:
        from lmshrink.distillation.teacher_cache import folder_fingerprint

        # Representation stages need the teacher's pooled hidden state beside its logits
        # (a token task: its state at each word).
        wanted = "teacher_word_repr" if self.words else "teacher_repr"
        self.needs_repr = any(wanted in e.inputs for e in loss_entries(self.stages))
        lab = self.settings
        pooling = "first_subtoken" if self.words else lab.repr_pooling
        # Everything that changes the teacher's outputs names the cache folder.
        self.key = {
            "teacher": folder_fingerprint(self.teacher_dir),
            "max_length": self.max_length,
            "tokenizer": type(self.tokenizer).__name__,
            "vocab": len(self.tokenizer),
            "repr": [lab.repr_layer, pooling] if self.needs_repr else None,
        }
        if self.words:  # sentence tasks keep the keys (and the caches) they always had
            self.key["level"] = "word"

    def _cache(self, key: dict[str, Any], num_examples: int) -> Any:
        from lmshrink.distillation.teacher_cache import TeacherCache

        return TeacherCache(
            self.cache_root, {**self.key, **key}, num_examples, self.settings.shard_size
        )

    def _progress(self) -> bool:
        return self.progress and self.accelerator.is_local_main_process

    def _examples(self, split: Any) -> Sequence[tuple[str, ...]]:
        """A split's examples: its texts, or a token task's word lists as tuples; a packed
        transfer set (`TextStore`, read as tuples) in place, never copied into a list."""
        from lmshrink.data.text_store import TextStore

        if not self.words:
            return split.texts
        if isinstance(split.words, TextStore):
            return split.words
        return [tuple(w) for w in split.words]

    def teacher_outputs(self, splits: dict[str, Any]) -> dict[str, Any]:
        """The teacher's outputs (`TeacherOutputs`) on each of `splits` (name -> an object
        with `texts`, or a token task's `words`, and `fingerprint()`: the transfer set, dev),
        labelled into the cache or read from it; nothing when no stage trains on transfer
        data (gold labels only)."""
        from lmshrink.distillation.teacher_cache import label_transfer_set

        if not any(stage.data == "transfer" for stage in self.stages):
            return {}
        acc, lab = self.accelerator, self.settings
        outputs = {}
        for name, split in splits.items():
            examples = self._examples(split)
            cache = self._cache({"texts": split.fingerprint()}, len(examples))
            stats = label_transfer_set(
                self.teacher,
                self.tokenizer,
                examples,
                cache,
                self.max_length,
                lab.batch_size,
                lab.repr_layer if self.needs_repr else None,
                lab.repr_pooling,
                acc.process_index,
                acc.num_processes,
                self._progress(),
                words=self.words,
            )
            acc.wait_for_everyone()
            if name == "transfer":
                self.log(
                    f"teacher outputs: reused the cache {cache.folder}"
                    if stats.reused
                    else "teacher outputs: labelled "
                    f"{stats.shards_total - stats.shards_done_before} of {stats.shards_total} "
                    f"shard(s) into {cache.folder}"
                )
            outputs[name] = cache.load()
        return outputs

    def layer_targets(
        self, transfer: Any, lengths: list[int], pairs: list[tuple[int, int]] | None
    ) -> Any:
        """The teacher's per-token targets of the transfer stages' layer-wise losses on the
        transfer set (token `lengths` as the student reads them), labelled once into the
        cache or reused from it (`LayerTargets`); None when no loss needs them, when a loss
        does not declare which teacher layers it reads, or when they would outgrow
        `labelling.layer_cache_gb` (the teacher then runs on every batch)."""
        from lmshrink.distillation.layer_cache import (
            LayerTargets,
            estimated_bytes,
            label_layer_targets,
            layer_needs,
            uncached_losses,
        )

        names = [entry.name for entry in loss_entries(self.stages, data="transfer")]
        unknown = uncached_losses(names)
        if unknown:
            self.log(
                f"teacher layer targets: not cached ({', '.join(unknown)} reads teacher layers "
                "the cache does not know); the teacher runs on every batch instead"
            )
            return None
        needs = layer_needs(names, pairs)
        if not needs:
            return None
        tc = self.teacher.config
        size = estimated_bytes(
            lengths, needs, tc.hidden_size, tc.num_attention_heads, tc.hidden_size
        )
        size_gb, cap = size / 2**30, self.settings.layer_cache_gb
        if size_gb > cap:
            why = (
                "caching is off (labelling.layer_cache_gb = 0)"
                if cap <= 0
                else f"{size_gb:.2f} GB would exceed labelling.layer_cache_gb = {cap:g} (raise "
                "it to cache them)"
            )
            self.log(f"teacher layer targets: {why}; the teacher runs on every batch instead")
            return None
        acc = self.accelerator
        key = {"texts": transfer.fingerprint(), "layers": needs.as_key()}
        examples = self._examples(transfer)
        cache = self._cache(key, len(examples))
        stats = label_layer_targets(
            self.teacher,
            self.tokenizer,
            examples,
            cache,
            needs,
            self.max_length,
            self.settings.batch_size,
            acc.process_index,
            acc.num_processes,
            self._progress(),
            words=self.words,
        )
        acc.wait_for_everyone()
        self.log(
            f"teacher layer targets ({size_gb:.2f} GB, fp16): "
            + ("reused the cache" if stats.reused else "cached")
            + f" {cache.folder}"
        )
        return LayerTargets.load(cache, needs, tc.num_attention_heads)
