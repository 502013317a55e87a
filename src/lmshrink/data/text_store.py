"""Compact sequences of examples, so that a transfer set of millions of texts fits in memory
as its bytes rather than as millions of Python objects.

A sentence task's example is a tuple of 1 or 2 text fields. `TextStore` keeps every field's
UTF-8 bytes in one buffer and the end offset of each field in an `array` of 8-byte ints:
a 100-character sentence costs ~110 bytes instead of ~220 as a tuple of str in a list.
A token task's example is a tuple of words, as many as the sentence has: a store made with
`any_fields=True` also keeps where each example's fields end (8 bytes more per example), so
a sentence of 14 words costs its bytes plus ~120 instead of ~900 as a tuple of str.
It reads like a list (`len`, indexing, slicing, iteration) and grows with `append` and
`extend`; `take` keeps a subset in a new store. `Concat` reads two sequences as one without
copying them. `example_hashes` and `first_occurrences` remove exact duplicates with 8 bytes
per example instead of a set of the examples.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

# Fields are hashed joined by this separator (the one TransferSet.fingerprint uses).
_FIELD_SEP = "\x1f"


class TextStore(Sequence):
    """Examples of a fixed number of fields (set by the first one added), packed as UTF-8;
    with `any_fields`, examples of any number of fields, none included (a token task's
    sentences, one field per word). A field holds any characters: fields are cut by
    offsets, never by a separator."""

    def __init__(self, examples: Iterable[tuple[str, ...]] = (), any_fields: bool = False) -> None:
        self._data = bytearray()
        self._ends = array("q")  # end offset in _data of each field, example after example
        self._fields = 0
        # any_fields: the end index in _ends of each example's fields (None: a fixed number)
        self._example_ends = array("q") if any_fields else None
        self.extend(examples)

    def append(self, example: tuple[str, ...]) -> None:
        if self._example_ends is not None:
            self._add_fields(example)
            self._example_ends.append(len(self._ends))
            return
        if not self._fields:
            if not example:
                raise ValueError("an example needs at least one text field.")
            self._fields = len(example)
        elif len(example) != self._fields:
            raise ValueError(
                f"example {len(self)} has {len(example)} field(s); this store holds "
                f"{self._fields} per example."
            )
        self._add_fields(example)

    def _add_fields(self, fields: tuple[str, ...]) -> None:
        for field in fields:
            self._data += field.encode("utf-8", "surrogatepass")
            self._ends.append(len(self._data))

    def extend(self, examples: Iterable[tuple[str, ...]]) -> None:
        for example in examples:
            self.append(example)

    def __len__(self) -> int:
        if self._example_ends is not None:
            return len(self._example_ends)
        return len(self._ends) // self._fields if self._fields else 0

    def _field_range(self, i: int) -> tuple[int, int]:
        """The indices in _ends of example i's fields: [first, stop)."""
        if self._example_ends is None:
            return i * self._fields, (i + 1) * self._fields
        return (self._example_ends[i - 1] if i else 0), self._example_ends[i]

    def _example(self, i: int) -> tuple[str, ...]:
        k, stop = self._field_range(i)
        start = self._ends[k - 1] if k else 0
        out = []
        for end in self._ends[k:stop]:
            out.append(self._data[start:end].decode("utf-8", "surrogatepass"))
            start = end
        return tuple(out)

    @overload
    def __getitem__(self, i: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, ...]]: ...
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._example(k) for k in range(*i.indices(len(self)))]
        n = len(self)
        k = int(i)
        if not -n <= k < n:
            raise IndexError(f"example {k} is out of range (the store holds {n}).")
        return self._example(k % n)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for k in range(len(self)):
            yield self._example(k)

    def __eq__(self, other: object) -> bool:
        """Equal to a list (or store) of the same examples in the same order."""
        if not isinstance(other, (TextStore, list)):
            return NotImplemented
        return len(self) == len(other) and all(
            a == tuple(b) for a, b in zip(self, other, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"TextStore({len(self):,} examples, {self.nbytes():,} bytes)"

    def take(self, indices: Iterable[int]) -> TextStore:
        """A new store with the examples at `indices`, in that order."""
        out = TextStore(any_fields=self._example_ends is not None)
        for k in indices:
            out.append(self._example(int(k)))
        return out

    def nbytes(self) -> int:
        """Memory held by the packed texts and offsets."""
        ends = self._ends.itemsize * len(self._ends)
        if self._example_ends is not None:
            ends += self._example_ends.itemsize * len(self._example_ends)
        return len(self._data) + ends


class Concat(Sequence):
    """Two sequences read as one (`a` then `b`), neither copied."""

    def __init__(self, a: Sequence, b: Sequence) -> None:
        self.a, self.b = a, b

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n, k = len(self), int(i)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise IndexError(f"item {i} is out of range ({n} items).")
        return self.a[k] if k < len(self.a) else self.b[k - len(self.a)]

    def __iter__(self) -> Iterator[Any]:
        yield from self.a
        yield from self.b


def example_hashes(examples: Iterable[Sequence[str]]) -> Any:
    """A 64-bit hash of each example (its fields, or a token task's words) [N] uint64."""
    import numpy as np

    values = array("Q")
    for fields in examples:
        digest = hashlib.blake2b(_FIELD_SEP.join(fields).encode("utf-8", "surrogatepass"))
        values.append(int.from_bytes(digest.digest()[:8], "little"))
    return np.frombuffer(values, dtype=np.uint64) if values else np.zeros(0, dtype=np.uint64)


def first_occurrences(examples: Sequence[Sequence[str]]) -> Any:
    """Sorted indices [kept] (int64) of the examples that do not equal an earlier one.

    Examples are compared by 64-bit hashes (8 bytes each, not a set of the examples); an
    example whose hash equals an earlier one's is compared with that one in full, so a hash
    collision between two different examples keeps both."""
    import numpy as np

    hashes = example_hashes(examples)
    if not len(hashes):
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    earlier = first[inverse.reshape(-1)]  # [N] the first index with each example's hash
    keep = earlier == np.arange(len(hashes))
    for k in np.flatnonzero(~keep):  # a repeat of a hash: equal to its first, or a collision
        if tuple(examples[int(k)]) != tuple(examples[int(earlier[k])]):
            keep[k] = True
    return np.flatnonzero(keep)  # [kept] int64
