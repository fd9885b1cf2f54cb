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
