"""EMR tasks that survive their own worker: a retried create_cluster or add_steps attaches to
what an earlier try created (Airflow's task state store, else a lookup in EMR), so a run never
has two clusters or its steps queued twice; a throttled AWS call is retried. Against moto; the
watchers are marked successful (no step runs here), the teardown terminates the cluster."""

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from helpers.emr import STEP_NAMES, clusters_of
from helpers.jobs import load_dag


@pytest.fixture
def emr_dag(airflow_db, aws_default_connection, monkeypatch):
    monkeypatch.setenv("LLM_EMR_POLL_SECONDS", "1")
    monkeypatch.setenv("LLM_RETRY_DELAY_SECONDS", "0")
    return load_dag()


def run_to_the_steps(dag, s3_server, name):
    """A run in EMR mode up to its steps: cluster created, steps queued, cluster terminated."""
    run = dag.test(run_conf={"env": "emr", "run_root": s3_server.uri("runs", name),
                             "registry": s3_server.uri("registry-emr")},
                   mark_success_pattern=r"emr\.watch_.*")  # fmt: skip
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


@pytest.mark.parametrize(
    "faults",
    [
        # Both tasks' first tries die after the AWS call, before storing what it created...
        ("create_cluster:created", "add_steps:added"),
        # ... or after storing it.
        ("create_cluster:stored", "add_steps:stored"),
    ],
    ids=["before-storing", "after-storing"],
)
def test_a_retry_attaches_to_what_the_dead_try_created(
    emr_dag, aws_default_connection, s3_server, monkeypatch, request, faults
):
    monkeypatch.setenv("LLM_FAULT", ",".join(faults))
    run, tis = run_to_the_steps(emr_dag, s3_server, request.node.callspec.id)
    for task in ("emr.create_cluster", "emr.add_steps"):
        assert tis[task].state == "success" and tis[task].try_number == 2, task
    [cluster] = clusters_of(aws_default_connection, run.run_id)  # one cluster, not one per try
    assert cluster["StepNames"] == STEP_NAMES  # each step queued once
    assert cluster["Status"]["State"] == "TERMINATED"
    assert tis["emr.terminate_cluster"].state == "success"


def test_a_throttled_call_is_retried(emr_dag, aws_default_connection, s3_server, monkeypatch):
    """RunJobFlow answers ThrottlingException (past botocore's own retries): the task's retry
    creates the cluster."""
    make_api_call = BaseClient._make_api_call
    throttled = []

    def throttle_once(self, operation, params):
        if operation == "RunJobFlow" and not throttled:
            throttled.append(operation)
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, operation)
        return make_api_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle_once)
    run, tis = run_to_the_steps(emr_dag, s3_server, "throttled")
    assert throttled and tis["emr.create_cluster"].try_number == 2
    [cluster] = clusters_of(aws_default_connection, run.run_id)
    assert cluster["StepNames"] == STEP_NAMES
