"""Tokenizing a split once, and batching it by length with dynamic padding.

Sentence tasks encode text (or text pairs) with one label per example. Token tasks encode
pre-split words (`encode_words`): each word's label goes on its first sub-token and every
other position gets `IGNORE_INDEX`, the convention of Hugging Face token-classification heads;
`word_starts` remembers where each word begins, so that word-level predictions can be read
back from per-token outputs, and `empty_words` which words have no sub-token at all (a word
made only of characters the tokenizer's normalizer deletes: a zero-width space, a soft
hyphen): such a word still counts as a word, read as O (`training.inference.predict_words`),
as a server reading tags at first sub-tokens reads it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from lmshrink.data.ner import TokenSplit
from lmshrink.data.ragged import RaggedInts
from lmshrink.data.splits import Split
from lmshrink.data.task_kinds import IGNORE_INDEX
from lmshrink.data.word_shapes import PAD as SHAPE_PAD
from lmshrink.data.word_shapes import word_shape_ids

# Texts tokenized per call when encoding a sentence split.
ENCODE_CHUNK = 8192
# Sentences tokenized per call when encoding a token split (each one's word ids are read
# back one by one, as Python lists: a chunk's, never the whole split's).
ENCODE_WORDS_CHUNK = 4096


@dataclasses.dataclass
class Encoded:
    """Token ids of a split, unpadded: `features[name][i]` is a list of ints (`encode` packs
    the rows as `RaggedInts`, which read back as lists; plain lists of lists work too).

    `labels[i]` is one label (sentence tasks) or a list with one label per token, IGNORE_INDEX
    where no word starts (token tasks). Token tasks only: `word_starts[i]` lists the token
    position of each kept word's first sub-token, in order, for the kept words that have one;
    `empty_words[i]` the indices (in sentence i) of the kept words that have none (None: no
    sentence has such a word). The kept words are those truncation left, so sentence i has
    len(word_starts[i]) + len(empty_words[i]) of them, its first ones."""

    features: dict[str, Sequence[list[int]]]
    labels: Sequence[int] | Sequence[float] | Sequence[list[int]] | None
    pad_token_id: int
    word_starts: Sequence[list[int]] | None = None
    empty_words: Sequence[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.features["input_ids"])

    @property
    def lengths(self) -> list[int]:
        ids = self.features["input_ids"]
        if isinstance(ids, RaggedInts):
            return ids.row_lengths()
        return [len(row) for row in ids]


def encode(
    tokenizer: Any, split: Split | TokenSplit, max_length: int, word_shapes: bool = False
) -> Encoded:
    """Tokenize every example once (pairs as a pair; a token task's sentences as their
    words), truncating to `max_length` tokens. `word_shapes` (token tasks only) adds
    `features["word_shape_ids"]`, for a model that reads them (see `encode_words`)."""
    if isinstance(split, TokenSplit):
        enc, cut = encode_words(
            tokenizer, split.words, split.labels, max_length, word_shapes=word_shapes
        )
        if cut:  # their tags are lost to the model: scores count their entities as missed
            from lmshrink.reporting.progress import warn

            warn(
                f"{split.source}: {cut:,} of {split.num_words:,} words are past "
                f"--max-length {max_length} tokens and were cut; raise --max-length to keep "
                "them."
            )
        return enc
    if word_shapes:
        raise ValueError("word shapes describe the words of a token task; this split has texts.")
    # Chunk by chunk into packed rows: the tokenizer's lists of Python ints for a whole
    # transfer set of millions of texts would take gigabytes.
    features: dict[str, Any] = {}
    texts = split.texts
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[start : start + ENCODE_CHUNK]
        firsts = [t[0] for t in chunk]
        seconds = [t[1] for t in chunk] if len(chunk[0]) > 1 else None
        _add_ids(features, tokenizer(firsts, seconds, truncation=True, max_length=max_length))
    features.setdefault("input_ids", RaggedInts())  # no texts
    return Encoded(features, split.labels, tokenizer.pad_token_id or 0)


def _add_ids(features: dict[str, Any], out: Any) -> None:
    """Append the rows of one tokenizer call's model inputs `out` to the packed `features`."""
    for name in ("input_ids", "token_type_ids"):
        if name in out:
            features.setdefault(name, RaggedInts()).extend(out[name])


def encode_words(
    tokenizer: Any,
    words: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]] | None,
    max_length: int,
    word_shapes: bool = False,
    chunk_size: int = ENCODE_WORDS_CHUNK,
) -> tuple[Encoded, int]:
    """Tokenize pre-split sentences (`words[i]` one sentence), truncating to `max_length`
    tokens; returns (the encoding, how many words truncation cut), so that the caller can
    warn. Tags go on each word's first sub-token; the other positions are IGNORE_INDEX.

    A word the tokenizer turns into no token at all (its normalizer deletes every character:
    "\\u200b", "\\xad") is listed in `empty_words`, not cut: truncation cuts a sentence at the
    first word whose first sub-token it removes, and that word and every later one are cut.

    `word_shapes=True` adds `features["word_shape_ids"]`: on every sub-token, the shape id
    (`lmshrink.data.word_shapes`) of the word it belongs to, computed from the word as
    written (an uncased tokenizer has lowercased its ids), and 0 on special tokens. Only a
    model that reads them gets them (the BiLSTM token student with `shape_dim > 0`); a
    teacher's encodings never carry them.

    Sentences are tokenized `chunk_size` at a time into packed rows (`RaggedInts`): the
    tokenizer's lists of Python ints for a transfer set of millions of sentences would take
    gigabytes. The chunk size changes nothing in the result.
    """
    features: dict[str, Any] = {}  # the model inputs, packed
    names = ["word_starts", "empty_words"]
    if word_shapes:
        names.append("word_shape_ids")
    if tags is not None:
        names.append("labels")
    rows = {name: RaggedInts() for name in names}  # the other rows, one per sentence
    cut, any_empty = 0, False
    for lo in range(0, len(words), chunk_size):
        chunk = [list(sentence) for sentence in words[lo : lo + chunk_size]]
        out = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length)
        _add_ids(features, out)
        found: dict[str, list[list[int]]] = {name: [] for name in names}
        for i, sentence in enumerate(chunk):
            sentence_tags = tags[lo + i] if tags is not None else None
            cut += _encode_sentence(out, i, sentence, sentence_tags, found)
        for name in names:
            rows[name].extend(found[name])
        any_empty = any_empty or any(found["empty_words"])
    features.setdefault("input_ids", RaggedInts())  # no sentences
    if word_shapes:
        features["word_shape_ids"] = rows["word_shape_ids"]  # collate pads it with 0: padding
    labels = rows["labels"] if tags is not None else None
    empty_words = rows["empty_words"] if any_empty else None
    enc = Encoded(features, labels, tokenizer.pad_token_id or 0, rows["word_starts"], empty_words)
    return enc, cut


def _encode_sentence(
    out: Any, i: int, sentence: list[str], tags: Sequence[int] | None, found: dict[str, list]
) -> int:
    """Append sentence `i` of the tokenizer's batch `out` to the rows of `found` that are
    asked for (its word starts, empty words, and word shapes and labels when asked);
    returns how many of its words truncation cut."""
    word_ids = out.word_ids(i)  # [T] the word of each token, None on special tokens
    if "word_shape_ids" in found:
        of_word = word_shape_ids(sentence)
        found["word_shape_ids"].append([SHAPE_PAD if w is None else of_word[w] for w in word_ids])
    first = [
        pos
        for pos, w in enumerate(word_ids)
        if w is not None and (pos == 0 or w != word_ids[pos - 1])
    ]
    found["word_starts"].append(first)
    kept = _kept_words(out.encodings[i], word_ids, len(sentence))
    have = {word_ids[pos] for pos in first}
    found["empty_words"].append([w for w in range(kept) if w not in have])
    if tags is not None:
        row = [IGNORE_INDEX] * len(word_ids)
        for pos in first:
            row[pos] = tags[word_ids[pos]]
        found["labels"].append(row)
    return len(sentence) - kept


def _kept_words(encoding: Any, word_ids: list[int | None], n: int) -> int:
    """How many of a sentence's `n` words truncation kept: all of them, or those before the
    first word whose first sub-token went into the encoding's overflow (the tokens it cut)."""
    seen = [w for w in word_ids if w is not None]
    last = seen[-1] if seen else -1
    lost = [w for part in encoding.overflowing for w in part.word_ids if w is not None and w > last]
    return min(lost, default=n)


def bucketed_batches(
    lengths: list[int], batch_size: int, rng: random.Random | None, bucket_batches: int = 50
) -> list[list[int]]:
    """Index batches of similar length, so that padding wastes little compute.

    With `rng`, indices are shuffled, then sorted by length inside windows of
    `bucket_batches` batches, and the batches are shuffled: random but length-homogeneous.
    Without `rng` (evaluation), all indices are sorted by length.
    """
    return [b.tolist() for b in bucketed_index_arrays(lengths, batch_size, rng, bucket_batches)]


def bucketed_index_arrays(
    lengths: Sequence[int], batch_size: int, rng: random.Random | None, bucket_batches: int = 50
) -> list[Any]:
    """`bucketed_batches` as int64 arrays, the same batches in the same order: 8 bytes an
    index, where a list of Python ints costs ~44 (an epoch over millions of examples)."""
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = np.arange(len(lengths), dtype=np.int64)
    # random.shuffle swaps items one by one, an array's as a list's: the draws, and so the
    # order, are those of the list this function once shuffled.
    rng.shuffle(order)  # type: ignore[arg-type]
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]  # stable, as sorted() is
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
        if isinstance(values[0], list):  # per-token labels: padding is ignored by the loss
            values = [row + [IGNORE_INDEX] * (width - len(row)) for row in values]
            batch["labels"] = torch.tensor(values, dtype=torch.long)
        else:
            dtype = torch.float if isinstance(values[0], float) else torch.long
            batch["labels"] = torch.tensor(values, dtype=dtype)
    return batch
