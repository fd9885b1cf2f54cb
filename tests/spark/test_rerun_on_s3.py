"""The same run again, on S3: all five jobs rerun on a run root and registry that already hold
their committed stages reproduce every artifact and publish nothing new.

The jobs run in process, as each task's spark-submit would run them. (The whole DAG on S3,
through the scheduler: tests/airflow/test_approval.py.)"""

from helpers.corpora import small_corpus
from helpers.jobs import TINY, TINY_TOLERANCE
from helpers.oracles import generated_records
from llm_pipeline.pipeline import PIPELINE
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import read_manifest

STAGES = [job.stage for job in PIPELINE]


def run_all(run_job, root: str, corpus: str, registry: str) -> dict[str, dict]:
    """preprocess → … → publish on ``root``; each stage's manifest."""
    args = {
        "preprocess": ["--input", corpus],
        "tokenize": ["--vocab-size", "300"],
        "train": [*TINY, "--partitions", "2", "--rounds", "2", "--local-steps", "3"],
        "generate": ["--prompt", "Paragraph 1 of", "--max-new-tokens", "8"],
        "publish": ["--registry", registry, "--model-name", "rerun-gpt",
                    "--tolerance", str(TINY_TOLERANCE)],
    }  # fmt: skip
    for job in PIPELINE:
        run_job(job.script.removesuffix(".py"), ["--run-root", root, *args[job.stage]])
    return {stage: read_manifest(root, stage) for stage in STAGES}


def completions(manifest: dict) -> list[str]:
    return [r["completion"] for r in generated_records(manifest)]


def test_the_same_run_again_on_s3_reproduces_every_artifact(run_job, s3_server, tmp_path):
    corpus_uri = s3_server.uri("rerun", "corpus.txt")
    storage.write_bytes(corpus_uri, small_corpus(tmp_path / "corpus", documents=30).read_bytes())
    root, registry = s3_server.uri("rerun", "run"), s3_server.uri("rerun", "registry")

    first = run_all(run_job, root, corpus_uri, registry)
    latest = read_latest(registry, "rerun-gpt")
    assert latest["uri"] == first["publish"]["stats"]["version_uri"]

    again = run_all(run_job, root, corpus_uri, registry)
    for stage in ("preprocess", "tokenize", "train"):
        assert again[stage]["files"] == first[stage]["files"], stage
    assert completions(again["generate"]) == completions(first["generate"])
    assert again["publish"]["params"]["version"] == first["publish"]["params"]["version"]
    assert read_latest(registry, "rerun-gpt") == latest
