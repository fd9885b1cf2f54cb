"""Following a run on the shared ``airflow_stack`` through the REST API, up to and through the
human approval of its promotion (``approve_promotion``, the standard provider's
ApprovalOperator), answered with ``PATCH …/hitlDetails`` as the UI's "Required actions" page
answers it.

The answer comes once the scheduler has seen the parked try's worker exit, as a person reading
the request does: an answer in the second before can lose Airflow 3.3.2's park race (see
``PromotionApproval``).
"""

from __future__ import annotations

import json

from airflow_stack import DAG_ID
from llm_pipeline.pipeline import PIPELINE
from sparklm.runtime import storage

RUN_TIMEOUT = 1800  # a hang, not a benchmark: the small run takes minutes on 2 busy cores


def runs_path(run_id: str = "") -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns" + (f"/{run_id}" if run_id else "")


def trigger(stack, conf: dict) -> str:
    """Trigger a run with ``conf`` as the REST API does; its run id."""
    return stack.post(runs_path(), {"logical_date": None, "conf": conf})["dag_run_id"]


def task_instance(stack, run_id: str, task_id: str) -> dict:
    return stack.get(f"{runs_path(run_id)}/taskInstances/{task_id}")


def run_state(stack, run_id: str) -> str:
    return stack.get(runs_path(run_id))["state"]


def check_not_failed(stack, run_id: str, waiting_for: str) -> None:
    if run_state(stack, run_id) == "failed":
        raise AssertionError(f"run {run_id} failed before {waiting_for}:\n"
                             f"{stack.failed_tasks(run_id)}")  # fmt: skip


def wait_for(stack, run_id: str, task_id: str, states: set[str]) -> str:
    """Wait until ``task_id`` is in one of ``states``; fail at once if the run failed."""

    def reached():
        check_not_failed(stack, run_id, f"{task_id} reached {states}")
        state = task_instance(stack, run_id, task_id)["state"]
        return state if state in states else None

    return stack.wait_until(reached, RUN_TIMEOUT, f"{task_id} is {states}", interval=5)


def parked(stack, run_id: str) -> int:
    """Wait until ``approve_promotion`` awaits input and the scheduler has processed its
    worker's exit (its "TaskInstance Finished" line for the parked try); the try number."""

    def seen():
        check_not_failed(stack, run_id, "approve_promotion awaited input")
        ti = task_instance(stack, run_id, "approve_promotion")
        if ti["state"] in ("success", "skipped", "upstream_failed"):
            raise AssertionError(f"approve_promotion ended {ti['state']} without asking anyone")
        if ti["state"] != "awaiting_input":
            return None
        marks = (
            f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve_promotion, run_id={run_id},",
            "state=awaiting_input,",
            f"try_number={ti['try_number']},",
        )
        log = (stack.home / "logs" / "scheduler.log").read_text(errors="replace")
        return any(all(m in line for m in marks) for line in log.splitlines()) and ti["try_number"]

    return stack.wait_until(seen, RUN_TIMEOUT, "approve_promotion is parked", interval=2)


def approval_request(stack, run_id: str) -> dict:
    """What the person is asked: options and the body with both models' scores and samples."""
    return stack.get(f"{runs_path(run_id)}/taskInstances/approve_promotion/-1/hitlDetails")


def answer(stack, run_id: str, option: str) -> dict:
    path = f"{runs_path(run_id)}/taskInstances/approve_promotion/-1/hitlDetails"
    response = stack.request("PATCH", path, json={"chosen_options": [option], "params_input": {}})
    response.raise_for_status()
    return response.json()


def read_json(uri: str) -> dict:
    return json.loads(storage.read_bytes(uri))


def task_logs(stack, run_id: str) -> str:
    """Every task log of a run, as the scheduler's workers wrote them."""
    [folder] = [p for p in (stack.home / "logs" / f"dag_id={DAG_ID}").iterdir()
                if p.name == f"run_id={run_id}"]  # fmt: skip
    logs = sorted(folder.rglob("*.log"))
    assert {p.parent.name for p in logs} >= {f"task_id=local.{job.stage}" for job in PIPELINE}
    return "\n".join(p.read_text(errors="replace") for p in logs)


def asset_events(stack, run_id: str) -> list[str]:
    """Names of the Assets a run emitted events for."""
    names = {a["id"]: a["name"] for a in stack.get("/api/v2/assets")["assets"]}
    events = stack.get("/api/v2/assets/events", source_run_id=run_id)["asset_events"]
    return [names[e["asset_id"]] for e in events]
