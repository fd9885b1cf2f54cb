"""A run that overruns says so: the DAG's ``DeadlineAlert`` and the line its callback logs.

A deployment that sets ``LLM_RUN_DEADLINE_HOURS`` (read when the DAG file is parsed, like the
stages' ``LLM_TIMEOUT_HOURS_*``; a Variable would be read by the scheduler as each run is
created, and a missing one would stop runs from being created) gives every run a deadline:
when it was queued plus that many hours. ``all`` stands for the stages' time limits added
up: a run past that is stuck somewhere no single task's timeout noticed, such as a queue.
When a run misses it, the triggerer runs ``log_overrun``, which logs one line a team routes
to its alerting (its logger and its fixed ``llm_decoder run overran its deadline`` text are
the handle); the run itself goes on.

Unset, there is no deadline: Airflow 3.3.2's ``airflow dags test`` (so ``make run``) fails
as a run with a deadline succeeds (``DagRun.update_state`` looks the DAG's deadline alerts up
by database id, which the in-memory DAG of ``dags test`` does not carry). Scheduled runs are
unaffected; ``make run`` unsets the variable for its ``dags test``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

# airflow.sdk exports these lazily, which type checkers cannot follow: their own modules.
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from llm_pipeline.pipeline import PIPELINE

ENV = "LLM_RUN_DEADLINE_HOURS"
MESSAGE = "llm_decoder run overran its deadline"
log = logging.getLogger("llm_pipeline.deadline")


def run_deadline(environ: Mapping[str, str]) -> timedelta | None:
    """How long after being queued a run should be done: ``LLM_RUN_DEADLINE_HOURS`` hours, or,
    for ``all``, every stage's time limit added up (each stage's own override included);
    None (no deadline) when it is unset."""
    hours = environ.get(ENV, "")
    if not hours:
        return None
    if hours == "all":
        return sum((job.timeout(environ) for job in PIPELINE), timedelta())
    return timedelta(hours=float(hours))


def run_deadline_alert(environ: Mapping[str, str]) -> list[DeadlineAlert]:
    """The DAG's ``deadline``: one alert from when a run was queued, or none."""
    interval = run_deadline(environ)
    if interval is None:
        return []
    return [DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=interval,
                          callback=AsyncCallback(log_overrun))]  # fmt: skip


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
