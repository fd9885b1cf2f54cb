"""A real local Airflow without Docker, on 127.0.0.1: used by ``make airflow`` and the tests.

Four processes, as a production deployment runs them: ``airflow api-server`` (the UI,
the REST API and the execution API the task workers call), ``scheduler`` (with the
LocalExecutor), ``dag-processor`` and ``triggerer``, sharing one ``AIRFLOW_HOME`` and
its SQLite metadata database. Nothing listens beyond loopback: the api-server binds
127.0.0.1 and the scheduler's and triggerer's log servers are not started (the
api-server reads task logs from the shared home).

    python tools/airflow_stack.py [--port 8080] [--home .airflow]   # what `make airflow` runs
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "llm_decoder"
USER = "admin"
# Each process of the stack, in start order, with the flags that keep it on loopback.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}


@dataclass
class AirflowStack:
    """api-server + scheduler + dag-processor + triggerer sharing ``home``.

    ``env`` adds connections, Variables and settings (``AIRFLOW_CONN_*``,
    ``AIRFLOW_VAR_*``, ``LLM_*``) on top of ``inherited`` (this process's environment).
    """

    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    inherited: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # The local deployment's runs folder and registry, once ``use_local_deployment`` set them.
    runs_base: str | None = None
    registry: str | None = None
    _token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        """Where the simple auth manager writes the generated password of ``USER``."""
        return self.home / "simple_auth_manager_passwords.json.generated"

    def password(self) -> str:
        return json.loads(self.password_file.read_text())[USER]

    def environment(self) -> dict[str, str]:
        return {
            **self.inherited,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            # Task workers call back into the api-server: follow it off the default port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            # Every component must sign and check the same tokens.
            "AIRFLOW__API_AUTH__JWT_SECRET": self.env.get(
                "AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32)
            ),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{self.inherited['PATH']}",
            **self.env,
        }

    def start(self, timeout: float = 300) -> None:
        """Migrate the database, start the four processes, wait until the DAG is served."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        env = self.environment()
        self.env["AIRFLOW__API_AUTH__JWT_SECRET"] = env["AIRFLOW__API_AUTH__JWT_SECRET"]
        airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
        with open(self.home / "logs" / "db-migrate.log", "wb") as log:
            subprocess.run([airflow, "db", "migrate"], env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=True)  # fmt: skip
        for name in ("api-server", *COMPONENTS):
            self._spawn(name, env)
        self.wait_until(lambda: self.get(f"/api/v2/dags/{DAG_ID}"), timeout, "the DAG is served")

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        api = ("api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        args = api if name == "api-server" else COMPONENTS[name]
        airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
        with open(self.home / "logs" / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C and stop() reach its children too
            )  # fmt: skip

    def restart(self, name: str, how: signal.Signals, extra_env: dict[str, str] | None = None
                ) -> int:  # fmt: skip
        """Stop one process of the stack with ``how`` (SIGKILL: a crash, nothing cleaned up;
        SIGTERM: a deployment's restart) and start it again, with ``extra_env`` on top of the
        stack's environment until its next restart. Returns where in its log the new
        process's output starts."""
        process = self.processes[name]
        os.killpg(process.pid, how)
        process.wait(timeout=120)
        log = self.home / "logs" / f"{name}.log"
        offset = log.stat().st_size
        self._spawn(name, {**self.environment(), **(extra_env or {})})
        return offset

    def use_local_deployment(self, runs_base: str, registry: str) -> None:
        """Keep runs and models where ``make run`` keeps them: the Variables it sets
        (``tools/local_deployment.py``), in this stack's database."""
        self.command(sys.executable, str(REPO / "tools" / "local_deployment.py"),
                     "--runs-base", runs_base, "--registry", registry)  # fmt: skip
        self.runs_base, self.registry = runs_base, registry

    def command(self, *args: str, timeout: float = 1800) -> str:
        """Run a command in the stack's environment (its home, database and Variables), as a
        user's shell with that ``AIRFLOW_HOME`` would; its output, or an error with it."""
        done = subprocess.run(args, env=self.environment(), capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:3])}… exited with {done.returncode}:\n"
                               f"{(done.stdout + done.stderr)[-5000:]}")  # fmt: skip
        return done.stdout

    def wait_until(self, ready, timeout: float, what: str, interval: float = 1.0) -> Any:
        """Poll ``ready()`` until it returns something truthy; fail early if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                result = ready()
                if result:
                    return result
            except (httpx.HTTPError, FileNotFoundError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow: not {what} after {timeout:.0f}s; logs: "
                                   f"{self.home / 'logs'}")  # fmt: skip
            time.sleep(interval)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{log}")

    def stop(self) -> None:
        """Stop every process this stack started (and their children), politely first."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # --- REST API (Airflow 3: /api/v2, JWT from /auth/token) ---

    def token(self) -> str:
        """A JWT for the REST API, fetched once with the generated admin password."""
        if self._token is None:
            response = httpx.post(f"{self.url}/auth/token",
                                  json={"username": USER, "password": self.password()})  # fmt: skip
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **params: Any) -> dict:
        response = self.request("GET", path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = self.request("POST", path, json=body)
        response.raise_for_status()
        return response.json()

    def failed_tasks(self, run_id: str, dag_id: str = DAG_ID, lines: int = 40) -> str:
        """The run's failed tasks, each with the end of its last try's log: what a test
        quotes when a run fails, since the stack's home is gone when the session ends."""
        run = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        report = []
        for ti in self.get(run, limit=100)["task_instances"]:
            if ti["state"] != "failed":
                continue
            content = self.get(f"{run}/{ti['task_id']}/logs/{ti['try_number']}")["content"]
            tail = [json.dumps(entry) if isinstance(entry, dict) else str(entry)
                    for entry in content[-lines:]]  # fmt: skip
            report.append(f"--- {ti['task_id']} (try {ti['try_number']}):\n" + "\n".join(tail))
        return "\n".join(report) or "no task instance failed"

    def unpause(self, dag_id: str = DAG_ID) -> None:
        response = self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        response.raise_for_status()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", ".airflow")))
    args = p.parse_args(argv)
    stack = AirflowStack(home=args.home.resolve(), port=args.port)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even from a background job
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"Starting Airflow in {stack.home} (logs in {stack.home / 'logs'}) …", flush=True)
        stack.start()
        stack.unpause()
        print(f"\nAirflow UI: {stack.url}  user: {USER}  password: in {stack.password_file}"
              f"\nDAG {DAG_ID} is unpaused. Ctrl-C stops everything.", flush=True)  # fmt: skip
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping Airflow …", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
