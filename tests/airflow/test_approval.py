"""A promotion a person rejects, on the shared ``airflow_stack`` through its REST API (the
approved one is triggered from the form: tests/ui/test_trigger_form.py).

``require_approval``: publish stores the version and leaves ``latest.json`` alone;
``approve_promotion`` waits for the answer (``helpers.approval``). This run is also the whole
pipeline on S3 through the scheduler: its run root is in the test bucket (the registry is the
deployment's, where ``make run``'s model is latest), and no credential reaches its artifacts
or its task logs. (S3 corpora: the cluster and EMR runs.)
"""

import json

import pytest

from airflow_stack import USER
from helpers.approval import (
    answer,
    approval_request,
    asset_events,
    parked,
    read_json,
    run_state,
    task_logs,
    trigger,
    wait_for,
)
from helpers.jobs import SMALL_CONF
from helpers.oracles import chained_manifests
from helpers.paths import S3_ACCESS_KEY, S3_SECRET_KEY
from llm_pipeline.pipeline import PIPELINE
from sparklm.runtime import storage

pytestmark = pytest.mark.slow


def test_a_rejected_version_stays_published_but_not_promoted(airflow_stack, made_run, s3_server):
    stack = airflow_stack
    latest = f"{made_run['registry']}/{made_run['model']}/latest.json"
    pointer = read_json(latest)
    # A tolerance wide enough to pass the gate, so that only the person decides.
    run_root = s3_server.uri("runs", "approval-rejected")
    conf = {**SMALL_CONF, "require_approval": True, "seed": 7, "promotion_tolerance": 10,
            "run_root": run_root}  # fmt: skip
    run_id = trigger(stack, conf)
    assert parked(stack, run_id) == 1
    request = approval_request(stack, run_id)
    assert request["options"] == ["Approve", "Reject"]
    assert f"current latest `{pointer['version']}`" in request["body"]
    answer(stack, run_id, "Reject")
    assert wait_for(stack, run_id, "promote", {"skipped", "success", "failed"}) == "skipped"
    stack.wait_until(lambda: run_state(stack, run_id) == "success", 300, "the run succeeded")
    assert read_json(latest) == pointer
    manifests = chained_manifests(run_root, [job.stage for job in PIPELINE])
    version = manifests["publish"]["stats"]["version_uri"]
    promotion = read_json(f"{version}/promotion.json")
    assert promotion["promoted"] is False and promotion["review"]["by"] == USER
    assert promotion["review"]["decision"] == "rejected"
    assert "rejected by admin" in promotion["reason"]

    # The run on S3: five chained stages, the publish's model Asset event, and no credential
    # in any manifest or task log.
    assert manifests["tokenize"]["stats"]["vocab_size"] == 300
    assert manifests["train"]["stats"]["final"]["round"] == 2
    assert manifests["generate"]["stats"]["prompts"] == 6  # 5 seed prompts + 1 inline
    assert version.startswith(f"{made_run['registry']}/{made_run['model']}/")
    assert storage.exists(f"{version}/MODEL_CARD.md")
    assert asset_events(stack, run_id) == ["llm_decoder_model"]
    for text in (json.dumps(manifests), task_logs(stack, run_id)):
        assert S3_SECRET_KEY not in text and S3_ACCESS_KEY not in text
