"""Train: a GPT-style decoder, one replica per Spark partition, averaged every round.

    spark-submit jobs/train.py --run-root URI [--partitions 2] [--rounds 12]
        [--local-steps 25] [--optimizer adamw|muon] [--outer avg|nesterov]
        [--position rope] [--norm rmsnorm] [--mlp swiglu] [--qk-norm true] …

Each round the driver broadcasts the global weights and the averaged inner
optimizer state (AdamW moments; Muon momentum buffers); every partition runs
``--local-steps`` inner steps on windows drawn from its own slice of the
training tokens and returns its (token-weighted) delta and optimizer state; a
tree aggregation sums them and the outer optimizer applies the mean delta.
The driver then scores the validation tokens and checkpoints the round, so a
killed or retried task resumes from the last complete round.

Output under ``{run_root}/train/``: ``model.safetensors``, ``config.json``,
``metrics.csv``, ``loss.png``, ``checkpoints/`` and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch.nn.utils import vector_to_parameters

from sparklm import faults, sparkjob
from sparklm.averaging import OUTER_KINDS, OuterOptimizer, combine, flat, split_flat
from sparklm.errors import PipelineError
from sparklm.model import GPT, MLPS, NORMS, POSITIONS, GPTConfig
from sparklm.model_size import DEFAULT_MEMORY_BUDGET_GB, Shape, check_budget, training_memory
from sparklm.optim import OPTIMIZERS
from sparklm.plots import plot_training
from sparklm.stage import (
    ArtifactFile,
    clear_stage,
    code_version,
    commit_stage,
    input_ref,
    invalidate_stage,
    listed_files,
    read_manifest,
)
from sparklm.tokens import read_range
from sparklm.training import (
    OPTIMIZER_STATE_POLICIES,
    SCHEDULES,
    GlobalState,
    TrainConfig,
    apply_update,
    evaluate,
    lr_at,
    train_replica,
)
from sparklm.weights import Checkpoint, load_latest_checkpoint, model_bytes, save_checkpoint

STAGE = "train"
UPSTREAM = "tokenize"
# The settings that shrink a replica or the driver, named when memory runs short.
MODEL_SIZE_FLAGS = "--batch-size, --context-len, --n-embd or --n-layer"
# The block the job trains unless told otherwise: the best measured (README, Training), Qwen3's.
# GPTConfig's own defaults stay GPT-2's so config.json files from before the switches keep
# their meaning.
DEFAULT_MODEL = GPTConfig(vocab_size=1, position="rope", norm="rmsnorm", mlp="swiglu",
                          qk_norm=True)  # fmt: skip
METRIC_COLUMNS = (
    "round", "inner_steps", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpb",
    "val_acc", "tokens_per_s", "seconds", "lr", "driver_rss_mb", "executor_rss_mb",
)  # fmt: skip


def parse_args(argv: Sequence[str]):
    p = sparkjob.parser(__doc__.splitlines()[0])
    model = DEFAULT_MODEL
    train = TrainConfig()
    g = p.add_argument_group("model")
    g.add_argument("--context-len", type=int, default=model.context_len)
    g.add_argument("--n-layer", type=int, default=model.n_layer)
    g.add_argument("--n-head", type=int, default=model.n_head)
    g.add_argument("--n-embd", type=int, default=model.n_embd)
    g.add_argument("--dropout", type=float, default=model.dropout)
    g.add_argument(
        "--memory-budget-gb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_GB,
        help="refuse, before allocating, a model whose estimated training memory (parameters, "
        "AdamW state, activations of one batch) in one process exceeds this (default "
        f"{DEFAULT_MEMORY_BUDGET_GB:g})",
    )
    add_block_flags(g, model)
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--partitions",
        type=int,
        default=train.partitions,
        help="replicas trained in parallel, one per Spark partition",
    )
    g.add_argument(
        "--rounds",
        type=int,
        default=train.rounds,
        help="averaging rounds (the driver combines replicas after each)",
    )
    g.add_argument(
        "--local-steps",
        type=int,
        default=train.local_steps,
        help="inner steps each replica takes per round",
    )
    g.add_argument("--batch-size", type=int, default=train.batch_size)
    g.add_argument("--lr", type=float, default=train.lr, help="peak AdamW learning rate")
    add_recipe_flags(g, train)
    g.add_argument("--min-lr-ratio", type=float, default=train.min_lr_ratio)
    g.add_argument("--warmup-steps", type=int, default=train.warmup_steps)
    g.add_argument("--weight-decay", type=float, default=train.weight_decay)
    g.add_argument("--grad-clip", type=float, default=train.grad_clip)
    g.add_argument(
        "--outer",
        choices=OUTER_KINDS,
        default=train.outer,
        help="avg: plain parameter averaging; nesterov: DiLoCo outer step",
    )
    g.add_argument("--outer-lr", type=float, default=train.outer_lr)
    g.add_argument("--outer-momentum", type=float, default=train.outer_momentum)
    g.add_argument(
        "--optimizer-state",
        choices=OPTIMIZER_STATE_POLICIES,
        default=train.optimizer_state,
        help="averaged: the inner optimizer's state is averaged and carried across rounds; "
        "reset: a fresh optimizer every round (the old project's behaviour)",
    )
    g.add_argument("--seed", type=int, default=train.seed)
    g.add_argument(
        "--eval-tokens",
        type=int,
        default=train.eval_tokens,
        help="validation tokens scored after every round",
    )
    return p.parse_args(argv)  # fmt: skip


def add_block_flags(g: argparse._ArgumentGroup, model: GPTConfig) -> None:
    """The block's parts (GPTConfig switches), defaulting to ``model``'s."""
    g.add_argument("--position", choices=POSITIONS, default=model.position,
                   help="learned: a position table (GPT-2); rope: rotary q/k (Llama, Qwen3)")
    g.add_argument("--rope-theta", type=float, default=model.rope_theta)
    g.add_argument("--norm", choices=NORMS, default=model.norm)
    g.add_argument("--norm-eps", type=float, default=model.norm_eps)
    g.add_argument("--mlp", choices=MLPS, default=model.mlp,
                   help="gelu: GPT-2's MLP; swiglu: down(silu(gate(x)) * up(x))")
    g.add_argument("--intermediate-size", type=int, default=0,
                   help="MLP hidden size; 0: 4*n_embd for gelu, ~8/3*n_embd for swiglu")
    g.add_argument("--qk-norm", type=boolean, default=model.qk_norm,
                   help="true: RMSNorm on each head's queries and keys (Qwen3)")
    g.add_argument("--bias", type=boolean, default=model.bias, help="biases in linear layers")
    g.add_argument("--tie-embeddings", type=boolean, default=model.tie_embeddings,
                   help="false: a separate output head")  # fmt: skip


def add_recipe_flags(g: argparse._ArgumentGroup, train: TrainConfig) -> None:
    """Inner optimizer, schedule and the early short-interval rounds."""
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=train.optimizer,
                   help="adamw; or muon: Muon on the blocks' matrices, AdamW on the rest")
    g.add_argument("--muon-lr", type=float, default=train.muon_lr,
                   help="peak Muon learning rate (--optimizer muon)")
    g.add_argument("--muon-momentum", type=float, default=train.muon_momentum)
    g.add_argument("--schedule", choices=SCHEDULES, default=train.schedule,
                   help="after warm-up: cosine decay, or wsd (stable, then a linear decay "
                        "over the last --decay-fraction of the steps)")
    g.add_argument("--decay-fraction", type=float, default=train.decay_fraction)
    g.add_argument("--early-rounds", type=int, default=train.early_rounds,
                   help="the first N rounds take --early-local-steps steps each instead")
    g.add_argument("--early-local-steps", type=int, default=train.early_local_steps)  # fmt: skip


def boolean(text: str) -> bool:
    """``true``/``false`` in any case: what Airflow renders a boolean Param as (``True``)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def configs(args, vocab_size: int) -> tuple[GPTConfig, TrainConfig]:
    try:
        switches = {n: getattr(args, n) for n in GPTConfig.field_names() if n != "vocab_size"}
        switches["intermediate_size"] = args.intermediate_size or None  # 0: the MLP's default
        model_cfg = GPTConfig(vocab_size=vocab_size, **switches)
        train_cfg = TrainConfig(
            **{k: getattr(args, k) for k in TrainConfig.field_names() if hasattr(args, k)}
        )
    except ValueError as exc:
        raise PipelineError(f"invalid training settings: {exc}") from None
    return model_cfg, train_cfg


def partition_ranges(total: int, partitions: int) -> list[tuple[int, int]]:
    """Split ``[0, total)`` into ``partitions`` contiguous, nearly equal token ranges."""
    bounds = [total * i // partitions for i in range(partitions + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def train_partition(indices, *, state, model_cfg, train_cfg, shards, dtype, ranges, round_index):
    """Partition function: train replica ``p`` on its token range, yield its update."""
    from pyspark import TaskContext

    torch.set_num_threads(max(1, TaskContext.get().cpus()))
    faults.exhaust_memory("train:replica")
    for p in indices:
        start, stop = ranges[p]
        tokens = torch.from_numpy(read_range(shards, dtype, start, stop))
        yield train_replica(model_cfg, train_cfg, state.value, tokens, round_index, p)


def fingerprint(model_cfg: GPTConfig, train_cfg: TrainConfig, upstream: dict) -> str:
    """Identify a training run: resuming is only allowed when this matches exactly.

    The data enters through its content (the upstream files' checksums), not the
    manifest's timestamps, so re-tokenizing the same corpus keeps checkpoints valid.
    """
    blob = json.dumps(
        [model_cfg.to_dict(), train_cfg.to_dict(), upstream["files"], code_version()],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    started = time.time()
    upstream = read_manifest(args.run_root, UPSTREAM)
    stats = upstream["stats"]
    model_cfg, train_cfg = configs(args, stats["vocab_size"])
    check_budget(training_memory(Shape.from_config(model_cfg.to_dict()), train_cfg.batch_size),
                 args.memory_budget_gb, "the model", MODEL_SIZE_FLAGS)  # fmt: skip
    dtype = np.dtype(stats["dtype"])
    train_shards = listed_files(upstream, "train/")
    val_shards = listed_files(upstream, "val/")
    ranges = partition_ranges(stats["train"]["tokens"], train_cfg.partitions)
    smallest = min(stop - start for start, stop in ranges)
    if smallest <= model_cfg.context_len:
        raise PipelineError(
            f"--context-len {model_cfg.context_len} is larger than the data: with "
            f"{train_cfg.partitions} partitions each replica gets only {smallest} training "
            "tokens. Lower --context-len or --partitions, or give preprocess more text"
        )
    val_count = min(stats["val"]["tokens"], train_cfg.eval_tokens + 1)
    if val_count <= model_cfg.context_len:
        raise PipelineError(
            f"the validation split has {stats['val']['tokens']} tokens, not enough for one "
            f"window of --context-len {model_cfg.context_len}: lower --context-len or raise "
            "preprocess --val-fraction"
        )
    val_tokens = torch.from_numpy(read_range(val_shards, dtype, 0, val_count))
    tokens_per_byte = stats["val"]["tokens"] / stats["val"]["bytes"]

    stage = invalidate_stage(args.run_root, STAGE)
    run_id = fingerprint(model_cfg, train_cfg, upstream)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.manual_seed(train_cfg.seed)
    faults.exhaust_memory("train:model")
    model = GPT(model_cfg)
    outer = OuterOptimizer(model, train_cfg.outer, train_cfg.outer_lr, train_cfg.outer_momentum)
    checkpoint = load_latest_checkpoint(stage, run_id)
    if checkpoint is None:
        clear_stage(stage)
        state = GlobalState(flat(model.parameters()), {}, 0)
        metrics: list[dict] = []
        started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        loss0, _ = evaluate(model, val_tokens)
        sparkjob.log.info(
            "train: %s parameters (%s non-embedding; %s); initial val loss %.3f",
            f"{model.num_params(False):,}",
            f"{model.num_params():,}",
            model_cfg.describe(),
            loss0,
        )
    else:
        vector_to_parameters(checkpoint.params.clone(), model.parameters())
        if checkpoint.outer_momentum is not None:
            outer.load_momentum_buffers(split_flat(checkpoint.outer_momentum, outer.params))
        state = GlobalState(checkpoint.params, checkpoint.optimizer_state, checkpoint.step)
        metrics = checkpoint.metrics
        started_at = checkpoint.started_at
        sparkjob.log.info(
            "train: resuming after round %d of %d from %s/checkpoints",
            checkpoint.round,
            train_cfg.rounds,
            stage,
        )

    spark = sparkjob.spark_session("llm-train")
    faults.exhaust_memory("train:session", spark)
    sc = spark.sparkContext
    if train_cfg.partitions > sc.defaultParallelism:
        sparkjob.log.warning(
            "%d partitions but only %d task slots: replicas will queue",
            train_cfg.partitions,
            sc.defaultParallelism,
        )
    window_tokens = train_cfg.partitions * train_cfg.batch_size * model_cfg.context_len
    for round_index in range(len(metrics), train_cfg.rounds):
        t0 = time.time()
        broadcast = sc.broadcast(state)
        update = (
            sc.parallelize(range(train_cfg.partitions), train_cfg.partitions)
            .mapPartitions(partial(
                train_partition, state=broadcast, model_cfg=model_cfg, train_cfg=train_cfg,
                shards=train_shards, dtype=dtype, ranges=ranges, round_index=round_index))
            .treeAggregate(None, combine, combine, depth=2)
        )  # fmt: skip
        broadcast.destroy()
        if not update.finite or not math.isfinite(update.mean_loss):
            raise diverged(round_index, train_cfg, "the training loss")
        steps = train_cfg.steps_in_round(round_index)
        state = apply_update(model, outer, update, state, steps)
        if not torch.isfinite(state.params).all():
            raise diverged(round_index, train_cfg, "the averaged weights")
        train_seconds = time.time() - t0
        val_loss, val_acc = evaluate(model, val_tokens)
        if not math.isfinite(val_loss):
            raise diverged(round_index, train_cfg, "the validation loss")
        row = {
            "round": round_index + 1,
            "inner_steps": state.step,
            "tokens": window_tokens * state.step,
            "train_loss": update.mean_loss,
            "val_loss": val_loss,
            "val_ppl": math.exp(val_loss),
            "val_bpb": val_loss / math.log(2) * tokens_per_byte,
            "val_acc": val_acc,
            "tokens_per_s": window_tokens * steps / train_seconds,
            "seconds": time.time() - t0,
            "lr": lr_at(state.step - 1, train_cfg),
            "driver_rss_mb": sparkjob.peak_rss_mb(),
            "executor_rss_mb": update.peak_rss_mb,
        }
        metrics.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        save_checkpoint(stage, Checkpoint(
            round=round_index + 1, step=state.step, params=state.params,
            optimizer_state=state.optimizer_state, outer_momentum=momentum_vector(outer),
            metrics=metrics, fingerprint=run_id, started_at=started_at))  # fmt: skip
        sparkjob.log.info(
            "round %d/%d: train %.3f  val %.3f (%.3f bits/byte, acc %.1f%%)  %.0f tok/s  %.1fs",
            round_index + 1, train_cfg.rounds, row["train_loss"], val_loss, row["val_bpb"],
            100 * val_acc, row["tokens_per_s"], row["seconds"])  # fmt: skip

    files = [
        ArtifactFile.write(stage, "model.safetensors", model_bytes(model)),
        ArtifactFile.write(stage, "config.json",
                           json.dumps(model_cfg.to_dict(), indent=2).encode()),
        ArtifactFile.write(stage, "metrics.csv", metrics_csv(metrics), rows=len(metrics)),
        ArtifactFile.write(stage, "loss.png", plot_training(metrics)),
    ]  # fmt: skip
    final = metrics[-1]
    manifest = commit_stage(
        args.run_root, STAGE, files=files, started_at=started,
        params={"model": model_cfg.to_dict(), "train": train_cfg.to_dict()},
        inputs={UPSTREAM: input_ref(args.run_root, UPSTREAM)},
        stats={"parameters": model.num_params(False),
               "non_embedding_parameters": model.num_params(),
               "flops_per_token": model.flops_per_token(),
               "tokens_trained": final["tokens"], "final": final,
               "best_val_bpb": min(m["val_bpb"] for m in metrics),
               "fingerprint": run_id, "started_at": started_at,
               "driver_peak_rss_mb": round(sparkjob.peak_rss_mb(), 1)},
    )  # fmt: skip
    sparkjob.log.info(
        "train committed: val %.3f nats, %.3f bits/byte after %d tokens",
        final["val_loss"],
        final["val_bpb"],
        final["tokens"],
    )
    return manifest


def diverged(round_index: int, cfg: TrainConfig, what: str) -> PipelineError:
    return PipelineError(
        f"training diverged in round {round_index + 1}: {what} is NaN or infinite. Nothing was "
        f"checkpointed for this round. Lower --lr (now {cfg.lr}) or --grad-clip "
        f"(now {cfg.grad_clip}), or raise --warmup-steps (now {cfg.warmup_steps}), and run "
        "again: changed settings start a fresh run"
    )


def momentum_vector(outer: OuterOptimizer) -> torch.Tensor | None:
    buffers = outer.momentum_buffers()
    if any(b is None for b in buffers):
        return None
    return flat(buffers)


def metrics_csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


if __name__ == "__main__":
    sparkjob.run(main, memory_knobs=f"lower {MODEL_SIZE_FLAGS}")
