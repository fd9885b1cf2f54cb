"""env=emr for real: the Amazon provider's operators against moto, every step executed on
an EMR node's environment (the default release's Spark 3.5, the code bundle alone), and the
same steps replayed on the project's Spark 4.2 in local[2]: both give the same artifacts.
The whole pipeline's steps run as on EMR's hosts, which share nothing but the network and
S3: on a multi-host cluster (``helpers.namespace_cluster``) where namespaces can be made.

Spark 3.5 bundles an older cloudpickle than pyspark 4 (a dataclass defined in a job script
lost its fields on executors: generate died with ``KeyError: 'temperature'``).
"""

import os
import subprocess
from collections.abc import Iterator

import boto3
import pytest

from emr_harness import EMR_VENV, MASTER, EmrStepRunner, node_environment
from helpers.corpora import small_corpus
from helpers.jobs import SMALL_CONF, load_dag, stage_checksums
from helpers.namespace_cluster import MultiHostCluster
from helpers.namespaces import unavailable
from helpers.oracles import generated_records
from helpers.paths import JOBS, REPO
from helpers.spark_runtimes import (
    PROJECT_SPARK,
    SparkRuntime,
    emr_node_runtime,
    project_runtime,
)
from llm_pipeline.emr.bundle import EMR_SPARK_VERSION, build_bundle, bundle_version, emr_steps
from llm_pipeline.pipeline import PIPELINE, xcom
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import listed_files, read_manifest

STAGES = [job.stage for job in PIPELINE]
SMALL = {**SMALL_CONF, "max_new_tokens": 12, "prompts": ["Paragraph 2 of"]}


def test_steps_are_the_local_jobs_with_the_same_arguments(emr_dag):
    """Rendered for a run, each step's job arguments equal the local task's, but for where
    the code lives."""
    from llm_pipeline.operators import SparkJobOperator

    code = "s3://bucket/code/abc"
    plan = xcom(emr_dag.get_task("plan_run"))
    steps = emr_steps("code", plan)  # the Jinja expression `code`, bound below
    assert [s["Name"] for s in steps] == [f"llm_decoder {stage}" for stage in STAGES]
    context = {"params": emr_dag.params.validate(), "ti": FakeTaskInstance(),
               "run_id": "manual__r1"}  # fmt: skip
    env = emr_dag.get_template_env()
    for step, job in zip(steps, PIPELINE, strict=True):
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
        args = [env.from_string(a).render(**context, code=code)
                for a in step["HadoopJarStep"]["Args"]]  # fmt: skip
        assert "--master" not in args  # EMR's spark-submit defaults to YARN
        assert args[args.index("--py-files") + 1] == f"{code}/sparklm.zip"
        local_task = emr_dag.get_task(f"local.{job.stage}")
        assert isinstance(local_task, SparkJobOperator)
        local = [env.from_string(a).render(**context).replace(str(JOBS), f"{code}/jobs")
                 for a in local_task.application_args]  # fmt: skip
        assert args[-len(local) - 1 :] == [f"{code}/jobs/{job.script}", *local]
        flags = dict(zip(args, args[1:], strict=False))
        if job.stage == "preprocess":  # the deployment's allow-lists reach the jobs on EMR too
            assert flags["--allowed-corpus-prefixes"] == "pkg://gensim/test/test_data/"
        if job.stage == "publish":
            assert flags["--allowed-registry-prefixes"] == "s3://bucket/registry"
            assert flags["--dag-run-id"] == "manual__r1"  # the version links to its run


class FakeTaskInstance:
    """Answers the XCom pulls the templates make (plan_run's locations)."""

    def xcom_pull(self, task_ids):
        assert task_ids == "plan_run"
        return {"run_root": "s3://bucket/runs/r1", "registry": "s3://bucket/registry",
                "corpus_prefixes": "pkg://gensim/test/test_data/",
                "registry_prefixes": "s3://bucket/registry"}  # fmt: skip


def test_bundle_holds_every_script_and_is_content_addressed():
    files = build_bundle(REPO)
    assert {f"jobs/{job.script}" for job in PIPELINE} <= set(files)
    assert {"sparklm.zip", "requirements.txt", "constraints.txt", "bootstrap.sh",
            "install_torch.py", "jobs/conf/prompts.txt"} <= set(files)  # fmt: skip
    assert "torch==2.13.0" in files["requirements.txt"].decode()
    assert bundle_version(files) == bundle_version(build_bundle(REPO))


@pytest.fixture
def emr_dag(airflow_db, aws_default_connection, monkeypatch):
    monkeypatch.setenv("LLM_EMR_POLL_SECONDS", "1")
    return load_dag()


def emr_client(endpoint):
    return boto3.client("emr", endpoint_url=endpoint, region_name="us-east-1")


def run_emr(dag, tmp_path, s3_server, name, hosts: MultiHostCluster | None = None, **conf):
    """An env=emr run; its steps run on ``hosts`` (on its master node), else here."""
    root = s3_server.uri("runs", name)
    on_hosts = {"master": hosts.url, "execute": hosts.run_step} if hosts else {}
    with EmrStepRunner(tmp_path / "emr-nodes", **on_hosts) as runner:
        run = dag.test(run_conf={"env": "emr", "run_root": root,
                                 "registry": s3_server.uri("registry-emr"), **conf})  # fmt: skip
    assert not runner.errors, runner.errors
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states, runner, root


@pytest.fixture(scope="module")
def emr_hosts(s3_server, tmp_path_factory) -> Iterator[MultiHostCluster | None]:
    """EMR's hosts: a master node and two core nodes that share nothing but the network and
    S3, running the node environment's Spark 3.5; None where namespaces cannot be made (the
    steps then run on this machine)."""
    if reason := unavailable():
        print(f"the EMR steps run on this machine, not on separate hosts: {reason}")
        yield None
        return
    hosts = MultiHostCluster.start(tmp_path_factory.mktemp("emr-hosts"), s3_server.endpoint,
                                   base_environment=node_environment(EMR_VENV))  # fmt: skip
    yield hosts
    hosts.stop()


@pytest.fixture(scope="module")
def spark4(tmp_path_factory) -> SparkRuntime:
    """The project's Spark 4.2 without our development install, for the steps' replay."""
    return project_runtime(tmp_path_factory.mktemp("project-runtime"))


def test_each_spark_runtime_has_its_spark_and_none_of_our_code(spark4):
    for runtime, version in ((emr_node_runtime(), EMR_SPARK_VERSION),
                             (spark4, PROJECT_SPARK)):  # fmt: skip
        probe = runtime.run_python("import pyspark; print(pyspark.__version__)")
        assert probe.stdout.strip() == version, probe.stderr
        for ours in ("sparklm", "llm_pipeline"):  # only the bundle's zip provides sparklm
            assert runtime.run_python(f"import {ours}").returncode != 0, f"{ours} is installed"


@pytest.mark.slow
def test_the_whole_pipeline_runs_as_emr_steps_and_the_same_on_spark_4(
    emr_dag, aws_default_connection, s3_server, emr_hosts, spark4, tmp_path
):
    corpus = small_corpus(tmp_path / "corpus", documents=30)
    storage.write_bytes(s3_server.uri("emr-corpus", "corpus.txt"), corpus.read_bytes())
    run, states, runner, root = run_emr(
        emr_dag, tmp_path, s3_server, "emr-ok", emr_hosts,
        corpus=s3_server.uri("emr-corpus", "*.txt"), **SMALL)  # fmt: skip

    failed = [f"{r.name}:\n{r.output[-3000:]}" for r in runner.runs if r.returncode]
    assert run.state == "success", (states, failed)
    assert [r.name for r in runner.runs] == [f"llm_decoder {s}" for s in STAGES]
    assert all(r.returncode == 0 for r in runner.runs)
    assert all(states[f"local.{s}"] == "skipped" for s in STAGES)
    publish = read_manifest(root, "publish")
    latest = read_latest(s3_server.uri("registry-emr"), "wiki-gpt")
    assert latest["uri"] == publish["stats"]["version_uri"]
    assert latest["uri"].startswith("s3://")
    [cluster_id] = {r.cluster_id for r in runner.runs}
    cluster = emr_client(aws_default_connection).describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Status"]["State"] == "TERMINATED"
    assert cluster["LogUri"].startswith(root)
    if emr_hosts:  # the Spark jobs ran in executors on both core nodes
        apps = emr_hosts.completed_apps()
        assert sorted(apps.values()) == sorted(f"llm-{s}" for s in STAGES if s != "publish")
        for app, name in apps.items():
            assert emr_hosts.executor_hosts(app) == {"worker-1", "worker-2"}, name

    # The same steps, from the same bundle, on the project's Spark 4.2 in local[2] on this
    # machine, into another run root and registry: every artifact but the timings is the same.
    root4 = root + "-spark4"
    registry = s3_server.uri("registry-emr")
    registry4 = s3_server.uri("registry-spark4")
    for step in runner.runs:
        args = [a.replace(root, root4).replace(registry, registry4) for a in step.command[1:]]
        args[args.index("--master") + 1] = MASTER
        done = subprocess.run([str(spark4.spark_submit), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900, cwd=step.cwd,
                              env=spark4.env)  # fmt: skip
        assert done.returncode == 0, f"{step.name} on Spark 4:\n{done.stdout[-4000:]}"
    for stage in ("preprocess", "tokenize"):
        assert stage_checksums(root, stage) == stage_checksums(root4, stage), stage
    weights = ("model.safetensors", "config.json")
    assert stage_checksums(root, "train", weights) == stage_checksums(root4, "train", weights)
    assert samples(root) == samples(root4)
    assert all(r["temperature"] == 0.8 and r["top_k"] == 50 and r["new_tokens"] > 0
               for r in samples(root))  # fmt: skip
    [text] = listed_files(read_manifest(root, "generate"), "generated.txt")
    assert "T=0.8, top-k=50" in storage.read_bytes(text["uri"]).decode()
    assert read_latest(registry4, "wiki-gpt")["uri"].startswith(registry4 + "/")


def samples(root: str) -> list[dict]:
    """The generated records without their speed, which no two runs share."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"}
            for r in generated_records(read_manifest(root, "generate"))]  # fmt: skip


def test_a_failing_step_cancels_the_rest_terminates_and_fails_the_run(
    emr_dag, aws_default_connection, s3_server, tmp_path, capfd
):
    run, states, runner, _ = run_emr(
        emr_dag, tmp_path, s3_server, "emr-bad", corpus=s3_server.uri("nothing-here", "*.txt"),
        **SMALL)  # fmt: skip

    assert run.state == "failed"
    assert [r.name for r in runner.runs] == ["llm_decoder preprocess"]
    assert "ERROR: no input file matches" in runner.runs[0].output
    assert states["emr.watch_preprocess"] == "failed"
    [watcher] = [ti for ti in run.get_task_instances() if ti.task_id == "emr.watch_preprocess"]
    assert watcher.try_number == 1  # a failed step is final: its watcher is not retried
    assert {states[f"emr.watch_{s}"] for s in STAGES[1:]} == {"upstream_failed"}
    assert states["emr.terminate_cluster"] == "success"
    [cluster_id] = {r.cluster_id for r in runner.runs}
    client = emr_client(aws_default_connection)
    assert client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == (
        "TERMINATED")  # fmt: skip
    steps = client.list_steps(ClusterId=cluster_id)["Steps"]
    assert sorted(s["Status"]["State"] for s in steps) == ["CANCELLED"] * 4 + ["FAILED"]
    # The watcher quotes the job's own error line from the step's logs in the task log.
    log = capfd.readouterr().out
    assert "EMR job failed" in log and "\nERROR: no input file matches" in log


def test_emr_mode_refuses_local_locations(emr_dag, tmp_path):
    run = emr_dag.test(run_conf={"env": "emr", "run_root": f"file://{tmp_path}/run"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["plan_run"] == "failed"
    assert os.listdir(tmp_path) == []


def test_deferred_watchers_wait_as_long_as_their_stage_timeout(
    airflow_db, aws_default_connection, monkeypatch
):
    """Deferred, EmrStepSensor waits max_attempts × poke_interval (1 h by default), not its
    timeout: each watcher's deferral and trigger must cover the stage's own timeout."""
    from datetime import timedelta
    from unittest import mock

    from airflow.sdk.exceptions import TaskDeferred

    monkeypatch.setenv("LLM_EMR_DEFERRABLE", "true")
    dag = load_dag()
    hours = {"preprocess": 4, "tokenize": 4, "train": 48, "generate": 2, "publish": 1}
    for stage in STAGES:
        watcher = dag.get_task(f"emr.watch_{stage}")
        assert watcher.deferrable and watcher.poke_interval == 60
        # The step is still running at the first poke, so the watcher defers.
        with mock.patch.object(type(watcher), "poke", return_value=False), \
                pytest.raises(TaskDeferred) as deferred:  # fmt: skip
            watcher.execute(context={})
        timeout = timedelta(hours=hours[stage])
        assert deferred.value.timeout == timeout, stage
        trigger = deferred.value.trigger
        assert trigger.attempts * trigger.waiter_delay == timeout.total_seconds(), stage


def test_emr_roles_outside_the_allow_list_are_refused_before_a_cluster_exists(
    emr_dag, aws_default_connection, s3_server
):
    client = emr_client(aws_default_connection)
    clusters = {c["Id"] for c in client.list_clusters()["Clusters"]}
    # Steps are not the point (and nothing runs them here): should a cluster be created,
    # the run still ends at once.
    run = emr_dag.test(run_conf={"env": "emr", "run_root": s3_server.uri("runs", "emr-roles"),
                                 "registry": s3_server.uri("registry-emr"),
                                 "emr_job_flow_role": "AdminInstanceProfile"},
                       mark_success_pattern=r"emr\.(add_steps|watch_.*)")  # fmt: skip
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert tis["emr.cluster_definition"].state == "failed"
    assert tis["emr.cluster_definition"].try_number == 1
    assert tis["emr.create_cluster"].state == "upstream_failed"
    assert {c["Id"] for c in client.list_clusters()["Clusters"]} == clusters
