"""The on-disk cache of teacher outputs on a transfer set.

The teacher labels the transfer set once. Its logits [N, C] (float32) and the
representation used by the first distillation stage [N, D] (float16, to halve the disk)
are written in shards of a fixed number of examples, each shard atomically, under a folder
named by a fingerprint of everything that changes the outputs: the teacher's weights and
config, the texts, the tokenizer and its settings, and the representation choice. A second
run with the same inputs reuses the cache; labelling that was killed resumes at the first
missing shard. With several processes, shard k is labelled by process k % world_size.

A token task's examples are word lists; the teacher's outputs are kept per word, read at
each word's first sub-token, ragged: a shard holds `word_counts` [n] and the flat
`logits` [words, C] (and `repr` [words, D]) of its examples' words one after the other, so
no padding is stored (`WordOutputs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lmshrink.data.batching import Encoded, encode
from lmshrink.data.ner import TokenSplit
from lmshrink.data.splits import Split
from lmshrink.runs import write_text_atomic
from lmshrink.training.inference import eval_batches
from lmshrink.training.signals import StopOnSignal

FORMAT_VERSION = 1


def folder_fingerprint(folder: str | Path) -> str:
    """A hash of a model folder's config and weight files (content, not timestamps)."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
            h.update(path.name.encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


@dataclasses.dataclass
class TeacherOutputs:
    """What the teacher said about each transfer example, in transfer-set order."""

    logits: Any  # torch.Tensor [N, C] float32 (token tasks: [total words, C])
    # [N, D] rows read as float32 tensors (a `ShardedRows` reading the cache's files, or a
    # tensor), or None when no stage needs it
    representation: Any
    # token tasks: words per example [N] (its rows of `logits` and `representation` follow
    # those of the examples before it); None for sentence tasks
    word_counts: Any = None


@dataclasses.dataclass
class LabelStats:
    reused: bool  # everything came from an earlier run's cache
    shards_done_before: int  # shards found on disk when this call started
    shards_total: int
    seconds: float


class TeacherCache:
    """A folder of output shards for one fingerprint."""

    def __init__(
        self, root: str | Path, key: dict[str, Any], num_examples: int, shard_size: int = 4096
    ) -> None:
        self.key = {"format": FORMAT_VERSION, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        self.fingerprint = digest[:16]
        self.folder = Path(root) / self.fingerprint
        self.num_examples = num_examples
        self.shard_size = shard_size

    @property
    def num_shards(self) -> int:
        return (self.num_examples + self.shard_size - 1) // self.shard_size

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.safetensors"

    def done_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if self.shard_path(k).is_file()]

    def is_complete(self) -> bool:
        return len(self.done_shards()) == self.num_shards

    def write_manifest(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "key": self.key,
            "num_examples": self.num_examples,
            "shard_size": self.shard_size,
            "num_shards": self.num_shards,
        }
        write_text_atomic(self.folder / "manifest.json", json.dumps(manifest, indent=2))

    def write_shard(self, index: int, tensors: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        target = self.shard_path(index)
        target.parent.mkdir(parents=True, exist_ok=True)  # other processes may not have made it
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, target)

    def load(self) -> TeacherOutputs:
        """The outputs: logits (and a token task's word counts) in memory; the
        representation, the bulk of the cache, stays on disk (`ShardedRows`, rows read per
        batch), so a transfer set of millions of examples does not need it in memory."""
        import torch
        from safetensors import safe_open

        from lmshrink.distillation.shard_rows import ShardedRows

        paths = [self.shard_path(k) for k in range(self.num_shards)]
        parts: dict[str, list[Any]] = {"logits": [], "word_counts": []}
        names: set[str] = set()
        for path in paths:
            with safe_open(str(path), framework="pt") as shard:
                names = set(shard.keys())
                for name in parts:
                    if name in names:
                        parts[name].append(shard.get_tensor(name))
        logits = torch.cat(parts["logits"]).float()
        rep = ShardedRows(paths, "repr") if "repr" in names else None
        counts = torch.cat(parts["word_counts"]) if parts["word_counts"] else None
        return TeacherOutputs(logits, rep, counts)


def pooled_representation(hidden: Any, attention_mask: Any, pooling: str) -> Any:
    """Pool token states [B, T, H] into one vector per example [B, H]."""
    from lmshrink.models.pooling import masked_mean

    if pooling == "cls":
        return hidden[:, 0]
    return masked_mean(hidden, attention_mask)


class ShardCollector(Protocol):
    """Gathers what one cache shard stores from the teacher's outputs, batch by batch."""

    def teacher_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the teacher call (output_hidden_states, ...)."""

    def add(self, indices: list[int], batch: dict[str, Any], out: Any) -> None:
        """Record the outputs of the examples at `indices` (positions within the shard; the
        shard's encoding was given to the collector's maker)."""

    def tensors(self) -> dict[str, Any]:
        """The shard's tensors, once every example was added."""


def fill_cache(
    teacher: Any,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    cache: TeacherCache,
    max_length: int,
    batch_size: int,
    new_collector: Callable[[Encoded], ShardCollector],
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    desc: str = "teacher labels transfer set",
    words: bool = False,
) -> LabelStats:
    """Run the teacher over the shards of `cache` this process owns and are not on disk yet
    (shard k belongs to process k % world_size), writing each shard atomically.

    `texts` are texts (1- or 2-tuples) or, with `words`, a token task's sentences (one tuple
    of words each, encoded with `encode_words`). `new_collector(enc)` makes the collector of
    a shard encoded as `enc`. Inference mode, length-bucketed batches.
    """
    import torch

    from lmshrink.reporting.progress import Progress

    start = time.perf_counter()
    done_before = cache.done_shards()
    if rank == 0:
        cache.write_manifest()
    todo = [k for k in range(cache.num_shards) if k % world_size == rank and k not in done_before]
    was_training = teacher.training
    teacher.eval()
    bar = Progress(
        sum(min(cache.shard_size, cache.num_examples - k * cache.shard_size) for k in todo),
        desc,
        "examples",
        show=progress and bool(todo),
    )
    # SIGTERM or Ctrl-C ends labelling between batches with one line (`Interrupted`): the
    # shards written so far stay, and --resume labels only the others.
    with StopOnSignal() as stop:
        for k in todo:
            lo, hi = k * cache.shard_size, min((k + 1) * cache.shard_size, cache.num_examples)
            enc = encode(tokenizer, _split(texts[lo:hi], words), max_length)
            collector = new_collector(enc)
            with torch.inference_mode():
                for indices, batch, _ in eval_batches(enc, batch_size):
                    out = teacher(**batch, **collector.teacher_kwargs())
                    collector.add(indices, batch, out)
                    bar.update(len(indices))
                    if stop.asked:
                        bar.close()
                        _interrupted(stop.signum, cache)
            cache.write_shard(k, collector.tensors())
    bar.close()
    teacher.train(was_training)
    return LabelStats(
        reused=not todo and len(done_before) == cache.num_shards,
        shards_done_before=len(done_before),
        shards_total=cache.num_shards,
        seconds=time.perf_counter() - start,
    )


def _interrupted(signum: int, cache: TeacherCache) -> None:
    import signal

    from lmshrink.errors import Interrupted

    done = len(cache.done_shards())
    raise Interrupted(
        f"stopped by {signal.Signals(signum).name} while the teacher labelled: {done} of "
        f"{cache.num_shards} shard(s) are cached in {cache.folder}; the run labels the others "
        "with --resume",
        signum,
    )


def _split(texts: list[tuple[str, ...]], words: bool) -> Split | TokenSplit:
    if words:  # the word lists of a token task
        return TokenSplit(
            "transfer", "transfer", "the transfer set", [list(w) for w in texts], None
        )
    return Split("transfer", "transfer", "", texts, None)


class _LogitsCollector:
    """Logits [n, C] float32 and, optionally, a pooled representation [n, H] float16."""

    def __init__(self, n: int, num_labels: int, repr_layer: int | None, repr_pooling: str):
        import torch

        self.logits = torch.zeros(n, num_labels)
        self.rep: Any = None
        self.n, self.repr_layer, self.repr_pooling = n, repr_layer, repr_pooling

    def teacher_kwargs(self) -> dict[str, Any]:
        return {"output_hidden_states": self.repr_layer is not None}

    def add(self, indices: list[int], batch: dict[str, Any], out: Any) -> None:
        import torch

        self.logits[indices] = out.logits.float()  # [b, C]
        if self.repr_layer is None:
            return
        pooled = pooled_representation(
            out.hidden_states[self.repr_layer], batch["attention_mask"], self.repr_pooling
        )
        if self.rep is None:
            self.rep = torch.zeros(self.n, pooled.shape[-1], dtype=torch.float16)
        self.rep[indices] = pooled.half()  # [b, H]

    def tensors(self) -> dict[str, Any]:
        return {"logits": self.logits, **({"repr": self.rep} if self.rep is not None else {})}


class _WordCollector:
    """A token task's outputs per word, ragged: `word_counts` [n], flat `logits` [words, C]
    float32 and, optionally, the hidden state at `repr_layer` [words, H] float16, each read
    at the word's first sub-token."""

    def __init__(self, enc: Encoded, repr_layer: int | None) -> None:
        self.starts = enc.word_starts
        self.repr_layer = repr_layer
        self.logits: list[Any] = [None] * len(enc)
        self.rep: list[Any] = [None] * len(enc)

    def teacher_kwargs(self) -> dict[str, Any]:
        return {"output_hidden_states": self.repr_layer is not None}

    def add(self, indices: list[int], batch: dict[str, Any], out: Any) -> None:
        for b, i in enumerate(indices):
            starts = self.starts[i]
            self.logits[i] = out.logits[b, starts].float()  # [W_i, C]
            if self.repr_layer is not None:
                self.rep[i] = out.hidden_states[self.repr_layer][b, starts].half()  # [W_i, H]

    def tensors(self) -> dict[str, Any]:
        import torch

        counts = torch.tensor([len(s) for s in self.starts], dtype=torch.long)
        out = {"word_counts": counts, "logits": torch.cat(self.logits)}
        if self.repr_layer is not None:
            out["repr"] = torch.cat(self.rep)
        return out


def label_transfer_set(
    teacher: Any,
    tokenizer: Any,
    texts: list[tuple[str, ...]],
    cache: TeacherCache,
    max_length: int,
    batch_size: int,
    repr_layer: int | None,
    repr_pooling: str = "cls",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    words: bool = False,
) -> LabelStats:
    """Fill the cache with the teacher's logits on `texts` (this process's shards only).

    `repr_layer` indexes the teacher's hidden states (0 = embeddings, -1 = last layer); None
    stores no representation. With `words`, `texts` are a token task's word lists and the
    outputs are stored per word (`_WordCollector`; `repr_pooling` does not apply: each word
    has its own state). Call `cache.load()` once every process has finished.
    """
    num_labels = teacher.config.num_labels

    def collector(enc: Encoded) -> ShardCollector:
        if words:
            return _WordCollector(enc, repr_layer)
        return _LogitsCollector(len(enc), num_labels, repr_layer, repr_pooling)

    return fill_cache(
        teacher,
        tokenizer,
        texts,
        cache,
        max_length,
        batch_size,
        collector,
        rank,
        world_size,
        progress,
        words=words,
    )
