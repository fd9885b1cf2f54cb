"""A Spark standalone cluster on hosts that share nothing but the network and the S3 server.

Three hosts of ``helpers.namespaces``, as on a small EMR cluster: ``driver`` runs the master
and the drivers ``spark-submit`` starts (client mode), ``worker-1`` and ``worker-2`` one worker
each. Every host has its own /tmp, home, work folder (``/srv/spark/work``) and
``SPARK_LOCAL_DIRS`` (``/srv/spark/local``); the checkout and the virtualenv are read-only, so
a job that leans on a file another host wrote fails here as it would on EMR.

The S3 server the tests start listens on this machine's loopback only. The hosts reach it at
the gateway (this machine's address on the bridge) on the same port, through a relay in the
test process: one S3 server, which the test process and the hosts see alike. Every process
on a host gets the test session's environment with that endpoint, the host's address and its
own folders.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import socketserver
import struct
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fixtures.servers import wait_for_port

from helpers.namespaces import Host, Network, home

MASTER_PORT, MASTER_UI_PORT, WORKER_PORT, WORKER_UI_PORT = 7077, 8080, 7078, 8081
WORK_DIR = "/srv/spark/work"
LOCAL_DIRS = "/srv/spark/local"
# Spark silently tries the next port up when one is taken; on a host of its own nothing else
# binds, so a taken port is a bug to see.
NO_PORT_FALLBACK = "-Dspark.port.maxRetries=0"


class Relay(socketserver.ThreadingTCPServer):
    """Connections to ``listen`` relayed to ``target``: how the hosts reach a server that
    listens on this machine's loopback only. Like a router, it can cut one host off: while a
    host's address is in ``cut_off``, its connections, open or new, are reset (``refused``
    counts the new ones)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        super().__init__(listen, _RelayConnection)
        self.target = target
        self.closing = False
        self.cut_off: set[str] = set()
        self.refused: Counter[str] = Counter()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()  # fmt: skip

    def close(self) -> None:
        self.closing = True
        self.shutdown()
        self.server_close()


class _RelayConnection(socketserver.BaseRequestHandler):
    server: Relay

    def handle(self) -> None:
        client = self.client_address[0]
        if client in self.server.cut_off:
            self.server.refused[client] += 1
            reset(self.request)
            return
        try:
            with socket.create_connection(self.server.target, timeout=10) as upstream:
                relay(
                    self.request,
                    upstream,
                    stopping=lambda: self.server.closing or client in self.server.cut_off,
                )
        except OSError:  # either side reset or gone: as a router would, drop the connection
            return
        if client in self.server.cut_off:
            reset(self.request)


def reset(connection: socket.socket) -> None:
    """Close with a reset (RST), not an orderly end: the peer sees its connection broken."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def relay(a: socket.socket, b: socket.socket, stopping: Callable[[], bool]) -> None:
    """Copy bytes both ways until both sides have closed (each half on its own)."""
    peer = {a: b, b: a}
    open_ends = {a, b}
    while open_ends and not stopping():
        readable, _, _ = select.select(list(open_ends), [], [], 0.5)
        for end in readable:
            data = end.recv(1 << 16)
            if data:
                peer[end].sendall(data)
            else:
                peer[end].shutdown(socket.SHUT_WR)
                open_ends.discard(end)


@dataclass
class MultiHostCluster:
    """A master on ``driver``, a worker on each ``worker-<i>``; S3 relayed to the gateway."""

    network: Network
    logs: Path  # the daemons' console output, on this machine
    s3_port: int
    # What every process on the hosts starts from: the test session's environment, or an
    # EMR node's (its Python and Spark, nothing of the development install).
    base_environment: Mapping[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    relay: Relay | None = None

    @classmethod
    def start(cls, logs: Path, s3_endpoint: str, workers: int = 2,
              base_environment: Mapping[str, str] | None = None) -> MultiHostCluster:  # fmt: skip
        """Hosts, the S3 relay, the master and the workers (of the Spark that
        ``base_environment``'s PATH finds), up and registered; on any failure nothing is
        left."""
        names = ["driver", *(f"worker-{i}" for i in range(1, workers + 1))]
        s3 = urlsplit(s3_endpoint)
        cluster = cls(Network.create(names), logs, s3.port, base_environment or os.environ)
        try:
            cluster.relay = Relay((cluster.network.gateway, s3.port), (s3.hostname, s3.port))
            cluster._start_master()
            for worker in cluster.workers:
                cluster._start_worker(worker)
            cluster._wait_for_workers(timeout=120)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def driver(self) -> Host:
        return self.network.hosts["driver"]

    @property
    def workers(self) -> list[Host]:
        return [host for name, host in self.network.hosts.items() if name.startswith("worker-")]

    @property
    def url(self) -> str:
        return f"spark://{self.driver.address}:{MASTER_PORT}"

    @property
    def s3_endpoint(self) -> str:
        """The S3 server as the hosts reach it."""
        return f"http://{self.network.gateway}:{self.s3_port}"

    def environment(self, host: Host, base: Mapping[str, str] | None = None,
                    **extra: str) -> dict[str, str]:  # fmt: skip
        """The environment of a process on ``host``: ``base`` (the cluster's base environment
        by default) with no proxy (the hosts reach nothing beyond the bridge), and the host's
        own folders, address and S3 endpoint."""
        env = {k: v for k, v in (base or self.base_environment).items()
               if not k.lower().endswith("_proxy")}  # fmt: skip
        env.update(HOME=str(home()), TMPDIR="/tmp", SPARK_LOCAL_IP=host.address,
                   SPARK_LOCAL_DIRS=LOCAL_DIRS, AWS_ENDPOINT_URL_S3=self.s3_endpoint)  # fmt: skip
        return {**env, **extra}

    def submit(self, script: str, *args: str, options: Sequence[str] = (),
               timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
        """``spark-submit`` on the driver host (client mode) of ``script``, a path there."""
        return self.driver.run(
            ["spark-submit", "--master", self.url, *options, script, *args],
            env=self.environment(self.driver), timeout=timeout,
        )  # fmt: skip

    def run_step(self, command: list[str], folder: str, env: Mapping[str, str]
                 ) -> subprocess.CompletedProcess:  # fmt: skip
        """An EMR step's ``command`` on the driver host (EMR's master node), in ``folder``,
        copied there first from this machine as EMR fetches a step's files; ``env`` is the
        node's environment, with the host's own folders, address and S3 endpoint. Output and
        errors come back together."""
        if not self.driver.path(folder).exists():
            shutil.copytree(folder, self.driver.path(folder))
        return self.driver.run(command, cwd=folder, env=self.environment(self.driver, base=env),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=1800)  # fmt: skip

    def status(self) -> dict:
        """The master's own view (its web UI's JSON): workers, running and finished apps."""
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://{self.driver.address}:{MASTER_UI_PORT}/json/"
        with no_proxy.open(url, timeout=10) as response:
            return json.load(response)

    @contextmanager
    def s3_cut_off(self, host: Host) -> Iterator[None]:
        """The S3 server unreachable from ``host`` (and only from it) until the block ends:
        every connection it has or makes to S3 is reset."""
        self.relay.cut_off.add(host.address)
        try:
            yield
        finally:
            self.relay.cut_off.discard(host.address)

    def refused_s3(self, host: Host) -> int:
        """How many of ``host``'s connections to S3 a cut refused."""
        return self.relay.refused[host.address]

    @contextmanager
    def link_down(self, host: Host) -> Iterator[None]:
        """``host``'s network link down (as a pulled cable or a failed switch port) until the
        block ends; then up, and its worker registered with the master again."""
        host.ip("link", "set", "dev", "eth0", "down")
        try:
            yield
        finally:
            host.ip("link", "set", "dev", "eth0", "up")
            self._wait_for_workers(timeout=180)

    def restart_worker(self, host: Host) -> None:
        """Start ``host``'s Spark worker again (after a test killed it); wait until the master
        counts every worker alive."""
        self._start_worker(host)
        self._wait_for_workers(timeout=180)

    def executor_logs(self, host: Host) -> list[Path]:
        """The stderr files of the executors ``host``'s worker ran, as this machine reads them."""
        return sorted(host.path(WORK_DIR).glob("app-*/*/stderr"))

    def completed_apps(self) -> dict[str, str]:
        """The applications the master has seen end: their id, and the name each gave itself."""
        return {app["id"]: app["name"] for app in self.status()["completedapps"]}

    def executor_hosts(self, app_id: str) -> set[str]:
        """The worker hosts that ran an executor of ``app_id`` (each has its work dir)."""
        return {host.name for host in self.workers if host.path(f"{WORK_DIR}/{app_id}").is_dir()}

    def stop(self) -> None:
        """Stop the hosts (which ends every process on them), then the relay."""
        self.network.stop()
        for process in self.processes.values():
            process.wait(timeout=30)
        if self.relay:
            self.relay.close()

    def _start_master(self) -> None:
        # The REST submission server would take port 6066: not needed, so off.
        options = f"{NO_PORT_FALLBACK} -Dspark.master.rest.enabled=false"
        self._spawn(self.driver, "master", "org.apache.spark.deploy.master.Master",
                    "--host", self.driver.address, "--port", MASTER_PORT,
                    "--webui-port", MASTER_UI_PORT, SPARK_MASTER_OPTS=options)  # fmt: skip
        wait_for_port(MASTER_PORT, timeout=120, process=self.processes["master"],
                      address=self.driver.address)  # fmt: skip

    def _start_worker(self, host: Host) -> None:
        self._spawn(host, host.name, "org.apache.spark.deploy.worker.Worker", self.url,
                    "--host", host.address, "--port", WORKER_PORT,
                    "--webui-port", WORKER_UI_PORT, "--cores", 1, "--memory", "1g",
                    "--work-dir", WORK_DIR, SPARK_WORKER_OPTS=NO_PORT_FALLBACK)  # fmt: skip

    def _spawn(self, host: Host, name: str, main_class: str, *args, **env: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = host.popen(
                ["spark-class", main_class, *map(str, args)],
                stdout=log, stderr=subprocess.STDOUT, env=self.environment(host, **env),
            )  # fmt: skip

    def _wait_for_workers(self, timeout: float) -> None:
        """Until the master lists every worker alive; a Spark process that exits first fails
        the wait with the end of its log."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log = (self.logs / f"{name}.log").read_text(errors="replace")
                    raise RuntimeError(f"spark {name} exited with {process.returncode}:\n"
                                       f"{log[-3000:]}")  # fmt: skip
            try:
                if self.status().get("aliveworkers") == len(self.workers):
                    return
            except (OSError, ValueError):  # not up yet; or, while starting, an HTML page
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.workers)} workers did not register within "
                                   f"{timeout}s")  # fmt: skip
            time.sleep(0.5)
