"""The jobs on a real Spark standalone cluster (master + 2 workers on 127.0.0.1) against the
S3 server: what the docker-compose stack and any Spark cluster run, rather than local[N]."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from helpers.corpora import small_corpus
from helpers.jobs import JIT_C1_ONLY, TINY, TINY_TOLERANCE, spark_submit
from helpers.paths import JOBS
from helpers.spark_cluster import SparkCluster
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import read_manifest

pytestmark = pytest.mark.slow

# Long enough rounds (one replica per executor) that an executor can be killed mid-task.
TRAIN = [*TINY, "--partitions", "2", "--rounds", "3", "--local-steps", "60"]
STAGES = {
    "preprocess.py": ["--input", "{corpus}"],
    "tokenize_corpus.py": ["--vocab-size", "300"],
    "train.py": TRAIN,
    "generate.py": ["--prompt", "Paragraph 1 of", "--max-new-tokens", "8"],
    "publish.py": [
        "--registry",
        "{registry}",
        "--model-name",
        "cluster-gpt",
        "--tolerance",
        str(TINY_TOLERANCE),
    ],
}
# An executor's log line when it starts or finishes a task (Spark's Executor class, INFO).
TASK_EVENT = re.compile(r"Executor: (Running|Finished) task \S+ in stage \S+ \(TID (\d+)\)")
# One core per executor, so the two replicas run on different workers' executors.
CLUSTER_CONF = ["--conf", "spark.executor.cores=1", "--conf", "spark.ui.enabled=false",
                "--conf", "spark.task.maxFailures=4",
                "--conf", f"spark.executor.extraJavaOptions={JIT_C1_ONLY}"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spark = SparkCluster(tmp_path_factory.mktemp("spark-cluster")).start()
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def cluster_run(cluster, s3_server, tmp_path_factory) -> dict[str, str]:
    """All five jobs submitted to the cluster, on an s3:// run root and registry."""
    corpus = small_corpus(tmp_path_factory.mktemp("cluster-corpus"), documents=30)
    corpus_uri = s3_server.uri("cluster", "corpus", "corpus.txt")
    storage.write_bytes(corpus_uri, corpus.read_bytes())
    run = {"root": s3_server.uri("cluster", "run"), "registry": s3_server.uri("cluster", "reg")}
    for script, args in STAGES.items():
        args = [a.format(corpus=corpus_uri, registry=run["registry"]) for a in args]
        done = spark_submit(script, "--run-root", run["root"], *args, master=cluster.url,
                            options=CLUSTER_CONF)  # fmt: skip
        assert done.returncode == 0, f"{script}:\n{done.stdout[-4000:]}"
    return run


def test_the_pipeline_runs_on_the_cluster_against_s3(cluster, cluster_run):
    for stage in ("preprocess", "tokenize", "train", "generate", "publish"):
        assert read_manifest(cluster_run["root"], stage)["stage"] == stage
    latest = read_latest(cluster_run["registry"], "cluster-gpt")
    assert latest["uri"].startswith(cluster_run["registry"] + "/")
    # The work ran in executors on both workers, not in a local driver (publish needs no
    # Spark: it only copies files).
    apps = cluster.status()["completedapps"]
    assert {a["name"] for a in apps} >= {"llm-preprocess", "llm-tokenize", "llm-train",
                                         "llm-generate"}  # fmt: skip
    assert cluster.worker_logs(0) and cluster.worker_logs(1)


def copy_prefix(source: str, target: str) -> None:
    for uri in storage.list_files(source):
        storage.write_bytes(target + uri[len(source) :], storage.read_bytes(uri))


def busy_executor(cluster: SparkCluster) -> psutil.Process | None:
    """An executor JVM that is running a task right now, by its own log: the ``stderr`` in
    its work folder (its current directory) has a task's "Running task" line and no
    "Finished task" line for it yet. Unlike a process state or a CPU share, this does not
    depend on how loaded the machine is."""
    for executor in cluster.executors():
        try:
            log = (Path(executor.cwd()) / "stderr").read_text(errors="replace")
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue
        running: set[str] = set()
        for event, task in TASK_EVENT.findall(log):
            (running.add if event == "Running" else running.discard)(task)
        if running:
            return executor
    return None


def test_an_executor_killed_mid_train_changes_nothing(cluster, cluster_run, s3_server):
    """kill -9 an executor JVM while its replica trains: Spark reruns the lost task on a new
    executor and the final weights equal the undisturbed run's, bit for bit."""
    root = s3_server.uri("cluster", "killed")
    for stage in ("preprocess", "tokenize"):
        copy_prefix(f"{cluster_run['root']}/{stage}", f"{root}/{stage}")
    process = subprocess.Popen(
        ["spark-submit", "--master", cluster.url, *CLUSTER_CONF, str(JOBS / "train.py"),
         "--run-root", root, *TRAIN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()

    killed = None
    deadline = time.monotonic() + 600
    while killed is None:
        assert process.poll() is None, "train ended before an executor could be killed:\n" + (
            "".join(lines[-50:]))  # fmt: skip
        assert time.monotonic() < deadline, "no executor was ever busy"
        if any(" round 1/3:" in line for line in lines):  # round 2 of 3 is under way
            killed = busy_executor(cluster)
        time.sleep(0.05)
    assert killed.is_running()
    killed.kill()
    assert process.wait(timeout=600) == 0, "".join(lines[-80:])
    reader.join(timeout=30)
    output = "".join(lines)
    spark_saw = [line for line in lines if "xecutor" in line or "Lost task" in line]
    # A replica's task was lost with its executor, and Spark reran it.
    assert "ExecutorLostFailure" in output, "".join(spark_saw[-40:])
    assert "resuming after round" not in output  # ... within the job, not by a rerun

    def weights(run_root: str) -> str:
        [entry] = [f for f in read_manifest(run_root, "train")["files"]
                   if f["path"] == "model.safetensors"]  # fmt: skip
        return entry["sha256"]

    assert weights(root) == weights(cluster_run["root"])
