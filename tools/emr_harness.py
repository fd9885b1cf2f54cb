"""Makes moto's EMR actually run its steps, so the EMR branch is tested end to end.

moto accepts ``RunJobFlow``/``AddJobFlowSteps`` (botocore validates every
request against the real EMR API model) but never executes a step. This
harness watches moto's in-process EMR backend; for the next step due on a
live cluster it downloads the uploaded code bundle from the S3 server, runs
the step's ``spark-submit`` — rewriting only the code locations and adding
``--master`` (``local[2]`` on this machine by default; the tests' multi-host
cluster runs the steps on its master node against its own master) — then
marks the step COMPLETED or FAILED (and cancels the later steps, as
``ActionOnFailure=CANCEL_AND_WAIT`` does), and uploads the step's output where
EMR puts step logs.

Steps run as on an EMR node: in the node environment (``.venv-emr``), which the
bundle's own ``bootstrap.sh`` built from the bundle's ``requirements.txt`` and
``constraints.txt`` (plus the Spark that the default EMR release ships, standing in
for EMR's), with the development packages absent. The jobs then import ``sparklm``
from the bundle's ``sparklm.zip`` only, so a broken bundle fails its steps here as it
would on EMR. A bundle whose dependency files differ from the ones the node
environment was built from is refused (rebuild it: ``make venv-emr``).

    python tools/emr_harness.py build-node-env .venv-emr    # what `make venv-emr` runs
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llm_pipeline.emr.bundle import EMR_SPARK_VERSION, build_bundle
from llm_pipeline.pipeline import EMR_NODE_VENV
from sparklm.runtime import storage

MASTER = "local[2]"
REPO = Path(__file__).resolve().parents[1]
EMR_VENV = REPO / ".venv-emr"
# What the node environment records about the bundle it was built from.
NODE_RECORD = "emr-node.json"
NODE_FILES = ("requirements.txt", "constraints.txt", "bootstrap.sh", "install_torch.py",
              "jobs/conf/log4j2.properties")  # fmt: skip
# EMR provides Spark (and its py4j); the pins of the project's own pyspark 4 must not apply.
SPARK_PINS = re.compile(r"^(pyspark|pyspark-client|py4j)==.*$\n?", re.IGNORECASE | re.MULTILINE)


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(files[name]).hexdigest() for name in NODE_FILES}


def build_node_env(venv: Path) -> None:
    """Build an EMR node's Python environment at ``venv``, as the bootstrap action does.

    The bundle's ``bootstrap.sh`` runs on a local copy of the bundle; then the Spark of
    the default EMR release is installed in place of EMR's own Spark.
    """
    files = build_bundle(REPO)
    with tempfile.TemporaryDirectory(prefix="emr-bundle-") as tmp:
        bundle = Path(tmp)
        for name, data in files.items():
            (bundle / name).parent.mkdir(parents=True, exist_ok=True)
            (bundle / name).write_bytes(data)
        subprocess.run(["bash", str(bundle / "bootstrap.sh"), str(bundle), str(venv)], check=True)
        spark_constraints = bundle / "spark-constraints.txt"
        spark_constraints.write_text(SPARK_PINS.sub("", files["constraints.txt"].decode()))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "-c", str(spark_constraints),
                        f"pyspark=={EMR_SPARK_VERSION}"], check=True)  # fmt: skip
        subprocess.run([*pip, "check"], check=True)
    record = {"spark": EMR_SPARK_VERSION, "bundle_files": _digests(files)}
    (venv / NODE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def node_record(venv: Path = EMR_VENV) -> dict:
    """What the node environment was built from; a clear error if it was never built."""
    try:
        return json.loads((venv / NODE_RECORD).read_text())
    except FileNotFoundError:
        raise RuntimeError(f"no EMR node environment at {venv}: build it with `make venv-emr`"
                           ) from None  # fmt: skip


@dataclass
class StepRun:
    cluster_id: str
    step_id: str
    name: str
    returncode: int
    output: str
    # The spark-submit command the step became here, and the bundle folder it ran in.
    command: list[str] = field(default_factory=list)
    cwd: str = ""


# Runs a step's spark-submit ``command`` in the bundle folder with the node environment; the
# result holds its output and errors together.
StepExecutor = Callable[[list[str], str, dict[str, str]], subprocess.CompletedProcess]


def run_here(command: list[str], bundle: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a step on this machine."""
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800, cwd=bundle, env=env)  # fmt: skip


@dataclass
class EmrStepRunner:
    """Background thread that executes the steps moto receives, one at a time, in order."""

    work_dir: Path
    venv: Path = EMR_VENV
    # The steps' Spark master, and where their spark-submit runs.
    master: str = MASTER
    execute: StepExecutor = run_here
    poll_seconds: float = 0.2
    runs: list[StepRun] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emr-step-runner", daemon=True)

    def __enter__(self) -> EmrStepRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._run_due_steps()
            except BaseException as exc:  # surfaced by the test, not lost in a thread
                self.errors.append(exc)
                return
            time.sleep(self.poll_seconds)

    def _run_due_steps(self) -> None:
        from moto.emr.models import emr_backends

        for _, regions in list(emr_backends.items()):
            for _, backend in list(regions.items()):
                for cluster in list(backend.clusters.values()):
                    if cluster.state in ("TERMINATING", "TERMINATED"):
                        continue
                    step = next((s for s in cluster.steps if s.state in ("PENDING", "RUNNING")),
                                None)  # fmt: skip
                    if step is not None:
                        self._execute(cluster, step)

    def _execute(self, cluster, step) -> None:
        step.state = "RUNNING"
        command, bundle = [], ""
        try:
            command, bundle = self.local_command(step.args)
        except Exception as exc:  # fail the step (and so the run) now, not at a sensor timeout
            self.errors.append(exc)
            done = subprocess.CompletedProcess(step.args, 1, f"harness: {exc}\n")
        else:
            done = self.execute(command, bundle, node_environment(self.venv))
        self.runs.append(StepRun(cluster.id, step.id, step.name, done.returncode,
                                 done.stdout, command, bundle))  # fmt: skip
        log_uri = (cluster.log_uri or "").replace("s3n://", "s3://").rstrip("/")
        if log_uri:
            storage.write_bytes(f"{log_uri}/{cluster.id}/steps/{step.id}/stdout.gz",
                                gzip.compress(done.stdout.encode()))  # fmt: skip
        if done.returncode == 0:
            step.state = "COMPLETED"
            return
        step.state = "FAILED"
        later = cluster.steps[cluster.steps.index(step) + 1 :]
        if step.action_on_failure in ("CANCEL_AND_WAIT", "TERMINATE_CLUSTER"):
            for other in later:
                if other.state == "PENDING":
                    other.state = "CANCELLED"

    def local_command(self, args: list[str]) -> tuple[list[str], str]:
        """The step's spark-submit, in the node environment, with the code bundle fetched
        from S3 to a local folder; and that folder."""
        if not args or args[0] != "spark-submit":
            raise ValueError(f"the harness runs spark-submit steps only, got {args[:1]}")
        py_files = args[args.index("--py-files") + 1]
        code_uri = py_files.rsplit("/", 1)[0]
        local = self._fetch(code_uri)
        self._check_node_env(Path(local))
        # The bundle's S3 folder becomes the local copy, the node's virtualenv this one.
        rewritten = [local + a[len(code_uri):] if a.startswith(code_uri + "/")
                     else a.replace(EMR_NODE_VENV, str(self.venv)) for a in args[1:]]  # fmt: skip
        return [str(self.venv / "bin" / "spark-submit"), "--master", self.master, *rewritten], local

    def _check_node_env(self, bundle: Path) -> None:
        """The node environment must come from this bundle's dependency files, with the
        Spark of the default EMR release."""
        record = node_record(self.venv)
        if record["spark"] != EMR_SPARK_VERSION:
            raise RuntimeError(f"{self.venv} has Spark {record['spark']}, the default EMR "
                               f"release runs {EMR_SPARK_VERSION}: rebuild it with "
                               "`make venv-emr`")  # fmt: skip
        built = record["bundle_files"]
        found = _digests({name: (bundle / name).read_bytes() for name in NODE_FILES})
        stale = sorted(name for name in NODE_FILES if built.get(name) != found[name])
        if stale:
            raise RuntimeError(f"the bundle's {', '.join(stale)} differ from what {self.venv} "
                               "was built from: rebuild it with `make venv-emr`")  # fmt: skip

    def _fetch(self, code_uri: str) -> str:
        target = self.work_dir / code_uri.rsplit("/", 1)[-1]
        if not target.exists():
            for uri in storage.list_files(code_uri):
                path = target / uri[len(code_uri) + 1 :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(storage.read_bytes(uri))
        return str(target)


def node_environment(venv: Path) -> dict[str, str]:
    """The environment of a step on an EMR node: its Python and Spark, nothing of ours.

    spark-env points PYSPARK_PYTHON at the bootstrap's virtualenv; no PYTHONPATH or
    SPARK_HOME of the development machine leaks in, and the working directory is the
    bundle, so ``sparklm`` can only come from ``--py-files sparklm.zip``.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME")}
    python = str(venv / "bin" / "python")
    path = os.pathsep.join(
        [
            str(venv / "bin"),
            *[p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent],
        ]
    )
    return {**env, "PATH": path, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python,
            "VIRTUAL_ENV": str(venv)}  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "build-node-env":
        raise SystemExit("usage: python tools/emr_harness.py build-node-env VENV")
    build_node_env(Path(sys.argv[2]).resolve())
