"""Airflow operators that run the pipeline's Spark jobs."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from llm_pipeline.pipeline import SparkJob

# Jobs exit with this status when the input or configuration is wrong, or the job ran out of
# memory (sparklm.runtime.exit_codes): retrying cannot help, so the task fails at once instead of
# burning its retries.
BAD_INPUT_EXIT_CODE = 2
# Spark's SparkExitCode.OOM: the driver JVM died of java.lang.OutOfMemoryError. Just as
# deterministic, but the JVM goes down before the job can print its own ERROR line.
JVM_OOM_EXIT_CODE = 52


class JobSubmitHook(SparkSubmitHook):
    """SparkSubmitHook that keeps spark-submit's exit status in ``exit_code``.

    The provider raises the same AirflowException for every non-zero exit and keeps the
    process only in a private attribute; this is the one place that reads it, and
    tests/airflow/test_operators.py fails if a provider upgrade moves it.
    """

    exit_code: int | None = None

    def submit(self, application: str = "", **kwargs: Any) -> str | None:
        try:
            return super().submit(application, **kwargs)
        finally:
            process = getattr(self, "_submit_sp", None)
            self.exit_code = process.returncode if process is not None else None


class SparkJobOperator(SparkSubmitOperator):
    """spark-submit one pipeline job on the ``spark_local`` connection's master.

    ``plan`` is a Jinja expression for the run's plan (``llm_pipeline.pipeline.xcom(planned)``).
    """

    def __init__(self, *, job: SparkJob, jobs_dir: str | Path, plan: str, **kwargs: Any) -> None:
        super().__init__(
            task_id=job.stage,
            application=str(Path(jobs_dir) / job.script),
            application_args=job.arguments(code_root=repr(str(jobs_dir)), plan=plan),
            name=f"llm-{job.stage}",
            **kwargs,
        )

    job_hook: JobSubmitHook | None = None

    def _get_hook(self) -> JobSubmitHook:
        """The hook the provider builds from this operator's settings, as a JobSubmitHook
        (which adds behaviour and no state to initialise), kept in ``job_hook``."""
        hook = super()._get_hook()
        hook.__class__ = JobSubmitHook
        self.job_hook = hook
        return hook

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowException as exc:
            returncode = self.job_hook.exit_code if self.job_hook is not None else None
            if returncode == BAD_INPUT_EXIT_CODE:
                raise AirflowFailException(
                    f"{self.task_id} failed in a way a retry cannot fix (see the ERROR line "
                    f"above): {exc}"
                ) from None
            if returncode == JVM_OOM_EXIT_CODE:
                raise AirflowFailException(
                    f"{self.task_id}: the Spark driver JVM ran out of memory "
                    "(java.lang.OutOfMemoryError, spark-submit exit 52); the same input fails "
                    "the same way on a retry. Raise spark.driver.memory (the task's conf, or "
                    "spark-submit --driver-memory) or give the job smaller pieces of work"
                ) from None
            raise


class EmrStepWatcher(EmrStepSensor):
    """EmrStepSensor that waits ``timeout`` seconds in either mode and, when the step fails,
    puts the job's own error line in the task log and fails for good.

    A failed step is final (``AirflowFailException``: a retry would only see it fail again),
    and so is the timeout (Airflow never retries ``AirflowSensorTimeout``); anything else —
    a throttled DescribeStep past botocore's own retries, a worker that died mid-poke — is
    the watcher's own fault, not the step's, so the task's retries re-attach to the still
    running step instead of failing the run and terminating a healthy cluster.

    Deferred, EmrStepSensor ignores ``timeout``: its trigger polls ``max_attempts`` times and
    the deferral times out after ``max_attempts × poke_interval`` (60 × 60 s by default).
    The attempts are therefore derived from the timeout, so a stage gets the same time
    whether a worker pokes or the triggerer waits.

    EMR copies a step's output to ``{LogUri}{cluster}/steps/{step}/std{out,err}.gz``; a job
    that rejects its input ends that output with ``ERROR: <problem and fix>``. Quoting it
    saves a trip to the S3 console. A failure is seen by ``poke`` (on a worker) or reported
    by the trigger to ``execute_complete`` (deferred); both quote it.
    """

    def __init__(self, *, timeout: float, poke_interval: float, **kwargs: Any) -> None:
        super().__init__(
            timeout=timeout,
            poke_interval=poke_interval,
            max_attempts=max(1, math.ceil(timeout / poke_interval)),
            **kwargs,
        )

    def poke(self, context: Any) -> bool:
        try:
            return super().poke(context)
        except AirflowException as exc:  # the step reached a failed state
            raise AirflowFailException(f"{exc}{self._job_error()}") from None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        try:
            super().execute_complete(context, event)
        except AirflowException as exc:  # the trigger reported the step failed
            raise AirflowFailException(f"{exc}{self._job_error()}") from None

    def _job_error(self) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        try:
            cluster = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]
            log_uri = cluster["LogUri"].replace("s3n://", "s3://")
            s3 = S3Hook(aws_conn_id=self.aws_conn_id)
            lines = []
            for stream in ("stdout.gz", "stderr.gz"):
                key = f"{log_uri.rstrip('/')}/{self.job_flow_id}/steps/{self.step_id}/{stream}"
                if s3.check_for_key(key):
                    text = gzip.decompress(s3.get_key(key).get()["Body"].read()).decode()
                    lines += [ln for ln in text.splitlines() if ln.startswith("ERROR:")]
        except Exception as exc:  # the logs are a courtesy; the failure stands regardless
            return f" (could not read the step's logs: {exc})"
        return f"\n{lines[-1]}" if lines else " (no ERROR line in the step's logs yet)"
