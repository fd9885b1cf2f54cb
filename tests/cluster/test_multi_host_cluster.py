"""A Spark standalone cluster whose driver and workers are separate hosts (Linux namespaces)
that share nothing but the network and the S3 server: what the jobs meet on EMR, where a
file one node writes is not on the others. On it: the hosts themselves, the whole DAG, and
faults across hosts (kills, a link down, S3 out of one host's reach)."""

from __future__ import annotations

import contextlib
import errno
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from helpers.corpora import small_corpus
from helpers.jobs import JIT_C1_ONLY, SMALL_CONF, TINY, copy_prefix, load_dag, model_sha256
from helpers.namespace_cluster import LOCAL_DIRS, WORK_DIR, MultiHostCluster
from helpers.namespaces import Host, home, leftovers, unavailable
from helpers.paths import JOBS, REPO
from llm_pipeline.pipeline import PIPELINE
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import read_manifest

pytestmark = pytest.mark.slow

# One core per executor, so tasks spread over both workers once both executors registered.
CLUSTER_CONF = ["--conf", "spark.executor.cores=1", "--conf", "spark.ui.enabled=false",
                "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
                "--conf", f"spark.executor.extraJavaOptions={JIT_C1_ONLY}"]  # fmt: skip
# A job whose tasks each sleep a while, so one executor cannot take them all, and answer
# their host's name.
WHERE_TASKS_RUN = """
import json, socket, sys, time
from pyspark.sql import SparkSession

def where(seconds):
    time.sleep(seconds)
    return socket.gethostname()

seconds = float(sys.argv[1])
spark = SparkSession.builder.appName("where-tasks-run").getOrCreate()
tasks = spark.sparkContext.parallelize([seconds] * 4, 4)
print(json.dumps(sorted(set(tasks.map(where).collect()))))
spark.stop()
"""


@pytest.fixture(scope="module", autouse=True)
def namespaces_allowed() -> None:
    if reason := unavailable():
        pytest.skip(reason)


@pytest.fixture(scope="module")
def multi_host_cluster(s3_server, tmp_path_factory) -> Iterator[MultiHostCluster]:
    cluster = MultiHostCluster.start(tmp_path_factory.mktemp("multi-host"), s3_server.endpoint)
    yield cluster
    cluster.stop()


def put(host: Host, path: str, text: str) -> str:
    """Copy ``text`` to ``path`` on ``host`` (as scp would); the path."""
    host.path(path).write_text(text)
    return path


def named_netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_a_killed_test_process_leaves_no_host_behind():
    """The hosts' inits end with the process that made them, however it ends: kill -9 it
    while a host runs a detached process, and nothing of the network is left."""
    made = subprocess.Popen(
        [sys.executable, "-c",
         "import json, time\n"
         "from helpers.namespaces import Network\n"
         "network = Network.create(['driver', 'worker-1'])\n"
         "network.hosts['worker-1'].popen(['setsid', 'sleep', '600'])\n"
         "print(json.dumps([sorted(network.namespaces), network.gateway_link]), flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO / "tests", stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        namespaces, link = json.loads(made.stdout.readline())
    finally:
        made.send_signal(signal.SIGKILL)
        made.wait()
    deadline = time.monotonic() + 10
    while left := leftovers(set(namespaces), [link]):
        assert time.monotonic() < deadline, left
        time.sleep(0.05)


def test_a_stopped_cluster_leaves_no_namespace_link_or_process(s3_server, tmp_path):
    """Stopped mid-job (executors and Python workers busy on both workers), the cluster
    leaves no process, network namespace or link. Its start and stop times are printed
    (measured, not asserted: speed goals live in benchmarks)."""
    netns_before = named_netns()
    started = time.monotonic()
    cluster = MultiHostCluster.start(tmp_path, s3_server.endpoint)
    start_s = time.monotonic() - started
    try:
        job = put(cluster.driver, "/tmp/where_tasks_run.py", WHERE_TASKS_RUN)
        submitted = cluster.driver.popen(
            ["spark-submit", "--master", cluster.url, *CLUSTER_CONF, job, "600"],
            env=cluster.environment(cluster.driver),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_python_workers(cluster, timeout=120)
    finally:
        stopped = time.monotonic()
        cluster.stop()
        stop_s = time.monotonic() - stopped
    submitted.wait(timeout=30)  # spark-submit ended with the driver host
    print(f"multi-host cluster: started in {start_s:.1f}s, stopped in {stop_s:.1f}s")
    assert cluster.network.leftovers() == []
    assert named_netns() == netns_before


def wait_for_python_workers(cluster: MultiHostCluster, timeout: float) -> None:
    """Until every worker host runs a task: a Python worker under its executor."""
    deadline = time.monotonic() + timeout
    while not all(any(p.info["name"].startswith("python") for p in worker.processes())
                  for worker in cluster.workers):  # fmt: skip
        assert time.monotonic() < deadline, "no task ran on every worker host"
        time.sleep(0.2)


@pytest.mark.parametrize("folder", ["/tmp", str(home()), "/dev/shm", LOCAL_DIRS, WORK_DIR])
def test_each_host_has_its_own_folders(multi_host_cluster, folder):
    """A file the driver host writes in its /tmp, home, work or scratch folder is not on the
    worker hosts: a job that leans on such a file fails here, as on EMR."""
    driver, *workers = [multi_host_cluster.driver, *multi_host_cluster.workers]
    marker = f"{folder}/written-on-driver"
    assert driver.run(["sh", "-c", f"mkdir -p {folder} && echo x > {marker}"]).returncode == 0
    assert driver.run(["test", "-e", marker]).returncode == 0
    for worker in workers:
        assert worker.run(["test", "-e", marker]).returncode == 1, worker.name


def test_the_checkout_and_virtualenv_are_read_only_on_the_hosts(multi_host_cluster):
    for host in multi_host_cluster.network.hosts.values():
        for folder in (REPO, Path(sys.prefix)):
            touched = host.run(["touch", str(folder / "written-by-a-host")])
            assert "Read-only file system" in touched.stderr, (host.name, folder)
        python = host.run([sys.executable, "-c", "import pyspark, sparklm"])
        assert python.returncode == 0, python.stderr


def test_the_hosts_reach_nothing_beyond_the_bridge(multi_host_cluster):
    """No default route: an address outside the bridge is unreachable, not merely silent."""
    subnet = str(multi_host_cluster.network.subnet)
    probe = ("import socket; s = socket.socket(); "
             "print(s.connect_ex(('198.51.100.1', 80)))")  # fmt: skip
    for host in multi_host_cluster.network.hosts.values():
        routes = host.run(["ip", "-4", "route"]).stdout.splitlines()
        assert [route.split()[0] for route in routes] == [subnet], (host.name, routes)
        assert host.run([sys.executable, "-c", probe]).stdout.strip() == str(errno.ENETUNREACH)


def test_every_host_reaches_the_s3_server_at_the_gateway(multi_host_cluster, s3_server):
    """What a host writes through the job's own storage layer, the test reads from the same
    S3 server on loopback."""
    cluster = multi_host_cluster
    for host in cluster.network.hosts.values():
        uri = s3_server.uri("multi-host", f"written-by-{host.name}")
        write = f"from sparklm.runtime import storage; storage.write_bytes({uri!r}, b'{host.name}')"
        done = host.run([sys.executable, "-c", write], env=cluster.environment(host))
        assert done.returncode == 0, done.stderr[-2000:]
        assert storage.read_bytes(uri) == host.name.encode()


# Which file:// paths the executors see as the driver does, as shared_paths checks them.
WHAT_EXECUTORS_SEE = """
import sys
from pyspark.sql import SparkSession
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.shared_paths import check_executors_see

context = SparkSession.builder.appName("what-executors-see").getOrCreate().sparkContext
for uri in sys.argv[1:]:
    try:
        check_executors_see(context, [uri])
        print("seen alike:", uri)
    except PipelineError as refused:
        print("refused:", refused)
context.stop()
"""


def test_executors_see_the_image_as_the_driver_does_but_not_its_disk(multi_host_cluster):
    """The checkout (every node's image) is the same file on every host; a file on the
    driver's own disk is not there for the executors."""
    cluster = multi_host_cluster
    job = put(cluster.driver, "/tmp/what_executors_see.py", WHAT_EXECUTORS_SEE)
    on_driver = put(cluster.driver, "/srv/only-on-the-driver.txt", "text")
    image = f"file://{REPO / 'README.md'}"
    done = cluster.submit(job, image, f"file://{on_driver}", options=CLUSTER_CONF)
    assert done.returncode == 0, done.stderr[-4000:]
    seen, refused = done.stdout.splitlines()[-2:]
    assert seen == f"seen alike: {image}"
    assert re.fullmatch(
        rf"refused: file://{on_driver} is a path on the driver's disk that the executor on "
        r"host 'worker-[12]' does not see: the nodes of this cluster share no filesystem\. "
        r"Use an s3:// URI \(or a filesystem every node mounts at the same path\)",
        refused,
    ), refused


def test_a_run_root_on_the_drivers_disk_is_refused_before_any_work(multi_host_cluster):
    """Each executor would write its part files to its own disk and the next job would find
    them missing: preprocess stops at once with one ERROR line, exit 2, no stage written."""
    cluster = multi_host_cluster
    corpus = put(cluster.driver, "/srv/corpus.txt", "A line of the corpus.\n" * 200)
    done = cluster.submit(str(REPO / "jobs" / "preprocess.py"), "--run-root",
                          "file:///srv/run", "--input", f"file://{corpus}",
                          options=CLUSTER_CONF)  # fmt: skip
    assert done.returncode == 2, done.stderr[-4000:]
    # spark-submit's PythonRunner passes the driver's stderr on to its own stdout.
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith(
        "ERROR: file:///srv/run is a path on the driver's disk that the executor on host"
    ), output[-4000:]
    assert not cluster.driver.path("/srv/run/preprocess").exists()


# The whole DAG on the cluster, then faults across hosts: the fault tests train again, with
# spark-submit, on copies of that run's data and must end with its weights, bit for bit (one
# replica per worker host). TRAIN is train's part of DAG_PARAMS, as flags.
STAGES = [job.stage for job in PIPELINE]
DAG_PARAMS = {**SMALL_CONF, "rounds": 4, "local_steps": 20, "max_new_tokens": 8}
TRAIN = [*TINY, "--partitions", "2", "--rounds", "4", "--local-steps", "20"]
UPSTREAM = ("preprocess", "tokenize")
# Replica 0's task of round 2 (its first attempt) holds until a test kills it or cuts its host
# off: the fault lands while that task certainly runs, whatever the machine's load.
HOLD = "train:replica:round-2"
HELD = re.compile(rf"LLM_FAULT holding at {HOLD}: python worker pid (\d+)")
# Spark waits minutes for a silent executor by default (spark.network.timeout 120 s, checked
# every 60 s); these notice a host that went quiet within about 20 s.
NOTICE_A_LOST_HOST = ["--conf", "spark.network.timeout=20s",
                      "--conf", "spark.network.timeoutInterval=2s",
                      "--conf", "spark.executor.heartbeatInterval=2s"]  # fmt: skip
T = TypeVar("T")


@pytest.fixture(scope="module")
def dag_run_on_hosts(multi_host_cluster, s3_server, airflow_db, tmp_path_factory) -> DagRun:
    """The whole DAG, in local mode with the ``spark_local`` connection pointed at the
    cluster's master, as ``airflow dags test`` runs it: this machine is the Airflow worker
    and the jobs' driver (on the gateway's address, which the executors reach), the run root,
    registry and corpus are on S3."""
    cluster = multi_host_cluster
    corpus = small_corpus(tmp_path_factory.mktemp("multi-host-corpus"), documents=30)
    corpus_uri = s3_server.uri("multi-host", "corpus", "corpus.txt")
    storage.write_bytes(corpus_uri, corpus.read_bytes())
    conf = {"run_root": s3_server.uri("multi-host", "dag-run"), "corpus": corpus_uri,
            "registry": s3_server.uri("multi-host", "registry"), **DAG_PARAMS}  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_SPARK_LOCAL", json.dumps({"conn_type": "spark",
                                                           "host": cluster.url}))  # fmt: skip
        env.setenv("SPARK_LOCAL_IP", cluster.network.gateway)
        for allowed in ("CORPUS", "REGISTRY"):
            env.setenv(f"AIRFLOW_VAR_LLM_{allowed}_ALLOWED_PREFIXES", f"s3://{s3_server.bucket}/")
        before = cluster.completed_apps()
        run = load_dag().test(run_conf=conf)
    return DagRun(
        conf["run_root"],
        conf["registry"],
        run.state,
        {ti.task_id: ti.state for ti in run.get_task_instances()},
        {app: name for app, name in cluster.completed_apps().items() if app not in before},
    )


@dataclass
class DagRun:
    """What the DAG run left: where, how it ended, and the Spark apps it ran on the cluster."""

    root: str
    registry: str
    state: str
    task_states: dict[str, str]
    apps: dict[str, str]  # the master's app id: its name


def test_the_whole_dag_runs_against_the_cluster(multi_host_cluster, dag_run_on_hosts):
    cluster, run = multi_host_cluster, dag_run_on_hosts
    assert run.state == "success", run.task_states
    assert all(run.task_states[f"local.{stage}"] == "success" for stage in STAGES)
    for stage in STAGES:
        assert read_manifest(run.root, stage)["stage"] == stage
    assert read_latest(run.registry, "wiki-gpt")["uri"].startswith(run.registry + "/")
    # The Spark jobs ran on the cluster, in executors on both worker hosts (publish needs no
    # Spark: it only copies files).
    assert sorted(run.apps.values()) == sorted(f"llm-{s}" for s in STAGES if s != "publish")
    for app, name in run.apps.items():
        assert cluster.executor_hosts(app) == {"worker-1", "worker-2"}, name


@dataclass
class Train:
    """train.py submitted on the driver host, its output read as it comes."""

    process: subprocess.Popen
    lines: list[str]
    reader: threading.Thread
    # The apps the master knew before this train: their executors' logs (an earlier test's
    # held task among them) stay on the hosts.
    earlier_apps: set[str]

    @classmethod
    def start(cls, cluster: MultiHostCluster, root: str, *options: str) -> Train:
        status = cluster.status()
        earlier_apps = {app["id"] for app in status["activeapps"] + status["completedapps"]}
        process = cluster.driver.popen(
            ["spark-submit", "--master", cluster.url, *CLUSTER_CONF, *options,
             str(JOBS / "train.py"), "--run-root", root, *TRAIN],
            env=cluster.environment(cluster.driver),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        return cls(process, lines, reader, earlier_apps)

    def wait_until(self, found: Callable[[], T], what: str, timeout: float = 600) -> T:
        """The first true answer of ``found``, asked while train runs."""
        deadline = time.monotonic() + timeout
        while not (answer := found()):
            assert self.process.poll() is None, f"train ended before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"never {what}"
            time.sleep(0.2)
        return answer

    def finish(self) -> str:
        """Wait for train to succeed; its output."""
        assert self.process.wait(timeout=600) == 0, self.output
        self.reader.join(timeout=30)
        return "".join(self.lines)

    @property
    def output(self) -> str:
        return "".join(self.lines[-80:])

    def held(self, cluster: MultiHostCluster) -> tuple[Host, int] | None:
        """The worker host whose executor holds this train's task, and the pid (on that host)
        of the Python worker running it, from the executor's own log; None until then."""
        for host in cluster.workers:
            for log in cluster.executor_logs(host):
                if log.parent.parent.name in self.earlier_apps:
                    continue
                if found := HELD.search(log.read_text(errors="replace")):
                    return host, int(found.group(1))
        return None


def copy_upstream(source_root: str, root: str) -> str:
    for stage in UPSTREAM:
        copy_prefix(f"{source_root}/{stage}", f"{root}/{stage}")
    return root


def checkpointed_round(root: str) -> int:
    latest = f"{root}/train/checkpoints/latest.json"
    return json.loads(storage.read_bytes(latest))["round"] if storage.exists(latest) else 0


def test_a_worker_host_whose_link_goes_down_mid_round_changes_nothing(
    multi_host_cluster, dag_run_on_hosts, s3_server
):
    """Replica 0's task holds in round 2 on one worker host, and that host's link goes down:
    the driver stops hearing its executor, declares it lost and runs the task on the other
    host. Nothing resumes from a checkpoint; the weights are the undisturbed run's."""
    cluster = multi_host_cluster
    root = copy_upstream(dag_run_on_hosts.root, s3_server.uri("multi-host", "link-down"))
    train = Train.start(cluster, root, *NOTICE_A_LOST_HOST,
                        "--conf", f"spark.executorEnv.LLM_FAULT={HOLD}")  # fmt: skip
    host, _ = train.wait_until(lambda: train.held(cluster), "a task held")
    with cluster.link_down(host):
        output = train.finish()
    assert "Executor heartbeat timed out" in output, output[-4000:]
    assert "resuming after round" not in output
    assert model_sha256(root) == model_sha256(dag_run_on_hosts.root)


def test_s3_out_of_reach_of_one_worker_host_for_seconds_loses_nothing(
    multi_host_cluster, dag_run_on_hosts, s3_server
):
    """Once training is under way, S3 is cut off from worker-1 until its tasks have met the
    cut (their connections reset) and for a few seconds more. The storage layer's retries
    carry them over: no task fails, and the weights are the undisturbed run's."""
    cluster = multi_host_cluster
    root = copy_upstream(dag_run_on_hosts.root, s3_server.uri("multi-host", "s3-cut"))
    host = cluster.workers[0]
    train = Train.start(cluster, root)
    train.wait_until(lambda: checkpointed_round(root) >= 1, "a round checkpointed")
    with cluster.s3_cut_off(host):
        train.wait_until(lambda: cluster.refused_s3(host) >= 2, f"{host.name} met the cut")
        time.sleep(3)
    output = train.finish()
    assert "Lost task" not in output, output[-4000:]
    assert model_sha256(root) == model_sha256(dag_run_on_hosts.root)


# What Spark says when a kill -9 takes down, on the host that runs the held task:
SPARK_SAYS = {
    # the Python worker that trains the replica (the executor lives on, the task fails and
    # Spark runs it again);
    "python worker": "Python worker exited unexpectedly",
    # the executor JVM, and with it its Python workers (Spark reruns the lost task on another
    # executor);
    "executor": "ExecutorLostFailure",
    # every process on the host but its init: the Spark worker, the executor, the Python
    # workers, as when a machine dies (the lost task runs on the other host).
    "whole host": "worker lost",
}


def kill(what: str, host: Host, python_worker: int) -> None:
    """kill -9 ``what`` (a key of SPARK_SAYS) on ``host``; ``python_worker`` is a pid there."""
    if what == "python worker":
        host.run(["kill", "-9", str(python_worker)], check=True)
    elif what == "executor":
        host.run(["pkill", "-9", "-f", "CoarseGrainedExecutorBackend"], check=True)
    else:
        for process in host.processes():
            if process.pid != host.pid:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()


@pytest.mark.parametrize("what", SPARK_SAYS)
def test_a_kill_mid_round_changes_nothing(multi_host_cluster, dag_run_on_hosts, s3_server, what):
    """kill -9 what runs replica 0's task in round 2: Spark reruns the lost task within the
    job. Nothing resumes from a checkpoint; the weights are the undisturbed run's."""
    cluster = multi_host_cluster
    root = copy_upstream(dag_run_on_hosts.root,
                         s3_server.uri("multi-host", what.replace(" ", "-")))  # fmt: skip
    train = Train.start(cluster, root, "--conf", f"spark.executorEnv.LLM_FAULT={HOLD}")
    host, python_worker = train.wait_until(lambda: train.held(cluster), "a task held")
    try:
        kill(what, host, python_worker)
        output = train.finish()
    finally:
        if what == "whole host":
            cluster.restart_worker(host)
    assert SPARK_SAYS[what] in output, output[-4000:]
    if what == "python worker":
        assert "ExecutorLostFailure" not in output  # the executor itself lived on
    assert "resuming after round" not in output
    assert model_sha256(root) == model_sha256(dag_run_on_hosts.root)
