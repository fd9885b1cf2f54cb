"""Generate: sample continuations of prompts from the trained model, prompts spread over Spark.

    spark-submit jobs/generate.py --run-root URI [--prompts URI] [--prompt TEXT …]
        [--max-new-tokens 64] [--temperature 0.8] [--top-k 50] [--top-p 0.95] [--seed 0]

Output under ``{run_root}/generate/``: ``generated.jsonl`` (one record per
prompt: prompt, completion, sampling settings, token counts, tokens/s),
``generated.txt`` for people, and ``manifest.json``.

Without Spark or Airflow, sample from a published model (the registry's
``latest.json``) straight from a shell:

    python -m jobs.generate --registry URI --model-name NAME --prompt "The lobster"
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

from sparklm import sparkjob, storage
from sparklm.errors import PipelineError
from sparklm.model_size import DEFAULT_MEMORY_BUDGET_GB
from sparklm.ownership import check_run_root
from sparklm.registry import read_latest
from sparklm.stage import (
    ArtifactFile,
    begin_stage,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)

STAGE = "generate"
MEMORY_KNOBS = "lower --max-new-tokens, or sample from a smaller model"


@dataclass(frozen=True)
class Sampling:
    """How to sample; recorded next to every completion so it can be reproduced."""

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1 or self.max_new_tokens > 100_000:
            raise PipelineError("--max-new-tokens must be between 1 and 100000")
        if self.temperature < 0:
            raise PipelineError("--temperature must be >= 0 (0 means greedy decoding)")
        if self.top_k < 0:
            raise PipelineError("--top-k must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise PipelineError("--top-p must be in (0, 1] (1 disables it)")


def parse_args(argv: Sequence[str]):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--run-root",
        type=check_run_root,
        help="Spark job: the run whose trained model to sample",
    )
    where.add_argument(
        "--registry",
        type=storage.normalize_uri,
        help="no Spark: sample the registry's latest version of --model-name",
    )
    p.add_argument("--model-name", help="with --registry: the registered model")
    p.add_argument("--prompts", help="URI of a text file, one prompt per line")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument(
        "--prompts-json",
        default="[]",
        help="a JSON list of prompts (how the DAG passes its prompts Param)",
    )
    defaults = Sampling()
    p.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    p.add_argument(
        "--temperature",
        type=float,
        default=defaults.temperature,
        help="divides the logits; 0 = greedy",
    )
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="0 disables")
    p.add_argument("--top-p", type=float, default=defaults.top_p, help="1 disables")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--memory-budget-gb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_GB,
        help="refuse, before building it, a model whose estimated sampling memory exceeds this "
        f"(default {DEFAULT_MEMORY_BUDGET_GB:g})",
    )
    args = p.parse_args(argv)
    if args.registry and not args.model_name:
        p.error("--registry needs --model-name")
    args.sampling = Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                             args.seed)  # fmt: skip
    args.sampling.check()
    try:
        extra = json.loads(args.prompts_json)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--prompts-json is not valid JSON: {exc}") from None
    if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
        raise PipelineError("--prompts-json must be a JSON list of strings")
    args.prompt += extra
    return args


def load_prompts(prompts_uri: str | None, inline: Iterable[str]) -> list[str]:
    """Prompts from the file (one per line, blank lines skipped) and the inline ones."""
    prompts = []
    if prompts_uri:
        if not storage.exists(prompts_uri):
            raise PipelineError(f"prompts file {prompts_uri} does not exist: fix --prompts "
                                "or pass prompts inline with --prompt")  # fmt: skip
        text = storage.read_bytes(prompts_uri).decode("utf-8", errors="replace")
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    prompts += [p.strip() for p in inline if p.strip()]
    if not prompts:
        raise PipelineError(
            f"no prompts: {prompts_uri or 'no --prompts file'} holds none and no --prompt was "
            "given. Put one prompt per line in the file or pass --prompt TEXT"
        )
    return prompts


class Sampler:
    """A loaded model and tokenizer that turn a prompt into a completion record."""

    def __init__(self, weights: bytes, config: dict, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        from sparklm.tokenizer import special_ids
        from sparklm.weights import load_model

        self.model = load_model(weights, config)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.eod = special_ids(self.tokenizer)["eod"]

    def complete(self, prompt: str, sampling: Sampling, index: int) -> dict:
        """Sample one completion; the seed depends on the prompt's index, not on where it runs."""
        from sparklm.sampling import generate
        from sparklm.tokenizer import decode

        # A document starts after an end-of-document token, as in the training stream.
        prompt_ids = [self.eod, *self.tokenizer.encode(prompt, add_special_tokens=False).ids]
        started = time.perf_counter()
        new_ids = generate(
            self.model, prompt_ids, sampling.max_new_tokens, temperature=sampling.temperature,
            top_k=sampling.top_k or None, top_p=sampling.top_p, seed=sampling.seed + index,
            stop_ids=(self.eod,),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        return {
            "index": index,
            "prompt": prompt,
            "completion": decode(self.tokenizer, new_ids),
            **asdict(sampling),
            "seed": sampling.seed + index,
            "prompt_tokens": len(prompt_ids) - 1,
            "new_tokens": len(new_ids),
            "stopped_by": "end_of_document" if len(new_ids) < sampling.max_new_tokens else "length",
            "tokens_per_s": round(len(new_ids) / seconds, 2) if seconds > 0 else None,
        }


def generate_partition(items, *, artifacts, sampling: Sampling):
    """Partition function: load the model once, complete each ``(index, prompt)``."""
    import torch
    from pyspark import TaskContext

    torch.set_num_threads(max(1, TaskContext.get().cpus()))
    sampler = Sampler(*artifacts.value)
    for index, prompt in items:
        yield sampler.complete(prompt, sampling, index)


def render_text(records: list[dict]) -> str:
    blocks = []
    for r in records:
        blocks.append(
            f"### Prompt {r['index'] + 1} (T={r['temperature']}, top-k={r['top_k']}, "
            f"top-p={r['top_p']}, seed={r['seed']})\n{r['prompt']}\n--- completion ---\n"
            f"{r['prompt']}{r['completion']}\n"
        )
    return "\n".join(blocks)


def main(argv: Sequence[str]) -> dict | None:
    args = parse_args(argv)
    if args.registry:
        return sample_from_registry(args)
    started = time.time()
    prompts = load_prompts(args.prompts, args.prompt)
    train = read_manifest(args.run_root, "train")
    tokenize = read_manifest(args.run_root, "tokenize")
    weights, config = checked_model(listed_files(train, "model.safetensors")[0]["uri"],
                                    listed_files(train, "config.json")[0]["uri"],
                                    args.memory_budget_gb)  # fmt: skip
    tokenizer_json = storage.read_bytes(listed_files(tokenize, "tokenizer.json")[0]["uri"])

    spark = sparkjob.spark_session("llm-generate")
    sc = spark.sparkContext
    artifacts = sc.broadcast((weights, config, tokenizer_json.decode()))
    slices = max(1, min(len(prompts), sc.defaultParallelism))
    records = sorted(
        sc.parallelize(list(enumerate(prompts)), slices)
        .mapPartitions(partial(generate_partition, artifacts=artifacts, sampling=args.sampling))
        .collect(),
        key=lambda r: r["index"],
    )
    stage = begin_stage(args.run_root, STAGE)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    files = [
        ArtifactFile.write(stage, "generated.jsonl", jsonl.encode(), rows=len(records)),
        ArtifactFile.write(stage, "generated.txt", render_text(records).encode()),
    ]
    new_tokens = sum(r["new_tokens"] for r in records)
    manifest = commit_stage(
        args.run_root, STAGE, files=files, started_at=started,
        params={"prompts": args.prompts, "inline_prompts": len(args.prompt),
                **asdict(args.sampling)},
        inputs={"train": input_ref(args.run_root, "train"),
                "tokenize": input_ref(args.run_root, "tokenize")},
        stats={"prompts": len(records), "new_tokens": new_tokens,
               "mean_tokens_per_s": sum(r["tokens_per_s"] or 0 for r in records) / len(records)},
    )  # fmt: skip
    for r in records[:3]:
        sparkjob.log.info("sample %d: %r → %r", r["index"], r["prompt"], r["completion"][:200])
    return manifest


def checked_model(weights_uri: str, config_uri: str, budget_gb: float) -> tuple[bytes, dict]:
    """The weights' bytes and config, once the safetensors header (read alone) agrees with the
    config and the model fits ``budget_gb``: nothing is allocated for a model that would not."""
    from sparklm.weights import check_weights

    config = json.loads(storage.read_bytes(config_uri))
    check_weights(weights_uri, config, budget_gb=budget_gb, what=weights_uri)
    return storage.read_bytes(weights_uri), config


def sample_from_registry(args) -> None:
    """The no-Spark path: print completions from the registry's latest promoted version."""
    latest = read_latest(args.registry, args.model_name)
    version = latest["uri"]
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        storage.refuse_symlinks(args.registry, storage.join(version, name))
    weights, config = checked_model(storage.join(version, "model.safetensors"),
                                    storage.join(version, "config.json"),
                                    args.memory_budget_gb)  # fmt: skip
    sampler = Sampler(
        weights, config, storage.read_bytes(storage.join(version, "tokenizer.json")).decode()
    )
    for index, prompt in enumerate(load_prompts(args.prompts, args.prompt)):
        record = sampler.complete(prompt, args.sampling, index)
        print(f"{prompt}{record['completion']}\n", flush=True)


if __name__ == "__main__":
    sparkjob.run(main, memory_knobs=MEMORY_KNOBS)
