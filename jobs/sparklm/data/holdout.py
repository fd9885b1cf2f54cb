"""What the train/validation split holds out: whole documents, or blocks when documents are few.

Splitting by document keeps a document's paragraphs on one side, so validation
text is never a near-copy of training text. Many corpora have too few documents
for that (one book, one chat log, text8 on a single line): those are cut into
contiguous blocks at line boundaries and blocks are held out by hash instead, so
any corpus with enough text splits. Documents larger than ``MAX_DOCUMENT_BYTES``
are cut into parts in either mode, so no single row grows with the input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

KIB, MIB = 2**10, 2**20
MIN_BLOCK_BYTES = 4 * KIB
MAX_BLOCK_BYTES = MIB
# Blocks are sized so that validation gets about this many of them.
VALIDATION_BLOCKS = 8
MAX_DOCUMENT_BYTES = 8 * MIB


def min_documents(val_fraction: float) -> int:
    """Fewest documents to split by document: enough for one validation document on average."""
    return math.ceil(1 / val_fraction)


def block_bytes(text_bytes: int, val_fraction: float) -> int:
    """Block size for ``text_bytes`` of text: ~VALIDATION_BLOCKS blocks held out, 4 KiB–1 MiB."""
    target = text_bytes * val_fraction / VALIDATION_BLOCKS
    return int(min(MAX_BLOCK_BYTES, max(MIN_BLOCK_BYTES, target)))


def validation_blocks(blocks: Iterable[tuple[str, float, int]], val_fraction: float) -> set[str]:
    """Hold out the blocks with the smallest split keys until they reach ``val_fraction`` of
    the bytes; ``blocks`` are ``(block id, split key, bytes)``. With two or more blocks both
    sides are non-empty; the choice depends only on the blocks, never on partitioning."""
    ordered = sorted(blocks, key=lambda b: (b[1], b[0]))
    total = sum(size for _, _, size in ordered)
    chosen: set[str] = set()
    held = 0
    for block_id, _, size in ordered[: max(len(ordered) - 1, 0)]:
        if chosen and held >= val_fraction * total:
            break
        chosen.add(block_id)
        held += size
    return chosen
