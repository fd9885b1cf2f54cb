"""
### llm_decoder — train a small decoder-only language model with PyTorch on Spark

Each task is a separate Spark job (`jobs/`); tasks hand each other nothing but
the run root URI. A stage is complete only when its `manifest.json` is written.

`plan_run` → `preprocess` → `tokenize` → `train`
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, Variable, chain, task

from llm_pipeline.jobs import PIPELINE
from llm_pipeline.operators import SparkJobOperator
from llm_pipeline.params import pipeline_params
from llm_pipeline.runs import run_root_for

REPO = Path(__file__).resolve().parents[1]
JOBS_DIR = os.environ.get("LLM_JOBS_DIR", str(REPO / "jobs"))
DEFAULT_RUNS_BASE = f"file://{REPO / 'runs'}"
SPARK_CONF = {
    # Small corpora: keep shuffles from spawning hundreds of empty tasks.
    "spark.sql.shuffle.partitions": "16",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": (
        f"-Dlog4j2.configurationFile=file:{JOBS_DIR}/conf/log4j2.properties"
    ),
}

with DAG(
    dag_id="llm_decoder",
    description="Preprocess → tokenize → train → generate → publish, each a Spark job",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    params=pipeline_params(),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["llm", "spark", "pytorch"],
):

    @task
    def plan_run(params: dict, run_id: str) -> str:
        """Fix the run root every later task reads and writes (passed on through XCom)."""
        base = Variable.get("llm_runs_base", default=DEFAULT_RUNS_BASE)
        return run_root_for(params["run_root"], run_id, base)

    stages = [
        SparkJobOperator(
            job=job,
            jobs_dir=JOBS_DIR,
            conn_id="spark_local",
            conf=SPARK_CONF,
            # A killed train task resumes from its last checkpointed round when retried.
            retries=3 if job.stage == "train" else 1,
        )
        for job in PIPELINE
    ]
    chain(plan_run(), *stages)
