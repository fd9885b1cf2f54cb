"""The byte-level BPE: lossless, and trained from counts exactly as from the text itself."""

import json
import os
import pty

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from sparklm.data.tokenizer import (
    MAX_PRETOKEN_BYTES,
    SPECIAL_TOKENS,
    count_pretokens,
    decode,
    encode_documents,
    pre_tokenizer,
    special_ids,
    train_from_counts,
)

HOSTILE = [
    "plain ASCII, with punctuation!",
    "emoji 👩\u200d👩\u200d👧 and flags 🇺🇦 and skin tones 👍🏽",
    "日本語のテキストと中文文本",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937",
    "right-to-left: \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "whitespace:  two  spaces,\u00a0nbsp, trailing ",
    "symbols: ▁ Ġ Ċ \ufffd \U0001d54f",
    "new\nlines\n\nand paragraphs",
]


@pytest.fixture(scope="module")
def wikitext_lines():
    """600 lines of real Wikipedia text: the first article pages of the default corpus (a
    dump shipped in the gensim wheel), markup stripped as preprocess strips it."""
    from sparklm.data import mediawiki
    from sparklm.data.decompression import ReadLimits, codec_from_name
    from sparklm.runtime import storage
    from sparklm.settings import DEFAULT_CORPUS

    uri = storage.input_uri(DEFAULT_CORPUS)
    lines: list[str] = []
    for page in mediawiki.dump_pages(uri, codec_from_name(uri), ReadLimits()):
        if page.namespace == mediawiki.ARTICLE_NAMESPACE and not page.redirect:
            lines += mediawiki.wiki_to_text(page.text).split("\n")
        if len(lines) >= 600:
            return lines[:600]
    raise AssertionError(f"the default corpus holds only {len(lines)} lines of article text")


@pytest.fixture(scope="module")
def tokenizer(wikitext_lines):
    return train_from_counts(count_pretokens(wikitext_lines), 800)


@pytest.mark.parametrize("text", HOSTILE)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert decode(tokenizer, ids) == text


def test_counts_training_equals_training_on_the_text(wikitext_lines, tokenizer):
    """The distributed path (count, then train) must learn what the library learns directly."""
    direct = Tokenizer(models.BPE())
    direct.pre_tokenizer = pre_tokenizer()
    direct.train_from_iterator(
        wikitext_lines,
        trainer=trainers.BpeTrainer(
            vocab_size=800,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    ours = json.loads(tokenizer.to_str())["model"]
    theirs = json.loads(direct.to_str())["model"]
    assert ours["vocab"] == theirs["vocab"] and ours["merges"] == theirs["merges"]


def test_documents_are_separated_by_end_of_document(tokenizer):
    eod = special_ids(tokenizer)["eod"]
    ids = encode_documents(tokenizer, ["first doc", "second doc"], eod, np.dtype("<u2"), check=2)
    assert ids.dtype == np.dtype("<u2")
    assert list(ids).count(eod) == 2 and ids[-1] == eod
    first = ids[: list(ids).index(eod)].tolist()
    assert decode(tokenizer, first) == "first doc"


def test_special_ids_name_the_end_of_document_and_padding_tokens_or_say_they_are_missing(
    tokenizer,
):
    assert special_ids(tokenizer) == {"eod": tokenizer.token_to_id(SPECIAL_TOKENS[0]),
                                      "pad": tokenizer.token_to_id(SPECIAL_TOKENS[1])}  # fmt: skip
    bare = Tokenizer(models.BPE())
    with pytest.raises(ValueError, match="^tokenizer lacks the end-of-document or padding token$"):
        special_ids(bare)


def test_vocab_size_floor_is_explained():
    with pytest.raises(ValueError, match="at least 258"):
        train_from_counts({"a": 1}, 100)
    assert train_from_counts({"a": 1}, 258).get_vocab_size() == 258  # the floor itself is fine


def test_every_counted_pretoken_is_learned_from_even_one_seen_once():
    """Each count is fed as that many words: "ab" (3 times) and "cd" (once) are the two merges
    a 260-token vocabulary has room for, and nothing else is made up."""
    vocab = set(train_from_counts({"ab": 3, "cd": 1}, 260).get_vocab())
    learned = vocab - set(pre_tokenizers.ByteLevel.alphabet()) - set(SPECIAL_TOKENS)
    assert learned == {"ab", "cd"}


def test_vocabulary_holds_every_byte(tokenizer):
    vocab = tokenizer.get_vocab()
    assert all(symbol in vocab for symbol in pre_tokenizers.ByteLevel.alphabet())
    assert tokenizer.get_vocab_size() == 800


def test_a_lossy_tokenizer_is_caught_by_the_round_trip_check(tokenizer):
    from tokenizers import Tokenizer, normalizers

    lossy = Tokenizer.from_str(tokenizer.to_str())
    lossy.normalizer = normalizers.Lowercase()
    with pytest.raises(ValueError, match="round trip failed on document 1"):
        encode_documents(lossy, ["all lower", "Has Capitals"], 0, np.dtype("<u2"), check=2)


def test_the_round_trip_checks_exactly_the_first_documents_and_names_one_by_its_place(
    tokenizer, monkeypatch
):
    """Across encoding batches: the check covers documents 0..check-1 of the whole list, and a
    failure names the document's index in that list, not in its batch."""
    from tokenizers import normalizers

    from sparklm.data import tokenizer as bpe

    lossy = Tokenizer.from_str(tokenizer.to_str())
    lossy.normalizer = normalizers.Lowercase()
    monkeypatch.setattr(bpe, "ENCODE_BATCH_BYTES", 16)  # a batch per document or two
    documents = ["lower one", "lower two", "lower three", "Capital four", "lower five"]
    u2 = np.dtype("<u2")
    with pytest.raises(ValueError, match=r"round trip failed on document 3: 'Capital four'$"):
        encode_documents(lossy, documents, 0, u2, check=5)
    # Document 3 is past the first three checked: not decoded again, so not caught.
    assert np.count_nonzero(encode_documents(lossy, documents, 0, u2, check=3) == 0) == 5


class RecordingBatches:
    """A tokenizer that remembers how many documents each ``encode_batch_fast`` call got."""

    def __init__(self, tokenizer):
        self.tokenizer, self.batches = tokenizer, []

    def encode_batch_fast(self, batch, **kwargs):
        self.batches.append(len(batch))
        return self.tokenizer.encode_batch_fast(batch, **kwargs)


def test_documents_are_encoded_in_batches_of_about_the_batch_bytes_never_more_at_once(
    tokenizer, monkeypatch
):
    """The encodings held at once are bounded: a batch closes as soon as its text reaches
    ENCODE_BATCH_BYTES, and the next one starts empty."""
    from sparklm.data import tokenizer as bpe

    monkeypatch.setattr(bpe, "ENCODE_BATCH_BYTES", 8)
    recording = RecordingBatches(tokenizer)
    documents = ["a" * 7, "b", "c" * 4, "d" * 3, "e"]  # 7+1 | 4+3+1 bytes
    ids = encode_documents(recording, documents, 0, np.dtype("<u2"), check=0)
    assert recording.batches == [2, 3]
    assert np.count_nonzero(ids == 0) == 5


def test_a_partition_without_documents_encodes_to_an_empty_array_of_the_shard_dtype(tokenizer):
    ids = encode_documents(tokenizer, [], 0, np.dtype("<u2"), check=5)
    assert ids.shape == (0,) and ids.dtype == np.dtype("<u2")


def test_long_pretokens_are_counted_in_capped_pieces_and_still_encode_losslessly():
    """A 16 KB "word" counted as it is costs the BPE trainer gigabytes (128 KB aborts it)."""
    word = "ab" * 8192
    counts = count_pretokens([f"doc {i}: {word}" for i in range(64)])
    assert max(len(piece) for piece in counts) == MAX_PRETOKEN_BYTES
    assert counts["Ġ" + "ab" * 63 + "a"] == 64  # the first piece keeps its space (Ġ)
    # The pieces are consecutive, not overlapping: they add up to the word.
    long_word = "x" * (2 * MAX_PRETOKEN_BYTES + 10)
    assert count_pretokens([long_word]) == {"x" * MAX_PRETOKEN_BYTES: 2, "x" * 10: 1}
    tokenizer = train_from_counts(counts, 400)
    text = f"doc 1: {word}"
    assert decode(tokenizer, tokenizer.encode(text, add_special_tokens=False).ids) == text


def test_documents_are_encoded_in_batches_with_the_same_ids(tokenizer, monkeypatch):
    from sparklm.data import tokenizer as bpe

    documents = [f"document {i} has some text" for i in range(50)]
    whole = encode_documents(tokenizer, documents, 0, np.dtype("uint16"), check=50)
    monkeypatch.setattr(bpe, "ENCODE_BATCH_BYTES", 64)
    assert np.array_equal(encode_documents(tokenizer, documents, 0, np.dtype("uint16"), check=50),
                          whole)  # fmt: skip
    assert np.count_nonzero(whole == 0) == 50


def test_a_document_is_its_text_tokens_then_one_end_of_document_even_with_a_post_processor(
    tokenizer,
):
    """The Hugging Face export adds a post-processor that starts every text with
    end-of-document; encoding a corpus with such a tokenizer must not add it before each
    document too: the shards hold each document's own tokens, then one end-of-document."""
    eod = special_ids(tokenizer)["eod"]
    exported = Tokenizer.from_str(tokenizer.to_str())
    exported.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS[0]} $A", special_tokens=[(SPECIAL_TOKENS[0], eod)]
    )
    documents = ["first doc", "second doc"]
    ids = encode_documents(exported, documents, eod, np.dtype("<u2"), check=2).tolist()
    text_ids = [tokenizer.encode(d, add_special_tokens=False).ids for d in documents]
    assert ids == text_ids[0] + [eod] + text_ids[1] + [eod]


def test_a_round_trip_failure_quotes_only_the_first_80_characters_of_the_document(tokenizer):
    """A shard's document can be megabytes long; the error names it by its start."""
    lossy = Tokenizer.from_str(tokenizer.to_str())
    lossy.normalizer = normalizers.Lowercase()
    document = "Capitals " + "".join(f"w{i:03d} " for i in range(200))
    with pytest.raises(ValueError) as failed:
        encode_documents(lossy, [document], 0, np.dtype("<u2"), check=1)
    start = "Capitals w000 w001 w002 w003 w004 w005 w006 w007 w008 w009 w010 w011 w012 w013 w"
    assert str(failed.value) == f"tokenizer round trip failed on document 0: {start!r}"


def test_learning_a_vocabulary_draws_no_progress_bar_even_on_a_terminal(monkeypatch):
    """The BPE trainer draws a progress bar only when stderr is a terminal (and TERM names
    one); a tokenize job started by hand from a shell would get it between its log lines."""
    monkeypatch.setenv("TERM", "xterm")
    terminal, stderr_end = pty.openpty()
    saved = os.dup(2)
    try:
        os.dup2(stderr_end, 2)
        train_from_counts({"ab": 3, "cd": 1}, 260)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    os.set_blocking(terminal, False)
    try:
        drawn = os.read(terminal, 4096)
    except BlockingIOError:  # nothing was written to the terminal
        drawn = b""
    finally:
        os.close(stderr_end)
        os.close(terminal)
    assert drawn == b""
