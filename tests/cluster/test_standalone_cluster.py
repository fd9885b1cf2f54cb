"""The jobs on a real Spark standalone cluster (master + 2 workers on 127.0.0.1) against the
S3 server: what the docker-compose stack and any Spark cluster run, rather than local[N]."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from helpers.corpora import small_corpus
from helpers.jobs import (
    JIT_C1_ONLY,
    TINY,
    TINY_TOLERANCE,
    copy_prefix,
    model_sha256,
    spark_submit,
)
from helpers.paths import JOBS
from helpers.spark_cluster import SparkCluster
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import read_manifest

pytestmark = pytest.mark.slow

# One replica per executor; the fault tests kill what runs replica 0 in round 2 (HOLD).
TRAIN = [*TINY, "--partitions", "2", "--rounds", "3", "--local-steps", "20"]
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


# Replica 0's task of round 2 (its first attempt) holds until the test kills something:
# the kill lands while that task certainly runs, whatever the machine's load.
HOLD = "train:replica:round-2"
HELD = re.compile(rf"LLM_FAULT holding at {HOLD}: python worker pid (\d+)")


@dataclass
class HeldTrain:
    """train.py on the cluster, on a copy of the undisturbed run's data, its output read
    as it comes."""

    root: str
    process: subprocess.Popen
    lines: list[str]
    reader: threading.Thread
    # The apps the master knew before this train: an earlier test's train held too, and its
    # executors may still be shutting down when this one starts.
    earlier_apps: set[str]

    @classmethod
    def start(cls, cluster: SparkCluster, cluster_run: dict, s3_server, name: str) -> HeldTrain:
        root = s3_server.uri("cluster", name)
        for stage in ("preprocess", "tokenize"):
            copy_prefix(f"{cluster_run['root']}/{stage}", f"{root}/{stage}")
        status = cluster.status()
        earlier_apps = {app["id"] for app in status["activeapps"] + status["completedapps"]}
        process = subprocess.Popen(
            ["spark-submit", "--master", cluster.url, *CLUSTER_CONF,
             "--conf", f"spark.executorEnv.LLM_FAULT={HOLD}", str(JOBS / "train.py"),
             "--run-root", root, *TRAIN],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        return cls(root, process, lines, reader, earlier_apps)

    def held(self, cluster: SparkCluster) -> tuple[psutil.Process, int]:
        """The executor JVM running the held task, and its Python worker's pid, from the
        executor's own log (the ``stderr`` in its work folder ``work/<app>/<executor>``, its
        current directory)."""
        deadline = time.monotonic() + 600
        while True:
            assert self.process.poll() is None, "train ended before its task held:\n" + (
                "".join(self.lines[-50:]))  # fmt: skip
            assert time.monotonic() < deadline, "no task ever held"
            for executor in cluster.executors():
                try:
                    folder = Path(executor.cwd())
                    if folder.parent.name in self.earlier_apps:
                        continue
                    log = (folder / "stderr").read_text(errors="replace")
                except (psutil.NoSuchProcess, FileNotFoundError):
                    continue
                if found := HELD.search(log):
                    return executor, int(found.group(1))
            time.sleep(0.2)

    def finish(self, cluster_run: dict) -> str:
        """Wait for train to succeed; its output. The final weights must equal the
        undisturbed run's, bit for bit, and the job must not have resumed from a checkpoint
        (Spark reran the lost task within the job)."""
        assert self.process.wait(timeout=600) == 0, "".join(self.lines[-80:])
        self.reader.join(timeout=30)
        output = "".join(self.lines)
        assert "resuming after round" not in output
        assert model_sha256(self.root) == model_sha256(cluster_run["root"])
        return output


def spark_saw(output: str) -> str:
    return "".join(line for line in output.splitlines(keepends=True)
                   if "xecutor" in line or "Lost task" in line)  # fmt: skip


def test_an_executor_killed_mid_train_changes_nothing(cluster, cluster_run, s3_server):
    """kill -9 the executor JVM of a replica's task: Spark reruns the lost task on a new
    executor."""
    train = HeldTrain.start(cluster, cluster_run, s3_server, "killed-executor")
    executor, _ = train.held(cluster)
    executor.kill()
    output = train.finish(cluster_run)
    assert "ExecutorLostFailure" in output, spark_saw(output)[-4000:]


def test_a_python_worker_killed_mid_train_changes_nothing(cluster, cluster_run, s3_server):
    """kill -9 the Python worker that trains a replica: the executor survives, the task
    fails and Spark runs it again."""
    train = HeldTrain.start(cluster, cluster_run, s3_server, "killed-python-worker")
    _, python_worker = train.held(cluster)
    os.kill(python_worker, signal.SIGKILL)
    output = train.finish(cluster_run)
    assert "Python worker exited unexpectedly" in output, spark_saw(output)[-4000:]
    assert "ExecutorLostFailure" not in output  # the executor itself lived on


def test_a_whole_worker_killed_mid_train_changes_nothing(cluster, cluster_run, s3_server):
    """kill -9 a whole Spark worker (its JVM, executor and Python workers) mid-round: the
    lost task runs on the other worker's executor."""
    train = HeldTrain.start(cluster, cluster_run, s3_server, "killed-worker")
    executor, _ = train.held(cluster)
    lost = cluster.worker_of(executor)
    try:
        cluster.kill_worker(lost)
        output = train.finish(cluster_run)
        assert "worker lost" in output, spark_saw(output)[-4000:]
    finally:
        cluster.restart_worker(lost)
