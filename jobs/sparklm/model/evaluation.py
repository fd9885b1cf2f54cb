"""Bits per byte of a model on an evaluation set, whatever its tokenizer.

Each model reads the same documents through its own tokenizer, as the training stream
has them: an end-of-document token, the document's tokens, an end-of-document token,
the next document… Every token after the first is predicted (the end-of-document
tokens too: both models must say where each document ends), and the total surprisal in
bits is divided by the UTF-8 bytes of the documents. Two tokenizers cut the same bytes
differently, but the bytes, and so the denominator, are the same: the numbers compare.

Each score comes with a baseline on the same tokens: a unigram model, which knows only how
often each token occurs in them. A model that does no better has learned nothing about
order; the promotion gate holds a first version to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sparklm.model.gpt import GPT


@dataclass(frozen=True)
class Score:
    """One model on one evaluation set."""

    bits_per_byte: float
    nats_per_token: float
    tokens: int
    bytes: int
    unigram_bits_per_byte: float

    def to_dict(self) -> dict[str, float | int]:
        return {"bits_per_byte": round(self.bits_per_byte, 6),
                "nats_per_token": round(self.nats_per_token, 6),
                "tokens": self.tokens, "bytes": self.bytes,
                "unigram_bits_per_byte": round(self.unigram_bits_per_byte, 6)}  # fmt: skip


def token_stream(tokenizer, documents: Sequence[str], eod: int) -> Tensor:
    """``[eod, doc₁…, eod, doc₂…, eod, …]`` as one int64 tensor."""
    ids = [eod]
    for encoding in tokenizer.encode_batch_fast(list(documents), add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eod)
    return torch.tensor(ids, dtype=torch.long)


@torch.inference_mode()
def surprisal_nats(model: GPT, stream: Tensor, batch_size: int = 16) -> float:
    """Total next-token loss (nats) of every token of ``stream`` after the first.

    Non-overlapping windows of ``context_len`` predictions; the last, shorter window is
    scored on its own, so no token is left out and none is counted twice.
    """
    window = model.config.context_len
    predicted = len(stream) - 1
    full = predicted // window
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        x = stream[: full * window].view(full, window)
        y = stream[1 : full * window + 1].view(full, window)
        for i in range(0, full, batch_size):
            total += _loss_sum(model, x[i : i + batch_size], y[i : i + batch_size])
        if predicted > full * window:
            tail = stream[full * window :]
            total += _loss_sum(model, tail[:-1].unsqueeze(0), tail[1:].unsqueeze(0))
    finally:
        model.train(was_training)
    return total


def _loss_sum(model: GPT, x: Tensor, y: Tensor) -> float:
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()


def unigram_surprisal_bits(stream: Tensor) -> float:
    """Total surprisal (bits) of every token of ``stream`` after the first under the unigram
    model fitted to those same tokens: the entropy of their frequencies, times their count.
    Fitted on the set itself, it is the best any order-blind model can do there."""
    counts = torch.bincount(stream[1:]).double()
    counts = counts[counts > 0]
    return float(-(counts * torch.log2(counts / counts.sum())).sum())


def score(model: GPT, tokenizer, documents: Sequence[str], eod: int) -> Score:
    """Bits per byte of ``model`` (with its ``tokenizer``) on ``documents``."""
    stream = token_stream(tokenizer, documents, eod)
    nats = surprisal_nats(model, stream)
    text_bytes = sum(len(d.encode()) for d in documents)
    return Score(
        bits_per_byte=nats / math.log(2) / text_bytes,
        nats_per_token=nats / (len(stream) - 1),
        tokens=len(stream) - 1,
        bytes=text_bytes,
        unigram_bits_per_byte=unigram_surprisal_bits(stream) / text_bytes,
    )


def score_artifacts(
    weights: bytes, config: dict, tokenizer_json: str, documents: Sequence[str]
) -> Score:
    """Score a model given as its published files (safetensors, config, tokenizer.json)."""
    from tokenizers import Tokenizer

    from sparklm.data.tokenizer import special_ids
    from sparklm.model.weights import load_model

    try:
        tokenizer = Tokenizer.from_str(tokenizer_json)
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot read
        raise ValueError(f"tokenizer.json cannot be read as a tokenizer: {exc}") from None
    return score(load_model(weights, config), tokenizer, documents, special_ids(tokenizer)["eod"])
