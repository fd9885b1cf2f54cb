"""What the split holds out: documents when there are enough, else blocks by hash, by quota."""

import random

from sparklm.data.holdout import (
    MAX_BLOCK_BYTES,
    MIN_BLOCK_BYTES,
    block_bytes,
    min_documents,
    validation_blocks,
)


def test_block_size_aims_at_a_few_validation_blocks_within_bounds():
    assert block_bytes(1_115_394, 0.1) == 13_942  # tiny-shakespeare: ~8 blocks held out
    assert block_bytes(100_000_000, 0.1) == MAX_BLOCK_BYTES  # text8
    assert block_bytes(10_000, 0.1) == MIN_BLOCK_BYTES
    assert min_documents(0.1) == 10 and min_documents(0.05) == 20


def test_validation_blocks_reach_the_fraction_and_leave_training_text():
    rng = random.Random(0)
    blocks = [(f"b{i}", rng.random(), rng.randint(1000, 5000)) for i in range(400)]
    held = validation_blocks(blocks, 0.1)
    total = sum(b for _, _, b in blocks)
    share = sum(b for i, _, b in blocks if i in held) / total
    assert 0.1 <= share < 0.1 + 5000 / total
    assert held == validation_blocks(list(reversed(blocks)), 0.1)  # order of arrival is irrelevant
    smallest_keys = sorted(blocks, key=lambda b: b[1])[: len(held)]
    assert held == {i for i, _, _ in smallest_keys}


def test_two_blocks_give_one_to_each_side():
    assert validation_blocks([("a", 0.9, 10), ("b", 0.2, 10)], 0.1) == {"b"}
    assert validation_blocks([("a", 0.9, 10)], 0.1) == set()
