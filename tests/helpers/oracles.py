"""Independent answers to compare the pipeline with: one-process training, sampling, checksums."""

from __future__ import annotations

import json
import os
from pathlib import Path


def generated_records(manifest: dict) -> list[dict]:
    """The records of a committed generate stage's ``generated.jsonl``."""
    from sparklm.runtime import storage
    from sparklm.runtime.stages import listed_files

    [entry] = listed_files(manifest, "generated.jsonl")
    return [json.loads(line) for line in storage.read_bytes(entry["uri"]).decode().splitlines()]


def chained_manifests(root: str, stages: list[str]) -> dict[str, dict]:
    """Every stage's manifest, each checked to name its upstream's as its input."""
    from sparklm.runtime.stages import read_manifest

    manifests = {stage: read_manifest(root, stage) for stage in stages}
    for upstream, downstream in zip(stages, stages[1:], strict=False):
        ref = manifests[downstream]["inputs"][upstream]["manifest"]
        assert ref == f"{root}/{upstream}/manifest.json"
    return manifests


def sample_independently(model_uri: str, config_uri: str, tokenizer_uri: str, record: dict) -> str:
    """``record["prompt"]``'s completion sampled in this process, with the sampling settings and
    seed the record names: checks that a job used what it recorded, not just that it wrote it."""
    import torch
    from tokenizers import Tokenizer

    from sparklm.data.tokenizer import decode, special_ids
    from sparklm.model.decoding import Decoding, generate
    from sparklm.model.weights import load_model
    from sparklm.runtime import storage

    model = load_model(storage.read_bytes(model_uri), json.loads(storage.read_bytes(config_uri)))
    tokenizer = Tokenizer.from_str(storage.read_bytes(tokenizer_uri).decode())
    eod = special_ids(tokenizer)["eod"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-core Spark task samples: the same float sums
    try:
        new_ids = generate(
            model, [eod, *tokenizer.encode(record["prompt"], add_special_tokens=False).ids],
            record["max_new_tokens"],
            Decoding(record["temperature"], record["top_k"] or None, record["top_p"],
                     record["seed"]),
            stop_ids=(eod,),
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return decode(tokenizer, new_ids)


def tree_checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 (or "-> target" for a link)}`` of everything under ``folder``.

    Compared before and after a job to show that it changed nothing there.
    """
    import hashlib

    listing = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            listing[relative] = f"-> {os.readlink(path)}"
        elif path.is_file():
            listing[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            listing[relative] = "dir"
    return listing


def single_process_training(model_cfg, cfg, tokens, seed: int = 0):
    """The oracle for the distributed trainer: one plain torch loop over the same batches.

    Replica 0 of round r draws its batches from a generator seeded with
    derive_seed(cfg.seed, r, 0); one replica doing every step of every round must
    therefore reproduce exactly this loop.
    """
    import torch

    from sparklm.model.gpt import GPT
    from sparklm.model.training import build_optimizer, derive_seed, lr_scale, sample_batch

    torch.manual_seed(seed)
    model = GPT(model_cfg)
    optimizer = build_optimizer(model, cfg)
    for r in range(cfg.rounds):
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, r, 0))
        for k in range(cfg.steps_in_round(r)):
            optimizer.set_lr_scale(lr_scale(cfg.steps_before(r) + k, cfg))
            x, y = sample_batch(tokens, cfg.batch_size, model_cfg.context_len, generator)
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
    return model
