"""``dag.test()`` of the whole pipeline: real Airflow, real spark-submit, file:// and real S3."""

import json

import pytest

from helpers.corpora import small_corpus
from helpers.jobs import SMALL_CONF, load_dag
from helpers.oracles import chained_manifests
from helpers.paths import S3_ACCESS_KEY, S3_SECRET_KEY
from llm_pipeline.pipeline import PIPELINE
from llm_pipeline.plan import run_id_segment
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage

STAGES = [job.stage for job in PIPELINE]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag()


def run_dag(dag, **conf):
    run = dag.test(run_conf=conf)
    states = {ti.task_id.removeprefix("local."): ti.state for ti in run.get_task_instances()}
    return run, states


def test_all_five_stages_end_to_end_on_s3(dag, s3_server, tmp_path, capfd):
    """The whole DAG against the S3 server. (file:// through ``airflow dags test`` is the
    ``made_run`` fixture: tests/airflow/test_local_deployment.py; the same jobs rerun on S3:
    tests/spark/test_rerun_on_s3.py.)"""
    corpus = small_corpus(tmp_path / "corpus", documents=30)
    root, registry = s3_server.uri("runs", "dag-test"), s3_server.uri("registry")
    storage.write_bytes(s3_server.uri("corpus", "corpus.txt"), corpus.read_bytes())
    corpus_uri = s3_server.uri("corpus", "*.txt")

    conf = {"corpus": corpus_uri, "run_root": root, "registry": registry, **SMALL_CONF}
    run, states = run_dag(dag, **conf)

    assert run.state == "success", states
    manifests = chained_manifests(root, STAGES)
    assert manifests["tokenize"]["stats"]["vocab_size"] == 300
    assert manifests["train"]["stats"]["final"]["round"] == 2
    assert manifests["generate"]["stats"]["prompts"] == 6  # 5 seed prompts + 1 inline
    latest = read_latest(registry, "wiki-gpt")
    assert latest["uri"] == manifests["publish"]["stats"]["version_uri"]
    assert storage.exists(f"{latest['uri']}/MODEL_CARD.md")
    # No credential reaches an artifact or a log line.
    logs = capfd.readouterr()
    for text in (json.dumps(manifests), logs.out, logs.err):
        assert S3_SECRET_KEY not in text and S3_ACCESS_KEY not in text
    assert asset_events(run) == ["llm_decoder_model"]


def asset_events(run) -> list[str]:
    """Names of the Assets this DAG run emitted events for (publish → the model Asset)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalars(
            select(AssetModel.name).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_run_id == run.run_id)
        ).all()  # fmt: skip


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
