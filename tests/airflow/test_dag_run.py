"""``dag.test()`` of runs that must fail at once, or write where no conf says: real Airflow,
real spark-submit. (Whole runs: ``airflow dags test`` on file:// is the ``made_run`` fixture,
tests/airflow/test_local_deployment.py; the scheduler's on S3 is tests/airflow/test_approval.py.)
"""

import pytest

from helpers.jobs import load_dag
from llm_pipeline.pipeline import PIPELINE
from llm_pipeline.plan import run_id_segment
from sparklm.runtime import storage

STAGES = [job.stage for job in PIPELINE]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag()


def run_dag(dag, **conf):
    run = dag.test(run_conf=conf)
    states = {ti.task_id.removeprefix("local."): ti.state for ti in run.get_task_instances()}
    return run, states


def test_bad_corpus_fails_the_run_without_retries(dag, tmp_path):
    root = f"file://{tmp_path / 'run'}"
    run, states = run_dag(dag, corpus=f"{tmp_path}/nothing-here/*.txt", run_root=root)
    assert run.state == "failed"
    assert states["preprocess"] == "failed"
    preprocess = next(ti for ti in run.get_task_instances() if ti.task_id == "local.preprocess")
    assert preprocess.try_number == 1, "bad input is deterministic: it must not be retried"
    assert preprocess.max_tries >= 1  # the task has retries to spend, and did not spend them
    assert {states[s] for s in STAGES[1:]} == {"upstream_failed"}
    assert not storage.exists(f"{root}/preprocess/manifest.json")


def test_unknown_conf_keys_fail_the_run_at_once_naming_the_valid_ones(dag, tmp_path, capfd):
    run, states = run_dag(dag, run_root=f"file://{tmp_path / 'run'}", learning_rate=0.01,
                          **{"local-steps": 3})  # fmt: skip
    assert run.state == "failed"
    [plan] = [ti for ti in run.get_task_instances() if ti.task_id == "plan_run"]
    assert (plan.state, plan.try_number) == ("failed", 1)  # no retry: the conf will not change
    assert {states[s] for s in STAGES} == {"upstream_failed"}
    log = capfd.readouterr().out
    assert (
        "ERROR: unknown conf keys 'learning_rate' (did you mean 'lr'?), 'local-steps' "
        "(did you mean 'local_steps'?): fix the name; valid keys are batch_size,"
    ) in log
    assert not (tmp_path / "run").exists()


def test_a_run_without_conf_or_variables_writes_under_airflow_home(dag, tmp_path, monkeypatch):
    """An Asset event or the cron brings no conf: nothing may land in the code's checkout."""
    from types import SimpleNamespace

    monkeypatch.delenv("AIRFLOW_VAR_LLM_RUNS_BASE", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_LLM_REGISTRY", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    plan_run = dag.get_task("plan_run").python_callable
    run_id = "asset_triggered__2026-11-28T10:00:00+00:00"
    plan = plan_run(
        params=dag.params.validate(),
        run_id=run_id,
        dag_run=SimpleNamespace(conf={}, run_type="asset_triggered"),
    )
    base = f"file://{tmp_path / 'home'}/llm_decoder"
    assert plan["run_root"] == f"{base}/runs/{run_id_segment(run_id)}"
    assert plan["registry"] == f"{base}/registry"
    assert plan["registry"] in plan["registry_prefixes"].split(",")
