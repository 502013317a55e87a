"""Rows of ints of different lengths (token ids), packed into two arrays.

A list of lists of Python ints costs ~36 bytes a token; `RaggedInts` keeps the ids in one
int32 array and each row's end in an int64 one (4 bytes a token, 8 a row), so the token ids
of a transfer set of millions of sentences fit in memory. Rows read back as lists, as
`data.batching.collate` pads them.

Rows that are all zeros (a single-text split's token type ids, as BERT's tokenizer gives
them) keep no ids at all, only their ends: while every row added is zeros, nothing else is
stored, and the zeros are written out only if a row with another value comes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any


class RaggedInts(Sequence):
    """Rows of ints, appended chunk by chunk (`extend`), read back as lists."""

    def __init__(self, rows: Iterable[Sequence[int]] = ()) -> None:
        import numpy as np

        self._chunks: list[Any] = []  # int32 arrays not yet joined into _flat
        self._flat = np.zeros(0, dtype=np.int32)
        self._ends = np.zeros(0, dtype=np.int64)
        self._pending_ends: list[Any] = []
        self._size = 0
        self._zeros = True  # every id so far is 0: _flat and _chunks hold none of them
        self.extend(rows)

    def extend(self, rows: Iterable[Sequence[int]]) -> None:
        import numpy as np

        rows = list(rows)
        if not rows:
            return
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
        if self._zeros and flat.any():  # the first id that is not 0: write the zeros out
            self._zeros = False
            self._chunks.insert(0, np.zeros(self._size, dtype=np.int32))  # _flat is empty
        if not self._zeros:
            self._chunks.append(flat)
        self._pending_ends.append(self._size + np.cumsum(lengths))
        self._size += int(lengths.sum())

    def _join(self) -> None:
        import numpy as np

        if self._chunks:
            self._flat = np.concatenate([self._flat, *self._chunks])
            self._chunks = []
        if self._pending_ends:
            self._ends = np.concatenate([self._ends, *self._pending_ends])
            self._pending_ends = []

    def __len__(self) -> int:
        return len(self._ends) + sum(len(e) for e in self._pending_ends)

    def row_lengths(self) -> list[int]:
        """Each row's length."""
        import numpy as np

        self._join()
        return np.diff(self._ends, prepend=0).tolist()

    def __getitem__(self, i: Any) -> Any:
        self._join()
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n, k = len(self), int(i)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise IndexError(f"row {i} is out of range ({n} rows).")
        start, end = (int(self._ends[k - 1]) if k else 0), int(self._ends[k])
        return [0] * (end - start) if self._zeros else self._flat[start:end].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(len(self)):
            yield self[k]

    def __eq__(self, other: object) -> bool:
        """Equal to a list (or RaggedInts) of the same rows."""
        if not isinstance(other, (RaggedInts, list)):
            return NotImplemented
        return len(self) == len(other) and all(
            a == list(b) for a, b in zip(self, other, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def nbytes(self) -> int:
        """Memory held by the ids and row ends."""
        self._join()
        return self._flat.nbytes + self._ends.nbytes
