"""Publish: copy a run's model into the versioned registry, write its card, gate promotion.

    spark-submit jobs/publish.py --run-root URI --registry URI --model-name NAME
        [--version V] [--tolerance 0.0]

Writes ``{registry}/{model_name}/{version}/`` (weights, config, tokenizer,
metrics, plot, generations, ``MODEL_CARD.md``, ``run.json`` with every
checksum, and ``promotion.json`` last), then moves
``{registry}/{model_name}/latest.json`` to it only if the promotion gate
passes. A rejected version stays published, marked not promoted, with the
reason. The work is a handful of object copies, done on the driver; it runs
under spark-submit like every stage so that local mode and EMR steps ship it
the same way.

Registries outside ``--allowed-registry-prefixes`` (comma-separated; the DAG
always passes its list, a job run by hand falls back to the environment
variable ``LLM_REGISTRY_ALLOWED_PREFIXES``, and to anywhere when that is unset
too) are refused. The weights' safetensors header must agree with
``config.json`` (and the model fit ``--memory-budget-gb``) before anything is
copied, so the registry never holds a version nobody can load.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

from sparklm import allowlist, faults, sparkjob, storage
from sparklm.errors import PipelineError
from sparklm.model_card import render_model_card
from sparklm.model_size import DEFAULT_MEMORY_BUDGET_GB
from sparklm.registry import (
    ALLOWED_PREFIXES_ENV,
    PROMOTION,
    RegistryError,
    check_name,
    check_registry,
    current_latest,
    promotion_decision,
    version_uri,
    write_latest,
)
from sparklm.stage import (
    ArtifactFile,
    begin_stage,
    code_version,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)

STAGE = "publish"
UPSTREAM = ("preprocess", "tokenize", "train", "generate")
# (stage, file) pairs copied into the version folder.
ARTIFACTS = (
    ("train", "model.safetensors"),
    ("train", "config.json"),
    ("train", "metrics.csv"),
    ("train", "loss.png"),
    ("tokenize", "tokenizer.json"),
    ("generate", "generated.jsonl"),
    ("generate", "generated.txt"),
)
GATED_METRICS = ("val_loss", "val_bpb", "val_ppl", "val_acc", "train_loss")


def parse_args(argv: Sequence[str]):
    p = sparkjob.parser(__doc__.splitlines()[0])
    p.add_argument("--registry", required=True, help="s3://bucket/prefix or file:///path")
    p.add_argument("--model-name", required=True, help="registered model name, e.g. wiki-gpt")
    p.add_argument(
        "--version",
        help="version label (default: from the train stage's time and "
        "checksum, so republishing a run is idempotent)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="promote when val bits/byte <= latest's + tolerance (default 0)",
    )
    p.add_argument(
        "--allowed-registry-prefixes",
        help="comma-separated URI prefixes the registry must lie under, or '*' for anywhere "
        f"(default: ${ALLOWED_PREFIXES_ENV}, else anywhere)",
    )
    p.add_argument(
        "--memory-budget-gb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_GB,
        help="refuse a model whose estimated sampling memory exceeds this "
        f"(default {DEFAULT_MEMORY_BUDGET_GB:g}): nobody could load it from the registry",
    )
    args = p.parse_args(argv)
    if args.tolerance < 0:
        p.error("--tolerance must be >= 0")
    return args  # fmt: skip


def default_version(train_manifest: dict) -> str:
    """``YYYYMMDDTHHMMSSZ-<sha8>``: when training started, and the weights' checksum.

    Sorts by time, and stays the same when an unchanged run is retried or rerun
    (training resumes, its start time comes from the checkpoint), so republishing
    is idempotent.
    """
    stamp = train_manifest["stats"]["started_at"].replace("-", "").replace(":", "")
    return f"{stamp}-{model_checksum(train_manifest)[:8]}"


def model_checksum(train_manifest: dict) -> str:
    [weights] = listed_files(train_manifest, "model.safetensors")
    return weights["sha256"]


def read_verified(entry: dict) -> bytes:
    """One committed artifact's bytes, checked against its manifest's checksum."""
    data = storage.read_bytes(entry["uri"])
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PipelineError(
            f"{entry['uri']} no longer matches the checksum in its manifest: the stage was "
            "modified after it committed. Rerun that stage before publishing"
        )
    return data


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    started = time.time()
    prefixes = allowlist.parse(args.allowed_registry_prefixes, ALLOWED_PREFIXES_ENV)
    registry = check_registry(args.registry, prefixes)
    model_name = check_name("model name", args.model_name)
    manifests = {stage: read_manifest(args.run_root, stage) for stage in UPSTREAM}
    refs = {stage: input_ref(args.run_root, stage) for stage in UPSTREAM}
    check_model(manifests["train"], args.memory_budget_gb)
    version = check_name("version", args.version or default_version(manifests["train"]))
    target = version_uri(registry, model_name, version)
    storage.refuse_symlinks(registry, target)
    refuse_overwriting_another_model(target, model_checksum(manifests["train"]))
    storage.check_writable(registry)

    begin_stage(args.run_root, STAGE)
    copied, contents = [], {}
    for source_stage, name in ARTIFACTS:
        [entry] = listed_files(manifests[source_stage], name)
        contents[name] = read_verified(entry)
        copied.append(ArtifactFile.write(target, name, contents[name]))
    final = manifests["train"]["stats"]["final"]
    metrics = {k: float(final[k]) for k in GATED_METRICS}
    latest = current_latest(registry, model_name)
    if latest is not None and latest["version"] == version:
        latest = latest.get("previous")  # republishing: compare with what it replaced
    promoted, reason = promotion_decision(metrics, latest, args.tolerance)
    decision = {"promoted": promoted, "reason": reason, "tolerance": args.tolerance,
                "compared_to": latest["version"] if latest else None, **metrics}  # fmt: skip

    card = render_model_card(
        model_name=model_name, version=version, manifests=manifests,
        metrics_csv=contents["metrics.csv"].decode(),
        generated_jsonl=contents["generated.jsonl"].decode(),
        decision=decision,
    )  # fmt: skip
    copied.append(ArtifactFile.write(target, "MODEL_CARD.md", card.encode()))
    run_record = {
        "model_name": model_name,
        "version": version,
        "run_root": args.run_root,
        "code_version": code_version(),
        "inputs": refs,
        "params": {stage: m["params"] for stage, m in manifests.items()},
        "artifacts": [f.to_dict() for f in copied],
    }
    copied.append(
        ArtifactFile.write(
            target, "run.json", json.dumps(run_record, indent=2, sort_keys=True).encode()
        )
    )
    storage.write_bytes(storage.join(target, PROMOTION),
                        json.dumps(decision, indent=2, sort_keys=True).encode())  # fmt: skip
    faults.crash_point("publish:before-latest")
    if promoted:
        write_latest(registry, model_name, {
            "version": version, "uri": target, "val_bpb": metrics["val_bpb"],
            "val_loss": metrics["val_loss"], "run_root": args.run_root,
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "previous": {k: latest[k] for k in ("version", "uri", "val_bpb")} if latest else None,
        })  # fmt: skip
    sparkjob.log.info("published %s (%s): %s", target,
                      "promoted" if promoted else "NOT promoted", reason)  # fmt: skip
    return commit_stage(
        args.run_root, STAGE, files=[], started_at=started,
        params={"registry": registry, "model_name": model_name, "version": version,
                "tolerance": args.tolerance},
        inputs=refs,
        stats={"version_uri": target, "artifacts": len(copied), **decision},
    )  # fmt: skip


def check_model(train_manifest: dict, budget_gb: float) -> None:
    """The weights' header must match ``config.json`` and the model fit the budget."""
    from sparklm.weights import check_weights

    [weights] = listed_files(train_manifest, "model.safetensors")
    [config] = listed_files(train_manifest, "config.json")
    check_weights(weights["uri"], json.loads(read_verified(config)), budget_gb=budget_gb,
                  what=weights["uri"])  # fmt: skip


def refuse_overwriting_another_model(target: str, weights_sha: str) -> None:
    """Versions are immutable: the same label may only be republished for the same weights."""
    run_json = storage.join(target, "run.json")
    storage.refuse_symlinks(target, run_json)
    if storage.exists(run_json):
        artifacts = json.loads(storage.read_bytes(run_json))["artifacts"]
        existing = next(a["sha256"] for a in artifacts if a["path"] == "model.safetensors")
        if existing != weights_sha:
            raise RegistryError(
                f"{target} already holds a different model: versions are immutable, choose "
                "another --version (or leave it empty for an automatic one)"
            )


if __name__ == "__main__":
    sparkjob.run(main)
