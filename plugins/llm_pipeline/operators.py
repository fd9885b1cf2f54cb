"""Airflow operators that run the pipeline's Spark jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from llm_pipeline.jobs import SparkJob

# Jobs exit with this status when the input or configuration is wrong (sparklm.sparkjob.run):
# retrying cannot help, so the task fails at once instead of burning its retries.
BAD_INPUT_EXIT_CODE = 2


class SparkJobOperator(SparkSubmitOperator):
    """spark-submit one pipeline job on the ``spark_local`` connection's master."""

    def __init__(self, *, job: SparkJob, jobs_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(
            task_id=job.stage,
            application=str(Path(jobs_dir) / job.script),
            application_args=job.arguments(code_root=str(jobs_dir)),
            name=f"llm-{job.stage}",
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowException as exc:
            process = getattr(self._hook, "_submit_sp", None)
            if process is not None and process.returncode == BAD_INPUT_EXIT_CODE:
                raise AirflowFailException(
                    f"{self.task_id} rejected its input (see the ERROR line above): {exc}"
                ) from None
            raise
