"""``dag.test()`` of the pipeline: real Airflow, real spark-submit, file:// and real S3."""

import json

import pytest

from sparklm import storage
from sparklm.stage import read_manifest
from support import REPO, small_corpus


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags["llm_decoder"]


def run_dag(dag, **conf):
    run = dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


@pytest.mark.parametrize("store", ["file", "s3"])
def test_preprocess_and_tokenize_end_to_end(dag, store, tmp_path, request):
    corpus = small_corpus(tmp_path / "corpus", documents=30)
    if store == "s3":
        s3 = request.getfixturevalue("s3_server")
        root = s3.uri("runs", "dag-test")
        storage.write_bytes(s3.uri("corpus", "corpus.txt"), corpus.read_bytes())
        corpus_uri = s3.uri("corpus", "*.txt")
    else:
        root, corpus_uri = f"file://{tmp_path / 'run'}", str(corpus)

    run, states = run_dag(dag, corpus=corpus_uri, run_root=root, vocab_size=300)

    assert run.state == "success", states
    preprocess = read_manifest(root, "preprocess")
    tokenize = read_manifest(root, "tokenize")
    assert preprocess["stats"]["train"]["documents"] + preprocess["stats"]["val"]["documents"] == 30
    assert tokenize["stats"]["vocab_size"] == 300
    assert tokenize["inputs"]["preprocess"]["manifest"] == f"{root}/preprocess/manifest.json"
    manifests = json.dumps([preprocess, tokenize])
    assert "llm-test-secret" not in manifests and "llm-test-access" not in manifests


def test_bad_corpus_fails_the_run_without_retries(dag, tmp_path):
    root = f"file://{tmp_path / 'run'}"
    run, states = run_dag(dag, corpus=f"{tmp_path}/nothing-here/*.txt", run_root=root)
    assert run.state == "failed"
    assert states["preprocess"] == "failed" and states["tokenize"] == "upstream_failed"
    assert not storage.exists(f"{root}/preprocess/manifest.json")
