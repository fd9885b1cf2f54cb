"""
### llm_decoder — train a small decoder-only language model with PyTorch on Spark

`plan_run` → `choose_env` → **local** or **emr**:

- **local**: `preprocess` → `tokenize` → `train` → `generate` → `publish`, each a
  spark-submit to the `spark_local` connection's master.
- **emr**: `bundle_code` (upload the jobs, pinned requirements and the bootstrap
  action) → `create_cluster` → `add_steps` (the same five jobs as
  `command-runner.jar spark-submit` steps) → `watch_<stage>` for each step →
  `terminate_cluster` (a teardown: the cluster goes away whether the steps
  succeed or fail, and a failed step still fails the run).

Then, in either mode, `review_request` → `approve_promotion` → `promote`: with the
`require_approval` Param a version that passes the promotion gate waits for a person
(Approve moves `latest.json`; Reject leaves it, recording who rejected); without it
they are skipped.

Tasks hand each other small values through XCom (locations, the cluster definition, step ids,
the approval text), never artifacts;
a stage is complete when its `manifest.json` is written, and a retried `train`
resumes from its last checkpointed round.

**Retraining.** The DAG runs when the corpus Asset (`LLM_CORPUS_URI`) gets an
event, and also on the cron in `LLM_SCHEDULE` when that is set (e.g. `0 3 * * 1`
in production; unset locally). Publishing updates the model Asset. Such runs
continue from the `llm_retrain_init_from` Variable's version when it is set.

**Deadline.** With `LLM_RUN_DEADLINE_HOURS` set (hours, or `all`: every stage's
time limit added up), a run not done that long after it was queued logs one
`llm_decoder run overran its deadline` line from the triggerer.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.providers.amazon.aws.operators.emr import EmrTerminateJobFlowOperator
from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    TaskGroup,
    TriggerRule,
    chain,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from llm_pipeline.approval import PromotionApproval
from llm_pipeline.deadline import run_deadline_alert
from llm_pipeline.emr.bundle import emr_steps
from llm_pipeline.emr.durable import DurableAddSteps, DurableCreateCluster
from llm_pipeline.operators import EmrStepWatcher, SparkJobOperator
from llm_pipeline.params import UnknownConfKeys, check_conf_keys, pipeline_params
from llm_pipeline.pipeline import PIPELINE, SparkJob, spark_conf, xcom
from llm_pipeline.plan import Deployment, PlanError, make_plan
from sparklm.settings import DEFAULT_CORPUS

PROJECT_DIR = Path(os.environ.get("LLM_PROJECT_DIR", Path(__file__).resolve().parents[1]))
JOBS_DIR = os.environ.get("LLM_JOBS_DIR", str(PROJECT_DIR / "jobs"))
CORPUS_URI = os.environ.get("LLM_CORPUS_URI", DEFAULT_CORPUS)
SCHEDULE = os.environ.get("LLM_SCHEDULE", "")
# How often the EMR step watchers poll, and whether they defer to the triggerer instead.
EMR_POLL_SECONDS = float(os.environ.get("LLM_EMR_POLL_SECONDS", "60"))
EMR_DEFERRABLE = os.environ.get("LLM_EMR_DEFERRABLE", "false").lower() == "true"
# Corpora always allowed: the bundled dump and the deployment's corpus Asset. Anything else
# only under the llm_corpus_allowed_prefixes Variable's prefixes (nothing, unset).
DEFAULT_CORPORA = (DEFAULT_CORPUS, CORPUS_URI)
AWS_CONN_ID = "aws_default"

PARAMS = pipeline_params()

corpus = Asset(name="llm_corpus", uri=CORPUS_URI)
model = Asset(name="llm_decoder_model", uri="llm-registry://llm_decoder/model")


def outlets(job: SparkJob) -> list[Asset]:
    """Publishing, in either mode, updates the model Asset."""
    return [model] if job.publishes_model else []


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
    params=PARAMS,
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=float(os.environ.get("LLM_RETRY_DELAY_SECONDS", "20"))),
    },
    tags=["llm", "spark", "pytorch"],
    # With LLM_RUN_DEADLINE_HOURS, a run still going that long after it was queued logs one
    # line (llm_pipeline.deadline).
    deadline=run_deadline_alert(os.environ),
):

    @task
    def plan_run(params: dict, run_id: str, dag_run) -> dict[str, str]:
        """Check the run's conf, then fix the run root, registry and allow-lists every later
        task uses (through XCom); a run its jobs would refuse fails here, at once and without
        retrying."""
        try:
            check_conf_keys(dag_run.conf or {}, PARAMS)
            return make_plan(
                params,
                run_id,
                Deployment.from_variables(DEFAULT_CORPORA),
                run_type=dag_run.run_type,
            )
        except (UnknownConfKeys, PlanError) as exc:
            raise AirflowFailException(f"ERROR: {exc}") from None

    planned = plan_run()

    with TaskGroup("local") as local:
        stages = [
            SparkJobOperator(
                job=job,
                jobs_dir=JOBS_DIR,
                plan=xcom(planned),
                conn_id="spark_local",
                conf=spark_conf(f"{JOBS_DIR}/conf"),
                retries=job.retries,
                execution_timeout=job.timeout(os.environ),
                outlets=outlets(job),
            )
            for job in PIPELINE
        ]
        chain(*stages)

    with TaskGroup("emr") as emr:

        @task(retries=2)
        def bundle_code(plan: dict) -> str:
            """Upload the jobs, their pinned requirements and the bootstrap action (once per
            code version) and return the code URI the steps run from."""
            from llm_pipeline.emr.tasks import upload_bundle

            return upload_bundle(PROJECT_DIR, plan, AWS_CONN_ID)

        @task
        def cluster_definition(plan: dict, code_uri: str, params: dict, run_id: str) -> dict:
            """The versioned cluster definition with this run's roles, subnet and log URI."""
            from llm_pipeline.emr.tasks import cluster_overrides

            return cluster_overrides(plan, code_uri, params, run_id)

        code_uri = bundle_code(planned)
        # Durable: a retry (a throttled API call, a restarted worker) attaches to the cluster
        # and the steps an earlier try created instead of creating them again.
        create_cluster = DurableCreateCluster(
            task_id="create_cluster",
            aws_conn_id=AWS_CONN_ID,
            emr_conn_id=None,
            job_flow_overrides=cluster_definition(planned, code_uri),
            wait_for_completion=False,
            retries=2,
        )
        add_steps = DurableAddSteps(
            task_id="add_steps",
            aws_conn_id=AWS_CONN_ID,
            job_flow_id=create_cluster.output,
            steps=emr_steps(code_uri=xcom(code_uri), plan=xcom(planned)),
            retries=2,
        )
        watchers = [
            EmrStepWatcher(
                task_id=f"watch_{job.stage}",
                aws_conn_id=AWS_CONN_ID,
                # Templates, not create_cluster.output: an XComArg would add an edge from
                # create_cluster to every watcher, which add_steps already orders.
                job_flow_id=f"{{{{ {xcom(create_cluster)} }}}}",
                step_id=f"{{{{ {xcom(add_steps)}[{i}] }}}}",
                poke_interval=EMR_POLL_SECONDS,
                timeout=job.timeout(os.environ).total_seconds(),
                deferrable=EMR_DEFERRABLE,
                # A failed step or a timeout fails for good (EmrStepWatcher); a retry is for
                # the watcher's own faults (a throttled call, a restarted worker).
                retries=2,
                outlets=outlets(job),
            )
            for i, job in enumerate(PIPELINE)
        ]
        terminate = EmrTerminateJobFlowOperator(
            task_id="terminate_cluster",
            aws_conn_id=AWS_CONN_ID,
            job_flow_id=create_cluster.output,
        ).as_teardown(setups=create_cluster)
        chain(create_cluster, add_steps, *watchers, terminate)

    first_task = {"local": stages[0].task_id, "emr": code_uri.operator.task_id}

    @task.branch
    def choose_env(params: dict) -> str:
        """The first task of the chosen mode (ids taken from the tasks themselves)."""
        return first_task[params["env"]]

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def review_request(plan: dict, params: dict) -> dict:
        """With require_approval, what the approver is asked about this run's version;
        otherwise (or when the gate already refused it) the approval is skipped."""
        if not params["require_approval"]:
            raise AirflowSkipException("require_approval is off: publish promoted on its own")
        from llm_pipeline.review import review_request as request

        found = request(plan["run_root"])
        if found is None:
            raise AirflowSkipException(
                "nothing awaits approval: require_approval is off, or "
                "the version did not pass the promotion gate"
            )
        return found

    @task
    def promote(request: dict, answer: dict) -> None:
        """Approved: move latest.json to the version, recording who approved it. A stale
        approval, or an answer that was not Approve (the task cleared by hand after a
        Reject), fails at once; a storage fault is retried."""
        from llm_pipeline.approval import approver, final
        from llm_pipeline.review import approve

        with final():
            approve(request["registry"], request["model_name"], request["version"],
                    approver(answer))  # fmt: skip

    request = review_request(planned)
    # One retry: Airflow 3.3 can fail a try answered within a second or two of parking (see
    # PromotionApproval); the retry asks again where a failure would end the run.
    approval = PromotionApproval(
        task_id="approve_promotion", request_task_id=request.operator.task_id, retries=1
    )
    chain(planned, choose_env(), [local, emr])
    chain([stages[-1], watchers[-1]], request, approval, promote(request, approval.output))
