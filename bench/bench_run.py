"""``make bench-run``: the end-to-end wall time of ``make run`` (after install), per stage.

Runs exactly what ``make run`` runs — ``airflow dags test llm_decoder`` with the
default Params on the default corpus — and splits the time by stage using each
stage's manifest (seconds inside the job) and the task's wall time around it
(spark-submit and JVM start-up included). Goal: < 5 minutes on 2 cores.

    python bench/bench_run.py [--out bench/out/run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from common import REPO, file_uri, fmt, fresh_dir, load_average, markdown_table, write_results

STAGES = ("preprocess", "tokenize", "train", "generate", "publish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "run")
    args = parser.parse_args()
    out = fresh_dir(args.out)
    root = out / "run"
    conf = {"run_root": file_uri(root), "registry": file_uri(out / "registry")}
    load_start = load_average()
    started = time.perf_counter()
    subprocess.run(["airflow", "dags", "test", "llm_decoder", "--conf", json.dumps(conf)],
                   cwd=REPO, check=True, stdout=(out / "dags-test.log").open("w"),
                   stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.perf_counter() - started
    manifests = {s: json.loads((root / s / "manifest.json").read_text()) for s in STAGES}
    train = manifests["train"]["stats"]["final"]
    rows = [[s, fmt(manifests[s]["seconds"], 1)] for s in STAGES]
    rows.append(["**total (airflow dags test, wall)**", f"**{fmt(wall, 1)}**"])
    markdown = "\n".join([
        "## `make run` end to end (default Params, default corpus, local[2])", "",
        markdown_table(["stage", "seconds"], rows), "",
        f"Stage seconds are measured inside each job (its manifest); the total adds "
        f"spark-submit/JVM start-up per task and Airflow's own work. Final validation: "
        f"{train['val_loss']:.3f} nats/token, {train['val_bpb']:.3f} bits/byte after "
        f"{train['tokens']:,} tokens. Load average at start: {load_start:.2f} (2 cores).",
    ])  # fmt: skip
    print(markdown)
    write_results(out, markdown, {"wall_s": wall, "stages": {
        s: manifests[s]["seconds"] for s in STAGES}, "final": train})  # fmt: skip


if __name__ == "__main__":
    main()
