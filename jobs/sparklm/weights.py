"""Model weights and training checkpoints as safetensors + JSON: nothing is ever unpickled.

A checkpoint is written per round as ``checkpoints/round-NNNNN/{state.safetensors,
state.json}``, then ``checkpoints/latest.json`` is pointed at it. The pointer
is written last, so a job killed mid-checkpoint resumes from the previous
round. A fingerprint of the configuration and the input data guards against
resuming a run whose settings changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from sparklm import storage
from sparklm.errors import PipelineError
from sparklm.model import GPT, GPTConfig

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
KEEP_ROUNDS = 2


class UnsafeArtifactError(PipelineError):
    """An artifact is not in a format this project loads (safetensors or JSON)."""


def model_bytes(model: GPT) -> bytes:
    """The model's weights as safetensors (tied weights stored under both names)."""
    state = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    return save_tensors(state, metadata={"format": "pt"})


def load_model(weights: bytes, config: dict[str, Any]) -> GPT:
    """Rebuild a model from safetensors bytes and its config dict; refuses anything else."""
    model = GPT(GPTConfig.from_dict(config))
    model.load_state_dict(parse_safetensors(weights, "model weights"))
    model.eval()
    return model


def parse_safetensors(data: bytes, what: str) -> dict[str, Tensor]:
    """Parse safetensors bytes. Pickles (``torch.save`` files, ``.pt``/``.bin``) are refused."""
    if (
        data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
        or data[:4] == b"PK\x03\x04"
    ):
        raise UnsafeArtifactError(
            f"{what} is a pickle/torch.save file; only safetensors are loaded "
            "(pickles can run arbitrary code). Re-export it with safetensors.torch.save_file"
        )
    try:
        return load_tensors(data)
    except Exception as exc:
        raise UnsafeArtifactError(f"{what} is not a valid safetensors file: {exc}") from exc


@dataclass
class Checkpoint:
    """The complete driver state after ``round`` finished rounds.

    ``optimizer_state`` is the averaged inner optimizer state by name (AdamW moments, Muon
    momentum buffers; empty under ``--optimizer-state reset``).
    """

    round: int
    step: int
    params: Tensor
    optimizer_state: dict[str, Tensor]
    outer_momentum: Tensor | None
    metrics: list[dict[str, Any]]
    fingerprint: str
    started_at: str


OPTIMIZER_PREFIX = "optimizer."


def save_checkpoint(stage: str, ckpt: Checkpoint) -> None:
    folder = storage.join(stage, CHECKPOINTS, f"round-{ckpt.round:05d}")
    tensors = {"params": ckpt.params}
    tensors.update({OPTIMIZER_PREFIX + k: v for k, v in ckpt.optimizer_state.items()})
    if ckpt.outer_momentum is not None:
        tensors["outer_momentum"] = ckpt.outer_momentum
    storage.write_bytes(storage.join(folder, "state.safetensors"), save_tensors(tensors))
    meta = {
        "round": ckpt.round,
        "step": ckpt.step,
        "metrics": ckpt.metrics,
        "fingerprint": ckpt.fingerprint,
        "started_at": ckpt.started_at,
    }
    storage.write_bytes(storage.join(folder, "state.json"), json.dumps(meta).encode())
    pointer = {
        "round": ckpt.round,
        "folder": f"round-{ckpt.round:05d}",
        "fingerprint": ckpt.fingerprint,
    }
    storage.write_bytes(storage.join(stage, CHECKPOINTS, LATEST), json.dumps(pointer).encode())
    for old in range(ckpt.round - KEEP_ROUNDS, 0, -1):
        folder = storage.join(stage, CHECKPOINTS, f"round-{old:05d}")
        if not storage.exists(folder):
            break
        storage.remove_tree(folder)


def load_latest_checkpoint(stage: str, fingerprint: str) -> Checkpoint | None:
    """The last complete checkpoint of a run with the same fingerprint, else None."""
    pointer_uri = storage.join(stage, CHECKPOINTS, LATEST)
    if not storage.exists(pointer_uri):
        return None
    pointer = json.loads(storage.read_bytes(pointer_uri))
    if pointer.get("fingerprint") != fingerprint:
        return None
    folder = storage.join(stage, CHECKPOINTS, pointer["folder"])
    meta = json.loads(storage.read_bytes(storage.join(folder, "state.json")))
    tensors = parse_safetensors(
        storage.read_bytes(storage.join(folder, "state.safetensors")), "checkpoint"
    )
    return Checkpoint(
        round=meta["round"],
        step=meta["step"],
        params=tensors["params"],
        optimizer_state={k.removeprefix(OPTIMIZER_PREFIX): v for k, v in tensors.items()
                         if k.startswith(OPTIMIZER_PREFIX)},  # fmt: skip
        outer_momentum=tensors.get("outer_momentum"),
        metrics=meta["metrics"],
        fingerprint=meta["fingerprint"],
        started_at=meta["started_at"],
    )
