"""A replica's inner optimizer: AdamW alone, or Muon for the hidden matrices and AdamW for the rest.

Muon (``torch.optim.Muon``) orthogonalises the momentum of each 2-D weight inside the blocks;
embeddings, the output head, norm gains and biases are not hidden-layer matrices and stay with
AdamW, the split the Muon paper and modded-nanoGPT use. Both run on one learning-rate schedule:
the schedule gives a multiplier, each optimizer scales its own peak rate by it.

The state that the averaging carries between rounds is exported as flat float32 vectors by
name, so averaging, broadcasting and checkpointing treat every optimizer alike:
``exp_avg``/``exp_avg_sq`` over the AdamW parameters (in group order) and, with Muon,
``momentum_buffer`` over the hidden matrices. Adam's step count is the global inner step, which
the driver tracks anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sparklm import settings
from sparklm.model.averaging import flat, split_flat
from sparklm.model.gpt import GPT

OPTIMIZERS = settings.SETTINGS["optimizer"].choices
ADAM_STATE = ("exp_avg", "exp_avg_sq")
MUON_STATE = ("momentum_buffer",)


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton–Schulz iteration in a chosen precision.

    torch runs the iteration in bfloat16, which pays off on GPUs and on CPUs with bf16 matmul
    units. On a CPU without them (AVX2 only, like the development machine) bf16 matmuls are
    emulated: measured there, the iteration took 14× longer in bf16 than in float32, turning a
    few-percent optimizer overhead into roughly doubling each step. The update is otherwise
    torch's, step for step (momentum, Nesterov, decoupled weight decay, torch's learning-rate
    adjustment and NS coefficients); with ``ns_dtype=torch.bfloat16`` it equals
    ``torch.optim.Muon`` bit for bit (tested).
    """

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.float32, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"],
                                       group["eps"], self.ns_dtype)  # fmt: skip
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def orthogonalize(
    g: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> Tensor:
    """Newton–Schulz's quintic iteration towards the nearest semi-orthogonal matrix (U·Vᵀ of
    the SVD), in ``dtype``: torch's ``_zeropower_via_newtonschulz`` with the precision open."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch's per-shape scaling: √max(1, rows/cols) (Keller Jordan's), or Moonshot's
    0.2·√max(rows, cols) that matches AdamW's update RMS."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


@dataclass(frozen=True)
class OptimizerSettings:
    """The inner optimizer of a replica: ``kind`` (adamw, or muon on the hidden matrices with
    AdamW on the rest) and each one's learning rate, momentum and weight decay."""

    kind: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    muon_lr: float
    muon_momentum: float


class InnerOptimizer:
    """The optimizers of one replica behind one step/zero_grad/lr interface."""

    def __init__(self, model: GPT, settings: OptimizerSettings) -> None:
        kind, lr, betas = settings.kind, settings.lr, settings.betas
        weight_decay, muon_lr = settings.weight_decay, settings.muon_lr
        muon_momentum = settings.muon_momentum
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {kind!r}")
        hidden = model.hidden_matrices() if kind == "muon" else []
        self.adamw = torch.optim.AdamW(
            model.optimizer_groups(weight_decay, exclude=hidden), lr=lr, betas=betas
        )
        self.muon = (
            Muon(hidden, lr=muon_lr, momentum=muon_momentum, nesterov=True,
                 weight_decay=weight_decay)
            if hidden else None
        )  # fmt: skip
        self.adam_params = [p for group in self.adamw.param_groups for p in group["params"]]
        self.muon_params = hidden
        self.optimizers: list[torch.optim.Optimizer] = [self.adamw]
        if self.muon is not None:
            self.optimizers.append(self.muon)
        self.peak_lrs = [[g["lr"] for g in o.param_groups] for o in self.optimizers]

    def set_lr_scale(self, scale: float) -> None:
        """Set every group's learning rate to its peak times ``scale`` (the schedule's value)."""
        for optimizer, peaks in zip(self.optimizers, self.peak_lrs, strict=True):
            for group, peak in zip(optimizer.param_groups, peaks, strict=True):
                group["lr"] = peak * scale

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_vectors(self) -> dict[str, Tensor]:
        """The optimizers' state as flat float32 vectors by name (see the module docstring)."""
        vectors = {name: flat(self.adamw.state[p][name] for p in self.adam_params)
                   for name in ADAM_STATE}  # fmt: skip
        if self.muon is not None:
            vectors["momentum_buffer"] = flat(
                self.muon.state[p]["momentum_buffer"] for p in self.muon_params
            )
        return vectors

    def load_state_vectors(self, vectors: dict[str, Tensor], step: int) -> None:
        """Continue from averaged state: the inverse of ``state_vectors``.

        An empty dict (the first round) leaves the optimizers fresh. Names that do not match
        this optimizer are an error: the driver never mixes state of different optimizers.
        """
        if not vectors:
            return
        expected = set(ADAM_STATE) | (set(MUON_STATE) if self.muon is not None else set())
        if set(vectors) != expected:
            raise ValueError(f"optimizer state has {sorted(vectors)}, expected {sorted(expected)}")
        exp_avg = split_flat(vectors["exp_avg"], self.adam_params)
        exp_avg_sq = split_flat(vectors["exp_avg_sq"], self.adam_params)
        for p, m, v in zip(self.adam_params, exp_avg, exp_avg_sq, strict=True):
            self.adamw.state[p] = {"step": torch.tensor(float(step)), "exp_avg": m,
                                   "exp_avg_sq": v}  # fmt: skip
        if self.muon is not None:
            buffers = split_flat(vectors["momentum_buffer"], self.muon_params)
            for p, buffer in zip(self.muon_params, buffers, strict=True):
                self.muon.state[p] = {"momentum_buffer": buffer}
