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

from sparklm import settings
from sparklm.data.token_shards import TokenSlices
from sparklm.model.averaging import OuterOptimizer, ReplicaUpdate, flat
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.memory_estimate import EVAL_BATCH
from sparklm.model.optimizers import InnerOptimizer, OptimizerSettings
from sparklm.runtime.process_memory import peak_rss_mb

OPTIMIZER_STATE_POLICIES = settings.SETTINGS["optimizer_state"].choices
SCHEDULES = settings.SETTINGS["schedule"].choices


@dataclass(frozen=True)
class TrainConfig:
    """Everything about optimisation; the model's shape lives in GPTConfig. Defaults and
    bounds are the settings' (``sparklm.settings``); AdamW's betas are not knobs."""

    partitions: int = settings.default("partitions")
    rounds: int = settings.default("rounds")
    local_steps: int = settings.default("local_steps")
    # Post-local SGD: the first early_rounds rounds average every early_local_steps steps,
    # while the weights still move fast, before the longer local_steps intervals.
    early_rounds: int = settings.default("early_rounds")
    early_local_steps: int = settings.default("early_local_steps")
    batch_size: int = settings.default("batch_size")
    optimizer: str = settings.default("optimizer")
    lr: float = settings.default("lr")
    muon_adamw_lr: float = settings.default("muon_adamw_lr")
    muon_lr: float = settings.default("muon_lr")
    muon_momentum: float = settings.default("muon_momentum")
    schedule: str = settings.default("schedule")
    decay_fraction: float = settings.default("decay_fraction")
    min_lr_ratio: float = settings.default("min_lr_ratio")
    warmup_steps: int = settings.default("warmup_steps")
    weight_decay: float = settings.default("weight_decay")
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = settings.default("grad_clip")
    outer: str = settings.default("outer")
    outer_lr: float = settings.default("outer_lr")
    outer_momentum: float = settings.default("outer_momentum")
    outer_momentum_warmup: int = settings.default("outer_momentum_warmup")
    optimizer_state: str = settings.default("optimizer_state")
    seed: int = settings.default("seed")
    eval_tokens: int = settings.default("eval_tokens")

    def __post_init__(self) -> None:
        for name in self.field_names():
            if name in settings.SETTINGS:
                settings.SETTINGS[name].check(getattr(self, name))
        settings.check_combinations(self.to_dict())

    @property
    def adamw_lr(self) -> float:
        """AdamW's peak rate: ``lr`` when it trains everything, ``muon_adamw_lr`` beside Muon."""
        return self.muon_adamw_lr if self.optimizer == "muon" else self.lr

    def steps_in_round(self, round_index: int) -> int:
        """Inner steps each replica takes in round ``round_index`` (0-based)."""
        return self.early_local_steps if round_index < self.early_rounds else self.local_steps

    def steps_before(self, round_index: int) -> int:
        """Inner steps each replica has taken when round ``round_index`` starts."""
        early = min(round_index, self.early_rounds)
        return early * self.early_local_steps + (round_index - early) * self.local_steps

    @property
    def total_steps(self) -> int:
        return self.steps_before(self.rounds)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def lr_scale(step: int, cfg: TrainConfig) -> float:
    """The schedule as a multiplier of each optimizer's peak rate, after ``step`` inner steps.

    Linear warm-up, then either cosine decay to ``min_lr_ratio`` at the last step, or
    warm-up–stable–decay (WSD): the peak until the last ``decay_fraction`` of the steps, then a
    linear decay to ``min_lr_ratio``. WSD spends longer at the peak and anneals late.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_start = max(cfg.warmup_steps, round(cfg.total_steps * (1 - cfg.decay_fraction)))
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, cfg.total_steps - decay_start))
        return 1.0 - (1.0 - floor) * progress
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return floor + 0.5 * (1.0 - floor) * (1 + math.cos(math.pi * progress))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """AdamW's learning rate after ``step`` inner steps (Muon's is ``muon_lr`` times the same
    multiplier)."""
    return cfg.adamw_lr * lr_scale(step, cfg)


def derive_seed(seed: int, round_index: int, partition: int) -> int:
    """A seed per (run, round, partition) that does not depend on which executor runs it."""
    digest = hashlib.sha256(f"{seed}:{round_index}:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def sample_batch(tokens: Tensor, batch: int, context: int, generator: torch.Generator):
    """``batch`` random windows of ``context + 1`` tokens: inputs and next-token targets, as
    int64 (``tokens`` may be int32, as ``read_range`` keeps them)."""
    starts = torch.randint(0, len(tokens) - context, (batch,), generator=generator)
    windows = tokens[starts[:, None] + torch.arange(context + 1)[None, :]].long()
    return windows[:, :-1], windows[:, 1:]


@dataclass
class GlobalState:
    """What the driver broadcasts each round: weights, averaged optimizer state, steps done.

    ``optimizer_state`` holds flat vectors by name (``InnerOptimizer.state_vectors``); empty
    before the first round, when every replica starts a fresh optimizer.
    """

    params: Tensor
    optimizer_state: dict[str, Tensor]
    step: int


def build_optimizer(model: GPT, cfg: TrainConfig) -> InnerOptimizer:
    return InnerOptimizer(model, OptimizerSettings(
        kind=cfg.optimizer, lr=cfg.adamw_lr, betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay, muon_lr=cfg.muon_lr, muon_momentum=cfg.muon_momentum,
    ))  # fmt: skip


def train_replica(
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    state: GlobalState,
    tokens: Tensor,
    round_index: int,
    partition: int,
) -> ReplicaUpdate:
    """Run this round's inner steps from the global state on this partition's tokens."""
    model = GPT(model_cfg)
    # A copy: vector_to_parameters makes the parameters views of the vector it is given.
    vector_to_parameters(state.params.clone(), model.parameters())
    model.train()
    optimizer = build_optimizer(model, cfg)
    if cfg.optimizer_state == "averaged":
        optimizer.load_state_vectors(state.optimizer_state, state.step)
    seed = derive_seed(cfg.seed, round_index, partition)
    torch.manual_seed(seed)  # dropout masks
    generator = torch.Generator().manual_seed(seed)
    steps = cfg.steps_in_round(round_index)
    loss_sum, finite = 0.0, True
    for k in range(steps):
        optimizer.set_lr_scale(lr_scale(state.step + k, cfg))
        x, y = sample_batch(tokens, cfg.batch_size, model_cfg.context_len, generator)
        _, loss = model(x, y)
        if not torch.isfinite(loss):
            finite = False
            break
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.item()
    weight = float(steps * cfg.batch_size * model_cfg.context_len)
    if not finite:
        zeros = torch.zeros_like(state.params)
        return ReplicaUpdate(zeros, {}, weight, math.nan, 1, finite=False)
    delta = flat(model.parameters()) - state.params
    return ReplicaUpdate(
        delta=delta * weight,
        state={name: v * weight for name, v in optimizer.state_vectors().items()},
        weight=weight,
        loss_sum=loss_sum,
        loss_count=steps,
        peak_rss_mb=peak_rss_mb(),
    )


def apply_update(
    model: GPT, outer: OuterOptimizer, update: ReplicaUpdate, state: GlobalState, steps: int
) -> GlobalState:
    """The driver's half of a round: the outer step on the mean delta, the mean optimizer
    state carried on. ``model`` holds the global weights; ``steps`` is the round's inner steps."""
    mean_delta, optimizer_state = update.averages()
    outer.step(mean_delta)
    return GlobalState(flat(model.parameters()), optimizer_state, state.step + steps)


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
        logits, _ = model(x[i : i + batch_size].long())
        target = y[i : i + batch_size].long()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
    model.train(was_training)
    return loss_sum / (n * context), correct / (n * context)


@dataclass
class TrainingData:
    """What tokenize produced, checked to fit the model: each replica's token range of the
    training shards, and the validation tokens every round is scored on."""

    slices: TokenSlices
    val_tokens: torch.Tensor
    tokens_per_byte: float


@dataclass
class Progress:
    """Where training stands: the global state, the metrics rows so far, when it began."""

    state: GlobalState
    metrics: list[dict]
    started_at: str


@dataclass
class Training:
    """What every round uses: the configs, the data, the driver's model and outer optimizer,
    and where checkpoints go (``stage``) under which run fingerprint."""

    model_cfg: GPTConfig
    train_cfg: TrainConfig
    data: TrainingData
    model: GPT
    outer: OuterOptimizer
    stage: str
    run_id: str
