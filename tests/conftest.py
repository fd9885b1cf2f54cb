"""Test session: Airflow, Spark and AWS settings fixed before anything imports those libraries;
the check that the code under test is this checkout's; markers by folder and fixture.

The fixtures live in ``tests/fixtures/`` (servers, Spark, Airflow), the helpers tests import
in ``tests/helpers/`` (paths, jobs, corpora, oracles, browser, the standalone cluster).
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
pytest_plugins = ["fixtures.servers", "fixtures.spark", "fixtures.airflow"]


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


# Fixtures that are expensive to build and shared across test files: with ``pytest -n``
# (make test), every test that uses one runs on the same worker, so each is built once, as in
# a serial run. Every other test runs on the worker of its file, with its module fixtures.
SHARED_ON_ONE_WORKER = ("airflow_stack", "cluster")


# First, so that xdist's own hook (which reads the groups into the test ids) sees them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        names = set(FOLDER_MARKERS.get(item.path.parent.name, ()))
        names.update(mark for fixture, mark in FIXTURE_MARKERS.items()
                     if fixture in item.fixturenames)  # fmt: skip
        for name in sorted(names):
            item.add_marker(getattr(pytest.mark, name))
        shared = next((f for f in SHARED_ON_ONE_WORKER if f in item.fixturenames), None)
        item.add_marker(pytest.mark.xdist_group(shared or str(item.path)))
    # The real Airflow stack is one session fixture whose four processes keep polling once
    # started. Run alone, its tests go last, so it does not slow every test after the first of
    # them; on workers they go first, so its long group overlaps the other worker's tests.
    on_a_worker = hasattr(config, "workerinput")
    items.sort(key=lambda item: ("airflow_stack" in item.fixturenames) != on_a_worker)
