"""Token shards read by range: what a replica holds of its tokens."""

import tracemalloc

import numpy as np
import pytest

from sparklm.data.token_shards import read_range, token_dtype


def write_shards(tmp_path, sizes, dtype):
    """Shards of consecutive ids (mod 60,000), as tokenize writes them; their manifest entries."""
    shards, start = [], 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"part-{i:05d}.bin"
        path.write_bytes((np.arange(start, start + n) % 60_000).astype(dtype).tobytes())
        shards.append({"uri": f"file://{path}", "tokens": n})
        start += n
    return shards


@pytest.mark.parametrize("vocab_size", [60_000, 100_000])
@pytest.mark.parametrize(("start", "stop"), [(0, 10), (5, 25), (9, 31), (30, 30), (0, 0)])
def test_a_range_spanning_shards_is_read_as_int32_ids(tmp_path, vocab_size, start, stop):
    dtype = token_dtype(vocab_size)
    shards = write_shards(tmp_path, [10, 0, 20, 1], dtype)
    got = read_range(shards, dtype, start, stop)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.arange(start, stop) % 60_000)


def test_a_replicas_tokens_cost_four_bytes_each_while_read(tmp_path):
    """int32, filled in place: no int64 copy (8 bytes a token) and no concatenation."""
    dtype = token_dtype(60_000)
    shards = write_shards(tmp_path, [500_000] * 4, dtype)
    tracemalloc.start()
    tokens = read_range(shards, dtype, 0, 2_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(tokens) == 2_000_000
    assert peak < 2_000_000 * 4 + 3 * 500_000 * 2  # the result, and a piece read (copied once)
