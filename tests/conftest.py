"""Test session: Airflow, Spark and AWS settings fixed before anything imports those libraries.

Servers the tests need are started here, on 127.0.0.1, and stopped at the end:
a real S3 server (SeaweedFS ``weed mini``) and, for the EMR tests, moto's AWS
API server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_stack import USER, AirflowStack
from browser import chromium, log_in

from support import (
    REPO,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    TRAINED,
    copy_stages,
    load_job,
)

SESSION_DIR = Path(tempfile.mkdtemp(prefix="llm-tests-"))


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# SeaweedFS's servers, each with an HTTP and a gRPC port, all on free ports: two test runs
# (or a running docker-compose stack, which publishes 8333) never collide.
WEED_SERVERS = ("s3", "master", "volume", "filer", "admin")
WEED_PORTS = {f"{name}.port{kind}": free_port() for name in WEED_SERVERS
              for kind in ("", ".grpc")}  # fmt: skip
S3_PORT = WEED_PORTS["s3.port"]

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


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before opening {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint with one test bucket."""

    process: subprocess.Popen
    endpoint: str
    bucket: str
    data_dir: Path

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join((self.bucket, *parts))

    def stop(self) -> None:
        stop_process_group(self.process)

    def start(self) -> None:
        """(Re)start on the same port and data: buckets and objects survive a restart."""
        self.process = start_s3_server(self.data_dir)


def start_s3_server(data_dir: Path) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "weed.log", "ab") as log:  # Popen keeps its own copy of the fd
        process = subprocess.Popen(
            [
                shutil.which("weed") or "weed",
                "mini",
                f"-dir={data_dir}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-s3.autoCreateBucket=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                *(f"-{flag}={port}" for flag, port in WEED_PORTS.items()),
            ],
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(S3_PORT, timeout=60, process=process)
    return process


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """SeaweedFS on free ports of 127.0.0.1 with credentials enforced and bucket ``llm-test``."""
    data_dir = SESSION_DIR / "seaweedfs"
    process = start_s3_server(data_dir)
    server = S3Server(process, os.environ["AWS_ENDPOINT_URL_S3"], "llm-test", data_dir)
    client = server.client()
    deadline = time.monotonic() + 60
    while True:  # the S3 gateway answers before the filer is ready to create buckets
        try:
            client.create_bucket(Bucket=server.bucket)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata database (SQLite) in this session's AIRFLOW_HOME."""
    subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def spark():
    """An in-process local[2] session for running job ``main`` functions quickly.

    The master is set here, by the test, as spark-submit would; job code never sets it.
    """
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("llm-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    # py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
    # after pytest has closed the streams its handlers write to: a spurious "Logging error".
    logging.getLogger("py4j").setLevel(logging.WARNING)
    yield session
    session.stop()


@pytest.fixture
def run_job(spark):
    """Run a job's ``main(argv)`` in-process on the shared Spark session; returns its manifest."""

    def run(name: str, argv: Sequence[str]) -> dict:
        return load_job(name).main([str(a) for a in argv])

    return run


@pytest.fixture(scope="session")
def wikitext_run(spark, tmp_path_factory) -> str:
    """A run root with real Wikipedia wikitext preprocessed and tokenized (vocab 512): the
    pipeline's default corpus, 206 pages of an English Wikipedia dump shipped in the gensim
    wheel, so the tests need no downloaded data.

    Tests copy it (``copy_run``) before writing later stages into it.
    """
    from sparklm.settings import DEFAULT_CORPUS

    root = f"file://{tmp_path_factory.mktemp('wikitext-run')}"
    load_job("preprocess").main(["--run-root", root, "--input", DEFAULT_CORPUS])
    load_job("tokenize_corpus").main(["--run-root", root, "--vocab-size", "512"])
    return root


@pytest.fixture(scope="session")
def trained_run(wikitext_run, tmp_path_factory) -> str:
    """``wikitext_run`` plus a trained model (two replicas, plain averaging, support.TRAINED)."""
    root = copy_stages(wikitext_run, tmp_path_factory.mktemp("trained-run"),
                       ("preprocess", "tokenize"))  # fmt: skip
    load_job("train").main(["--run-root", root, *TRAINED])
    return root


@pytest.fixture
def copy_run(tmp_path):
    """Copy a run root's committed stages to a fresh local run root for one test."""

    def copy(
        source: str, stages: Sequence[str] = ("preprocess", "tokenize"), name: str = "run"
    ) -> str:
        return copy_stages(source, tmp_path / name, stages)

    return copy


@pytest.fixture(scope="session")
def aws_api_server() -> Iterator[str]:
    """moto's AWS API server on 127.0.0.1 (in this process, so the EMR harness sees its state)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port, timeout=30)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def aws_connection(aws_api_server: str, s3_endpoint: str) -> str:
    """``AIRFLOW_CONN_AWS_DEFAULT``: EMR on moto, S3 on the real server."""
    extra = {
        "region_name": "us-east-1",
        "endpoint_url": aws_api_server,
        "service_config": {"s3": {"endpoint_url": s3_endpoint}},
    }
    return json.dumps({
        "conn_type": "aws", "login": S3_ACCESS_KEY, "password": S3_SECRET_KEY, "extra": extra,
    })  # fmt: skip


@pytest.fixture
def aws_default_connection(aws_api_server, s3_server, monkeypatch) -> str:
    """The ``aws_default`` connection the EMR tasks use: EMR on moto, S3 on the real server."""
    connection = aws_connection(aws_api_server, s3_server.endpoint)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection)
    return aws_api_server


@pytest.fixture(scope="session")
def airflow_stack(aws_api_server, s3_server, tmp_path_factory) -> Iterator[AirflowStack]:
    """ONE real Airflow for the whole test run: api-server, scheduler (LocalExecutor),
    dag-processor and triggerer on a free port of 127.0.0.1, with their own home and SQLite
    database, the DAG unpaused; EMR goes to moto, S3 to the test server, and EMR watchers
    defer to the triggerer. No runs-base or registry Variable is set: runs nobody gave a
    location to land under the stack's AIRFLOW_HOME. Corpora the tests write under pytest's
    temporary folder or in the test bucket are allowed, as a deployment allows its data
    folders, and so are registries there.
    """
    allowed = f"file://{tmp_path_factory.getbasetemp()}/,s3://{s3_server.bucket}/"
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AIRFLOW_VAR_", "AIRFLOW_CONN_AWS"))}  # fmt: skip
    stack = AirflowStack(
        home=SESSION_DIR / "airflow-stack",
        port=free_port(),
        inherited=inherited,
        env={
            "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(aws_api_server, s3_server.endpoint),
            "LLM_EMR_DEFERRABLE": "true",
            "LLM_EMR_POLL_SECONDS": "2",
            "LLM_RETRY_DELAY_SECONDS": "1",
            "AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES": allowed,
            "AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES": allowed,
        },
    )
    try:
        stack.start()
        stack.unpause()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def browser(airflow_stack, tmp_path_factory):
    """Headless Chromium signed in to ``airflow_stack`` (skips where Chromium is missing)."""
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        log_in(driver, airflow_stack.url, USER, airflow_stack.password())
        yield driver
    finally:
        driver.quit()


# Markers (registered in pyproject.toml) by folder and by the fixtures a test uses, fixtures
# it gets through other fixtures included: `make test-fast` runs the tests with none of them.
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


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        names = set(FOLDER_MARKERS.get(item.path.parent.name, ()))
        names.update(mark for fixture, mark in FIXTURE_MARKERS.items()
                     if fixture in item.fixturenames)  # fmt: skip
        for name in sorted(names):
            item.add_marker(getattr(pytest.mark, name))
    # The real Airflow stack is one session fixture: its four processes keep polling once
    # started, so the tests that need it run last and share it, instead of slowing every
    # test collected after the first of them.
    items.sort(key=lambda item: "airflow_stack" in item.fixturenames)
