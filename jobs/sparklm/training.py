"""One replica's inner loop and the evaluation: pure torch, the same code on every node.

A replica is fully determined by the global state it receives and by seeds
derived from (run seed, round, partition): retrying a Spark task, resuming
from a checkpoint or running single-process all reproduce the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils import vector_to_parameters

from sparklm.averaging import OUTER_KINDS, ReplicaUpdate, flat
from sparklm.model import GPT, GPTConfig
from sparklm.model_size import EVAL_BATCH
from sparklm.sparkjob import peak_rss_mb

OPTIMIZER_STATE_POLICIES = ("averaged", "reset")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about optimisation; the model's shape lives in GPTConfig."""

    partitions: int = 2
    rounds: int = 12
    local_steps: int = 25
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    outer: str = "avg"
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    optimizer_state: str = "averaged"
    seed: int = 1337
    eval_tokens: int = 32768

    def __post_init__(self) -> None:
        positive = ("partitions", "rounds", "local_steps", "batch_size", "lr", "eval_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.outer not in OUTER_KINDS:
            raise ValueError(f"outer must be one of {OUTER_KINDS}, got {self.outer!r}")
        if self.optimizer_state not in OPTIMIZER_STATE_POLICIES:
            raise ValueError(f"optimizer_state must be one of {OPTIMIZER_STATE_POLICIES}")
        if not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("need 0 <= min_lr_ratio <= 1, warmup_steps >= 0, grad_clip > 0")
        if not 0 <= self.outer_momentum < 1 or self.outer_lr <= 0:
            raise ValueError("need 0 <= outer_momentum < 1 and outer_lr > 0")

    @property
    def total_steps(self) -> int:
        return self.rounds * self.local_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio · lr`` at the last inner step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def derive_seed(seed: int, round_index: int, partition: int) -> int:
    """A seed per (run, round, partition) that does not depend on which executor runs it."""
    digest = hashlib.sha256(f"{seed}:{round_index}:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def sample_batch(tokens: Tensor, batch: int, context: int, generator: torch.Generator):
    """``batch`` random windows of ``context + 1`` tokens: inputs and next-token targets."""
    starts = torch.randint(0, len(tokens) - context, (batch,), generator=generator)
    windows = tokens[starts[:, None] + torch.arange(context + 1)[None, :]]
    return windows[:, :-1], windows[:, 1:]


@dataclass
class GlobalState:
    """What the driver broadcasts each round: weights, averaged AdamW moments, steps done."""

    params: Tensor
    exp_avg: Tensor | None
    exp_avg_sq: Tensor | None
    step: int


def build_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.optimizer_groups(cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
    )


def load_moments(optimizer: torch.optim.Optimizer, state: GlobalState) -> None:
    """Seed AdamW with the averaged moments so the replica continues, not restarts."""
    if state.exp_avg is None or state.exp_avg_sq is None:
        return
    offset = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            n = p.numel()
            optimizer.state[p] = {
                "step": torch.tensor(float(state.step)),
                "exp_avg": state.exp_avg[offset : offset + n].view_as(p).clone(),
                "exp_avg_sq": state.exp_avg_sq[offset : offset + n].view_as(p).clone(),
            }
            offset += n


def ordered_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """Parameters in optimizer-group order: the order moments are flattened in."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def train_replica(
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    state: GlobalState,
    tokens: Tensor,
    round_index: int,
    partition: int,
) -> ReplicaUpdate:
    """Run ``cfg.local_steps`` AdamW steps from the global state on this partition's tokens."""
    model = GPT(model_cfg)
    # A copy: vector_to_parameters makes the parameters views of the vector it is given.
    vector_to_parameters(state.params.clone(), model.parameters())
    model.train()
    optimizer = build_optimizer(model, cfg)
    if cfg.optimizer_state == "averaged":
        load_moments(optimizer, state)
    seed = derive_seed(cfg.seed, round_index, partition)
    torch.manual_seed(seed)  # dropout masks
    generator = torch.Generator().manual_seed(seed)
    loss_sum, finite = 0.0, True
    for k in range(cfg.local_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state.step + k, cfg)
        x, y = sample_batch(tokens, cfg.batch_size, model_cfg.context_len, generator)
        _, loss = model(x, y)
        if not torch.isfinite(loss):
            finite = False
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.item()
    weight = float(cfg.local_steps * cfg.batch_size * model_cfg.context_len)
    params = ordered_params(optimizer)
    if not finite:
        zeros = torch.zeros_like(state.params)
        return ReplicaUpdate(zeros, zeros, zeros, weight, math.nan, 1, finite=False)
    delta = flat(model.parameters()) - state.params
    exp_avg = flat(optimizer.state[p]["exp_avg"] for p in params)
    exp_avg_sq = flat(optimizer.state[p]["exp_avg_sq"] for p in params)
    return ReplicaUpdate(
        delta=delta * weight,
        exp_avg=exp_avg * weight,
        exp_avg_sq=exp_avg_sq * weight,
        weight=weight,
        loss_sum=loss_sum,
        loss_count=cfg.local_steps,
        peak_rss_mb=peak_rss_mb(),
    )


@torch.no_grad()
def evaluate(model: GPT, tokens: Tensor, batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean next-token loss (nats) and accuracy over non-overlapping windows of ``tokens``."""
    context = model.config.context_len
    n = (len(tokens) - 1) // context
    if n < 1:
        raise ValueError(f"need more than {context} tokens to evaluate, got {len(tokens)}")
    x = tokens[: n * context].view(n, context)
    y = tokens[1 : n * context + 1].view(n, context)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, n, batch_size):
        logits, _ = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        loss_sum += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
    model.train(was_training)
    return loss_sum / (n * context), correct / (n * context)
