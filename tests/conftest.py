"""Test session: Airflow, Spark and AWS settings fixed before anything imports those libraries;
the check that the code under test is this checkout's; markers by folder and fixture.

The fixtures live in ``tests/fixtures/`` (servers, Spark, Airflow, the JVMs' options), the
helpers tests import in ``tests/helpers/`` (paths, jobs, corpora, oracles, browser, hosts made
of namespaces and the Spark cluster on them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fixtures.session import S3_PORT, SESSION_DIR

from helpers.paths import REPO, S3_ACCESS_KEY, S3_SECRET_KEY

os.environ.update(
    {
        "AIRFLOW_HOME": str(SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_LOCAL": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "AIRFLOW_VAR_LLM_RUNS_BASE": f"file://{SESSION_DIR / 'runs'}",
        # Tests read corpora and publish models in temporary folders and the test bucket.
        "AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES": f"file://{tempfile.gettempdir()}/,"
        "s3://llm-test/,pkg://gensim/test/test_data/",
        "AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES": f"file://{tempfile.gettempdir()}/,"
        "s3://llm-test/",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{S3_PORT}",
    }
)
for leaked in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(leaked, None)


# The code under test is this checkout's. An editable install in a venv built by another
# checkout (or a stale plain install) would import *that* code in this process, in every
# spark-submit driver (``jobs/sparklm`` only comes first for the job scripts themselves) and in
# every Spark executor: tests would pass against code nobody meant to test.

WHERE_CODE_IS_IMPORTED_FROM = (
    "import json, sparklm, llm_pipeline; "
    "print(json.dumps([sparklm.__file__, llm_pipeline.__file__]))"
)


def code_imported_from_elsewhere() -> list[str]:
    """Where ``sparklm`` and ``llm_pipeline`` come from, when not from this checkout: in this
    process, and in a fresh interpreter outside the repository as executors start them."""
    import llm_pipeline
    import sparklm

    fresh = subprocess.run(
        [sys.executable, "-c", WHERE_CODE_IS_IMPORTED_FROM], cwd=SESSION_DIR,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = {
        f"{name} (this process)": module.__file__
        for name, module in (("sparklm", sparklm), ("llm_pipeline", llm_pipeline))
    }
    found.update(zip(("sparklm (new interpreter)", "llm_pipeline (new interpreter)"),
                     json.loads(fresh.stdout), strict=True))  # fmt: skip
    return [
        f"{what} from {path}"
        for what, path in found.items()
        if not Path(path or "").resolve().is_relative_to(REPO.resolve())
    ]


def pytest_sessionstart(session) -> None:
    # Made again for each session: ``mutmut`` (make bench-mutation) runs many in one process,
    # and each one's finish removes it.
    SESSION_DIR.mkdir(exist_ok=True)
    elsewhere = code_imported_from_elsewhere()
    if elsewhere:
        pytest.exit(
            f"ERROR: the tests of {REPO} would import {', '.join(elsewhere)}, not this checkout's "
            f"code. Run `make setup` in {REPO} and use its .venv (`.venv/bin/pytest`), with no "
            "PYTHONPATH pointing elsewhere",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


# The fixtures, by kind; the environment above is set before any of them imports Airflow.
# ``fixtures.jvm`` adds the options of every Spark JVM once the tests are collected.
pytest_plugins = ["fixtures.servers", "fixtures.spark", "fixtures.airflow", "fixtures.jvm"]


FOLDER_MARKERS = {
    "spark": ("spark",),
    "reliability": ("spark",),
    "airflow": ("airflow",),
    "ui": ("airflow",),
    "emr": ("emr", "airflow"),
}
FIXTURE_MARKERS = {
    "spark": "spark",
    "run_job": "spark",
    "s3_server": "s3",
    "airflow_db": "airflow",
    "aws_default_connection": "emr",
}


# With ``pytest -n`` (make test), the tests that share an expensive session fixture run on one
# worker, which builds it once, as a serial run does: here, by the files that use it (the
# scheduler sees test ids only). Every other file runs whole on one worker, with its module
# fixtures. A test that uses such a fixture from a file not listed here fails to collect.
SHARED_ON_ONE_WORKER = {
    "airflow_stack": ("tests/airflow/test_approval.py", "tests/airflow/test_local_deployment.py",
                      "tests/emr/test_emr_deferrable.py", "tests/ui/test_models_view.py",
                      "tests/ui/test_trigger_form.py"),
}  # fmt: skip
WORKER_GROUP = {path: fixture for fixture, paths in SHARED_ON_ONE_WORKER.items()
                for path in paths}  # fmt: skip


def pytest_xdist_make_scheduler(config, log):
    """xdist's file-by-file scheduling, with the files of each shared fixture as one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return WORKER_GROUP.get(path, path)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        names = set(FOLDER_MARKERS.get(item.path.parent.name, ()))
        names.update(mark for fixture, mark in FIXTURE_MARKERS.items()
                     if fixture in item.fixturenames)  # fmt: skip
        for name in sorted(names):
            item.add_marker(getattr(pytest.mark, name))
        path = item.nodeid.split("::", 1)[0]
        for fixture, paths in SHARED_ON_ONE_WORKER.items():
            if fixture in item.fixturenames and path not in paths:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: add {path} to "
                                        "SHARED_ON_ONE_WORKER in tests/conftest.py")  # fmt: skip
    # The real Airflow stack is one session fixture whose four processes keep polling once
    # started. Run alone, its tests go last, so it does not slow every test after the first of
    # them; on workers they go first, so its long group overlaps the other worker's tests.
    on_a_worker = hasattr(config, "workerinput")
    items.sort(key=lambda item: ("airflow_stack" in item.fixturenames) != on_a_worker)
