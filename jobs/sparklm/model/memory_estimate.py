"""How big a model is, and how much memory training or sampling it takes — without torch.

Pure arithmetic on the configuration, so ``plan_run`` (Airflow side), the train
job (before it allocates anything) and generate/publish (before they build a
model from a registry's ``config.json``) can all refuse a model that would not
fit, instead of dying in the allocator and being retried.

The estimates are for the largest single process (the Spark driver, or the
Python worker running one replica), in float32, and err on the high side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sparklm import settings
from sparklm.runtime.errors import PipelineError

BYTES_PER_FLOAT = 4
# A replica holds its training tokens as int32 (token_shards.read_range).
BYTES_PER_TOKEN = 4
GIB = 2**30
# What a process holds before any model: Python, torch's libraries and thread pools, the
# Spark worker (measured: importing torch alone is about 220 MB resident).
RUNTIME_BYTES = 512 * 2**20
DEFAULT_MEMORY_BUDGET_GB: float = settings.default("memory_budget_gb")
# Batch of windows the driver scores validation tokens in (training.evaluate).
EVAL_BATCH = 32
# Flat float32 vectors of the parameter count alive at once, at the peak of a round:
# replica — global weights, both averaged moments (broadcast), the model, its gradients,
# AdamW's two moments, three weighted update vectors and their pickled copy (3);
# driver — the model, global state (3), the summed update (3) and its averages (3),
# outer momentum, a checkpoint's serialised copy (3) and the next broadcast.
REPLICA_VECTORS = 14
DRIVER_VECTORS = 16
# Sampling: the weights file, the tensors parsed from it, the model.
SAMPLING_VECTORS = 3
# The activations actually allocated, over activation_floats' count, depend on the kernels
# torch picks for the CPU. Measured for one replica step (vocab 4096, context 128, 4×128,
# batch 32): 560 MB above the runtime on an AMD EPYC (AVX2), where the count predicts
# 550 MB, and about 1,040 MB on the CI machine. Hence twice the count.
ACTIVATION_HEADROOM = 2


class ModelTooLarge(PipelineError):
    """A model configuration whose estimated memory exceeds the budget."""


@dataclass(frozen=True)
class Shape:
    """The sizes that decide memory: the model's dimensions and its block's parts.

    The block fields mirror ``GPTConfig``'s and default, as it does, to GPT-2's block.
    """

    vocab_size: int
    context_len: int
    n_layer: int
    n_head: int
    n_embd: int
    position: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    intermediate_size: int | None = None  # None or 0: default_intermediate_size(mlp, n_embd)
    qk_norm: bool = False
    bias: bool = False
    tie_embeddings: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Shape:
        """From a ``config.json`` or the Params; absent block keys mean GPT-2's block."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    @property
    def hidden_size(self) -> int:
        """The MLP's hidden width."""
        return self.intermediate_size or default_intermediate_size(self.mlp, self.n_embd)

    @property
    def mlp_input_width(self) -> int:
        """The MLP's first matmul's width: SwiGLU computes its gate and up rows together."""
        return 2 * self.hidden_size if self.mlp == "swiglu" else self.hidden_size


def default_intermediate_size(mlp: str, n_embd: int) -> int:
    """GPT-2's 4·n_embd; for SwiGLU 2/3 of that (three matrices instead of two keep the
    parameter count), rounded up to a multiple of 32 as Llama rounds its own."""
    if mlp == "swiglu":
        return 32 * math.ceil(8 * n_embd / 3 / 32)
    return 4 * n_embd


def parameter_count(shape: Shape) -> int:
    """Distinct parameters (a tied embedding counted once), as ``GPT.num_params(False)``."""
    s, c = shape, shape.n_embd
    norm = 2 * c if s.norm == "layernorm" else c  # LayerNorm keeps its bias either way
    attention = 4 * c * c + (4 * c if s.bias else 0)
    attention += 2 * (c // s.n_head) if s.qk_norm else 0
    mlp = c * s.mlp_input_width + s.hidden_size * c
    mlp += s.mlp_input_width + c if s.bias else 0
    embeddings = s.vocab_size * c * (1 if s.tie_embeddings else 2)
    embeddings += s.context_len * c if s.position == "learned" else 0
    return embeddings + s.n_layer * (attention + mlp + 2 * norm) + norm


def activation_floats(shape: Shape, batch_size: int, *, training: bool) -> int:
    """Floats alive in one forward (and its backward) pass over ``batch_size`` full windows.

    Per token and layer: the block's saved inputs and outputs (about 9·n_embd: norms,
    q/k/v, attention output, residuals; then the MLP's wide activations, before and after
    its nonlinearity, and SwiGLU's product) and the
    attention weights (2·n_head·context, if the kernel materialises them); then the
    logits, their log-softmax and the gradients of both (5·vocab; 2 without a
    backward pass). Measured against real replicas, the logits term is what
    dominates small models with a large vocabulary.
    """
    s = shape
    mlp = 2 * s.mlp_input_width + (s.hidden_size if s.mlp == "swiglu" else 0)
    per_token = s.n_layer * (9 * s.n_embd + mlp + 2 * s.n_head * s.context_len)
    per_token += (5 if training else 2) * s.vocab_size + 2 * s.n_embd
    return batch_size * s.context_len * per_token


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of the largest process, and what it consists of."""

    parameters: int
    peak_bytes: int
    process: str

    @property
    def gib(self) -> float:
        return self.peak_bytes / GIB


def training_memory(shape: Shape, batch_size: int, replica_tokens: int = 0) -> MemoryEstimate:
    """Peak of the train job's processes: a replica's step beside its ``replica_tokens``
    training tokens, or the driver's round + evaluation."""
    p = parameter_count(shape)
    replica_floats = REPLICA_VECTORS * p + ACTIVATION_HEADROOM * activation_floats(
        shape, batch_size, training=True
    )
    driver_floats = DRIVER_VECTORS * p + ACTIVATION_HEADROOM * activation_floats(
        shape, EVAL_BATCH, training=False
    )
    replica = BYTES_PER_FLOAT * replica_floats + BYTES_PER_TOKEN * replica_tokens
    driver = BYTES_PER_FLOAT * driver_floats
    process = "a training replica" if replica >= driver else "the driver"
    return MemoryEstimate(p, RUNTIME_BYTES + max(replica, driver), process)


def sampling_memory(shape: Shape, prompts_at_once: int = 1) -> MemoryEstimate:
    """Peak of a process that samples: the weights three times over, a KV cache, the logits."""
    p = parameter_count(shape)
    kv_cache = 2 * shape.n_layer * shape.context_len * shape.n_embd * prompts_at_once
    activations = ACTIVATION_HEADROOM * activation_floats(shape, prompts_at_once, training=False)
    floats = SAMPLING_VECTORS * p + kv_cache + activations
    return MemoryEstimate(p, RUNTIME_BYTES + BYTES_PER_FLOAT * floats, "a sampling process")


def check_budget(estimate: MemoryEstimate, budget_gb: float, what: str, knobs: str) -> None:
    """Refuse, naming the sizes to lower, when ``estimate`` exceeds ``budget_gb`` GiB."""
    if budget_gb <= 0:
        raise ModelTooLarge(f"the memory budget must be positive, got {budget_gb} GB")
    if estimate.peak_bytes > budget_gb * GIB:
        raise ModelTooLarge(
            f"{what} has {estimate.parameters:,} parameters and needs about "
            f"{estimate.gib:,.1f} GB in {estimate.process}, over the memory budget of "
            f"{budget_gb:g} GB. Lower {knobs}, or raise the budget (--memory-budget-gb / the "
            "memory_budget_gb Param) if the machines really have that much memory"
        )
