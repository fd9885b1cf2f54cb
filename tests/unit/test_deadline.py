"""A run that overruns says so: the deadline's length and the one line its callback logs."""

import asyncio
import logging
from datetime import timedelta

from llm_pipeline.deadline import MESSAGE, log_overrun, run_deadline, run_deadline_alert


def test_the_deadline_is_what_the_deployment_sets():
    assert run_deadline({}) is None and run_deadline_alert({}) == []
    assert run_deadline({"LLM_RUN_DEADLINE_HOURS": "0.5"}) == timedelta(minutes=30)
    every_stage = {"LLM_RUN_DEADLINE_HOURS": "all"}
    assert run_deadline(every_stage) == timedelta(hours=4 + 4 + 48 + 2 + 1)
    assert run_deadline({**every_stage, "LLM_TIMEOUT_HOURS_TRAIN": "96"}) == timedelta(
        hours=4 + 4 + 96 + 2 + 1
    )


def test_an_overrun_logs_one_line_naming_the_run(caplog):
    context = {"dag_run": {"dag_id": "llm_decoder", "dag_run_id": "scheduled__x",
                           "queued_at": "2026-12-03T03:00:00Z", "state": "running"},
               "deadline": {"id": "1", "deadline_time": "2026-12-05T14:00:00Z"}}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="llm_pipeline.deadline"):
        line = asyncio.run(log_overrun(context=context))
    assert [r.getMessage() for r in caplog.records] == [line]
    assert line.startswith(f"{MESSAGE}: dag_id=llm_decoder run_id=scheduled__x ")
    assert "deadline=2026-12-05T14:00:00Z" in line and "\n" not in line
