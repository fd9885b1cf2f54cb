"""A small decoder-only transformer in the style of nanoGPT, plus a KV cache for generation.

Pre-norm blocks, learned absolute positions, GELU MLP, and an output head tied to the token
embedding. Pure torch: the Spark trainer, the evaluator and the sampler all import this module, so
it must not depend on anything heavier.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class GPTConfig:
    """Model hyperparameters; stored as ``config.json`` next to the weights."""

    vocab_size: int
    context_len: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Fail at construction time: a bad value would otherwise surface as a cryptic shape
        # error minutes into a Spark job.
        for name in ("vocab_size", "context_len", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"choose n_embd as a multiple of n_head, e.g. {self.n_head * 32}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}; use 0.0 to disable it"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Inverse of ``to_dict``; unknown keys are an error, so a typo cannot be ignored."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown GPTConfig keys {sorted(unknown)}; "
                f"expected a subset of {[f.name for f in fields(cls)]}"
            )
        return cls(**d)


class KVCache:
    """Keys and values of the tokens already processed, one pair of buffers per layer.

    The buffers are preallocated to ``[B, n_head, context_len, head_dim]`` and filled in place.
    Growing by ``torch.cat`` would copy the whole cache on every decoding step (quadratic in the
    sequence length). The full-window allocation is small (512 KiB for the default config at
    B=1) and needed anyway by the time the window fills, which generation always reaches.
    Slots at and beyond ``length`` hold stale data and are never read.
    """

    def __init__(
        self, config: GPTConfig, batch_size: int, *, dtype: torch.dtype, device: torch.device
    ):
        shape = (batch_size, config.n_head, config.context_len, config.n_embd // config.n_head)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].size(0)

    def reset(self) -> None:
        """Forget every cached token but keep the buffers, so a re-prefill allocates nothing."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # One matmul for q, k and v instead of three.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int = 0) -> Tensor:
        """Attend ``x`` (positions ``start..start+T-1``) to itself and to ``kv[:start]``."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is not None:
            k_buf, v_buf = kv
            k_buf[:, :, start : start + T] = k
            v_buf[:, :, start : start + T] = v
            k, v = k_buf[:, :, : start + T], v_buf[:, :, : start + T]

        mask = None
        if start > 0 and T > 1:
            # Query i sits at absolute position start+i and may see keys 0..start+i. is_causal
            # would align the triangle to the top-left corner and hide most of the cached prefix.
            q_pos = torch.arange(start, start + T, device=x.device)
            mask = torch.arange(start + T, device=x.device) <= q_pos[:, None]
        # With start == 0 queries and keys are the same positions: the plain causal triangle.
        # A single token after a cached prefix may see everything, so it needs no mask at all.
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=start == 0,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, start: int = 0) -> Tensor:
        # Pre-norm: the residual stream itself is never normalised, so gradients reach early
        # layers through a clean identity path (more stable than GPT-1's post-norm).
        x = x + self.attn(self.ln_1(x), kv, start)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.context_len, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: one matrix both reads and writes tokens, which saves vocab_size * n_embd
        # parameters and tends to help small models. It is one Parameter, so named_parameters()
        # (and any flattened parameter vector built from it) lists it once.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # Each block adds two residual contributions; scaling their projections keeps the
        # variance of the residual stream independent of depth at init (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        cache: KVCache | None = None,
        *,
        last_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``[B, T, vocab_size]`` for every position, and the mean cross-entropy if
        ``targets`` is given.

        With a ``cache``, ``idx`` holds only the new tokens: they are placed after the
        ``cache.length`` cached ones, attend to them, and are appended to the cache.
        ``last_only=True`` returns logits ``[B, 1, vocab_size]`` for the last position only, all
        that sampling needs: the vocabulary projection is the largest matmul of a small model
        (about 40% of the FLOPs for the default config), wasted on every other position.
        """
        B, T = idx.shape
        if last_only and targets is not None:
            raise ValueError("last_only=True cannot compute a loss; pass targets=None")
        start = 0 if cache is None else cache.length
        if start + T > self.config.context_len:
            where = f"{start} cached + {T} new tokens" if cache is not None else f"{T} tokens"
            raise ValueError(
                f"{where} exceed context_len={self.config.context_len}; "
                "feed at most context_len tokens (truncate from the left)"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"idx has batch size {B}, the cache was made for {cache.batch_size}")

        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            x = block(x, kv, start)
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(self.transformer.ln_f(x))
        if cache is not None:
            cache.length += T

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty cache matching this model's dtype and device."""
        weight = self.lm_head.weight
        return KVCache(self.config, batch_size, dtype=weight.dtype, device=weight.device)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. The token embedding stays in the non-embedding count because, tied,
        it is also the output layer's weight; position embeddings do no per-token compute."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), the PaLM appendix B estimate:
        6 per parameter plus the attention score/value matmuls over a full window."""
        c = self.config
        return float(6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.context_len)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay the matrices (matmul weights and embeddings) but not
        biases or LayerNorm gains, where pulling toward zero fights the normalisation instead of
        regularising. Groups, not an optimizer, so the caller chooses lr, betas and fusing."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
