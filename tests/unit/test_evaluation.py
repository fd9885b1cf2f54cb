"""Bits per byte on an evaluation set: every token scored once, bytes as the denominator."""

import math

import pytest
import torch
import torch.nn.functional as F

from sparklm.data.tokenizer import count_pretokens, special_ids, train_from_counts
from sparklm.model.evaluation import score, surprisal_nats, token_stream, unigram_surprisal_bits
from sparklm.model.gpt import GPT, GPTConfig

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3, "Ünïcödé and 日本語 text.",
         "Short."]  # fmt: skip


def uniform_model(vocab_size: int, context_len: int = 8) -> GPT:
    """A model whose every prediction is uniform: its loss is ln(V) per token, exactly."""
    model = GPT(GPTConfig(vocab_size=vocab_size, context_len=context_len, n_layer=1, n_head=2,
                          n_embd=16))  # fmt: skip
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: the embedding is zero too, so logits are all 0
    return model.eval()


@pytest.mark.parametrize("length", [2, 8, 9, 17, 30])
def test_every_token_after_the_first_is_scored_exactly_once(length):
    model = uniform_model(50)
    stream = torch.randint(0, 50, (length,))
    assert surprisal_nats(model, stream) == pytest.approx((length - 1) * math.log(50), rel=1e-6)


def test_a_stream_that_fits_one_window_is_plain_cross_entropy():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context_len=16, n_layer=1, n_head=2, n_embd=16)).eval()
    stream = torch.randint(0, 40, (17,))
    logits, _ = model(stream[:-1].unsqueeze(0))
    expected = F.cross_entropy(logits[0], stream[1:], reduction="sum").item()
    assert surprisal_nats(model, stream) == pytest.approx(expected, rel=1e-6)


def test_bits_per_byte_divides_by_the_texts_bytes_whatever_the_tokenizer():
    small = train_from_counts(count_pretokens(TEXTS), 260)  # bytes only
    large = train_from_counts(count_pretokens(TEXTS), 320)  # merges: fewer tokens
    text_bytes = sum(len(t.encode()) for t in TEXTS)
    results = []
    for tokenizer in (small, large):
        eod = special_ids(tokenizer)["eod"]
        stream = token_stream(tokenizer, TEXTS, eod)
        assert stream[0] == eod and (stream == eod).sum() == len(TEXTS) + 1
        s = score(uniform_model(tokenizer.get_vocab_size()), tokenizer, TEXTS, eod)
        assert s.bytes == text_bytes and s.tokens == len(stream) - 1
        expected = s.tokens * math.log2(tokenizer.get_vocab_size()) / text_bytes
        assert s.bits_per_byte == pytest.approx(expected, rel=1e-6)
        results.append(s)
    assert results[1].tokens < results[0].tokens  # the same bytes, cut differently


def test_the_unigram_baseline_is_the_entropy_of_the_tokens_after_the_first():
    eod = 9
    stream = torch.tensor([eod, 1, 1, 2, 2, 2, 2, 3, 3])  # p = 2/8, 4/8, 2/8 after the first
    assert unigram_surprisal_bits(stream) == pytest.approx(2 * 2 + 4 * 1 + 2 * 2)
    assert unigram_surprisal_bits(torch.tensor([eod, 5, 5, 5])) == 0  # one token: no surprise
    tokenizer = train_from_counts(count_pretokens(TEXTS), 300)
    eod = special_ids(tokenizer)["eod"]
    s = score(uniform_model(tokenizer.get_vocab_size()), tokenizer, TEXTS, eod)
    assert 0 < s.unigram_bits_per_byte < s.bits_per_byte  # a uniform guess is worse
    assert s.to_dict()["unigram_bits_per_byte"] == round(s.unigram_bits_per_byte, 6)
