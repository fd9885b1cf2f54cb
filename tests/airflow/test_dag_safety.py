"""The DAG refuses, without retrying, runs its jobs would refuse; a Java OOM is not retried."""

import math
import re
from types import SimpleNamespace

import pytest

from helpers.corpora import small_corpus
from helpers.jobs import copy_stages, load_dag, load_job

REFUSED = {"context_len": 8192, "n_layer": 96, "n_embd": 8192, "n_head": 64}


@pytest.fixture
def dag(airflow_db):
    """Parsed per test: ``dag.test(run_conf=…)`` leaves its conf in the DAG's Params."""
    return load_dag()


def task_instances(run) -> dict:
    return {ti.task_id: ti for ti in run.get_task_instances()}


REFUSALS = [
    (REFUSED, None, r"77,\d+,\d+,\d+ parameters .* over the memory budget of 8 GB"),
    ({"registry": "file:///tmp/x/registry"}, "AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES",
     r"registry 'file:///tmp/x/registry' is outside the allowed locations"),
    ({"corpus": "/tmp/somewhere/corpus.txt"}, "AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES",
     r"corpus '/tmp/somewhere/corpus.txt' is outside the allowed locations"),
    ({"corpus": "/tmp/home/.ssh/id_ed25519"}, None, "hidden folder or file '.ssh'"),
    ({"run_root": "file:////"}, None, "filesystem root"),
    # What JSON schema lets through: NaN passes every minimum and maximum.
    ({"memory_budget_gb": math.nan}, None, "the memory_budget_gb Param must be a finite number"),
    ({"lr": math.nan}, None, "the lr Param must be a finite number"),
    ({"temperature": math.inf}, None, "the temperature Param must be a finite number"),
    # The registry would refuse these names only at publish, after four stages of work.
    ({"model_name": "wiki..gpt"}, None, "the model_name Param 'wiki..gpt' does not match"),
    ({"model_name": "wiki-gpt\n"}, None, re.escape("the model_name Param 'wiki-gpt\\n' does not")),
    # A version to continue from is looked up before any stage runs.
    ({"init_from": "v404"}, None, "init_from: there is no published version at .*/wiki-gpt/v404"),
]  # fmt: skip


@pytest.mark.parametrize(("conf", "unset", "message"), REFUSALS)
def test_plan_run_refuses_what_a_job_would_refuse_with_a_failure_that_is_not_retried(
    dag, monkeypatch, tmp_path, conf, unset, message
):
    """The defaults are safe: unset, the allow-lists admit only the bundled corpus and the
    default registry. (The task's function itself: dag.test does not show the first task's log.)"""
    from airflow.sdk.exceptions import AirflowFailException

    if unset:
        monkeypatch.delenv(unset)
    params = {**dag.params.validate(), "run_root": f"file://{tmp_path}/run", **conf}
    with pytest.raises(AirflowFailException, match=message):
        dag.get_task("plan_run").python_callable(
            params=params, run_id="manual__1", dag_run=SimpleNamespace(conf=conf, run_type="manual")
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("conf", "unset", "message"), [REFUSALS[0], REFUSALS[1], REFUSALS[6]])
def test_a_refused_plan_fails_the_run_at_once(dag, monkeypatch, tmp_path, conf, unset, message):
    if unset:
        monkeypatch.delenv(unset)
    run = dag.test(run_conf={"run_root": f"file://{tmp_path}/run", **conf})
    plan = task_instances(run)["plan_run"]
    assert run.state == "failed" and plan.state == "failed"
    assert plan.try_number == 1  # not retried
    assert not (tmp_path / "run").exists()


def test_a_driver_out_of_memory_fails_the_task_without_retries(dag, spark, monkeypatch, tmp_path,
                                                               capfd):  # fmt: skip
    """train retries 3 times for a killed job, but a Java OOM (spark-submit exit 52) fails it
    at once, naming spark.driver.memory."""
    corpus = small_corpus(tmp_path / "corpus", documents=20)
    source = f"file://{tmp_path / 'source'}"
    load_job("preprocess").main(["--run-root", source, "--input", str(corpus)])
    load_job("tokenize_corpus").main(["--run-root", source, "--vocab-size", "300"])
    root = copy_stages(source, tmp_path / "run", ("preprocess", "tokenize"))
    monkeypatch.setenv("LLM_FAULT", "train:session:jvm")
    monkeypatch.setenv("LLM_RETRY_DELAY_SECONDS", "1")
    conf = {"run_root": root, "registry": f"file://{tmp_path / 'registry'}", "vocab_size": 300,
            "partitions": 2, "rounds": 1, "local_steps": 2, "batch_size": 4, "context_len": 32,
            "n_layer": 1, "n_head": 2, "n_embd": 32, "eval_tokens": 512}  # fmt: skip
    run = dag.test(
        run_conf=conf, mark_success_pattern=r"local\.(preprocess|tokenize|generate|publish)"
    )
    tis = task_instances(run)
    train = tis["local.train"]
    assert run.state == "failed" and train.state == "failed", {k: t.state for k, t in tis.items()}
    assert train.try_number == 1
    assert "the Spark driver JVM ran out of memory" in capfd.readouterr().out
