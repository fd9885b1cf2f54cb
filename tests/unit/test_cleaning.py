"""Cleaning rules and the document split: pure functions, no Spark."""

import unicodedata

import pytest

from sparklm.cleaning import (
    assign_split,
    clean_line,
    decode_utf8,
    document_id,
    normalize_text,
    split_key,
)


def test_decode_counts_only_invalid_bytes():
    assert decode_utf8("naïve".encode()) == ("naïve", 0)
    text, invalid = decode_utf8(b"ok \xff\xfe end")
    assert text == "ok \ufffd\ufffd end" and invalid == 2
    # A literal U+FFFD in valid input is not an invalid byte.
    text, invalid = decode_utf8("a\ufffd".encode() + b"\xff")
    assert text == "a\ufffd\ufffd" and invalid == 1


def test_normalize_nfc_controls_tabs_and_trim():
    decomposed = "e\u0301cole"  # e + combining acute
    assert normalize_text(f"  {decomposed}\t\x07x  ") == "\u00e9cole x"
    assert unicodedata.is_normalized("NFC", normalize_text(decomposed))
    # Zero-width joiners hold emoji sequences together: they must survive.
    family = "👩\u200d👩\u200d👧"
    assert normalize_text(family) == family


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   \t  ", "empty"),
        (b"short", "too_short"),
        (b"\x89PNG\r\n\x1a\x00\x00\x00\rIHDR", "binary"),
        (bytes(range(128, 256)), "binary"),
        (b"A perfectly ordinary sentence.", None),
    ],
)
def test_drop_reasons(raw, reason):
    assert clean_line(raw, min_chars=8).drop_reason == reason


def test_a_few_bad_bytes_in_text_are_kept_and_counted():
    line = clean_line(b"A long line of real text with one bad byte \xff in the middle.", 8)
    assert line.drop_reason is None
    assert line.invalid_bytes == 1 and "\ufffd" in line.text


def test_document_split_is_deterministic_and_near_the_fraction():
    ids = [document_id("file:///corpus.txt", offset) for offset in range(5000)]
    first = [assign_split(i, 0.1) for i in ids]
    assert first == [assign_split(i, 0.1) for i in ids]
    share = first.count("val") / len(first)
    assert 0.08 < share < 0.12
    assert all(0 <= split_key(i) < 1 for i in ids)


def test_document_ids_differ_by_source_and_anchor():
    assert document_id("a", 0) != document_id("b", 0) != document_id("b", 1)
