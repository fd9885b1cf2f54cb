"""Human approval of a promotion (``require_approval``): what the approver sees, what the
answer does.

With ``--require-approval`` the publish job stores the version, scores it and the current
latest on the registry's evaluation set, and — when the gate passes — leaves
``latest.json`` alone and says ``awaiting_approval`` in its manifest and in the version's
``promotion.json``. The DAG then asks a person (``llm_pipeline.approval.PromotionApproval``, the
standard provider's ``ApprovalOperator``) with both models' bits/byte and sample generations:

- Approve → the ``promote`` task moves ``latest.json`` (and the evaluation set in force)
  with the pointer publish prepared, and records who approved;
- Reject → the version stays published, not promoted, and its ``promotion.json`` says who
  rejected it and when.

Everything here reads and writes the registry through ``sparklm`` (file:// and S3, the
usual AWS credential chain), on the Airflow worker: the same in local and EMR mode,
where the cluster is gone long before anyone answers.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from sparklm.registry.versions import PROMOTION, RegistryError, current_latest, promote, version_uri
from sparklm.runtime import json_objects, storage
from sparklm.runtime.stages import read_manifest

SAMPLES = 3
# What approving a version reads from its promotion.json (publish writes them all).
PROMOTION_KEYS = ("reason", "compared_to", "evaluation", "pointer")
# How much of a version's generated.jsonl the request reads for its samples.
SAMPLES_READ_BYTES = 256 * 1024
# What CommonMark (and Unicode) take for the end of a line.
LINE_BREAKS = re.compile("[\r\n\v\f\x85\u2028\u2029]")


def review_request(run_root: str) -> dict[str, Any] | None:
    """What to ask about the version this run published, or None if nothing waits."""
    manifest = read_manifest(run_root, "publish")
    if not manifest["stats"].get("awaiting_approval"):
        return None
    registry, model = manifest["params"]["registry"], manifest["params"]["model_name"]
    version = manifest["params"]["version"]
    promotion = read_promotion(registry, model, version)
    return {
        "registry": registry, "model_name": model, "version": version,
        "subject": f"Promote {model} {version} to latest?",
        "body": approval_body(registry, model, version, promotion),
    }  # fmt: skip


def approval_body(registry: str, model: str, version: str, promotion: dict[str, Any]) -> str:
    """Markdown for the approver: the gate's numbers on the same bytes, and samples."""
    evaluation = promotion["evaluation"]
    s, candidate, latest = evaluation["set"], evaluation["candidate"], evaluation["latest"]
    current = promotion["compared_to"]
    lines = [
        f"**{model}** version `{version}` passed the promotion gate: {promotion['reason']}.",
        "",
        f"Scored on the registry's evaluation set (sha256 `{s['sha256'][:16]}…`, "
        f"{s['documents']} documents, {s['bytes']:,} bytes from {s['source']}):",
        "",
        "| model | bits/byte on the evaluation set | own validation bits/byte |",
        "|---|---:|---:|",
        f"| candidate `{version}` | **{candidate['bits_per_byte']:.4f}** | "
        f"{promotion['val_bpb']:.4f} |",
    ]
    if latest is not None:
        previous = read_promotion(registry, model, current)
        lines.append(f"| current latest `{current}` | **{latest['bits_per_byte']:.4f}** | "
                     f"{previous['val_bpb']:.4f} |")  # fmt: skip
    else:
        lines.append("| current latest | (none: this would be the first) | |")
    lines += ["", "### Sample generations", "", f"Candidate `{version}`:", ""]
    lines += sample_lines(registry, model, version)
    if current is not None:
        lines += ["", f"Current latest `{current}`:", ""]
        lines += sample_lines(registry, model, current)
    lines += ["", f"Registry: `{version_uri(registry, model, version)}`"]
    return "\n".join(lines)


def sample_lines(registry: str, model: str, version: str) -> list[str]:
    """The first ``SAMPLES`` generations, each prompt and completion shown literally."""
    uri = storage.join(version_uri(registry, model, version), "generated.jsonl")
    if not storage.exists(uri):
        return ["(no samples)"]
    head = storage.read_bytes(uri, 0, SAMPLES_READ_BYTES)
    lines = head.decode("utf-8", errors="replace").split("\n")
    if len(head) == SAMPLES_READ_BYTES:
        lines.pop()  # the read may have ended inside a record
    records = [json.loads(line) for line in lines if line.strip()][:SAMPLES]
    return [f"> {literal(r['prompt'])} {literal(r['completion'])}\n" for r in records]


def literal(text: str) -> str:
    """``text`` as one Markdown code span, shown as written.

    A model's output is not Markdown: unescaped, a completion holding a line break (a bare
    ``\\r`` ends a line too) could add headings, links or images that load from anywhere to
    the page where a person decides. Line breaks become spaces, and the span's fence is longer
    than any run of backticks inside it.
    """
    flat = LINE_BREAKS.sub(" ", text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    return f"{fence} {flat} {fence}"


def read_promotion(registry: str, model: str, version: str) -> dict[str, Any]:
    """The version's promotion record, read bounded and never through a link."""
    uri = storage.join(version_uri(registry, model, version), PROMOTION)
    storage.refuse_symlinks(registry, uri)
    fix = f"publish {version} again (rerun its publish task)"
    promotion = json_objects.read(uri, required=PROMOTION_KEYS, error=RegistryError, fix=fix)
    if promotion is None:
        raise RegistryError(f"{uri} is missing: {model} {version} was not published; {fix}")
    return promotion


def write_promotion(registry: str, model: str, version: str, promotion: dict[str, Any]) -> None:
    storage.write_bytes(storage.join(version_uri(registry, model, version), PROMOTION),
                        json.dumps(promotion, indent=2, sort_keys=True).encode())  # fmt: skip


def approve(registry: str, model: str, version: str, user: str) -> dict[str, Any]:
    """Move ``latest.json`` to the approved version and record who approved.

    The gate compared the candidate with the latest of that moment; should ``latest.json``
    have moved since (another DAG, a hand-run publish), the comparison is stale and the
    promotion is refused with the fix. A retry after a crash between the two writes finds
    the pointer already moved and only completes the record. Only a version waiting for its
    answer (or already approved, for that retry) may be promoted: never one a person rejected
    or the gate refused, whatever task calls this.
    """
    promotion = read_promotion(registry, model, version)
    review = promotion.get("review") or {}
    if not promotion.get("awaiting_approval") and review.get("decision") != "approved":
        refused = (f"was rejected by {review.get('by')} at {review.get('at')}"
                   if review.get("decision") == "rejected"
                   else f"is not awaiting approval ({promotion.get('reason')})")  # fmt: skip
        raise RegistryError(
            f"{model} {version} {refused}: it is not promoted. To ask again, publish it again "
            "(rerun the publish task) with require_approval"
        )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    latest = current_latest(registry, model)
    current = latest["version"] if latest else None
    if current != version:
        if current != promotion["compared_to"]:
            raise RegistryError(
                f"latest.json of {model} moved to {current} after {version} was compared with "
                f"{promotion['compared_to']}: the approval is stale. Publish {version} again "
                "(rerun the publish task) to compare it with the current latest"
            )
        promote(registry, model, {**promotion["pointer"], "promoted_at": now,
                                  "approved_by": user}, promotion["evaluation"]["set"])  # fmt: skip
    promotion.update(promoted=True, awaiting_approval=False,
                     review={"decision": "approved", "by": user, "at": now})  # fmt: skip
    write_promotion(registry, model, version, promotion)
    return promotion


def reject(registry: str, model: str, version: str, user: str) -> dict[str, Any]:
    """Keep the version published and unpromoted, saying who rejected it."""
    promotion = read_promotion(registry, model, version)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    promotion.update(promoted=False, awaiting_approval=False,
                     review={"decision": "rejected", "by": user, "at": now},
                     reason=f"rejected by {user} at {now} ({promotion['reason']})")  # fmt: skip
    write_promotion(registry, model, version, promotion)
    return promotion
