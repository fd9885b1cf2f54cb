"""``make bench-run``: the end-to-end wall time of ``make run`` (after install), per stage.

Runs exactly what ``make run`` runs — ``airflow dags test llm_decoder`` with the
default Params on the default corpus — and splits the time by stage: each task's
wall time from the Airflow metadata DB (spark-submit and JVM start-up included)
and the seconds inside the job from its manifest. Goal: < 5 minutes on 2 cores.

    python bench/bench_run.py [--out bench/out/run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

from common import (
    REPO,
    file_uri,
    fmt,
    fresh_dir,
    load_average,
    markdown_table,
    read_manifest,
    write_results,
)

from llm_pipeline.pipeline import PIPELINE

STAGES = tuple(job.stage for job in PIPELINE)


def airflow_json(*args: str) -> list[dict]:
    """The JSON an ``airflow`` CLI listing prints (after any warnings, on its last line)."""
    done = subprocess.run(["airflow", *args, "-o", "json"], cwd=REPO, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def task_seconds() -> dict[str, float]:
    """Wall seconds of every task that ran in the newest ``llm_decoder`` run, by task id."""
    runs = airflow_json("dags", "list-runs", "llm_decoder")
    newest = max(runs, key=lambda r: r["run_after"])["run_id"]
    tasks = airflow_json("tasks", "states-for-dag-run", "llm_decoder", newest)
    return {
        t["task_id"]: (datetime.fromisoformat(t["end_date"])
                       - datetime.fromisoformat(t["start_date"])).total_seconds()
        for t in tasks if t["state"] == "success"
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "run")
    args = parser.parse_args()
    out = fresh_dir(args.out)
    root = out / "run"
    conf = {"run_root": file_uri(root), "registry": file_uri(out / "registry")}
    load_start = load_average()
    started = time.perf_counter()
    # The benchmark's own registry, allowed for this run only (the default allows one registry).
    env = {**os.environ, "AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES": conf["registry"]}
    subprocess.run(["airflow", "dags", "test", "llm_decoder", "--conf", json.dumps(conf)],
                   cwd=REPO, check=True, stdout=(out / "dags-test.log").open("w"),
                   stderr=subprocess.STDOUT, env=env)  # fmt: skip
    wall = time.perf_counter() - started
    manifests = {s: read_manifest(root, s) for s in STAGES}
    train = manifests["train"]["stats"]["final"]
    tasks = task_seconds()
    stage_task = {s: next(t for t in tasks if t.split(".")[-1] == s) for s in STAGES}
    rows = [[s, fmt(tasks[stage_task[s]], 1), fmt(manifests[s]["seconds"], 2)] for s in STAGES]
    others = sorted(set(tasks) - set(stage_task.values()))
    rows.append([", ".join(others), fmt(sum(tasks[t] for t in others), 1), "–"])
    rows.append(["**total (airflow dags test, wall)**", f"**{fmt(wall, 1)}**", ""])
    markdown = "\n".join([
        "## `make run` end to end (default Params, default corpus, local[2])", "",
        markdown_table(["stage", "task wall s", "inside the job s"], rows), "",
        f"Task wall time is Airflow's (spark-submit and JVM start-up included); inside the "
        f"job is the stage's manifest; the total adds Airflow's parsing and scheduling. "
        f"Final validation: "
        f"{train['val_loss']:.3f} nats/token, {train['val_bpb']:.3f} bits/byte after "
        f"{train['tokens']:,} tokens. Load average at start: {load_start:.2f} (2 cores).",
    ])  # fmt: skip
    print(markdown)
    write_results(out, markdown, {"wall_s": wall, "tasks": tasks, "stages": {
        s: manifests[s]["seconds"] for s in STAGES}, "final": train})  # fmt: skip


if __name__ == "__main__":
    main()
