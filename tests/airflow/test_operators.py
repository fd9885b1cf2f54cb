"""SparkJobOperator reads spark-submit's exit status through the provider's real hook."""

import json
import os

import pytest

from helpers.paths import JOBS
from llm_pipeline.pipeline import PIPELINE


@pytest.mark.parametrize(("exit_code", "final"), [(0, None), (1, False), (2, True), (52, True)])
def test_a_refused_job_fails_for_good_and_other_failures_may_be_retried(
    tmp_path, monkeypatch, exit_code, final
):
    """A stand-in spark-submit exits with the status a job would; the provider's hook runs
    it. Fails if a provider upgrade stops JobSubmitHook from seeing the exit status."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from llm_pipeline.operators import SparkJobOperator

    spark_submit = tmp_path / "bin" / "spark-submit"
    spark_submit.parent.mkdir()
    spark_submit.write_text(f"#!/bin/sh\necho 'ERROR: a stand-in job'\nexit {exit_code}\n")
    spark_submit.chmod(0o755)
    monkeypatch.setenv("PATH", f"{spark_submit.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_STAND_IN",
                       json.dumps({"conn_type": "spark", "host": "local[1]"}))  # fmt: skip
    task = SparkJobOperator(job=PIPELINE[0], jobs_dir=JOBS, plan="plan", conn_id="spark_stand_in")
    if final is None:
        task.execute(context={})
    else:
        with pytest.raises(AirflowException) as raised:
            task.execute(context={})
        assert isinstance(raised.value, AirflowFailException) is final
    assert task.job_hook.exit_code == exit_code


def test_a_failed_step_fails_the_watcher_for_good_and_its_own_faults_may_be_retried(
    aws_default_connection, monkeypatch
):
    """A real cluster and step on moto; DescribeStep answers FAILED, then throttling. The
    first must not be retried (the step's outcome is final), the second must be (the run
    would otherwise fail and terminate a cluster whose step is still running)."""
    import boto3
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    from llm_pipeline.operators import EmrStepWatcher

    emr = boto3.client("emr", endpoint_url=aws_default_connection, region_name="us-east-1")
    cluster = emr.run_job_flow(
        Name="watched", ReleaseLabel="emr-7.5.0", JobFlowRole="r", ServiceRole="r",
        Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
    )["JobFlowId"]  # fmt: skip
    step = {"Name": "s", "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}}  # fmt: skip
    [step_id] = emr.add_job_flow_steps(JobFlowId=cluster, Steps=[step])["StepIds"]
    watcher = EmrStepWatcher(task_id="watch", job_flow_id=cluster, step_id=step_id,
                             aws_conn_id="aws_default", timeout=60, poke_interval=1)  # fmt: skip
    assert watcher.poke(context={}) is False  # moto leaves the step pending

    make_api_call = BaseClient._make_api_call
    answer = {}

    def describe_step(self, operation, params):
        response = make_api_call(self, operation, params)
        if operation != "DescribeStep":
            return response
        if answer["state"] == "THROTTLED":
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, operation)
        response["Step"]["Status"] = {"State": answer["state"], "FailureDetails": {}}
        return response

    monkeypatch.setattr(BaseClient, "_make_api_call", describe_step)
    answer["state"] = "FAILED"
    with pytest.raises(AirflowFailException, match="EMR job failed"):
        watcher.poke(context={})
    with pytest.raises(AirflowFailException, match="Error while running job"):
        watcher.execute_complete(context={}, event={"status": "failure", "message": "x"})
    answer["state"] = "THROTTLED"
    with pytest.raises(ClientError) as throttled:
        watcher.poke(context={})
    assert not isinstance(throttled.value, AirflowException)  # Airflow retries it
