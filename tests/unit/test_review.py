"""Approving or rejecting a promotion: what moves, what is recorded, what is refused."""

import json
from pathlib import Path

import pytest

from llm_pipeline.review import approve, reject
from sparklm.registry import eval_set
from sparklm.registry.versions import RegistryError, current_latest, version_uri

MODEL = "m"


def publish_awaiting(registry: str, version: str, compared_to: str | None) -> None:
    """A version folder as publish leaves it with --require-approval (gate passed)."""
    s = eval_set.capped(["some evaluation text"], "test", 100)
    eval_set.store(registry, MODEL, s)
    pointer = {"version": version, "uri": version_uri(registry, MODEL, version), "eval_bpb": 1.0,
               "eval_sha256": s.sha256}  # fmt: skip
    promotion = {"promoted": False, "gate_passed": True, "awaiting_approval": True,
                 "reason": "first version", "compared_to": compared_to, "pointer": pointer,
                 "evaluation": {"set": s.describe()}}  # fmt: skip
    folder = Path(version_uri(registry, MODEL, version).removeprefix("file://"))
    folder.mkdir(parents=True)
    (folder / "promotion.json").write_text(json.dumps(promotion))


def promotion_of(registry: str, version: str) -> dict:
    folder = Path(version_uri(registry, MODEL, version).removeprefix("file://"))
    return json.loads((folder / "promotion.json").read_text())


def test_approval_moves_latest_and_the_evaluation_set_and_records_who(tmp_path):
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    approve(registry, MODEL, "v1", "alice")
    latest = current_latest(registry, MODEL)
    assert latest["version"] == "v1" and latest["approved_by"] == "alice"
    assert eval_set.current(registry, MODEL)["sha256"] == promotion_of(registry, "v1")[
        "evaluation"]["set"]["sha256"]  # fmt: skip
    record = promotion_of(registry, "v1")
    assert record["promoted"] and not record["awaiting_approval"]
    assert record["review"]["decision"] == "approved" and record["review"]["by"] == "alice"
    approve(registry, MODEL, "v1", "alice")  # a retried task completes, changes nothing
    assert current_latest(registry, MODEL)["version"] == "v1"


def test_rejection_keeps_the_version_published_and_latest_where_it_was(tmp_path):
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    reject(registry, MODEL, "v1", "bob")
    assert current_latest(registry, MODEL) is None
    record = promotion_of(registry, "v1")
    assert record["promoted"] is False and not record["awaiting_approval"]
    assert record["review"]["by"] == "bob" and record["reason"].startswith("rejected by bob")


def test_an_approval_made_stale_by_a_newer_latest_is_refused(tmp_path):
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v2", None)  # compared with "no latest" …
    publish_awaiting(registry, "v3", None)
    approve(registry, MODEL, "v3", "carol")  # … but v3 became latest meanwhile
    with pytest.raises(RegistryError, match="the approval is stale"):
        approve(registry, MODEL, "v2", "alice")
    assert current_latest(registry, MODEL)["version"] == "v3"
    assert promotion_of(registry, "v2")["awaiting_approval"] is True
