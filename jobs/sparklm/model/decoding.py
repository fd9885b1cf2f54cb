"""Text generation from a ``GPT``: logit filtering, one-token sampling and the decoding loop."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import Tensor

from sparklm.model.gpt import GPT

# Softmax/cumsum in float32 puts a mass of exactly p at p +- a few ulp; without slack a
# nucleus of e.g. [0.5, 0.3] for p=0.8 would randomly grow by one token.
_TOP_P_SLACK = 1e-6


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set the logits of candidates excluded by top-k and/or nucleus (top-p) filtering to -inf.

    ``top_k`` keeps exactly k candidates, breaking ties at the k-th value by ``torch.topk``'s
    order. ``top_p`` keeps the smallest set of most probable candidates whose total probability
    reaches p, to within float rounding (never fewer than one); with both, top-p applies to
    the renormalised top-k survivors. Filters act on the last dimension; ``None``, ``top_k=0``
    and ``top_p=1.0`` switch them off. The input tensor is never modified.
    """
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None disables it), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1.0 or None disables it), got {top_p}")

    if top_k and top_k < logits.size(-1):
        keep_idx = torch.topk(logits, top_k, dim=-1).indices
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, keep_idx, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        # A candidate is needed only while the more probable ones have not yet reached p.
        drop_sorted = mass_before >= top_p - _TOP_P_SLACK
        drop_sorted[..., 0] = False
        drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> int:
    """Draw one token id from ``logits`` of shape ``[V]``.

    The temperature divides the logits, i.e. samples from softmax(logits / T). Applying it to
    the probabilities instead does not give that distribution: divided
    probabilities, for one, renormalise straight back to T=1. ``temperature == 0`` is the
    T -> 0 limit, greedy argmax. Temperature is applied before the filters, so top-p sees the
    distribution that is actually sampled.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if temperature == 0:
        return int(torch.argmax(logits))
    filtered = filter_logits(logits.float() / temperature, top_k, top_p)
    # Inverse-CDF sampling with one uniform draw. torch.multinomial draws one exponential per
    # vocabulary entry: ~0.1 ms at V=4096, a tenth of a cached decoding step on CPU.
    # Dividing by the last entry makes it exactly 1.0 despite rounding, so u in [0, 1) always
    # finds a first entry > u, and that entry's token has nonzero probability.
    cdf = filtered.softmax(dim=-1).cumsum(dim=-1)
    cdf = cdf / cdf[-1]
    u = torch.rand(1, generator=generator, device=cdf.device)
    return int(torch.searchsorted(cdf, u, right=True))


@dataclass(frozen=True)
class Decoding:
    """How each next token is chosen: ``temperature`` divides the logits (0: greedy), ``top_k``
    and ``top_p`` filter them (None: off), ``seed`` seeds a private generator."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


@torch.inference_mode()
def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    decoding: Decoding = Decoding(),
    *,
    stop_ids: Collection[int] = (),
    use_cache: bool = True,
) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` tokens and return only the new ones.

    Generation ends early right after sampling a token in ``stop_ids``; that token is NOT
    included, so callers can decode the result as-is (it is usually end-of-document, which
    would otherwise have to be stripped by every caller).

    Sampling uses a private ``torch.Generator`` seeded with ``decoding.seed``: the same
    arguments give the same tokens, and the global RNG (a trainer's dropout stream) is left
    untouched.
    A prompt longer than the window is truncated to its last ``context_len`` tokens. The model
    runs in eval mode; its previous mode is restored afterwards.

    ``use_cache=True`` prefills the prompt into a KV cache and then feeds one token per step
    (``tokens_to_feed`` says how the window slides); ``use_cache=False`` runs a full forward
    over the last ``context_len`` tokens at every step: the slow reference. Both give the same
    tokens for the same seed while prompt plus generated tokens fit in ``context_len``.
    """
    check_request(prompt_ids, max_new_tokens, decoding.temperature)
    window = model.config.context_len
    device = model.lm_head.weight.device
    generator = torch.Generator(device=device).manual_seed(decoding.seed)
    stops = frozenset(stop_ids)
    context = list(prompt_ids[-window:])
    cache = model.new_cache(1) if use_cache else None
    pending = list(context)  # tokens the cache has not seen yet; the whole prompt at first
    new_ids: list[int] = []

    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            feed = tokens_to_feed(context, pending, cache, window)
            idx = torch.tensor([feed], dtype=torch.long, device=device)
            logits, _ = model(idx, cache=cache, last_only=True)
            token = sample_next_token(logits[0, -1], decoding.temperature, decoding.top_k,
                                      decoding.top_p, generator)  # fmt: skip
            if token in stops:
                break
            new_ids.append(token)
            context.append(token)
            pending = [token]
    finally:
        model.train(was_training)
    return new_ids


def check_request(prompt_ids: list[int], max_new_tokens: int, temperature: float) -> None:
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; start from at least an end-of-document token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")


def tokens_to_feed(context: list[int], pending: list[int], cache, window: int) -> list[int]:
    """This step's input: the last ``window`` tokens without a cache; with one, the tokens it
    has not seen, after sliding the window when it is full.

    When the cache is full, the window slides by re-prefilling the last ``window // 2``
    tokens. That re-prefill is one batched forward, costing at most ``context_len // 2`` single
    steps, and it buys ``context_len // 2`` cheap steps; keeping ``context_len - 1`` tokens
    instead would mean a re-prefill on every step once the window is full. The price is that
    after a slide the model conditions on between ``context_len // 2`` and ``context_len``
    tokens, whereas ``use_cache=False`` always sees the last ``context_len``. With learned
    positions the cache cannot simply drop its oldest entry: every cached key was computed at a
    position that would then be wrong. Rotary positions would allow it, but the positions would
    then run past the ``context_len`` the model was trained on; re-prefilling serves both.
    """
    if cache is None:
        return context[-window:]
    if cache.length + len(pending) > window:
        cache.reset()
        return context[-max(1, window // 2) :]
    return pending
