"""Token-id shards: flat little-endian integer files, read whole or by token range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparklm.runtime import storage


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: half the bytes of int32 for ≤ 65536."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def read_range(
    shards: Sequence[Mapping[str, Any]], dtype: np.dtype, start: int, stop: int
) -> np.ndarray:
    """Tokens ``[start, stop)`` of the concatenation of ``shards`` (manifest entries with ``uri``
    and ``tokens``), fetched with byte-range reads so a partition downloads only its part."""
    pieces, offset = [], 0
    for shard in shards:
        lo, hi = max(start, offset), min(stop, offset + shard["tokens"])
        if lo < hi:
            fs, path = storage.filesystem(shard["uri"])
            data = fs.cat_file(
                path, start=(lo - offset) * dtype.itemsize, end=(hi - offset) * dtype.itemsize
            )
            pieces.append(np.frombuffer(data, dtype=dtype))
        offset += shard["tokens"]
    if not pieces:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(pieces).astype(np.int64)


@dataclass(frozen=True)
class TokenSlices:
    """Training tokens cut into one contiguous range per replica: all a Spark task needs to
    read its replica's tokens (the shards' manifest entries, their dtype, the ranges)."""

    shards: Sequence[Mapping[str, Any]]
    dtype: np.dtype
    ranges: Sequence[tuple[int, int]]

    def read(self, partition: int) -> np.ndarray:
        start, stop = self.ranges[partition]
        return read_range(self.shards, self.dtype, start, stop)
