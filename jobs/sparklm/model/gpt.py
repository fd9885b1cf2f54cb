"""A small decoder-only transformer in the style of nanoGPT, plus a KV cache for generation.

Pre-norm blocks with a choice of parts, each a ``GPTConfig`` switch: learned absolute positions or
rotary embeddings, LayerNorm or RMSNorm, a GELU or SwiGLU MLP, optional QK-norm, optional linear
biases, a tied or separate output head. The defaults are GPT-2's block, so a ``config.json``
written before the switches existed loads as the model it was trained as. The modern set is
chosen so that the result is a stock Hugging Face architecture, computed exactly as those classes
compute it (``hf_architecture``): RoPE + RMSNorm + SwiGLU without biases is Llama, and with
QK-norm it is Qwen3. Pure torch: the Spark trainer, the evaluator and the sampler all import this
module, so it must not depend on anything heavier.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparklm import settings
from sparklm.model.memory_estimate import default_intermediate_size

POSITIONS = settings.SETTINGS["position"].choices
NORMS = settings.SETTINGS["norm"].choices
MLPS = settings.SETTINGS["mlp"].choices


@dataclass
class GPTConfig:
    """Model hyperparameters; stored as ``config.json`` next to the weights."""

    vocab_size: int
    context_len: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # The block's parts. Defaults are GPT-2's (absent keys in an old config.json mean these).
    position: str = "learned"  # "rope": rotary q/k (rotate-half), no position table
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # "rmsnorm": weight-only, as LlamaRMSNorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # "swiglu": down(silu(gate(x)) * up(x))
    intermediate_size: int | None = None  # None: 4·n_embd (gelu), 8/3·n_embd rounded (swiglu)
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    bias: bool = False  # a bias in every linear layer (LayerNorm keeps its own either way)
    tie_embeddings: bool = True  # the output head reuses the token embedding

    def __post_init__(self) -> None:
        # Fail at construction time: a bad value would otherwise surface as a cryptic shape
        # error minutes into a Spark job.
        if self.intermediate_size is None:
            self.intermediate_size = default_intermediate_size(self.mlp, self.n_embd)
        for name in ("vocab_size", "context_len", "n_layer", "n_head", "n_embd",
                     "intermediate_size"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}; use 0.0 to disable it"
            )
        for name, allowed in (("position", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")  # fmt: skip
        settings.check_combinations(
            {"n_embd": self.n_embd, "n_head": self.n_head, "position": self.position}
        )
        if not self.rope_theta > 0 or not self.norm_eps > 0:
            raise ValueError("GPTConfig.rope_theta and GPTConfig.norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def hf_architecture(self) -> str | None:
        """The Hugging Face ``transformers`` class family this block is exactly, if any.

        ``gpt2`` (learned positions, LayerNorm, GELU; its biases exported as zeros when off),
        ``llama`` (RoPE, RMSNorm, SwiGLU, no biases) or ``qwen3`` (the same with QK-norm).
        Other combinations train fine but have no stock counterpart.
        """
        if (self.position, self.norm, self.mlp, self.qk_norm) == ("learned", "layernorm",
                                                                  "gelu", False):  # fmt: skip
            return "gpt2"
        if (self.position, self.norm, self.mlp, self.bias) == ("rope", "rmsnorm", "swiglu",
                                                               False):  # fmt: skip
            return "qwen3" if self.qk_norm else "llama"
        return None

    def describe(self) -> str:
        """One line naming the block's parts, for logs and the model card."""
        parts = [
            "rotary positions" if self.position == "rope" else "learned positions",
            "RMSNorm" if self.norm == "rmsnorm" else "LayerNorm",
            f"{'SwiGLU' if self.mlp == 'swiglu' else 'GELU'} MLP ({self.intermediate_size})",
            *(["QK-norm"] if self.qk_norm else []),
            "linear biases" if self.bias else "no linear biases",
            "tied embedding/head" if self.tie_embeddings else "separate head",
        ]
        family = self.hf_architecture()
        return "Pre-norm blocks, " + ", ".join(parts) + (f" ({family} block)" if family else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Inverse of ``to_dict``; unknown keys are an error, so a typo cannot be ignored.

        Keys it lacks take their defaults: a config written before a switch existed describes
        the block that was trained then, which is what the default still builds.
        """
        unknown = set(d) - set(cls.field_names())
        if unknown:
            raise ValueError(
                f"unknown GPTConfig keys {sorted(unknown)}; "
                f"expected a subset of {cls.field_names()}"
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


def norm_layer(config: GPTConfig, size: int) -> nn.Module:
    """LayerNorm (weight and bias, GPT-2) or RMSNorm (weight only: x·rsqrt(mean(x²)+eps)·w,
    what LlamaRMSNorm computes for float32 weights)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=config.norm_eps)
    return nn.LayerNorm(size, eps=config.norm_eps)


class Rotary(nn.Module):
    """Rotary position embedding tables in the rotate-half layout of HF Llama/Qwen3.

    Dimension i and i + head_dim/2 of a head form a pair rotated by position·θ^(−2i/head_dim).
    The cos/sin tables are computed once for the whole window, in float32, and are buffers that
    are not saved: they follow from the config alone.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        dim = config.head_dim
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2).float() / dim)
        angles = torch.outer(torch.arange(config.context_len).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, start: int) -> Tensor:
        """Rotate ``x`` ``[B, n_head, T, head_dim]`` holding positions ``start..start+T-1``."""
        T = x.size(-2)
        cos, sin = self.cos[start : start + T].to(x.dtype), self.sin[start : start + T].to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-second, first), dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # One matmul for q, k and v instead of three (rows: all of q, then k, then v).
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # QK-norm bounds the attention logits whatever the weights grow to, which lets the
        # optimizer use a higher learning rate; one gain vector per head_dim, shared by heads.
        self.q_norm = nn.RMSNorm(config.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(config.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.rotary = Rotary(config) if config.position == "rope" else None
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None, start: int) -> Tensor:
        """Attend ``x`` (positions ``start..start+T-1``) to itself and to ``kv[:start]``."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            # The cache stores rotated keys, so a cached key keeps the position it was made at.
            q, k = self.rotary(q, start), self.rotary(k, start)
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
    """GELU: c_proj(gelu(c_fc(x))). SwiGLU: c_proj(silu(gate(x)) · up(x)), where c_fc holds
    the gate rows, then the up rows, so one matmul computes both."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.intermediate_size
        assert hidden is not None  # GPTConfig fills it in
        self.swiglu = config.mlp == "swiglu"
        width = 2 * hidden if self.swiglu else hidden
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = norm_layer(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm_layer(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None, start: int) -> Tensor:
        # Pre-norm: the residual stream itself is never normalised, so gradients reach early
        # layers through a clean identity path (more stable than GPT-1's post-norm).
        x = x + self.attn(self.ln_1(x), kv, start)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        parts: dict[str, nn.Module] = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.position == "learned":
            parts["wpe"] = nn.Embedding(config.context_len, config.n_embd)
        parts["drop"] = nn.Dropout(config.dropout)
        parts["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        parts["ln_f"] = norm_layer(config, config.n_embd)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying: one matrix both reads and writes tokens, which saves vocab_size ·
            # n_embd parameters and tends to help small models. It is one Parameter, so
            # named_parameters() (and any flattened parameter vector built from it) lists it once.
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

        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.transformer.drop(x)
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
        """Parameter count. ``non_embedding`` leaves out the lookup tables that do no per-token
        compute: the position table, and the token embedding unless it is tied to the head (then
        it is also the output layer's weight, a real matmul)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), the PaLM appendix B estimate:
        6 per matmul parameter plus the attention score/value matmuls over a full window.
        It counts the block that is built (SwiGLU's three matrices, a separate head); norms,
        RoPE and the activation are elementwise and left out, as PaLM leaves them out."""
        c = self.config
        return float(6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.context_len)

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks: what Muon orthogonalises. Embeddings, the head,
        gains and biases are not hidden-layer matrices and stay with AdamW (the standard
        split of the Muon paper and modded-nanoGPT)."""
        return [p for p in self.transformer.h.parameters() if p.dim() == 2]

    def optimizer_groups(
        self, weight_decay: float, exclude: list[nn.Parameter] | None = None
    ) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay the matrices (matmul weights and embeddings) but not
        biases or norm gains, where pulling toward zero fights the normalisation instead of
        regularising. ``exclude`` leaves out parameters another optimizer owns. Groups, not an
        optimizer, so the caller chooses lr, betas and fusing."""
        skip = {id(p) for p in exclude or []}
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in skip]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
