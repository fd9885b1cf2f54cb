"""The DAG file: imports cleanly and fast, has the expected graph, validates its Params."""

import copy
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from helpers.jobs import load_dag
from helpers.paths import REPO
from llm_pipeline.pipeline import PIPELINE


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert list(dagbag.dags) == ["llm_decoder"]


STAGES = [job.stage for job in PIPELINE]


def chain_upstreams(task_ids):
    """``{task: {the task before it}}`` for a straight chain."""
    return {down: {up} for up, down in zip(task_ids, task_ids[1:], strict=False)}


def test_both_modes_run_the_same_stages_in_order(dagbag):
    dag = dagbag.dags["llm_decoder"]
    local = [f"local.{s}" for s in STAGES]
    watchers = [f"emr.watch_{s}" for s in STAGES]
    expected = {
        "plan_run": set(),
        **chain_upstreams(["plan_run", "choose_env", *local]),
        "emr.bundle_code": {"plan_run", "choose_env"},
        "emr.cluster_definition": {"plan_run", "emr.bundle_code"},
        **chain_upstreams(["emr.cluster_definition", "emr.create_cluster", "emr.add_steps",
                           *watchers]),
        # The teardown follows the last step and is tied to the cluster it tears down.
        "emr.terminate_cluster": {"emr.create_cluster", watchers[-1]},
        # Either mode's publish leads to the same (optional) human approval.
        "review_request": {"plan_run", local[-1], watchers[-1]},
        "approve_promotion": {"review_request"},
        "promote": {"review_request", "approve_promotion"},
    }  # fmt: skip
    assert {t.task_id: t.upstream_task_ids for t in dag.tasks} == expected
    assert dag.get_task("emr.terminate_cluster").is_teardown
    assert dag.get_task("review_request").trigger_rule == "none_failed_min_one_success"


def test_the_approval_task_is_the_standard_providers_approval_operator(dagbag):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approval = dagbag.dags["llm_decoder"].get_task("approve_promotion")
    assert isinstance(approval, ApprovalOperator)
    # One retry, which asks again should an early answer lose Airflow 3.3.2's park race.
    assert approval.options == ["Approve", "Reject"] and approval.retries == 1


def test_a_registry_error_fails_the_approval_tasks_without_a_retry():
    from airflow.sdk.exceptions import AirflowFailException

    from llm_pipeline.approval import final
    from sparklm.registry.versions import RegistryError

    with pytest.raises(AirflowFailException, match="^ERROR: the approval is stale"), final():
        raise RegistryError("the approval is stale")
    with pytest.raises(OSError), final():  # a storage fault keeps its retry
        raise OSError("connection reset")


def test_publish_updates_the_model_asset_in_both_modes(dagbag):
    dag = dagbag.dags["llm_decoder"]
    for task_id in ("local.publish", "emr.watch_publish"):
        assert [a.name for a in dag.get_task(task_id).outlets] == ["llm_decoder_model"]


def form_params(dagbag):
    """``{name: Param}`` in the order the trigger form shows them."""
    params = dagbag.dags["llm_decoder"].params
    return {name: params.get_param(name) for name in params}


def test_every_param_has_a_title_a_description_and_a_section(dagbag):
    from sparklm.settings import SECTIONS

    params = form_params(dagbag)
    for name, param in params.items():
        assert param.schema.get("title") and param.description, name
        assert param.schema.get("section") in SECTIONS, name
    # Sections appear in the README's order, each once, as one block of the form.
    order = [param.schema["section"] for param in params.values()]
    assert list(dict.fromkeys(order)) == list(SECTIONS)
    assert order == sorted(order, key=SECTIONS.index)


def test_the_trigger_form_can_be_submitted_with_the_defaults(dagbag):
    """Airflow 3.3's form requires every Param whose type lacks "null", and counts "" (or
    None) as missing: such a default would keep the Trigger button disabled."""
    for name, param in form_params(dagbag).items():
        kinds = param.schema.get("type")
        if "null" in (kinds if isinstance(kinds, list) else [kinds]):
            assert param.value is None, name
        else:
            assert param.value not in (None, ""), name


def test_the_form_itself_enforces_every_lower_and_upper_bound(dagbag):
    """The form's number field knows only minimum/maximum; an exclusive bound alone is
    checked only after submit (a negative learning rate got through)."""
    for name, param in form_params(dagbag).items():
        schema = param.schema
        if schema.get("type") in ("number", "integer"):
            assert "minimum" in schema and "maximum" in schema, name


@pytest.mark.parametrize(
    "conf",
    [
        {"vocab_size": 10},
        {"vocab_size": "big"},
        {"val_fraction": 0.0},
        {"val_fraction": 0.9},
        {"min_chars": -1},
        {"env": "kubernetes"},
        {"emr_subnet_id": "subnet; rm -rf /"},
        {"emr_release_label": "emr-5.36.0"},
        {"corpus": ""},
        {"corpus": "a b"},
        {"run_root": "s3a://bucket/x"},
        {"run_root": "relative/path"},
        {"partitions": 0},
        {"rounds": -3},
        {"lr": 0},
        {"lr": 5.0},
        {"outer": "adam"},
        {"dropout": 1.0},
        {"context_len": 10**9},
        {"model_name": "../escape"},
        {"model_name": "a/b"},
        {"registry": "http://example.com/registry"},
        {"top_p": 0},
        {"temperature": -1},
        {"prompts": [""]},
        {"prompts_uri": "ftp://x/y"},
        {"lr": -0.001},
        {"run_root": "pkg://gensim/test/test_data"},
        {"run_root": "file:///tmp/runs/../../etc"},
        {"run_root": "/tmp/not-a-uri"},
        {"run_root": ""},
        {"registry": "pkg://gensim/test/test_data"},
        {"emr_subnet_id": ""},
        {"require_approval": "yes"},
        {"eval_input": "a b"},
    ],
)
def test_bad_params_are_refused_before_any_task(dagbag, conf):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["llm_decoder"].params)
    with pytest.raises(ParamValidationError):  # what the trigger form and the API run
        for key, value in conf.items():
            params[key] = value
        params.validate()


def test_default_params_are_valid(dagbag):
    assert copy.deepcopy(dagbag.dags["llm_decoder"].params).validate()["env"] == "local"


# Run in a fresh interpreter, as Airflow's dag-processor parses a file: it first imports the
# ``airflow.*`` modules the file names (``parsing_pre_import_modules``, on by default); then
# an audit hook records what the project's code (the DAG file, ``plugins/``) does while the
# file is parsed: waiting, connecting, spawning, or opening a file outside Python's import
# path, site-packages, this checkout and AIRFLOW_HOME. What a library does while it is being
# imported (croniter runs `file` to learn the word size) is the library's, not the DAG's:
# heavy imports are checked by name instead.
AUDITED_PARSE = """
import importlib, json, os, runpy, sys, sysconfig, time
from airflow.utils.file import iter_airflow_imports

REPO, AIRFLOW_HOME, DAG_FILE = sys.argv[1:]
for module in iter_airflow_imports(DAG_FILE):
    importlib.import_module(module)
python = [sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")]
allowed = {os.path.realpath(p) for p in (sys.prefix, *python, *filter(None, sys.path), REPO,
                                         AIRFLOW_HOME)}
VENV = sys.prefix + os.sep  # this checkout's .venv is library code, not the project's
SPAWNING = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "pty.spawn")
seen = []

def done_by_project_code():
    # The innermost frame that is either project code or an import in progress decides.
    frame = sys._getframe(2)
    while frame is not None:
        where = frame.f_code.co_filename
        if where.startswith("<frozen importlib"):
            return False
        if where.startswith(REPO + os.sep) and not where.startswith(VENV):
            return True
        frame = frame.f_back
    return False

def record(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", *SPAWNING):
        if done_by_project_code():
            seen.append([event, repr(args)[:200]])
    elif event == "open" and not isinstance(args[0], int):
        path = os.path.realpath(os.fsdecode(args[0]))
        if not any(path == root or path.startswith(root + os.sep) for root in allowed):
            if done_by_project_code():
                seen.append([event, path])

def sleep(seconds, wait=time.sleep):  # Python 3.11 raises no audit event for time.sleep
    if done_by_project_code():
        seen.append(["time.sleep", repr(seconds)])  # recorded, not waited for
    else:
        wait(seconds)

time.sleep = sleep
sys.addaudithook(record)
runpy.run_path(DAG_FILE)
heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "pyspark", "tokenizers")
         or m.startswith("sparklm.") and m != "sparklm.settings"]
print(json.dumps({"seen": seen, "heavy": heavy}))
"""


def test_dag_file_parses_fast_without_heavy_imports():
    """The scheduler parses DAG files often: no torch, pyspark or job code (only the pure
    settings spec) at import time, and
    nothing that waits, connects, spawns or reads outside Python and the project.

    Checked by what the file does, not by a clock (the machine's load would make any time
    threshold either flaky or too loose); ``test_no_import_errors`` parses through a DagBag,
    whose ``dagbag_import_timeout`` bounds a hang.
    """
    import os

    out = subprocess.run(
        [sys.executable, "-c", AUDITED_PARSE, str(REPO), os.environ["AIRFLOW_HOME"],
         str(REPO / "dags" / "llm_decoder.py")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["heavy"] == []
    assert parsed["seen"] == [], "parsing the DAG file must not wait, connect, spawn or read these"


def test_every_xcom_a_template_pulls_comes_from_an_upstream_task(dagbag):
    """Templates name the tasks they pull from by the task objects (``xcom(task)``,
    ``.output``), so no id can go stale: each one is a task of the DAG that runs before."""
    import re

    dag = dagbag.dags["llm_decoder"]
    pulls = re.compile(r"xcom_pull\(task_ids='([^']+)'\)")
    seen = set()
    for t in dag.tasks:
        text = repr([getattr(t, field) for field in t.template_fields])
        for task_id in pulls.findall(text):
            seen.add(task_id)
            assert task_id in t.get_flat_relative_ids(upstream=True), (t.task_id, task_id)
    assert {"plan_run", "emr.bundle_code", "emr.create_cluster", "emr.add_steps"} <= seen


def test_every_emr_task_that_calls_aws_has_retries(dagbag):
    """A throttled call or a restarted worker must not fail a run (and terminate its cluster):
    creating and submitting re-attach (durable), watching re-watches; a failed step or a
    timeout still fails at once (tests/airflow/test_operators.py)."""
    dag = dagbag.dags["llm_decoder"]
    for task_id in ["emr.create_cluster", "emr.add_steps", *(f"emr.watch_{s}" for s in STAGES)]:
        assert dag.get_task(task_id).retries >= 1, task_id


def test_every_stage_has_a_time_limit_in_both_modes(dagbag, monkeypatch):
    """A hung stage fails at its limit instead of holding the DAG (one run at a time) for ever;
    the deployment can lengthen one stage's limit without editing the DAG."""
    from datetime import timedelta

    dag = dagbag.dags["llm_decoder"]
    for job in PIPELINE:
        assert dag.get_task(f"local.{job.stage}").execution_timeout == timedelta(
            hours=job.timeout_hours
        )
        assert dag.get_task(f"emr.watch_{job.stage}").timeout == job.timeout_hours * 3600
    monkeypatch.setenv("LLM_TIMEOUT_HOURS_TRAIN", "96")
    [train] = [job for job in PIPELINE if job.stage == "train"]
    assert train.timeout(os.environ) == timedelta(hours=96)


def test_a_deployment_gives_runs_a_deadline_from_when_they_were_queued(monkeypatch):
    """The run as a whole: a run stuck where no task's time limit sees it (a queue, a pool)
    still says so once it has taken longer than the deployment allows."""
    from airflow.sdk import DeadlineReference

    from llm_pipeline.deadline import log_overrun

    monkeypatch.setenv("LLM_RUN_DEADLINE_HOURS", "all")
    [alert] = load_dag().deadline
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == sum((job.timeout(os.environ) for job in PIPELINE), timedelta())
    # The triggerer imports the callback by this path (the plugins folder is on its sys.path).
    assert alert.callback.path == f"{log_overrun.__module__}.{log_overrun.__qualname__}"
    monkeypatch.delenv("LLM_RUN_DEADLINE_HOURS")
    assert not load_dag().deadline
