"""Line-level text cleaning: pure functions the preprocess job maps over partitions.

Every step is a C-level pass over the line (``str.translate``, a compiled regex,
``unicodedata.normalize``): cleaning is linear in the line's length, never a Python
loop per character.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

REPLACEMENT = "\ufffd"
_UTF8_REPLACEMENT = REPLACEMENT.encode()
# A line is binary when more than this share of its bytes are invalid UTF-8 or control
# characters. Real text with a few broken bytes stays; PNGs and random bytes do not.
BINARY_SHARE = 0.10
# Unicode category Cc is exactly U+0000–U+001F and U+007F–U+009F. Tabs become spaces;
# carriage returns (CRLF files) are removed without counting against the line.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\x9f]")
_TAB_AND_CR = str.maketrans({"\t": " ", "\r": None})


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


def strip_controls(text: str) -> tuple[str, int]:
    """NFC-normalise, turn tabs into spaces, drop control characters, trim the ends; and
    count the controls other than tab and carriage return it held.

    Format characters (category Cf: zero-width joiners, bidi marks) are kept:
    emoji sequences and right-to-left scripts need them.
    """
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text, controls = _CONTROLS.subn("", text)
    return text.translate(_TAB_AND_CR).strip(), controls


def clean_line(raw: bytes, min_chars: int) -> CleanLine:
    """Clean one line of bytes (without its newline)."""
    text, invalid = decode_utf8(raw)
    text, controls = strip_controls(text)
    if raw and (b"\x00" in raw or (invalid + controls) / len(raw) > BINARY_SHARE):
        return CleanLine("", "binary", invalid)
    if not text:
        return CleanLine("", "empty", invalid)
    if len(text) < min_chars:
        return CleanLine("", "too_short", invalid)
    return CleanLine(text, None, invalid)


def document_id(source: str, anchor: str | int) -> str:
    """A stable id for a document: its source's name and where in the source it starts."""
    return hashlib.sha1(f"{source}#{anchor}".encode()).hexdigest()[:20]


def split_key(doc_id: str) -> float:
    """Map a document id to a uniform number in [0, 1) that never changes between runs.

    A document is held out when its key is below the validation fraction. The
    preprocess job computes the same number in Spark SQL (``split_key_column``).
    """
    digest = hashlib.sha256(f"split:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
