"""Fault injection for the reliability tests: real crashes at named points in the jobs.

A test sets ``LLM_FAULT`` to a point's name and runs a job with spark-submit;
the job then really dies there (SIGKILL, no cleanup) or a Spark task really
fails. Unset — always, outside those tests — every call here does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "LLM_FAULT"


def crash_point(name: str) -> None:
    """Kill this process outright when ``LLM_FAULT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_first_attempt(name: str) -> None:
    """Fail the first attempt of partition 0's task when ``LLM_FAULT`` names this point."""
    if os.environ.get(ENV) != name:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is not None and context.partitionId() == 0 and context.attemptNumber() == 0:
        raise RuntimeError(f"injected task failure at {name} (first attempt)")
