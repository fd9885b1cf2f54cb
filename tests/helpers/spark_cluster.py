"""A Spark standalone cluster on 127.0.0.1 for the tests: one master and its workers.

Started as an operator starts one (``spark-class`` of the project's pyspark), with every
process bound to loopback (``SPARK_LOCAL_IP`` and ``--host``) on free ports — RPC and
web UI alike — and each worker with its own work and scratch folders. Executors inherit
their worker's environment: ``PYSPARK_PYTHON`` and the S3 server's ``AWS_*`` settings
the test session exports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from fixtures.servers import stop_process_group, wait_for_port
from fixtures.session import free_port

EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
# A port taken between free_port() and the bind (other test runs share the machine) makes
# Spark silently try the next port up, which may be another process's; fail loudly instead.
NO_PORT_FALLBACK = "-Dspark.port.maxRetries=0"


@dataclass
class SparkCluster:
    directory: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.ui_port = free_port()

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def start(self) -> SparkCluster:
        # The REST submission server would take the fixed port 6066: not needed, so off.
        master_opts = f"{NO_PORT_FALLBACK} -Dspark.master.rest.enabled=false"
        self._spawn("master", "org.apache.spark.deploy.master.Master",
                    "--host", "127.0.0.1", "--port", self.port, "--webui-port", self.ui_port,
                    SPARK_MASTER_OPTS=master_opts)  # fmt: skip
        wait_for_port(self.port, timeout=120, process=self.processes["master"])
        for i in range(self.workers):
            self._start_worker(i)
        self._wait_for_workers(timeout=180)
        return self

    def kill_worker(self, i: int) -> None:
        """kill -9 worker ``i`` whole: its JVM, its executors and their Python workers (one
        process group), as a machine that dies takes everything on it."""
        process = self.processes[f"worker-{i}"]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    def restart_worker(self, i: int) -> None:
        """Start worker ``i`` again, on new ports with the same folders; wait until the master
        counts every worker alive."""
        self._start_worker(i)
        self._wait_for_workers(timeout=180)

    def worker_of(self, executor: psutil.Process) -> int:
        """Which worker launched ``executor``."""
        for i in range(self.workers):
            worker = psutil.Process(self.processes[f"worker-{i}"].pid)
            if executor.pid in {child.pid for child in worker.children(recursive=True)}:
                return i
        raise LookupError(f"no worker launched executor {executor.pid}")

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            stop_process_group(process)  # a worker's group holds its executors

    def status(self) -> dict:
        """The master's own view (its web UI's JSON): workers, running and finished apps."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=10) as r:
            status = json.load(r)
        if status.get("url") != self.url:  # another process's UI on that port: never ours
            raise RuntimeError(f"port {self.ui_port} serves {status.get('url')}, not {self.url}")
        return status

    def executors(self) -> list[psutil.Process]:
        """Executor JVMs the workers launched, oldest first."""
        found = []
        for name, process in self.processes.items():
            if not name.startswith("worker-"):
                continue
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    if EXECUTOR_CLASS in " ".join(child.cmdline()):
                        found.append(child)
                except psutil.NoSuchProcess:
                    continue
        return sorted(found, key=lambda p: p.create_time())

    def worker_logs(self, worker: int) -> list[Path]:
        """The stderr files of the executors one worker ran (``work/<app>/<executor>/``)."""
        return sorted((self.directory / f"worker-{worker}" / "work").glob("app-*/*/stderr"))

    def _start_worker(self, i: int) -> None:
        home = self.directory / f"worker-{i}"
        self._spawn(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.url,
                    "--host", "127.0.0.1", "--port", free_port(),
                    "--webui-port", free_port(), "--cores", self.cores_per_worker,
                    "--memory", self.memory_per_worker, "--work-dir", home / "work",
                    SPARK_WORKER_OPTS=NO_PORT_FALLBACK,
                    SPARK_LOCAL_DIRS=str(home / "scratch"))  # fmt: skip

    def _spawn(self, name: str, main_class: str, *args, **env: str) -> None:
        home = self.directory / name
        home.mkdir(parents=True, exist_ok=True)
        with open(home / "process.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                ["spark-class", main_class, *map(str, args)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env},
            )  # fmt: skip

    def _wait_for_workers(self, timeout: float) -> None:
        wait_for_workers(self.processes, lambda name: self.directory / name / "process.log",
                         self.status, self.workers, timeout)  # fmt: skip


def wait_for_workers(
    processes: dict[str, subprocess.Popen],
    log_of: Callable[[str], Path],
    status: Callable[[], dict],
    workers: int,
    timeout: float,
) -> None:
    """Until the master lists ``workers`` alive workers; a Spark process that exits first
    fails the wait with the end of its log (``log_of`` its name)."""
    deadline = time.monotonic() + timeout
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                log = log_of(name).read_text(errors="replace")
                raise RuntimeError(f"spark {name} exited with {process.returncode}:\n"
                                   f"{log[-3000:]}")  # fmt: skip
        try:
            if status().get("aliveworkers") == workers:
                return
        except (OSError, ValueError):  # not up yet; or, while starting, an HTML page
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers did not register within {timeout}s")
        time.sleep(0.5)
