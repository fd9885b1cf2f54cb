"""Equal-token tuning: the train job's own round, without Spark, one thread per configuration.

    python bench/tune_train.py --data RUN_ROOT [--parallel 2] [--out results.jsonl] \\
        "label: --partitions 4 --local-steps 10 --optimizer muon …" ["label: …" …]

Each argument is a label and the train job's own flags (``jobs/train.py --help``). A run builds
the job's configs with the job's parser, splits the tokens with the job's ``partition_ranges``,
and each round calls ``train_replica`` for every partition, one after another, then combines the
updates and applies them with ``apply_update`` — the same functions, in the same order, that the
Spark job runs, so a configuration scores here what the job scores (replicas share no state).
Only the final model is scored, on every validation token of ``RUN_ROOT``'s tokenize stage.

Quality at equal tokens does not depend on time, so configurations run as separate processes at
``nice 10`` with one torch thread each (``--parallel`` at a time): a shared machine only slows
them. Results are appended as JSON lines; the summary table is printed at the end. The tables
in the README's Training section come from here and from ``bench_train.py``'s real-job runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import REPO, load_average, markdown_table

sys.path.insert(0, str(REPO / "jobs"))


def train_in_process(run_root: Path, job_argv: Sequence[str], eval_every: int = 0) -> dict:
    """The train job's rounds without Spark; the final val bits/byte on all val tokens."""
    import torch
    import train as job  # jobs/train.py: its parser, configs and partitioning
    from bench_train import bits_per_byte, read_split

    from sparklm.model.averaging import OuterOptimizer, combine, flat
    from sparklm.model.gpt import GPT
    from sparklm.model.training import GlobalState, apply_update, evaluate, train_replica
    from sparklm.runtime.allocator import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()  # as the train job's replicas do
    args = job.parse_args(["--run-root", str(run_root), *job_argv])
    tokens, stats = read_split(run_root, "train")
    val, _ = read_split(run_root, "val")
    model_cfg, cfg = job.configs(args, stats["vocab_size"])
    slices = [tokens[a:b] for a, b in job.partition_ranges(len(tokens), cfg.partitions)]

    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    outer = OuterOptimizer(model, cfg.outer, cfg.outer_lr, cfg.outer_momentum,
                           cfg.outer_momentum_warmup)  # fmt: skip
    state = GlobalState(flat(model.parameters()), {}, 0)
    curve: list[tuple[int, float]] = []
    started = time.perf_counter()
    for r in range(cfg.rounds):
        update = None
        for p, part in enumerate(slices):
            update = combine(update, train_replica(model_cfg, cfg, state, part, r, p))
        if not update.finite or not math.isfinite(update.mean_loss):
            return {"val_bpb": math.nan, "diverged_round": r + 1}
        state = apply_update(model, outer, update, state, cfg.steps_in_round(r))
        print(f"round {r + 1}/{cfg.rounds}: train loss {update.mean_loss:.3f}", file=sys.stderr,
              flush=True)  # fmt: skip
        if eval_every and (r + 1) % eval_every == 0 and r + 1 < cfg.rounds:
            curve.append((state.step, bits_per_byte(evaluate(model, val)[0], stats)))
    seconds = time.perf_counter() - started
    final = bits_per_byte(evaluate(model, val)[0], stats)
    return {
        "val_bpb": final,
        "tokens": cfg.partitions * cfg.batch_size * model_cfg.context_len * state.step,
        "train_seconds_1_thread": seconds,
        "parameters": model.num_params(False),
        "curve": [*curve, (state.step, final)],
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
    }


def parse_config(text: str) -> tuple[str, list[str]]:
    """``"label: --flag value …"`` → (label, flags)."""
    label, sep, flags = text.partition(":")
    if not sep or not label.strip():
        raise SystemExit(f"expected 'label: --flags …', got {text!r}")
    return label.strip(), shlex.split(flags)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True,
                   help="a run root with a committed tokenize stage (bench_train.py prepares "
                        "bench/out/train/data/valid and …/valid-test)")  # fmt: skip
    p.add_argument("--parallel", type=int, default=2, help="configurations at once")
    p.add_argument("--eval-every", type=int, default=0, help="also score every N rounds")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "tune" / "results.jsonl")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a worker process
    p.add_argument("configs", nargs="+", help="'label: --train-job-flags …'")
    args = p.parse_args(argv)
    if args.one:
        label, flags = parse_config(args.configs[0])
        result = train_in_process(args.data.resolve(), flags, args.eval_every)
        print(json.dumps({"label": label, "flags": flags, **result}), flush=True)
        return

    configs = [parse_config(c) for c in args.configs]  # refuse a malformed one before any run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, results = list(args.configs), [], []
    while pending or running:
        while pending and len(running) < args.parallel:
            config = pending.pop(0)
            cmd = ["nice", "-n", "10", sys.executable, __file__, "--one", "--data",
                   str(args.data), "--eval-every", str(args.eval_every), config]  # fmt: skip
            print(f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] start {config}",
                  flush=True)  # fmt: skip
            running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
        time.sleep(1)
        for proc in [r for r in running if r.poll() is not None]:
            running.remove(proc)
            lines = proc.stdout.read().splitlines()
            if proc.returncode != 0 or not lines:
                print(f"a configuration failed (exit {proc.returncode})", file=sys.stderr)
                continue
            result = json.loads(lines[-1])
            results.append(result)
            with args.out.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"  {result['label']}: {result['val_bpb']:.4f} bits/byte", flush=True)
    order = [label for label, _ in configs]
    results.sort(key=lambda r: order.index(r["label"]))
    print(markdown_table(
        ["config", "flags", "tokens", "val bits/byte"],
        [[r["label"], f"`{' '.join(r['flags'])}`", f"{r.get('tokens', 0):,}",
          f"{r['val_bpb']:.4f}"] for r in results],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
