"""Human approval of a promotion, driven through the REST API of a real Airflow.

``require_approval`` runs on the shared ``airflow_stack``: publish stores the version and
leaves ``latest.json`` alone; ``approve_promotion`` (the standard provider's
ApprovalOperator) waits for an answer given with ``PATCH …/hitlDetails``, as the UI's
"Required actions" page gives it. It answers once the scheduler has seen the parked try's
worker exit, as a person reading the request does: an answer in the second before can lose
Airflow 3.3.2's park race (see ``PromotionApproval``).

The rejected run is also the whole pipeline on S3 through the scheduler: its run root is in
the test bucket (the registry stays the deployment's, where the approved version is), and no
credential reaches its artifacts or its task logs. (S3 corpora: the cluster and EMR runs.)
"""

import json
from pathlib import Path

import pytest

from airflow_stack import DAG_ID, USER
from helpers.jobs import SMALL_CONF
from helpers.oracles import chained_manifests
from helpers.paths import S3_ACCESS_KEY, S3_SECRET_KEY
from llm_pipeline.pipeline import PIPELINE
from sparklm.runtime import storage

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 1800  # a hang, not a benchmark: the small run takes minutes on 2 busy cores
MODEL = "approval-gpt"


def trigger(stack, conf: dict) -> str:
    run = stack.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def task_instance(stack, run_id: str, task_id: str) -> dict:
    return stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")


def check_not_failed(stack, run_id: str, waiting_for: str) -> None:
    if stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"] == "failed":
        raise AssertionError(f"run {run_id} failed before {waiting_for}:\n"
                             f"{stack.failed_tasks(run_id)}")  # fmt: skip


def wait_for(stack, run_id: str, task_id: str, states: set[str]) -> str:
    """Wait until ``task_id`` is in one of ``states``; fail at once if the run failed."""

    def reached():
        check_not_failed(stack, run_id, f"{task_id} reached {states}")
        state = task_instance(stack, run_id, task_id)["state"]
        return state if state in states else None

    return stack.wait_until(reached, RUN_TIMEOUT, f"{task_id} is {states}", interval=5)


def answer(stack, run_id: str, option: str) -> dict:
    path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/"
            "hitlDetails")  # fmt: skip
    response = stack.request("PATCH", path, json={"chosen_options": [option], "params_input": {}})
    response.raise_for_status()
    return response.json()


def parked(stack, run_id: str) -> int:
    """Wait until ``approve_promotion`` awaits input and the scheduler has processed its
    worker's exit (its "TaskInstance Finished" line for the parked try); the try number."""

    def seen():
        check_not_failed(stack, run_id, "approve_promotion awaited input")
        ti = task_instance(stack, run_id, "approve_promotion")
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


def test_a_promotion_waits_for_a_person_who_approves_or_rejects_it(airflow_stack, s3_server):
    stack = airflow_stack
    registry = stack.registry
    latest = f"{registry}/{MODEL}/latest.json"
    # The bundled corpus, which every deployment allows.
    conf = {**SMALL_CONF, "model_name": MODEL, "require_approval": True}

    # 1. The first version passes the gate, but latest.json waits for the approver.
    first = trigger(stack, conf)
    assert parked(stack, first) == 1
    assert not storage.exists(latest)
    detail = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{first}/taskInstances/approve_promotion/"
                       "-1/hitlDetails")  # fmt: skip
    assert detail["options"] == ["Approve", "Reject"]
    assert "bits/byte on the evaluation set" in detail["body"]
    [folder] = [p for p in (Path(registry.removeprefix("file://")) / MODEL).iterdir()
                if p.is_dir() and p.name != "evaluation"]  # fmt: skip
    sample = json.loads((folder / "generated.jsonl").read_text().splitlines()[0])
    assert "Sample generations" in detail["body"]
    assert f"**{sample['prompt']}**{sample['completion']}".replace("\n", " ") in detail["body"]
    assert answer(stack, first, "Approve")["responded_by"]["name"] == USER
    assert wait_for(stack, first, "promote", {"success", "failed"}) == "success"
    pointer = read_json(latest)
    assert pointer["approved_by"] == USER
    promotion = read_json(f"{pointer['uri']}/promotion.json")
    assert promotion["promoted"] and promotion["review"]["decision"] == "approved"

    # 2. A second version (another seed, in a run root on S3; a tolerance wide enough to
    # pass the gate) is rejected: it stays published, not promoted, and says who rejected it.
    run_root = s3_server.uri("runs", "approval-rejected")
    second = trigger(stack, {**conf, "seed": 7, "promotion_tolerance": 10,
                             "run_root": run_root})  # fmt: skip
    assert parked(stack, second) == 1
    detail = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{second}/taskInstances/"
                       "approve_promotion/-1/hitlDetails")  # fmt: skip
    assert f"current latest `{pointer['version']}`" in detail["body"]
    answer(stack, second, "Reject")
    assert wait_for(stack, second, "promote", {"skipped", "success", "failed"}) == "skipped"
    stack.wait_until(lambda: stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{second}")["state"]
                     == "success", 300, "the run succeeded")  # fmt: skip
    assert read_json(latest)["version"] == pointer["version"]
    versions = sorted(p.name for p in (Path(registry.removeprefix("file://")) / MODEL).iterdir()
                      if p.is_dir() and p.name != "evaluation")  # fmt: skip
    [rejected] = [v for v in versions if v != pointer["version"]]
    promotion = read_json(f"{registry}/{MODEL}/{rejected}/promotion.json")
    assert promotion["promoted"] is False and promotion["review"]["by"] == USER
    assert promotion["review"]["decision"] == "rejected" and "rejected by admin" in promotion[
        "reason"]  # fmt: skip

    # The rejected run on S3: five chained stages, the publish's model Asset event, and no
    # credential in any manifest or task log.
    manifests = chained_manifests(run_root, [job.stage for job in PIPELINE])
    assert manifests["tokenize"]["stats"]["vocab_size"] == 300
    assert manifests["train"]["stats"]["final"]["round"] == 2
    assert manifests["generate"]["stats"]["prompts"] == 6  # 5 seed prompts + 1 inline
    assert manifests["publish"]["stats"]["version_uri"] == f"{registry}/{MODEL}/{rejected}"
    assert storage.exists(f"{registry}/{MODEL}/{rejected}/MODEL_CARD.md")
    assert asset_events(stack, second) == ["llm_decoder_model"]
    for text in (json.dumps(manifests), task_logs(stack, second)):
        assert S3_SECRET_KEY not in text and S3_ACCESS_KEY not in text
