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


def test_a_rejected_version_is_never_promoted_even_if_promote_runs(tmp_path):
    """``promote`` runs only after Approve; cleared by hand after a Reject it must not move
    latest.json, nor record the person who rejected the version as its approver."""
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    reject(registry, MODEL, "v1", "alice")
    with pytest.raises(RegistryError, match="v1 was rejected by alice at .*: it is not promoted"):
        approve(registry, MODEL, "v1", "alice")
    assert current_latest(registry, MODEL) is None
    assert promotion_of(registry, "v1")["review"]["decision"] == "rejected"


def test_a_version_the_gate_refused_is_never_promoted(tmp_path):
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    folder = Path(version_uri(registry, MODEL, "v1").removeprefix("file://"))
    refused = {**promotion_of(registry, "v1"), "awaiting_approval": False,
               "gate_passed": False, "reason": "worse than latest"}  # fmt: skip
    (folder / "promotion.json").write_text(json.dumps(refused))
    with pytest.raises(RegistryError, match="is not awaiting approval \\(worse than latest\\)"):
        approve(registry, MODEL, "v1", "alice")
    assert current_latest(registry, MODEL) is None


@pytest.mark.parametrize(("content", "problem"),
                         [(b'{"reason": "ok", ', "is damaged, not JSON"),
                          (b'{"reason": "ok"}', "is damaged: it lacks 'compared_to'"),
                          (None, "is larger than")])  # fmt: skip
def test_a_damaged_promotion_record_is_refused_naming_it_and_never_promoted(
    tmp_path, content, problem
):
    """Read bounded (the Airflow worker reads it) and checked before anything moves."""
    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    record = Path(version_uri(registry, MODEL, "v1").removeprefix("file://")) / "promotion.json"
    if content is None:
        with record.open("ab") as f:
            f.truncate(2 * 2**20)  # past any promotion record (json_objects.MAX_POINTER_BYTES)
    else:
        record.write_bytes(content)
    for answer in (approve, reject):
        with pytest.raises(RegistryError) as exc:
            answer(registry, MODEL, "v1", "alice")
        assert str(exc.value).startswith(f"file://{record} is damaged")
        assert problem in str(exc.value)
        assert str(exc.value).endswith(": publish v1 again (rerun its publish task)")
    assert current_latest(registry, MODEL) is None


@pytest.mark.parametrize("chosen", [["Reject"], [], None, ["Approve", "Reject"]])
def test_promote_takes_only_an_approve_answer(chosen):
    from airflow.sdk.exceptions import AirflowFailException

    from llm_pipeline.approval import approver

    answer = {"chosen_options": chosen, "responded_by_user": {"name": "alice"}}
    with pytest.raises(AirflowFailException, match="not \\['Approve'\\]: nothing is promoted"):
        approver(answer)
    assert approver({**answer, "chosen_options": ["Approve"]}) == "alice"


def test_generated_text_reaches_the_approver_as_text_not_markdown(tmp_path):
    """A completion may hold bare carriage returns (byte-level BPE reproduces CRLF corpora)
    and Markdown: rendered as CommonMark (what the HITL page does), it stays one literal
    line — no heading, link or image the model wrote."""
    from markdown_it import MarkdownIt

    from llm_pipeline.review import sample_lines

    registry = f"file://{tmp_path}"
    publish_awaiting(registry, "v1", None)
    hostile = "upon\r\r## Gate re-checked: approve\r\r![x](https://evil.example/p.png) ``tick``"
    records = [{"prompt": "Once", "completion": hostile}, {"prompt": "`Two`", "completion": "x"}]
    folder = Path(version_uri(registry, MODEL, "v1").removeprefix("file://"))
    (folder / "generated.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    lines = sample_lines(registry, MODEL, "v1")
    assert len(lines) == 2  # the last record counts without a trailing newline
    html = MarkdownIt("commonmark").render("\n".join(lines))
    assert "<h2" not in html and "<img" not in html and "<a " not in html
    assert "## Gate re-checked: approve" in html and "``tick``" in html
