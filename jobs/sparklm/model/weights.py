"""Model weights and training checkpoints as safetensors + JSON: nothing is ever unpickled.

A checkpoint is written per round as ``checkpoints/round-NNNNN/{state.safetensors,
state.json}``, then ``checkpoints/latest.json`` is pointed at it, recording both
files' sizes and sha256, which a resume verifies. The pointer is written last, so
a job killed mid-checkpoint resumes from the previous round. A fingerprint of the
configuration and the input data guards against resuming a run whose settings changed.
Nothing is read, written or pruned through a symbolic link, and the pointer can only
name a round folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.memory_estimate import Shape, check_budget, sampling_memory
from sparklm.runtime import json_objects, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import ArtifactFile

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
KEEP_ROUNDS = 2
ROUND_FOLDER = re.compile(r"^round-\d{5}$")
# The safetensors format's own cap on its JSON header.
HEADER_LIMIT = 100 * 2**20
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default container

log = logging.getLogger(__name__)


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
    _refuse_pickles(data, what)
    try:
        return load_tensors(data)
    except Exception as exc:
        raise UnsafeArtifactError(f"{what} is not a valid safetensors file: {exc}") from exc


def _refuse_pickles(head: bytes, what: str) -> None:
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == ZIP_MAGIC:
        raise UnsafeArtifactError(
            f"{what} is a pickle/torch.save file; only safetensors are loaded "
            "(pickles can run arbitrary code). Re-export it with safetensors.torch.save_file"
        )


def read_header(uri: str, what: str) -> dict[str, dict[str, Any]]:
    """A safetensors file's tensor table (name → dtype, shape, data offsets), without the tensors.

    Two small range reads: the 8-byte header length, then the JSON header. The
    header must describe exactly the bytes the file holds.
    """
    size = storage.size(uri)
    head = storage.read_bytes(uri, 0, min(8, size))
    _refuse_pickles(head, what)
    length = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < length <= min(HEADER_LIMIT, size - 8):
        raise UnsafeArtifactError(
            f"{what} is not a valid safetensors file: its header length ({length}) does not fit "
            f"the file's {size} bytes"
        )
    try:
        header = json.loads(storage.read_bytes(uri, 8, 8 + length))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UnsafeArtifactError(f"{what} is not a valid safetensors file: {exc}") from None
    if 8 + length + end != size:
        raise UnsafeArtifactError(
            f"{what} is not a valid safetensors file: its header describes {end} bytes of "
            f"tensors, the file holds {size - 8 - length}"
        )
    return tensors


def expected_shapes(config: GPTConfig) -> dict[str, list[int]]:
    """The shape of every tensor a model with ``config`` saves, from a model built on the
    meta device: exact for any architecture, and it allocates no memory."""
    with torch.device("meta"):
        model = GPT(config)
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def check_weights(uri: str, config: Mapping[str, Any], *, budget_gb: float, what: str) -> None:
    """Refuse weights before any model is built from them and ``config``.

    The configuration must be valid and its model fit ``budget_gb`` when sampled
    (pure arithmetic), and the file's header must list exactly the float32 tensors,
    with exactly the shapes, that the configuration implies. A registry whose
    ``config.json`` disagrees with its weights fails here, not halfway through
    allocating a model of the wrong size.
    """
    try:
        cfg = GPTConfig.from_dict(dict(config))
    except (ValueError, TypeError) as exc:
        raise UnsafeArtifactError(
            f"{what}: config.json is not a model configuration: {exc}"
        ) from None
    check_budget(
        sampling_memory(Shape.from_config(cfg.to_dict())),
        budget_gb,
        f"the model in {what}",
        "the model (n_layer, n_embd, context_len, vocab_size)",
    )
    tensors = read_header(uri, what)
    expected = expected_shapes(cfg)
    wrong = sorted(set(tensors) ^ set(expected)) or [
        name for name in sorted(expected)
        if tensors[name].get("dtype") != "F32" or tensors[name].get("shape") != expected[name]
    ]  # fmt: skip
    if wrong:
        name = wrong[0]
        found = tensors.get(name, {})
        raise UnsafeArtifactError(
            f"{what}: the weights do not match config.json ({len(wrong)} tensor(s) differ; "
            f"{name}: file has {found.get('dtype', 'no tensor')} {found.get('shape', '')}, "
            f"config implies F32 {expected.get(name, 'no such tensor')}). Publish weights "
            "and config.json from the same training run"
        )


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


# The pointer is about 300 bytes; anything past this is damage, not a pointer.
MAX_POINTER_BYTES = 64 * 1024
START_OVER = "Delete the run's train/checkpoints folder to train from scratch"
STATE_FILES = ("state.json", "state.safetensors")
META_KEYS = ("round", "step", "metrics", "fingerprint", "started_at")


def save_checkpoint(stage: str, ckpt: Checkpoint) -> None:
    """Write round ``ckpt.round``'s state files, then point ``latest.json`` at them, recording
    each file's size and sha256 so that a resume reads back exactly what was written."""
    folder = f"{CHECKPOINTS}/round-{ckpt.round:05d}"
    tensors = {"params": ckpt.params}
    tensors.update({OPTIMIZER_PREFIX + k: v for k, v in ckpt.optimizer_state.items()})
    if ckpt.outer_momentum is not None:
        tensors["outer_momentum"] = ckpt.outer_momentum
    written = [ArtifactFile.write(stage, f"{folder}/state.safetensors", save_tensors(tensors))]
    meta = {
        "round": ckpt.round,
        "step": ckpt.step,
        "metrics": ckpt.metrics,
        "fingerprint": ckpt.fingerprint,
        "started_at": ckpt.started_at,
    }
    written.append(ArtifactFile.write(stage, f"{folder}/state.json", json.dumps(meta).encode()))
    pointer = {
        "round": ckpt.round,
        "folder": f"round-{ckpt.round:05d}",
        "fingerprint": ckpt.fingerprint,
        "files": {
            f.path.rsplit("/", 1)[-1]: {"bytes": f.bytes, "sha256": f.sha256} for f in written
        },
    }
    ArtifactFile.write(stage, f"{CHECKPOINTS}/{LATEST}", json.dumps(pointer).encode())
    for old in range(ckpt.round - KEEP_ROUNDS, 0, -1):
        old_folder = storage.join(stage, CHECKPOINTS, f"round-{old:05d}")
        if not storage.exists(old_folder):
            break
        storage.refuse_symlinks(stage, old_folder)
        storage.remove_tree(old_folder)


def load_latest_checkpoint(stage: str, fingerprint: str) -> Checkpoint | None:
    """The last complete checkpoint of a run with the same fingerprint, else None.

    Every file is checked before it is used: the pointer must be a JSON object with the
    round, folder and fingerprint; each state file must have the size and sha256 the
    pointer records (read no further than that size); ``state.json`` must name the
    pointer's round and fingerprint. Anything else is a damaged checkpoint: a
    PipelineError naming the file and the fix (delete the checkpoints folder), since a
    retry would only meet the same damage.

    A pointer without ``files`` was written by an older version of the project, which
    recorded no checksums. It is still resumed from, unverified, with a warning: that
    code wrote both state files before the pointer, each atomically, so such a
    checkpoint is as sound as it was when it was written, and starting over would throw
    away every finished round of a run on upgrade. Its ``state.json`` is still checked
    against the pointer, its tensors are still parsed as safetensors only, and the next
    round's checkpoint records checksums.
    """
    pointer_uri = storage.join(stage, CHECKPOINTS, LATEST)
    storage.refuse_symlinks(stage, pointer_uri)
    pointer = json_objects.read(
        pointer_uri,
        required=("round", "folder", "fingerprint"),
        error=PipelineError,
        fix=START_OVER,
        max_bytes=MAX_POINTER_BYTES,
    )
    if pointer is None or pointer["fingerprint"] != fingerprint:
        return None
    if not ROUND_FOLDER.match(str(pointer["folder"])):
        raise PipelineError(
            f"{pointer_uri} names {pointer['folder']!r}, not a round-NNNNN folder: the "
            f"checkpoint pointer was edited or corrupted. {START_OVER}"
        )
    folder = storage.join(stage, CHECKPOINTS, pointer["folder"])
    state_json, state_tensors = (storage.join(folder, name) for name in STATE_FILES)
    for uri in (state_json, state_tensors):
        storage.refuse_symlinks(stage, uri)
    files = pointer.get("files")
    if files is None:
        log.warning(
            "train: %s records no checksums (written by an older version); resuming from "
            "round %s unverified",
            pointer_uri,
            pointer["round"],
        )
        meta_bytes, tensor_bytes = (_read_state(uri, None) for uri in (state_json, state_tensors))
    else:
        meta_bytes, tensor_bytes = (
            _read_state(uri, _recorded(pointer_uri, files, name))
            for uri, name in zip((state_json, state_tensors), STATE_FILES, strict=True)
        )
    meta = json_objects.parse(
        meta_bytes, state_json, required=META_KEYS, error=PipelineError, fix=START_OVER
    )
    for key in ("round", "fingerprint"):
        if meta[key] != pointer[key]:
            raise PipelineError(
                f"{state_json} is for {key} {meta[key]!r}, the checkpoint pointer {pointer_uri} "
                f"for {pointer[key]!r}: the checkpoint is damaged. {START_OVER}"
            )
    tensors = parse_safetensors(tensor_bytes, f"checkpoint {state_tensors}")
    if "params" not in tensors:
        raise PipelineError(f"{state_tensors} holds no 'params' tensor: {START_OVER}")
    return Checkpoint(
        round=meta["round"],
        step=meta["step"],
        params=tensors["params"],
        optimizer_state={
            k.removeprefix(OPTIMIZER_PREFIX): v
            for k, v in tensors.items()
            if k.startswith(OPTIMIZER_PREFIX)
        },  # fmt: skip
        outer_momentum=tensors.get("outer_momentum"),
        metrics=meta["metrics"],
        fingerprint=meta["fingerprint"],
        started_at=meta["started_at"],
    )


def _recorded(pointer_uri: str, files: Any, name: str) -> tuple[int, str]:
    """The size and sha256 the pointer records for the state file ``name``."""
    entry = files.get(name) if isinstance(files, dict) else None
    size = entry.get("bytes") if isinstance(entry, dict) else None
    sha256 = entry.get("sha256") if isinstance(entry, dict) else None
    if type(size) is not int or size < 0 or not isinstance(sha256, str):
        raise PipelineError(
            f"{pointer_uri} is damaged: it records no size and sha256 for {name}. {START_OVER}"
        )
    return size, sha256


def _read_state(uri: str, recorded: tuple[int, str] | None) -> bytes:
    """A state file's bytes; with ``recorded`` (size, sha256), read no further than that size
    and refused unless the bytes are exactly the ones the pointer records."""
    if not storage.exists(uri):
        raise PipelineError(f"{uri} is missing: the checkpoint is incomplete. {START_OVER}")
    if recorded is None:
        return storage.read_bytes(uri)
    size, expected = recorded
    if storage.size(uri) != size:
        raise PipelineError(
            f"{uri} is damaged: it holds {storage.size(uri):,} bytes, the checkpoint pointer "
            f"records {size:,}. {START_OVER}"
        )
    try:
        data = storage.read_bounded(uri, size, "checkpoint file")
    except storage.StorageError as exc:  # grew since, or not a regular file
        raise PipelineError(f"{uri} is damaged ({exc}). {START_OVER}") from None
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise PipelineError(
            f"{uri} is damaged: its sha256 is {found} ({len(data)} bytes), the checkpoint "
            f"pointer records {expected} ({size} bytes). {START_OVER}"
        )
    return data
