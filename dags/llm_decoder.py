"""
### llm_decoder — train a small decoder-only language model with PyTorch on Spark

`plan_run` → `preprocess` → `tokenize` → `train` → `generate` → `publish`

Every stage is a separate Spark job (`jobs/`), submitted with spark-submit to
the `spark_local` connection's master. Tasks hand each other only URIs (the
run root and the registry, through XCom); a stage is complete when its
`manifest.json` is written, and a retried `train` resumes from its last
checkpointed round.

**Retraining.** The DAG runs when the corpus Asset (`LLM_CORPUS_URI`) gets an
event, and additionally on the cron in `LLM_SCHEDULE` when that is set (e.g.
`0 3 * * 1` in production; unset locally). `publish` updates the model Asset.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Variable, chain, task

from llm_pipeline.jobs import PIPELINE
from llm_pipeline.operators import SparkJobOperator
from llm_pipeline.params import DEFAULT_CORPUS, pipeline_params
from llm_pipeline.runs import run_root_for

REPO = Path(__file__).resolve().parents[1]
JOBS_DIR = os.environ.get("LLM_JOBS_DIR", str(REPO / "jobs"))
CORPUS_URI = os.environ.get("LLM_CORPUS_URI", DEFAULT_CORPUS)
SCHEDULE = os.environ.get("LLM_SCHEDULE", "")
DEFAULT_RUNS_BASE = f"file://{REPO / 'runs'}"
DEFAULT_REGISTRY = f"file://{REPO / 'registry'}"
SPARK_CONF = {
    # Small corpora: keep shuffles from spawning hundreds of empty tasks.
    "spark.sql.shuffle.partitions": "16",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": (
        f"-Dlog4j2.configurationFile=file:{JOBS_DIR}/conf/log4j2.properties"
    ),
}

corpus = Asset(name="llm_corpus", uri=CORPUS_URI)
model = Asset(name="llm_decoder_model", uri="llm-registry://llm_decoder/model")

with DAG(
    dag_id="llm_decoder",
    description="Preprocess → tokenize → train → generate → publish, each a Spark job",
    doc_md=__doc__,
    schedule=(
        AssetOrTimeSchedule(timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=corpus)
        if SCHEDULE
        else [corpus]
    ),  # fmt: skip
    catchup=False,
    max_active_runs=1,
    params=pipeline_params(),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["llm", "spark", "pytorch"],
):

    @task
    def plan_run(params: dict, run_id: str) -> dict[str, str]:
        """Fix the run root and registry every later task uses (passed on through XCom)."""
        base = Variable.get("llm_runs_base", default=DEFAULT_RUNS_BASE)
        return {
            "run_root": run_root_for(params["run_root"], run_id, base),
            "registry": params["registry"] or Variable.get("llm_registry",
                                                           default=DEFAULT_REGISTRY),
        }  # fmt: skip

    stages = [
        SparkJobOperator(
            job=job,
            jobs_dir=JOBS_DIR,
            conn_id="spark_local",
            conf=SPARK_CONF,
            # A killed train task resumes from its last checkpointed round when retried.
            retries=3 if job.stage == "train" else 1,
            outlets=[model] if job.stage == "publish" else [],
        )
        for job in PIPELINE
    ]
    chain(plan_run(), *stages)
