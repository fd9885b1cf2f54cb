"""env=emr with deferrable watchers, through a real triggerer (the ``airflow_stack``)."""

import json
import sqlite3
from datetime import datetime, timedelta

import pytest

from airflow_stack import DAG_ID
from emr_harness import EmrStepRunner
from helpers.jobs import SMALL_CONF

pytestmark = pytest.mark.slow


def deferral_timeout(stack, run_id: str, task_id: str) -> datetime:
    """When the deferred task times out, as the scheduler recorded it (not in the REST API)."""
    with sqlite3.connect(f"file:{stack.home / 'airflow.db'}?mode=ro", uri=True) as db:
        [(value,)] = db.execute("SELECT trigger_timeout FROM task_instance "
                                "WHERE run_id = ? AND task_id = ?", (run_id, task_id))  # fmt: skip
    return datetime.fromisoformat(value).replace(tzinfo=None)


def test_a_deferred_watcher_keeps_the_stage_timeout_and_quotes_the_jobs_error(
    airflow_stack, s3_server, tmp_path
):
    stack = airflow_stack
    conf = {"env": "emr", "run_root": s3_server.uri("runs", "emr-deferred"),
            "registry": s3_server.uri("registry-deferred"),
            "corpus": s3_server.uri("nothing-here", "*.txt"), **SMALL_CONF}  # fmt: skip
    run_id = stack.post(f"/api/v2/dags/{DAG_ID}/dagRuns",
                        {"logical_date": None, "conf": conf})["dag_run_id"]  # fmt: skip
    watcher = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/emr.watch_preprocess"

    # moto leaves the step pending until the harness runs it: the watcher hands the wait to
    # the triggerer, with the preprocess stage's 4 h, not EmrStepSensor's 60 polls.
    def deferred():
        if (ti := stack.get(watcher))["state"] == "deferred":
            return ti
        run = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] not in ("queued", "running"):
            tasks = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
            states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
            raise AssertionError(f"the run {run['state']} before the watcher deferred: {states}")

    ti = stack.wait_until(deferred, 1200, "emr.watch_preprocess deferred", interval=2)
    assert ti["trigger"]["classpath"].endswith("EmrStepSensorTrigger")
    started = datetime.fromisoformat(ti["start_date"]).replace(tzinfo=None)
    waits = deferral_timeout(stack, run_id, "emr.watch_preprocess") - started
    assert timedelta(hours=4) <= waits <= timedelta(hours=4, minutes=10)

    # Now the step runs and fails; the trigger reports it and the task quotes the job.
    with EmrStepRunner(tmp_path / "emr-nodes") as runner:
        state = stack.wait_until(
            lambda: (s := stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"])
            in ("success", "failed") and s, 1200, "the EMR run finished", interval=2)  # fmt: skip
    assert not runner.errors, runner.errors
    assert state == "failed"
    assert [r.name for r in runner.runs] == ["llm_decoder preprocess"]
    ti = stack.get(watcher)
    assert ti["state"] == "failed"
    log = json.dumps(stack.get(f"{watcher}/logs/{ti['try_number']}")["content"])
    assert "Error while running job" in log  # the trigger's event, handled in execute_complete
    assert "ERROR: no input file matches" in log
    terminate = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                          "emr.terminate_cluster")  # fmt: skip
    assert terminate["state"] == "success"
