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
    and ``tokens``), fetched with byte-range reads so a partition downloads only its part.

    Returned as int32 (every vocabulary id fits), filled in place piece by piece: a replica
    holds its range at 4 bytes a token, with one stored piece beside it while reading, never
    the int64 copy the model's targets need (``sample_batch`` widens only its windows).
    """
    out: np.ndarray = np.empty(max(0, stop - start), dtype=np.int32)
    offset, filled = 0, 0
    for shard in shards:
        lo, hi = max(start, offset), min(stop, offset + shard["tokens"])
        if lo < hi:
            fs, path = storage.filesystem(shard["uri"])
            data = fs.cat_file(
                path, start=(lo - offset) * dtype.itemsize, end=(hi - offset) * dtype.itemsize
            )
            piece = np.frombuffer(data, dtype=dtype)
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
        offset += shard["tokens"]
    return out[:filled]


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
