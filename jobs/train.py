"""Train: a GPT-style decoder, one replica per Spark partition, averaged every round.

    spark-submit jobs/train.py --run-root URI [--partitions 2] [--rounds 12]
        [--local-steps 25] [--optimizer adamw|muon] [--outer avg|nesterov]
        [--position rope] [--norm rmsnorm] [--mlp swiglu] [--qk-norm true] …
        [--init-from VERSION_URI]

Each round the driver broadcasts the global weights and the averaged inner
optimizer state (AdamW moments; Muon momentum buffers); every partition runs
``--local-steps`` inner steps on windows drawn from its own slice of the
training tokens and returns its delta and optimizer state, weighted by the
tokens it trained on (the same for every replica); a tree aggregation sums them
and the outer optimizer applies the mean delta.
The driver then scores the validation tokens and checkpoints the round, so a
killed or retried task resumes from the last complete round.

With ``--init-from`` (a registry version's folder, whose tokenizer tokenize used) training
continues from that version's weights and shape; the optimizer starts afresh, warm-up
included (``--warmup-steps``), and the manifest records the lineage.

Output under ``{run_root}/train/``: ``model.safetensors``, ``config.json``,
``metrics.csv``, ``loss.png``, ``checkpoints/`` and ``manifest.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from functools import partial, reduce

import numpy as np
import torch
from torch.nn.utils import vector_to_parameters

from sparklm import settings
from sparklm.data.token_shards import TokenSlices, read_range
from sparklm.model.averaging import OuterOptimizer, combine, flat, split_flat
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.memory_estimate import (
    Shape,
    check_budget,
    training_memory,
)
from sparklm.model.plots import plot_training
from sparklm.model.training import (
    GlobalState,
    Progress,
    TrainConfig,
    Training,
    TrainingData,
    apply_update,
    evaluate,
    lr_at,
    train_replica,
)
from sparklm.model.weights import (
    Checkpoint,
    check_weights,
    load_latest_checkpoint,
    model_bytes,
    parse_safetensors,
    save_checkpoint,
)
from sparklm.registry import lineage
from sparklm.runtime import entrypoint, fault_injection, shared_paths, storage
from sparklm.runtime.allocator import keep_freed_memory
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.process_memory import peak_rss_mb
from sparklm.runtime.stages import (
    ArtifactFile,
    clear_stage,
    code_version,
    commit_stage,
    input_ref,
    invalidate_stage,
    listed_files,
    read_manifest,
)

STAGE = "train"
UPSTREAM = "tokenize"
# The settings that shrink a replica or the driver, named when memory runs short.
MODEL_SIZE_FLAGS = "--batch-size, --context-len, --n-embd or --n-layer"
# The largest validation loss (nats) whose perplexity, exp(loss), a float holds: a model past it
# has diverged as surely as one whose loss is infinite.
MAX_VAL_LOSS = math.log(sys.float_info.max)
# Passes over its training tokens past which a continued run is warned: a version continued
# on new text alone overfits it (make bench-continue: 6.6 passes over 170 k new tokens scored
# 2.24 bits/byte against the parent's 2.15, about 90 passes over 8 k scored 3.4; with the old
# text replayed, 2.08 and 2.13). `make run` reads the default corpus about 1.4 times.
MAX_CONTINUED_PASSES = 5
# Replicas whose updates the driver sums itself; beyond, executors sum groups first (one model
# per replica would otherwise meet on the driver at once).
MAX_DRIVER_FAN_IN = 4
METRIC_COLUMNS = (
    "round", "inner_steps", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpb",
    "val_acc", "tokens_per_s", "seconds", "lr", "driver_rss_mb", "executor_rss_mb",
)  # fmt: skip


def parse_args(argv: Sequence[str]):
    p = entrypoint.parser(__doc__.splitlines()[0])
    settings.add_arguments(p, STAGE)
    return p.parse_args(argv)


def configs(args, vocab_size: int,
            parent: lineage.Parent | None = None) -> tuple[GPTConfig, TrainConfig]:  # fmt: skip
    """The model's and the training's configuration: the model's from the settings, or, when
    continuing, the parent version's shape (with this run's dropout). Logs a warning for each
    flag that has no effect with the others (``--lr`` under Muon)."""
    for line in settings.ignored_settings(vars(args)):
        entrypoint.log.warning("train: %s", line)
    try:
        if parent is not None:
            model_cfg = GPTConfig.from_dict({**parent.config, "dropout": args.dropout})
        else:
            # GPTConfig's own defaults stay GPT-2's, so an old config.json keeps its meaning;
            # a training run takes every field from its settings.
            switches = {n: getattr(args, n) for n in GPTConfig.field_names() if n != "vocab_size"}
            switches["intermediate_size"] = args.intermediate_size or None  # 0: the default
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


def train_partition(indices, *, state, model_cfg, train_cfg, slices: TokenSlices, round_index):
    """Partition function: train replica ``p`` on its token range, yield its update."""
    from pyspark import TaskContext

    torch.set_num_threads(max(1, TaskContext.get().cpus()))
    keep_freed_memory()
    fault_injection.exhaust_memory("train:replica")
    fault_injection.hold_first_attempt(f"train:replica:round-{round_index + 1}")
    for p in indices:
        tokens = torch.from_numpy(slices.read(p))
        yield train_replica(model_cfg, train_cfg, state.value, tokens, round_index, p)


def fingerprint(model_cfg: GPTConfig, train_cfg: TrainConfig, upstream: dict,
                parent: lineage.Parent | None) -> str:  # fmt: skip
    """Identify a training run: resuming is only allowed when this matches exactly.

    The data enters through its content (the upstream files' checksums), not the
    manifest's timestamps, so re-tokenizing the same corpus keeps checkpoints valid; a
    continued run's starting weights through their checksum.
    """
    start = parent.sha256("model.safetensors") if parent else None
    blob = json.dumps(
        [
            model_cfg.to_dict(),
            train_cfg.to_dict(),
            upstream["files"],
            code_version(__file__),
            *([start] if start else []),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    started = time.time()
    upstream = read_manifest(args.run_root, UPSTREAM)
    parent = parent_version(args, upstream)
    model_cfg, train_cfg = configs(args, upstream["stats"]["vocab_size"], parent)
    replica_tokens = max(stop - start for start, stop in partition_ranges(
        upstream["stats"]["train"]["tokens"], train_cfg.partitions))  # fmt: skip
    check_budget(training_memory(Shape.from_config(model_cfg.to_dict()), train_cfg.batch_size,
                                 replica_tokens),
                 args.memory_budget_gb, f"the model, beside {replica_tokens:,} training tokens "
                 "per replica,", f"{MODEL_SIZE_FLAGS}, raise --partitions")  # fmt: skip
    data = read_training_data(upstream, model_cfg, train_cfg)
    warn_of_many_passes(parent, model_cfg, train_cfg, upstream["stats"]["train"]["tokens"])
    sc = spark_context(train_cfg)
    shared_paths.check_executors_see(sc, [args.run_root])
    stage = invalidate_stage(args.run_root, STAGE)
    run_id = fingerprint(model_cfg, train_cfg, upstream, parent)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    keep_freed_memory()  # the driver scores the validation tokens every round
    torch.manual_seed(train_cfg.seed)
    fault_injection.exhaust_memory("train:model")
    model = initial_model(model_cfg, parent, args.memory_budget_gb)
    outer = OuterOptimizer(model, train_cfg.outer, train_cfg.outer_lr, train_cfg.outer_momentum,
                           train_cfg.outer_momentum_warmup)  # fmt: skip
    run = Training(model_cfg, train_cfg, data, model, outer, stage, run_id)
    progress = resume_or_initialise(run)
    for round_index in range(len(progress.metrics), train_cfg.rounds):
        row = run_round(sc, run, progress, round_index)
        record_round(run, progress, row)
    return write_outputs(args.run_root, run, progress, started, parent)


def parent_version(args, upstream: dict) -> lineage.Parent | None:
    """The version this run continues from (``--init-from``), which must be the one whose
    tokenizer encoded the tokens: the weights only mean something for those ids."""
    parent = lineage.for_job(args.init_from)
    if parent is None:
        return None
    parent.check_settings(vars(args), lambda name: settings.SETTINGS[name].cli_flag)
    used = (upstream["stats"].get("tokenizer_from") or {}).get("sha256")
    if used != parent.sha256("tokenizer.json"):
        raise lineage.LineageError(
            f"--init-from {parent.uri}: the tokens in {upstream['run_root']} were not encoded "
            "with that version's tokenizer, so its weights would read the wrong ids. Run "
            "tokenize with the same --init-from first"
        )
    parent.describe()  # what the manifest will record, checked now (metrics.csv's checksum)
    return parent


def warn_of_many_passes(parent: lineage.Parent | None, model_cfg: GPTConfig,
                        train_cfg: TrainConfig, train_tokens: int) -> None:  # fmt: skip
    """Warn when a continued run would read its training tokens more than
    ``MAX_CONTINUED_PASSES`` times: the usual cause is a corpus of only the new text."""
    planned = (train_cfg.total_steps * train_cfg.partitions * train_cfg.batch_size
               * model_cfg.context_len)  # fmt: skip
    passes = planned / max(1, train_tokens)
    if parent is not None and passes > MAX_CONTINUED_PASSES:
        entrypoint.log.warning(
            "train: continuing from version %s, this run reads its %s training tokens %.0f "
            "times over, and a continued model overfits a small text. Give the old corpus "
            "together with the new (corpus=OLD,NEW) so that it is replayed, or lower --rounds",
            parent.version, f"{train_tokens:,}", passes,
        )  # fmt: skip


def initial_model(model_cfg: GPTConfig, parent: lineage.Parent | None,
                  budget_gb: float) -> GPT:  # fmt: skip
    """A freshly initialised model, or the parent version's weights (their header checked
    against its config and the memory budget before they are read)."""
    model = GPT(model_cfg)
    if parent is not None:
        weights = storage.join(parent.uri, "model.safetensors")
        check_weights(weights, parent.config, budget_gb=budget_gb, what=weights)
        model.load_state_dict(parse_safetensors(parent.read("model.safetensors", None), weights))
        entrypoint.log.info("train: continuing from version %s (%s)", parent.version, parent.uri)
    return model


def read_training_data(upstream: dict, model_cfg: GPTConfig,
                       train_cfg: TrainConfig) -> TrainingData:  # fmt: skip
    """Check the data fits: every replica's slice and the validation split must hold at least
    one window of the context length."""
    stats = upstream["stats"]
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
    dtype = np.dtype(stats["dtype"])
    val_shards = listed_files(upstream, "val/")
    return TrainingData(
        slices=TokenSlices(listed_files(upstream, "train/"), dtype, ranges),
        val_tokens=torch.from_numpy(read_range(val_shards, dtype, 0, val_count)),
        tokens_per_byte=stats["val"]["tokens"] / stats["val"]["bytes"],
    )


def resume_or_initialise(run: Training) -> Progress:
    """Resume after the last checkpointed round of this very run (same fingerprint), or clear
    the stage and start from the freshly initialised model."""
    checkpoint = load_latest_checkpoint(run.stage, run.run_id)
    if checkpoint is None:
        clear_stage(run.stage)
        started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        loss0, _ = evaluate(run.model, run.data.val_tokens)
        entrypoint.log.info(
            "train: %s parameters (%s non-embedding; %s); initial val loss %.3f",
            f"{run.model.num_params(False):,}",
            f"{run.model.num_params():,}",
            run.model_cfg.describe(),
            loss0,
        )
        return Progress(GlobalState(flat(run.model.parameters()), {}, 0), [], started_at)
    vector_to_parameters(checkpoint.params.clone(), run.model.parameters())
    if checkpoint.outer_momentum is not None:
        run.outer.load_momentum_buffers(
            split_flat(checkpoint.outer_momentum, run.outer.params), checkpoint.round
        )
    entrypoint.log.info(
        "train: resuming after round %d of %d from %s/checkpoints",
        checkpoint.round,
        run.train_cfg.rounds,
        run.stage,
    )
    state = GlobalState(checkpoint.params, checkpoint.optimizer_state, checkpoint.step)
    return Progress(state, checkpoint.metrics, checkpoint.started_at)


def spark_context(train_cfg: TrainConfig):
    spark = entrypoint.spark_session("llm-train")
    fault_injection.exhaust_memory("train:session", spark)
    sc = spark.sparkContext
    if train_cfg.partitions > sc.defaultParallelism:
        entrypoint.log.warning(
            "%d partitions but only %d task slots: replicas will queue",
            train_cfg.partitions,
            sc.defaultParallelism,
        )
    return sc


def run_round(sc, run: Training, progress: Progress, round_index: int) -> dict:
    """Run a round: every replica trains from the broadcast state, the outer optimizer applies
    their mean update, the validation split is scored. Updates ``progress.state``; returns the
    round's metrics row. Stops the job if anything turns NaN or infinite, or the validation
    loss grows past what its perplexity can hold (``MAX_VAL_LOSS``)."""
    train_cfg = run.train_cfg
    t0 = time.time()
    broadcast = sc.broadcast(progress.state)
    updates = sc.parallelize(range(train_cfg.partitions), train_cfg.partitions).mapPartitions(
        partial(train_partition, state=broadcast, model_cfg=run.model_cfg, train_cfg=train_cfg,
                slices=run.data.slices, round_index=round_index))  # fmt: skip
    update = sum_in_partition_order(updates)
    broadcast.destroy()
    mean_loss = fault_injection.diverge(f"train:loss:round-{round_index + 1}", update.mean_loss)
    if not update.finite or not math.isfinite(mean_loss):
        raise diverged(round_index, train_cfg, "the training loss")
    steps = train_cfg.steps_in_round(round_index)
    progress.state = state = apply_update(run.model, run.outer, update, progress.state, steps)
    if not torch.isfinite(state.params).all():
        raise diverged(round_index, train_cfg, "the averaged weights")
    train_seconds = time.time() - t0
    val_loss, val_acc = evaluate(run.model, run.data.val_tokens)
    check_validation_loss(round_index, train_cfg, val_loss)
    window_tokens = train_cfg.partitions * train_cfg.batch_size * run.model_cfg.context_len
    return {
        "round": round_index + 1,
        "inner_steps": state.step,
        "tokens": window_tokens * state.step,
        "train_loss": update.mean_loss,
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss),
        "val_bpb": val_loss / math.log(2) * run.data.tokens_per_byte,
        "val_acc": val_acc,
        "tokens_per_s": window_tokens * steps / train_seconds,
        "seconds": time.time() - t0,
        "lr": lr_at(state.step - 1, train_cfg),
        "driver_rss_mb": peak_rss_mb(),
        "executor_rss_mb": update.peak_rss_mb,
    }


def record_round(run: Training, progress: Progress, row: dict) -> None:
    """Record the row: append it to the metrics, checkpoint the round (what a retried task
    resumes from) and log it."""
    progress.metrics.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    state = progress.state
    save_checkpoint(run.stage, Checkpoint(
        round=row["round"], step=state.step, params=state.params,
        optimizer_state=state.optimizer_state, outer_momentum=momentum_vector(run.outer),
        metrics=progress.metrics, fingerprint=run.run_id,
        started_at=progress.started_at))  # fmt: skip
    entrypoint.log.info(
        "round %d/%d: train %.3f  val %.3f (%.3f bits/byte, acc %.1f%%)  %.0f tok/s  %.1fs",
        row["round"], run.train_cfg.rounds, row["train_loss"], row["val_loss"], row["val_bpb"],
        100 * row["val_acc"], row["tokens_per_s"], row["seconds"])  # fmt: skip


def write_outputs(run_root: str, run: Training, progress: Progress, started: float,
                  parent: lineage.Parent | None) -> dict:  # fmt: skip
    """Write the outputs: weights, config, metrics and plot, then the manifest (last), which
    records the lineage: the parent version and the tokens trained into the weights in all."""
    model, model_cfg, metrics = run.model, run.model_cfg, progress.metrics
    origin = parent.describe() if parent else None
    files = [
        ArtifactFile.write(run.stage, "model.safetensors", model_bytes(model)),
        ArtifactFile.write(run.stage, "config.json",
                           json.dumps(model_cfg.to_dict(), indent=2).encode()),
        ArtifactFile.write(run.stage, "metrics.csv", metrics_csv(metrics), rows=len(metrics)),
        ArtifactFile.write(run.stage, "loss.png", plot_training(metrics)),
    ]  # fmt: skip
    final = metrics[-1]
    manifest = commit_stage(
        run_root, STAGE, files=files, started_at=started,
        params={"model": model_cfg.to_dict(), "train": run.train_cfg.to_dict(),
                "init_from": origin["uri"] if origin else None},
        inputs={UPSTREAM: input_ref(run_root, UPSTREAM)},
        stats={"parameters": model.num_params(False),
               "non_embedding_parameters": model.num_params(),
               "flops_per_token": model.flops_per_token(),
               "tokens_trained": final["tokens"], "final": final,
               "init_from": origin,
               "tokens_trained_total": final["tokens"] + (origin["tokens_trained_total"]
                                                          if origin else 0),
               "best_val_bpb": min(m["val_bpb"] for m in metrics),
               "fingerprint": run.run_id, "started_at": progress.started_at,
               "driver_peak_rss_mb": round(peak_rss_mb(), 1)},
    )  # fmt: skip
    entrypoint.log.info(
        "train committed: val %.3f nats, %.3f bits/byte after %d tokens",
        final["val_loss"],
        final["val_bpb"],
        final["tokens"],
    )
    return manifest


def lr_flags(cfg: TrainConfig) -> str:
    """The learning-rate flags in effect for this optimizer, with their values."""
    if cfg.optimizer == "muon":
        return f"--muon-lr (now {cfg.muon_lr}), --muon-adamw-lr (now {cfg.muon_adamw_lr})"
    return f"--lr (now {cfg.lr})"


def sum_in_partition_order(updates):
    """The sum of the replicas' updates (an RDD), added in an order fixed by partition index.

    Float addition is not associative, and ``treeAggregate`` adds each level's partial sums in
    the order its shuffle delivers them (on a cluster, any order): from 5 partitions on, a
    retried or resumed round could end in other weights. Up to ``MAX_DRIVER_FAN_IN``
    partitions the driver folds the updates in partition order (as ``RDD.reduce`` does);
    beyond, each group of consecutive partitions is summed in index order on an executor (the
    shuffle sorts them), then the driver folds the groups in
    order. A tree of two levels, like ``treeAggregate(depth=2)``, in a fixed order.
    """
    partitions = updates.getNumPartitions()
    if partitions <= MAX_DRIVER_FAN_IN:
        return reduce(combine, updates.collect(), None)
    fan_in = math.ceil(math.sqrt(partitions))

    def keyed(index, part):  # ((group, partition), the partition's update)
        return [((index // fan_in, index), reduce(combine, part, None))]

    def group_sum(sorted_group):  # one group per partition, sorted by partition index
        return [reduce(combine, (update for _, update in sorted_group), None)]

    group_sums = (
        updates.mapPartitionsWithIndex(keyed)
        .repartitionAndSortWithinPartitions(math.ceil(partitions / fan_in), lambda key: key[0])
        .mapPartitions(group_sum)
        .collect()
    )
    return reduce(combine, group_sums, None)


def check_validation_loss(round_index: int, cfg: TrainConfig, val_loss: float) -> None:
    """A loss that is not finite, or too large for its perplexity (``exp``) to be one, means
    the model diverged: the bad-input error, not an ``OverflowError`` retried for ever."""
    if not math.isfinite(val_loss) or val_loss > MAX_VAL_LOSS:
        raise diverged(round_index, cfg, "the validation loss", val_loss)


def diverged(round_index: int, cfg: TrainConfig, what: str,
             value: float | None = None) -> PipelineError:  # fmt: skip
    state = "NaN or infinite" if value is None or not math.isfinite(value) else f"{value:.4g}"
    return PipelineError(
        f"training diverged in round {round_index + 1}: {what} is {state}. Nothing was "
        f"checkpointed for this round. Lower {lr_flags(cfg)} or --grad-clip "
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
    entrypoint.run(main, memory_knobs=f"lower {MODEL_SIZE_FLAGS}")
