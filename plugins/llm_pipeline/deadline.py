"""A run that overruns says so: the DAG's ``DeadlineAlert`` and the line its callback logs.

A run's deadline is when it was queued plus ``LLM_RUN_DEADLINE_HOURS`` (read when the DAG
file is parsed, like the stages' ``LLM_TIMEOUT_HOURS_*``; a Variable would be read by the
scheduler as each run is created, and a missing one would stop runs from being created).
The default is the stages' time limits added up: a run past it is stuck somewhere no single
task's timeout noticed, such as a queue. When a run misses it, the triggerer runs
``log_overrun``, which logs one line a team routes to its alerting (its logger and its
fixed ``llm_decoder run overran its deadline`` text are the handle); the run itself goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from llm_pipeline.pipeline import PIPELINE

ENV = "LLM_RUN_DEADLINE_HOURS"
MESSAGE = "llm_decoder run overran its deadline"
log = logging.getLogger("llm_pipeline.deadline")


def run_deadline(environ: Mapping[str, str]) -> timedelta:
    """How long after being queued a run should be done: ``LLM_RUN_DEADLINE_HOURS``, or every
    stage's time limit added up (each stage's own override included)."""
    hours = environ.get(ENV, "")
    if hours:
        return timedelta(hours=float(hours))
    return sum((job.timeout(environ) for job in PIPELINE), timedelta())


def overrun_line(context: Mapping[str, Any]) -> str:
    """The one line: which run, when it was queued, and its deadline."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    return (
        f"{MESSAGE}: dag_id={run.get('dag_id')} run_id={run.get('dag_run_id')} "
        f"queued_at={run.get('queued_at')} deadline={deadline.get('deadline_time')} "
        f"state={run.get('state')} ({ENV} sets the deadline)"
    )


async def log_overrun(context: Mapping[str, Any] | None = None, **_: Any) -> str:
    """The deadline's callback (run by the triggerer): log the line, and return it, which
    Airflow keeps as the callback's result."""
    line = overrun_line(context or {})
    log.warning(line)
    return line
