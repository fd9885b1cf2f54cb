"""Fault injection for the reliability tests: real crashes at named points in the jobs.

A test sets ``LLM_FAULT`` to a point's name and runs a job with spark-submit;
the job then really dies there (SIGKILL, no cleanup), a Spark task really
fails, or a real allocation really fails. Unset — always, outside those
tests — every call here does nothing.
"""

from __future__ import annotations

import math
import os
import signal

ENV = "LLM_FAULT"


def crash_point(name: str) -> None:
    """Kill this process outright when ``LLM_FAULT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _first_attempt_of_partition_0(name: str) -> bool:
    """Whether ``LLM_FAULT`` names this point and this is partition 0's task, first attempt:
    the one task a fault hits, so that Spark's retry runs on undisturbed."""
    if os.environ.get(ENV) != name:
        return False
    from pyspark import TaskContext

    context = TaskContext.get()
    return context is not None and context.partitionId() == 0 and context.attemptNumber() == 0


def fail_first_attempt(name: str) -> None:
    """Fail the first attempt of partition 0's task when ``LLM_FAULT`` names this point."""
    if _first_attempt_of_partition_0(name):
        raise RuntimeError(f"injected task failure at {name} (first attempt)")


# A held task that nobody kills gives up after this long, so a broken test cannot hang.
HOLD_SECONDS = 600


def hold_first_attempt(name: str) -> None:
    """Hold the first attempt of partition 0's task when ``LLM_FAULT`` names this point: it
    writes one line naming the point and its Python worker's pid to stderr (the executor's
    log), then waits to be killed. A test kills the worker, the executor or the whole Spark
    worker while the task is certainly running; the retry runs on."""
    if not _first_attempt_of_partition_0(name):
        return
    import sys
    import time

    print(f"LLM_FAULT holding at {name}: python worker pid {os.getpid()}", file=sys.stderr,
          flush=True)  # fmt: skip
    time.sleep(HOLD_SECONDS)
    raise RuntimeError(f"injected hold at {name} was never killed")


def diverge(name: str, value: float) -> float:
    """NaN instead of ``value`` when ``LLM_FAULT`` names this point: training that diverges,
    whatever its settings (the settings' bounds keep a real divergence hard to provoke)."""
    return math.nan if os.environ.get(ENV) == name else value


# More than any machine has (and more than a 64-bit process can address): the allocation
# fails at once, without first eating the memory the machine does have.
IMPOSSIBLE_BYTES = 1 << 60


def exhaust_memory(name: str, spark=None) -> None:
    """Make a real allocation fail when ``LLM_FAULT`` is ``{name}:python`` (a MemoryError),
    ``{name}:torch`` (torch's CPU allocator) or ``{name}:jvm`` (a Spark task's JVM heap:
    ``java.lang.OutOfMemoryError``, which ends spark-submit with exit status 52)."""
    fault = os.environ.get(ENV, "")
    if fault == f"{name}:python":
        bytearray(IMPOSSIBLE_BYTES)
    elif fault == f"{name}:torch":
        import torch

        torch.empty(IMPOSSIBLE_BYTES, dtype=torch.uint8)
    elif fault == f"{name}:jvm" and spark is not None:
        # One 2 GB string, more than the default 1 GB heap holds, built in a task (not folded
        # into a constant on the driver): Spark's handler for a fatal error ends the JVM.
        spark.range(1).selectExpr("repeat('x', CAST(id + 2000000000 AS INT)) AS s").collect()
