"""env=emr on the real ``airflow_stack`` (moto's EMR): deferrable watchers through a real
triggerer, and tasks that outlive their worker's death and the triggerer's."""

import json
import re
import signal
import sqlite3
from datetime import datetime, timedelta

import pytest

from emr_harness import EmrStepRunner
from helpers.approval import run_state, runs_path, task_instance, trigger
from helpers.emr import STEP_NAMES, clusters_of
from helpers.jobs import SMALL_CONF

# The first tries of create_cluster and add_steps die by SIGKILL right after their AWS call,
# before the task could record anything: as a worker killed there would.
KILLED_AFTER_THE_CALL = "create_cluster:created:kill,add_steps:added:kill"

pytestmark = pytest.mark.slow


def deferral_timeout(stack, run_id: str, task_id: str) -> datetime:
    """When the deferred task times out, as the scheduler recorded it (not in the REST API)."""
    with sqlite3.connect(f"file:{stack.home / 'airflow.db'}?mode=ro", uri=True) as db:
        [(value,)] = db.execute("SELECT trigger_timeout FROM task_instance "
                                "WHERE run_id = ? AND task_id = ?", (run_id, task_id))  # fmt: skip
    return datetime.fromisoformat(value).replace(tzinfo=None)


def test_an_emr_run_outlives_killed_tasks_and_a_crashed_triggerer_and_quotes_the_jobs_error(
    airflow_stack, aws_api_server, s3_server, tmp_path
):
    stack = airflow_stack
    conf = {"env": "emr", "run_root": s3_server.uri("runs", "emr-deferred"),
            "registry": s3_server.uri("registry-deferred"),
            "corpus": s3_server.uri("nothing-here", "*.txt"), **SMALL_CONF}  # fmt: skip
    stack.restart("scheduler", signal.SIGTERM, {"LLM_FAULT": KILLED_AFTER_THE_CALL})
    try:
        run_id = trigger(stack, conf)
        run_until_the_watcher_defers(stack, run_id)
    finally:
        stack.restart("scheduler", signal.SIGTERM)  # the stack's other tests run without faults
    for task in ("emr.create_cluster", "emr.add_steps"):
        ti = task_instance(stack, run_id, task)
        assert (ti["state"], ti["try_number"]) == ("success", 2), task
    [cluster] = clusters_of(aws_api_server, run_id)  # one cluster, not one per try
    assert cluster["StepNames"] == STEP_NAMES  # each step queued once

    # The triggerer crashes while it holds the watcher's trigger; the one started after it
    # takes the trigger over (once the dead one's heartbeat is stale) and reports the step.
    watcher = f"{runs_path(run_id)}/taskInstances/emr.watch_preprocess"
    crashed = stack.wait_until(lambda: (stack.get(watcher)["trigger"] or {})["triggerer_id"],
                               300, "a triggerer holds the watcher's trigger")  # fmt: skip
    triggerer_log = stack.home / "logs" / "triggerer.log"
    restarted_at = stack.restart("triggerer", signal.SIGKILL)
    # Now the step runs and fails; the trigger reports it and the task quotes the job.
    with EmrStepRunner(tmp_path / "emr-nodes") as runner:
        state = stack.wait_until(
            lambda: (s := run_state(stack, run_id)) in ("success", "failed") and s,
            1200, "the EMR run finished", interval=2)  # fmt: skip
    assert not runner.errors, runner.errors
    assert state == "failed"
    assert [r.name for r in runner.runs] == ["llm_decoder preprocess"]
    ti = stack.get(watcher)
    assert ti["state"] == "failed"
    log = json.dumps(stack.get(f"{watcher}/logs/{ti['try_number']}")["content"])
    assert "Error while running job" in log  # the trigger's event, handled in execute_complete
    assert "ERROR: no input file matches" in log
    # The trigger's log names each triggerer job that ran it (``….log.trigger.<job>.log``):
    # it completed on one started after the crash.
    assert "Starting the triggerer" in triggerer_log.read_text(errors="replace")[restarted_at:]
    assert {int(job) for job in re.findall(r"\.log\.trigger\.(\d+)\.log", log)} - {crashed}
    assert "trigger completed" in log
    assert task_instance(stack, run_id, "emr.terminate_cluster")["state"] == "success"
    assert clusters_of(aws_api_server, run_id)[0]["Status"]["State"] == "TERMINATED"


def run_until_the_watcher_defers(stack, run_id: str) -> None:
    """Wait until ``emr.watch_preprocess`` is deferred: moto leaves the step pending until
    the harness runs it, and the watcher hands the wait to the triggerer with the preprocess
    stage's 4 h, not EmrStepSensor's 60 polls."""

    def deferred():
        if (ti := task_instance(stack, run_id, "emr.watch_preprocess"))["state"] == "deferred":
            return ti
        if (state := run_state(stack, run_id)) not in ("queued", "running"):
            tasks = stack.get(f"{runs_path(run_id)}/taskInstances")["task_instances"]
            states = {t["task_id"]: t["state"] for t in tasks}
            raise AssertionError(f"the run {state} before the watcher deferred: {states}")

    ti = stack.wait_until(deferred, 1200, "emr.watch_preprocess deferred", interval=2)
    assert ti["trigger"]["classpath"].endswith("EmrStepSensorTrigger")
    started = datetime.fromisoformat(ti["start_date"]).replace(tzinfo=None)
    waits = deferral_timeout(stack, run_id, "emr.watch_preprocess") - started
    assert timedelta(hours=4) <= waits <= timedelta(hours=4, minutes=10)
