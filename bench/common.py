"""Helpers the benchmark scripts share: run a job with spark-submit, read what it committed,
measure the machine's fp32 matmul peak, and print Markdown tables.

Benchmarks run the real jobs the way the pipeline does (``spark-submit --master local[N]``), so
a number here is what a user gets, not what a hand-built harness gets. Nothing in this module
asserts on timings: the machine may be shared, so every report carries the load average.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
LOG4J = JOBS / "conf" / "log4j2.properties"


def job_env() -> dict[str, str]:
    """The environment ``make`` exports for the jobs, filled in when run outside ``make``.

    Without SPARK_LOCAL_IP Spark may bind to a non-loopback address and without PYSPARK_PYTHON
    the executors would run a Python that lacks torch.
    """
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    venv_bin = Path(sys.executable).parent
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    if str(venv_bin) not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def file_uri(path: Path) -> str:
    return "file://" + str(path.resolve())


@dataclass
class JobRun:
    """One finished spark-submit: its wall time, over how many attempts."""

    wall_s: float
    attempts: int = 1


def spark_submit(
    script: str,
    run_root: Path,
    args: Sequence[str] = (),
    *,
    conf: Mapping[str, str] | None = None,
    retries_after_kill: int = 1,
    master: str = "local[2]",
) -> JobRun:
    """Run ``jobs/<script>`` with spark-submit against ``run_root``; raise with the log's tail.

    spark-submit merges the Python driver's stderr into its stdout, so one log file per job
    holds everything; it is kept next to the run for later inspection. A job killed by SIGKILL
    (on a shared machine another process's cleanup may do that) is run again up to
    ``retries_after_kill`` times: the train job resumes from its last checkpoint, the data
    stages start over. ``wall_s`` covers every attempt and ``attempts`` says how many there were.
    """
    run_root.mkdir(parents=True, exist_ok=True)
    log = run_root / f"{Path(script).stem}.log"
    confs = {
        "spark.ui.showConsoleProgress": "false",
        # No web UI: it only costs start-up time, and on a shared machine port 4040 is often
        # taken by another Spark application.
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J}",
        **(conf or {}),
    }
    cmd = ["spark-submit", "--master", master]
    for key, value in confs.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(JOBS / script), "--run-root", file_uri(run_root), *args]
    started = time.perf_counter()
    with log.open("w") as out:
        for attempt in range(1, retries_after_kill + 2):
            out.write(f"$ {' '.join(cmd)}  # attempt {attempt}\n")
            out.flush()
            proc = subprocess.run(
                cmd, cwd=REPO, env=job_env(), stdout=out, stderr=subprocess.STDOUT, check=False
            )
            if proc.returncode not in (-9, 137):  # 137: a shell reporting SIGKILL
                break
            print(f"warning: {script} was killed (SIGKILL); attempt {attempt}", file=sys.stderr)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{script} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return JobRun(wall, attempts=attempt)


def read_manifest(run_root: Path, stage: str) -> dict[str, Any]:
    return json.loads((run_root / stage / "manifest.json").read_text())


def read_csv(path: Path) -> list[dict[str, float]]:
    """A numeric CSV (such as a job's metrics.csv) as a list of rows of floats."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def fresh_dir(path: Path) -> Path:
    """Empty ``path`` (creating it): results of an earlier invocation must never leak in."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def copy_stages(src_root: Path, dst_root: Path, stages: Iterable[str]) -> None:
    """Give a fresh run root its upstream stages, so every config trains on identical tokens.

    Manifests list files relative to their stage and readers resolve them against the run root
    they were read from, so a plain copy is a valid run root. Any older copy is replaced.
    """
    fresh_dir(dst_root)
    for stage in stages:
        shutil.copytree(src_root / stage, dst_root / stage)


def matmul_peak_gflops(n: int = 2048, threads: int = 2, repeats: int = 7) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of one ``n×n @ n×n`` torch.matmul on ``threads`` threads.

    The best run, not the mean: the peak is what the hardware can do, and other processes on a
    shared machine only ever make a run slower. Restores the caller's torch thread count.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        torch.matmul(a, b)  # warm-up: thread pool start and first-touch of the output
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9


def load_average() -> float:
    """The 1-minute load average: what to judge a timing by on a shared machine."""
    return os.getloadavg()[0]


def log(text: str) -> None:
    """A progress line stamped with the time and the load it ran under."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] {text}", flush=True)


def load_note(results: Mapping[str, Any]) -> str:
    """The line every benchmark's tables end with: the load they were measured under."""
    return (f"Load average at start/end: {results['load_average_start']:.2f} / "
            f"{results['load_average_end']:.2f} (2 cores).")  # fmt: skip


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """A GitHub Markdown table; ``align`` has one 'l' or 'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 0) -> str:
    """A number for a table cell; missing values print as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def write_results(out_dir: Path, markdown: str, raw: Mapping[str, Any]) -> None:
    """Write ``results.md`` (the printed tables) and ``results.json`` (every raw number)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(markdown.rstrip() + "\n")
    (out_dir / "results.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def goal(name: str, measured: float, target: float, *, at_least: bool = False) -> dict[str, Any]:
    """One entry of a ``results.json`` top-level ``goals`` list: met when ``measured`` is at
    most ``target`` (or at least, for a rate or a ratio that should be high). A measurement
    that is NaN (a run that diverged) meets nothing."""
    met = measured >= target if at_least else measured <= target
    return {"name": name, "measured": measured, "target": target,
            "at_least": at_least, "met": bool(met)}  # fmt: skip


def goals_table(goals: Sequence[Mapping[str, Any]]) -> str:
    """The goals as a Markdown table, the same numbers as ``results.json``."""
    rows = [[g["name"], f"{g['measured']:.4f}",
             f"{'≥' if g['at_least'] else '≤'} {g['target']:.4f}",
             "met" if g["met"] else "**not met**"] for g in goals]  # fmt: skip
    return markdown_table(["goal", "measured", "target", ""], rows, align="lrrl")
