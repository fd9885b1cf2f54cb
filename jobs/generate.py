"""Generate: sample continuations of prompts from the trained model, prompts spread over Spark.

    spark-submit jobs/generate.py --run-root URI [--prompts URI] [--prompt TEXT …]
        [--max-new-tokens 64] [--temperature 0.8] [--top-k 50] [--top-p 0.95] [--seed 0]

With neither ``--prompts`` nor ``--prompt``, it samples the seed prompts shipped beside it
(``jobs/conf/prompts.txt``). A ``--prompts`` file outside ``--allowed-corpus-prefixes``
(comma-separated; the DAG always passes its list, a job run by hand falls back to the
environment variable ``LLM_CORPUS_ALLOWED_PREFIXES``, and to anywhere when that is unset
too) is refused: its lines end up in ``generated.jsonl``, which publish copies into the
registry. The shipped file is the code's own, not a corpus, and is not checked.

Output under ``{run_root}/generate/``: ``generated.jsonl`` (one record per
prompt: prompt, completion, sampling settings, token counts, tokens/s),
``generated.txt`` for people, and ``manifest.json``.

Without Spark or Airflow, sample from a published model (the registry's
``latest.json``) straight from a shell:

    python -m jobs.generate --registry URI --model-name NAME --prompt "The lobster"
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

from sparklm import settings
from sparklm.model.completion import Sampler, Sampling
from sparklm.registry.lineage import MAX_RECORD_BYTES
from sparklm.registry.versions import read_latest, registry_uri
from sparklm.runtime import allowlist, entrypoint, json_objects, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.ownership import check_run_root
from sparklm.runtime.stages import (
    ArtifactFile,
    begin_stage,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)

STAGE = "generate"
MEMORY_KNOBS = "lower --max-new-tokens, or sample from a smaller model"
# A prompts file is read whole on the driver: at most this much of it.
MAX_PROMPTS_BYTES = 2**20
# Prompts one run samples (each up to --max-new-tokens): a bound on the stage's work.
MAX_PROMPTS = 10_000
# What to do about a config or tokenizer that is not what train or tokenize wrote.
REWRITE_FIX = "rerun the stage that wrote it, or sample another version"
# The default prompts, beside this script (the DAG names them itself: see --prompts' help).
SHIPPED_PROMPTS = Path(__file__).parent / settings.SHIPPED_PROMPTS


def parse_args(argv: Sequence[str]):
    p = entrypoint.parser(__doc__.splitlines()[0], run_root=False)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--run-root",
        type=check_run_root,
        help="Spark job: the run whose trained model to sample",
    )
    where.add_argument(
        "--registry",
        type=registry_uri,
        help="no Spark: sample the registry's latest version of --model-name",
    )
    p.add_argument("--model-name", help="with --registry: the registered model")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument(
        "--allowed-corpus-prefixes",
        help="comma-separated URI prefixes --prompts must lie under (it is read as a corpus "
        f"is), or '*' for anywhere (default: ${allowlist.CORPUS_ENV}, else anywhere)",
    )
    settings.add_arguments(p, STAGE)
    args = p.parse_args(argv)
    if args.registry and not args.model_name:
        p.error("--registry needs --model-name")
    args.sampling = Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                             args.sample_seed)  # fmt: skip
    args.prompt += args.prompts
    return args


def load_prompts(prompts_uri: str | None, inline: Iterable[str],
                 allowed_prefixes: str | None) -> tuple[list[str], str | None]:  # fmt: skip
    """Prompts from the file (one per line, blank lines skipped) and the inline ones; with
    neither, the seed prompts shipped beside this job. A file the user names must lie under
    the corpus allow-list (``allowed_prefixes``, else ``$LLM_CORPUS_ALLOWED_PREFIXES``).

    Also returns the file they came from (None: inline only), for the manifest.
    """
    prompts = [p.strip() for p in inline if p.strip()]
    source = prompts_uri
    if prompts_uri:
        allowlist.check_corpus([prompts_uri], allowed_prefixes, what="prompts file")
        prompts = non_blank_lines(read_prompts_file(prompts_uri)) + prompts
    elif not prompts:
        prompts, source = non_blank_lines(read_shipped_prompts()), SHIPPED_PROMPTS.as_uri()
    if len(prompts) > MAX_PROMPTS:
        raise PipelineError(
            f"{len(prompts):,} prompts, more than the {MAX_PROMPTS:,} one generate stage samples: "
            "split the prompts file and run generate on each part"
        )
    if not prompts:
        raise PipelineError(
            f"no prompts: {prompts_uri or SHIPPED_PROMPTS} holds none and no --prompt was "
            "given. Put one prompt per line in the file or pass --prompt TEXT"
        )
    return prompts, source


def read_prompts_file(prompts_uri: str) -> str:
    """The text of the prompts file a user named, read as a corpus file is, up to its limit."""
    if not storage.exists(prompts_uri):
        raise PipelineError(f"prompts file {prompts_uri} does not exist: fix --prompts "
                            "or pass prompts inline with --prompt")  # fmt: skip
    data = storage.read_user_file(prompts_uri, MAX_PROMPTS_BYTES, "prompts file")
    return data.decode("utf-8", errors="replace")


def read_shipped_prompts() -> str:
    """The seed prompts beside this script. On EMR spark-submit runs a downloaded copy of it,
    with no conf/ beside it: the DAG passes the bundle's file as --prompts there."""
    if not SHIPPED_PROMPTS.is_file():
        raise PipelineError(f"no --prompts or --prompt given, and the seed prompts shipped with "
                            f"the jobs ({SHIPPED_PROMPTS}) are not beside this script: pass "
                            "--prompts URI or --prompt TEXT")  # fmt: skip
    return SHIPPED_PROMPTS.read_text(encoding="utf-8")


def non_blank_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


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
        sample_from_registry(args)
        return None
    started = time.time()
    prompts, prompts_source = load_prompts(args.prompts_uri, args.prompt,
                                           args.allowed_corpus_prefixes)  # fmt: skip
    train = read_manifest(args.run_root, "train")
    tokenize = read_manifest(args.run_root, "tokenize")
    weights, config = checked_model(listed_files(train, "model.safetensors")[0]["uri"],
                                    listed_files(train, "config.json")[0]["uri"],
                                    args.memory_budget_gb)  # fmt: skip
    tokenizer_json = read_small(listed_files(tokenize, "tokenizer.json")[0]["uri"], "tokenizer")

    spark = entrypoint.spark_session("llm-generate")
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
        params={"prompts": prompts_source, "inline_prompts": len(args.prompt),
                **asdict(args.sampling)},
        inputs={"train": input_ref(args.run_root, "train"),
                "tokenize": input_ref(args.run_root, "tokenize")},
        stats={"prompts": len(records), "new_tokens": new_tokens,
               "mean_tokens_per_s": sum(r["tokens_per_s"] or 0 for r in records) / len(records)},
    )  # fmt: skip
    for r in records[:3]:
        entrypoint.log.info("sample %d: %r → %r", r["index"], r["prompt"], r["completion"][:200])
    return manifest


def checked_model(weights_uri: str, config_uri: str, budget_gb: float) -> tuple[bytes, dict]:
    """The weights' bytes and config, once the safetensors header (read alone) agrees with the
    config and the model fits ``budget_gb``: nothing is allocated for a model that would not."""
    from sparklm.model.weights import check_weights

    config = json_objects.parse(read_small(config_uri, "model config"), config_uri, required=(),
                                error=PipelineError, fix=REWRITE_FIX)  # fmt: skip
    check_weights(weights_uri, config, budget_gb=budget_gb, what=weights_uri)
    return storage.read_bytes(weights_uri), config


def read_small(uri: str, what: str) -> bytes:
    """A model's config or tokenizer, read up to the bound any the pipeline writes fits."""
    return json_objects.read_bounded(uri, MAX_RECORD_BYTES, what, error=PipelineError,
                                     fix=REWRITE_FIX)  # fmt: skip


def sample_from_registry(args) -> None:
    """The no-Spark path: print completions from the registry's latest promoted version."""
    prompts, _ = load_prompts(args.prompts_uri, args.prompt, args.allowed_corpus_prefixes)
    latest = read_latest(args.registry, args.model_name)
    version = latest["uri"]
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        storage.refuse_symlinks(args.registry, storage.join(version, name))
    weights, config = checked_model(storage.join(version, "model.safetensors"),
                                    storage.join(version, "config.json"),
                                    args.memory_budget_gb)  # fmt: skip
    sampler = Sampler(
        weights, config, read_small(storage.join(version, "tokenizer.json"), "tokenizer").decode()
    )
    for index, prompt in enumerate(prompts):
        record = sampler.complete(prompt, args.sampling, index)
        print(f"{prompt}{record['completion']}\n", flush=True)


if __name__ == "__main__":
    entrypoint.run(main, memory_knobs=MEMORY_KNOBS)
