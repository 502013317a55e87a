"""The packed sequences that let a large transfer set fit in memory: texts (`TextStore`),
token ids (`RaggedInts`), cached teacher rows read from disk (`ShardedRows`), and
deduplication by hashes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lmshrink.data import text_store
from lmshrink.data.ragged import RaggedInts
from lmshrink.data.text_store import Concat, TextStore, first_occurrences
from lmshrink.distillation.shard_rows import ShardedRows


def random_texts(n: int, fields: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    alphabet = ["a", "b", "é", "中", "\U0001f600", " ", "\t", "\x1f", ""]
    return [
        tuple(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(fields)
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("fields", [1, 2])
def test_a_text_store_reads_back_what_went_in(fields):
    texts = random_texts(300, fields, seed=fields)
    store = TextStore(texts)
    assert len(store) == 300 and store == texts and list(store) == texts
    assert store[7] == texts[7] and store[-1] == texts[-1]
    assert store[10:20] == texts[10:20] and store[::-7] == texts[::-7]
    assert store.take([5, 3, 5]) == [texts[5], texts[3], texts[5]]
    with pytest.raises(IndexError):
        store[300]
    with pytest.raises(ValueError, match="field"):
        store.append(("x",) * (fields + 1))
    # packed: the UTF-8 bytes and 8 bytes per field
    assert store.nbytes() == sum(len(f.encode()) for t in texts for f in t) + 8 * fields * 300


def test_concat_reads_two_sequences_as_one():
    a, b = TextStore([("x",), ("y",)]), [("z",)]
    both = Concat(a, b)
    assert len(both) == 3 and list(both) == [("x",), ("y",), ("z",)]
    assert both[2] == ("z",) and both[-3] == ("x",) and both[1:] == [("y",), ("z",)]
    with pytest.raises(IndexError):
        both[3]


def test_ragged_ints_read_back_rows_and_lengths():
    rng = random.Random(0)
    rows = [[rng.randrange(50_000) for _ in range(rng.randint(0, 9))] for _ in range(500)]
    packed = RaggedInts()
    for start in range(0, 500, 64):  # appended chunk by chunk, as encode does
        packed.extend(rows[start : start + 64])
    assert len(packed) == 500 and packed == rows
    assert packed.row_lengths() == [len(r) for r in rows]
    assert packed[-1] == rows[-1] and packed[3:6] == rows[3:6]
    assert packed.nbytes() == 4 * sum(map(len, rows)) + 8 * 500


def test_ragged_ints_keep_no_ids_while_every_row_is_zeros():
    # a single-text split's token type ids: only the row ends are stored
    zeros = [[0] * n for n in (3, 0, 5)]
    packed = RaggedInts(zeros)
    assert packed == zeros and packed.row_lengths() == [3, 0, 5]
    assert packed.nbytes() == 8 * 3
    # a row with another value, after rows were read: the zeros before it are written out
    packed.extend([[0, 1], [0]])
    assert packed == [*zeros, [0, 1], [0]] and packed[-2] == [0, 1]
    assert packed.nbytes() == 4 * 11 + 8 * 5


def test_first_occurrences_keeps_the_first_of_each_example():
    texts = [("a",), ("b",), ("a",), ("c",), ("b",), ("a",)]
    assert first_occurrences(texts).tolist() == [0, 1, 3]
    assert first_occurrences([]).tolist() == []


def test_a_hash_collision_keeps_both_examples(monkeypatch):
    # every example hashes alike: only a full comparison can tell them apart
    monkeypatch.setattr(
        text_store, "example_hashes", lambda examples: np.zeros(len(examples), dtype=np.uint64)
    )
    texts = [("a",), ("b",), ("a",), ("c",)]
    assert first_occurrences(texts).tolist() == [0, 1, 3]


def test_sharded_rows_read_any_rows_across_shards(tmp_path):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 5, generator=gen).half() for n in (4, 1, 0, 7)]
    paths = []
    for k, part in enumerate(parts):
        paths.append(tmp_path / f"shard-{k}.safetensors")
        save_file({"logits": torch.zeros(len(part), 2), "repr": part}, str(paths[-1]))
    full = torch.cat(parts).float()
    rows = ShardedRows(paths, "repr")
    assert rows.shape == (12, 5) and len(rows) == 12
    index = [11, 0, 4, 4, 5, -1]
    assert torch.equal(rows[index], full[index])
    assert torch.equal(rows[torch.tensor(index)], full[index])
    assert torch.equal(rows[3:9], full[3:9]) and torch.equal(rows.load(), full)
    assert torch.equal(rows[5], full[5])
    assert rows[[]].shape == (0, 5)
    with pytest.raises(IndexError):
        rows[[12]]
