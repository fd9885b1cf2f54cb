"""Line-level text cleaning: pure functions the preprocess job maps over partitions."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

REPLACEMENT = "\ufffd"
_UTF8_REPLACEMENT = REPLACEMENT.encode()
# A line is binary when more than this share of its bytes are invalid UTF-8 or control
# characters. Real text with a few broken bytes stays; PNGs and random bytes do not.
BINARY_SHARE = 0.10


@dataclass(frozen=True)
class CleanLine:
    """The outcome of cleaning one raw line: its text, or the reason it was dropped."""

    text: str
    drop_reason: str | None
    invalid_bytes: int


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid bytes with U+FFFD; return the text and how many were bad."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count(REPLACEMENT) - raw.count(_UTF8_REPLACEMENT)


def normalize_text(text: str) -> str:
    """NFC-normalise, turn tabs into spaces, drop control characters, trim the ends.

    Format characters (category Cf: zero-width joiners, bidi marks) are kept:
    emoji sequences and right-to-left scripts need them.
    """
    text = unicodedata.normalize("NFC", text).replace("\t", " ")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return text.strip()


def clean_line(raw: bytes, min_chars: int) -> CleanLine:
    """Clean one line of bytes (without its newline)."""
    text, invalid = decode_utf8(raw)
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\r")
    if raw and (b"\x00" in raw or (invalid + controls) / len(raw) > BINARY_SHARE):
        return CleanLine("", "binary", invalid)
    text = normalize_text(text)
    if not text:
        return CleanLine("", "empty", invalid)
    if len(text) < min_chars:
        return CleanLine("", "too_short", invalid)
    return CleanLine(text, None, invalid)


def document_id(source: str, anchor: str | int) -> str:
    """A stable id for a document: its source URI and where in the source it starts."""
    return hashlib.sha1(f"{source}#{anchor}".encode()).hexdigest()[:20]


def split_key(doc_id: str) -> float:
    """Map a document id to a uniform number in [0, 1) that never changes between runs."""
    digest = hashlib.sha256(f"split:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(doc_id: str, val_fraction: float) -> str:
    """Put a whole document in ``val`` or ``train``; lines of one document never straddle."""
    return "val" if split_key(doc_id) < val_fraction else "train"
