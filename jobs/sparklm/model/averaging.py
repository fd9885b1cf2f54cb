"""Combining replicas: averaging and the outer optimizer.

Each round every replica starts from the same global weights θ and returns
its change Δₚ = θₚ − θ. The driver averages the changes, weighting each by
the tokens it was trained on, and hands the average to an *outer* optimizer.
Every replica takes the same steps on batches of the same shape, so today the
weights are equal and the average is the plain mean; the weights keep the sum
exact if replicas ever train on different amounts.

- ``avg``: θ ← θ + Δ̄, i.e. SGD with lr 1 on the "outer gradient" −Δ̄.
  This is plain parameter averaging (DL4J's ParameterAveragingTrainingMaster).
- ``nesterov``: SGD with Nesterov momentum on −Δ̄ (DiLoCo, arXiv 2311.08105:
  lr 0.7, momentum 0.9), optionally with the momentum warmed up over the
  first rounds (Pier, arXiv 2511.17849). With momentum 0 and lr 1 it *is* ``avg``.

The inner optimizer's state (AdamW's moments; with Muon also its momentum
buffers) is averaged the same way (DL4J averages its updater state too), so no
replica starts a round with a cold optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparklm import settings

OUTER_KINDS = settings.SETTINGS["outer"].choices


@dataclass
class ReplicaUpdate:
    """What one replica (or a sum of several) sends back: weighted sums, so combining is addition.

    ``delta`` and every vector in ``state`` (the inner optimizer's flat state by name, see
    ``sparklm.model.optimizers``) are already multiplied by ``weight`` (the tokens trained
    on), which makes tree aggregation a plain sum and keeps every replica's vector out of
    driver memory.
    """

    delta: Tensor
    state: dict[str, Tensor]
    weight: float
    loss_sum: float
    loss_count: int
    peak_rss_mb: float = 0.0
    finite: bool = True

    def __add__(self, other: ReplicaUpdate) -> ReplicaUpdate:
        finite = self.finite and other.finite
        if finite and set(self.state) != set(other.state):
            raise ValueError(f"cannot add optimizer states {sorted(self.state)} and "
                             f"{sorted(other.state)}")  # fmt: skip
        return ReplicaUpdate(
            delta=self.delta + other.delta,
            # A diverged replica has no usable state; the driver stops on ``finite`` anyway.
            state={name: v + other.state[name] for name, v in self.state.items()} if finite else {},
            weight=self.weight + other.weight,
            loss_sum=self.loss_sum + other.loss_sum,
            loss_count=self.loss_count + other.loss_count,
            peak_rss_mb=max(self.peak_rss_mb, other.peak_rss_mb),
            finite=finite,
        )

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.loss_count, 1)

    def averages(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted mean delta and mean optimizer state (the plain mean while every
        replica's weight is the same)."""
        if self.weight <= 0:
            raise ValueError("cannot average replicas that trained on no tokens")
        return self.delta / self.weight, {k: v / self.weight for k, v in self.state.items()}


def combine(a: ReplicaUpdate | None, b: ReplicaUpdate | None) -> ReplicaUpdate | None:
    """Sum two partial aggregates; ``None`` is the identity (the zero of the sum)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def flat(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one float32 vector, in the given (deterministic) order."""
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])


def split_flat(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Cut a flat vector into fresh tensors shaped like ``like``: the inverse of ``flat``."""
    sizes = [t.numel() for t in like]
    if sum(sizes) != vector.numel():
        raise ValueError(f"vector has {vector.numel()} values, the tensors {sum(sizes)}")
    return [part.view_as(t).clone() for part, t in zip(vector.split(sizes), like, strict=True)]


class OuterOptimizer:
    """Applies averaged replica deltas to the global parameters with torch's SGD.

    The averaged delta is written into ``.grad`` as −Δ̄ (the direction SGD
    descends), so torch.optim.SGD does the momentum and Nesterov bookkeeping.
    """

    def __init__(
        self, model: nn.Module, kind: str, lr: float, momentum: float, momentum_warmup: int = 0
    ) -> None:
        if kind not in OUTER_KINDS:
            raise ValueError(f"outer optimizer must be one of {OUTER_KINDS}, not {kind!r}")
        if kind == "avg":
            lr, momentum = 1.0, 0.0
        self.params = list(model.parameters())
        self.sgd = torch.optim.SGD(self.params, lr=lr, momentum=momentum, nesterov=momentum > 0)
        self.momentum_warmup = momentum_warmup
        self.steps_taken = 0

    def momentum_at(self, step: int) -> float:
        """The momentum of outer step ``step`` (1-based): linear warm-up over the first
        ``momentum_warmup`` steps (Pier), because the first rounds' deltas are large and
        full momentum would carry them on for many rounds."""
        momentum = self.sgd.defaults["momentum"]  # the configured one; the group's warms up
        if self.momentum_warmup <= 0:
            return momentum
        return momentum * min(1.0, step / self.momentum_warmup)

    @torch.no_grad()
    def step(self, mean_delta: Tensor) -> None:
        self.steps_taken += 1
        self.sgd.param_groups[0]["momentum"] = self.momentum_at(self.steps_taken)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = -mean_delta[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        if offset != mean_delta.numel():
            raise ValueError(f"delta has {mean_delta.numel()} values, parameters {offset}")
        self.sgd.step()
        self.sgd.zero_grad(set_to_none=True)

    def momentum_buffers(self) -> list[Tensor | None]:
        return [self.sgd.state.get(p, {}).get("momentum_buffer") for p in self.params]

    def load_momentum_buffers(self, buffers: Sequence[Tensor | None], steps_taken: int) -> None:
        """Resume: the buffers and the number of outer steps they come from (the warm-up's
        position)."""
        self.steps_taken = steps_taken
        for p, buffer in zip(self.params, buffers, strict=True):
            if buffer is not None:
                self.sgd.state[p]["momentum_buffer"] = buffer.clone()
