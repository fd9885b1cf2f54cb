"""Tokens/s of ``generate`` with and without the KV cache, same model and prompts, one run.

    python bench/bench_generate.py [--model-dir DIR] [--new-tokens 256] [--prompts 4]

Without ``--model-dir`` the model is randomly initialised with ``GPTConfig(vocab_size=4096)``:
speed does not depend on the weights. No stop ids are passed, so both paths emit exactly
``--new-tokens`` tokens per prompt. With the default ``context_len=128``, 256 new tokens make
the window slide, which is the realistic case and is included in the timing.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from sparklm.model.decoding import Decoding, generate
from sparklm.model.gpt import GPT, GPTConfig


def load(model_dir: str | None) -> GPT:
    if model_dir is None:
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=4096))
    path = Path(model_dir.removeprefix("file://"))
    model = GPT(GPTConfig.from_dict(json.loads((path / "config.json").read_text())))
    # The trainer stores the tied embedding/head weight under both names, so a strict load fits.
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model


def seconds_for(model: GPT, prompts: list[list[int]], new_tokens: int, use_cache: bool) -> float:
    start = time.perf_counter()
    for prompt in prompts:
        out = generate(model, prompt, new_tokens, Decoding(seed=0), use_cache=use_cache)
        assert len(out) == new_tokens
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="local directory with model.safetensors, config.json")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="best of N, paths interleaved")
    args = parser.parse_args()

    torch.set_num_threads(2)
    model = load(args.model_dir).eval()
    config = model.config
    rng = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(config.vocab_size, (args.prompt_len,), generator=rng).tolist()
        for _ in range(args.prompts)
    ]
    generate(model, prompts[0], 8)  # warm-up: first-call allocations and kernel selection

    # Interleaving the two paths and keeping each one's best run makes the ratio robust to
    # other processes competing for the same two cores.
    best = {True: math.inf, False: math.inf}
    for _ in range(args.repeats):
        for use_cache in best:
            best[use_cache] = min(
                best[use_cache], seconds_for(model, prompts, args.new_tokens, use_cache)
            )
    tokens = len(prompts) * args.new_tokens
    cached, full = tokens / best[True], tokens / best[False]

    print(
        f"{args.prompts} prompts x {args.prompt_len} tokens, {args.new_tokens} new tokens each; "
        f"context_len={config.context_len}, n_layer={config.n_layer}, n_embd={config.n_embd}, "
        f"vocab={config.vocab_size}, {model.num_params():,} params, "
        f"torch threads={torch.get_num_threads()}, best of {args.repeats}\n"
    )
    print("| generate | seconds | tokens/s |")
    print("|---|---:|---:|")
    print(f"| KV cache | {best[True]:.2f} | {cached:.1f} |")
    print(f"| full recompute | {best[False]:.2f} | {full:.1f} |")
    print(f"| **speed-up** | | **{cached / full:.2f}x** |")


if __name__ == "__main__":
    main()
