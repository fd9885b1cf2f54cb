"""Makes moto's EMR actually run its steps, so the EMR branch is tested end to end.

moto accepts ``RunJobFlow``/``AddJobFlowSteps`` (botocore validates every
request against the real EMR API model) but never executes a step. This
harness watches moto's in-process EMR backend; for the next step due on a
live cluster it downloads the uploaded code bundle from the S3 server, runs
the step's ``spark-submit`` locally — rewriting only the code locations and
adding ``--master local[2]`` — then marks the step COMPLETED or FAILED (and
cancels the later steps, as ``ActionOnFailure=CANCEL_AND_WAIT`` does), and
uploads the step's output where EMR puts step logs.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sparklm import storage

MASTER = "local[2]"


@dataclass
class StepRun:
    cluster_id: str
    step_id: str
    name: str
    returncode: int
    output: str


@dataclass
class EmrStepRunner:
    """Background thread that executes the steps moto receives, one at a time, in order."""

    work_dir: Path
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
        done = subprocess.run(self.local_command(step.args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1800)  # fmt: skip
        self.runs.append(StepRun(cluster.id, step.id, step.name, done.returncode,
                                 done.stdout))  # fmt: skip
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

    def local_command(self, args: list[str]) -> list[str]:
        """The step's spark-submit with the code bundle fetched from S3 to a local folder."""
        if not args or args[0] != "spark-submit":
            raise ValueError(f"the harness runs spark-submit steps only, got {args[:1]}")
        py_files = args[args.index("--py-files") + 1]
        code_uri = py_files.rsplit("/", 1)[0]
        local = self._fetch(code_uri)
        rewritten = [local + a[len(code_uri):] if a.startswith(code_uri + "/") else a
                     for a in args[1:]]  # fmt: skip
        return ["spark-submit", "--master", MASTER, *rewritten]

    def _fetch(self, code_uri: str) -> str:
        target = self.work_dir / code_uri.rsplit("/", 1)[-1]
        if not target.exists():
            for uri in storage.list_files(code_uri):
                path = target / uri[len(code_uri) + 1 :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(storage.read_bytes(uri))
        return str(target)
