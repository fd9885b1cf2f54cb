"""Cleaning rules and the document split: pure functions, no Spark."""

import unicodedata

import pytest

from sparklm.data.cleaning import (
    clean_line,
    decode_utf8,
    document_id,
    split_key,
    strip_controls,
)


def test_decode_counts_only_invalid_bytes():
    assert decode_utf8("naïve".encode()) == ("naïve", 0)
    text, invalid = decode_utf8(b"ok \xff\xfe end")
    assert text == "ok \ufffd\ufffd end" and invalid == 2
    # A literal U+FFFD in valid input is not an invalid byte.
    text, invalid = decode_utf8("a\ufffd".encode() + b"\xff")
    assert text == "a\ufffd\ufffd" and invalid == 1


def test_strip_controls_nfc_tabs_and_trim():
    decomposed = "e\u0301cole"  # e + combining acute
    assert strip_controls(f"  {decomposed}\t\x07x\r  ") == ("\u00e9cole x", 1)
    assert unicodedata.is_normalized("NFC", strip_controls(decomposed)[0])
    # Zero-width joiners hold emoji sequences together: they must survive.
    family = "👩\u200d👩\u200d👧"
    assert strip_controls(family) == (family, 0)


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
    keys = [split_key(i) for i in ids]
    assert keys == [split_key(i) for i in ids]
    assert 0.08 < sum(k < 0.1 for k in keys) / len(keys) < 0.12
    assert all(0 <= k < 1 for k in keys)


def test_document_ids_differ_by_source_and_anchor():
    assert document_id("a", 0) != document_id("b", 0) != document_id("b", 1)


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_cleaning_matches_the_character_definition(seed):
    """Regex/translate cleaning equals the per-character rule it replaces (category Cc)."""
    import random

    rng = random.Random(seed)
    alphabet = [chr(c) for c in range(0, 0xA0)] + ["é", "e\u0301", "\u200d", "日", "👩", " "]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
    nfc = unicodedata.normalize("NFC", text).replace("\t", " ")
    expected = "".join(ch for ch in nfc if unicodedata.category(ch) != "Cc").strip()
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\r")
    assert strip_controls(text) == (expected, controls)
    raw = text.encode()
    binary = bool(raw) and (b"\x00" in raw or controls / len(raw) > 0.1)
    assert (clean_line(raw, 1).drop_reason == "binary") == binary
