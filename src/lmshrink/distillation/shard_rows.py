"""Rows of one tensor stored across the teacher cache's shards, read from disk per batch.

The teacher's pooled representation of a transfer set is [N, D] float16 on disk: 1.5 GB for
2M sentences at D = 384, twice that as float32 in memory. `ShardedRows` keeps none of it in
memory: indexing reads just the rows asked for with `os.pread` at their offsets in the
shards' safetensors files (a memory map would be as fast, but every row an epoch touches
would count in the process's resident memory) and returns them as a float32 tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_DTYPES = {"F16": "float16", "BF16": None, "F32": "float32", "F64": "float64", "I64": "int64"}


def _locate(path: Path, name: str) -> tuple[int, tuple[int, ...], str]:
    """(byte offset, shape, numpy dtype) of tensor `name` in the safetensors file `path`."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    entry = header[name]
    dtype = _DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}, not readable here.")
    return 8 + size + entry["data_offsets"][0], tuple(entry["shape"]), dtype


class ShardedRows:
    """Rows [N, D] of tensor `name` in `paths` (shard after shard), as float32 tensors."""

    def __init__(self, paths: Sequence[str | Path], name: str) -> None:
        import numpy as np

        self.paths = [Path(p) for p in paths]
        located = [_locate(p, name) for p in self.paths]
        self.offsets = [offset for offset, _, _ in located]
        shapes = [shape for _, shape, _ in located]
        self.dtype = np.dtype(located[0][2])
        self.width = int(np.prod(shapes[0][1:], dtype=np.int64)) if shapes else 0
        self.row_shape = shapes[0][1:] if shapes else ()
        self.row_bytes = self.width * self.dtype.itemsize
        self.bounds = np.cumsum([0] + [s[0] for s in shapes])  # [shards + 1] first rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def __getitem__(self, index: Any) -> Any:
        """Rows at `index` (a list, array or tensor of ints, a slice, or one int) as a float32
        tensor [len(index), ...] ([...] for one int)."""
        import numpy as np
        import torch

        one = isinstance(index, (int, np.integer))
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = np.asarray(index.cpu() if torch.is_tensor(index) else index, dtype=np.int64)
            rows = rows.reshape(-1)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range ({len(self)} rows).")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), self.width), dtype=self.dtype)
        shard_of = np.searchsorted(self.bounds, rows, side="right") - 1
        for k in np.unique(shard_of):
            at = np.flatnonzero(shard_of == k)
            first = int(rows[at[0]]) - int(self.bounds[k])
            fd = os.open(self.paths[k], os.O_RDONLY)
            try:
                if np.all(np.diff(rows[at]) == 1):  # a run of rows (a slice): one read
                    offset = self.offsets[k] + first * self.row_bytes
                    data = os.pread(fd, self.row_bytes * len(at), offset)
                    out[at] = np.frombuffer(data, self.dtype).reshape(len(at), self.width)
                    continue
                for j in at:
                    offset = self.offsets[k] + (int(rows[j]) - int(self.bounds[k])) * self.row_bytes
                    out[j] = np.frombuffer(os.pread(fd, self.row_bytes, offset), self.dtype)
            finally:
                os.close(fd)
        tensor = torch.from_numpy(out.astype(np.float32)).view(len(rows), *self.row_shape)
        return tensor[0] if one else tensor

    def load(self) -> Any:
        """Every row, in memory (float32)."""
        return self[slice(None)]
