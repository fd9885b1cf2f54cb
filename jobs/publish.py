"""Publish: copy a run's model into the versioned registry, write its card, gate promotion.

    spark-submit jobs/publish.py --run-root URI --registry URI --model-name NAME
        [--version V] [--tolerance 0.0] [--eval-input URI[,URI…]] [--require-approval]

Writes ``{registry}/{model_name}/{version}/`` (weights, config, tokenizer,
metrics, plot, generations, ``MODEL_CARD.md``, ``run.json`` with every
checksum, and ``promotion.json`` last), then moves
``{registry}/{model_name}/latest.json`` to it only if the promotion gate
passes. The gate scores the candidate *and* the current latest on the
registry's evaluation set (the same bytes for both, see ``sparklm.registry.eval_set``)
and promotes when the candidate is no worse within ``--tolerance``. A rejected
version stays published, marked not promoted, with the reason. With
``--require-approval`` a version that passes the gate waits for a person (the
DAG's approval task) instead. The work is object copies and two forward passes
over at most ``--eval-max-bytes`` of text, done on the driver; it runs under
spark-submit like every stage so that local mode and EMR steps ship it the
same way.

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
import math
import time
from collections.abc import Sequence

from sparklm import settings
from sparklm.data.document_shards import read_doc_texts
from sparklm.model.evaluation import Score, score_artifacts
from sparklm.registry import eval_set as eval_sets
from sparklm.registry import hf_export, lineage
from sparklm.registry.eval_set import EvalSet, EvalSetError
from sparklm.registry.model_card import render_model_card
from sparklm.registry.publication import Publication
from sparklm.registry.versions import (
    ALLOWED_PREFIXES_ENV,
    PROMOTION,
    RegistryError,
    check_name,
    check_registry,
    current_latest,
    promote,
    promotion_decision,
    version_uri,
)
from sparklm.runtime import allowlist, entrypoint, fault_injection, json_objects, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import (
    ArtifactFile,
    begin_stage,
    code_version,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)

STAGE = "publish"
# Every stage before this one: publish records them all.
UPSTREAM = settings.STAGES[: settings.STAGES.index(STAGE)]
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
# What it takes to load (and so to score) a published version.
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json")
GATED_METRICS = ("val_loss", "val_bpb", "val_ppl", "val_acc", "train_loss")
UNSCORABLE = "the candidate cannot be scored on the registry's evaluation set"


def parse_args(argv: Sequence[str]):
    p = entrypoint.parser(__doc__.splitlines()[0])
    p.add_argument("--registry", required=True, help="s3://bucket/prefix or file:///path")
    p.add_argument(
        "--version",
        help="version label (default: from the train stage's time and "
        "checksum, so republishing a run is idempotent)",
    )
    p.add_argument(
        "--allowed-registry-prefixes",
        help="comma-separated URI prefixes the registry must lie under, or '*' for anywhere "
        f"(default: ${ALLOWED_PREFIXES_ENV}, else anywhere)",
    )
    p.add_argument(
        "--allowed-corpus-prefixes",
        help="comma-separated URI prefixes --eval-input must lie under (it is read as a "
        f"corpus is), or '*' for anywhere (default: ${allowlist.CORPUS_ENV}, else anywhere)",
    )
    p.add_argument("--dag-id", default="llm_decoder", help="the Airflow DAG that ran this")
    p.add_argument("--dag-run-id", default="", help="the Airflow run, linked from the registry")
    settings.add_arguments(p, STAGE)
    return p.parse_args(argv)


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
    evaluation_set, problem = choose_evaluation_set(args, registry, model_name,
                                                    manifests["preprocess"])  # fmt: skip
    latest, republishing = gate_baseline(registry, model_name, version)  # refused if damaged

    begin_stage(args.run_root, STAGE)
    copied, contents = copy_artifacts(manifests, target)
    publication = Publication(
        registry=registry, model_name=model_name, version=version, target=target,
        run_root=args.run_root, tolerance=args.promotion_tolerance,
        require_approval=args.require_approval,
        airflow={"dag_id": args.dag_id, "run_id": args.dag_run_id} if args.dag_run_id else None,
        manifests=manifests, refs=refs, contents=contents,
    )  # fmt: skip
    decision = gate(publication, latest, evaluation_set, problem)
    exported, hf_export = export_hf(target, contents)
    copied += exported
    copied += describe_version(publication, decision, hf_export, copied)
    storage.write_bytes(storage.join(target, PROMOTION),
                        json.dumps(decision, indent=2, sort_keys=True).encode())  # fmt: skip
    fault_injection.crash_point("publish:before-latest")
    if decision["promoted"] and not republishing:
        promote(registry, model_name, decision["pointer"], decision["evaluation"]["set"])
    state = ("promoted" if decision["promoted"] else
             "awaiting approval" if decision["awaiting_approval"] else "NOT promoted")  # fmt: skip
    entrypoint.log.info("published %s (%s): %s", target, state, decision["reason"])
    return commit_stage(
        args.run_root, STAGE, files=[], started_at=started,
        params={"registry": registry, "model_name": model_name, "version": version,
                "tolerance": args.promotion_tolerance, "require_approval": args.require_approval,
                "eval_input": args.eval_input or None},
        inputs=refs,
        stats={"version_uri": target, "artifacts": len(copied),
               **{k: v for k, v in decision.items() if k != "pointer"}},
    )  # fmt: skip


def choose_evaluation_set(
    args, registry: str, model_name: str, preprocess: dict
) -> tuple[EvalSet | None, str | None]:
    """The bytes both models are scored on: ``--eval-input`` if given, else the registry's
    set in force, else (the first version) this run's validation split.

    A bad ``--eval-input`` is the user's to fix (an error, before anything is written); a
    registry set that cannot be read (its ``evaluation.json`` damaged, its file missing or
    changed) is reported as the reason the candidate is not promoted, because the version
    itself is still worth publishing. A link at the set's pointer or folder is an error.
    """
    damaged: EvalSetError | None = None
    try:
        pointer = eval_sets.current(registry, model_name)  # refuses links before any write
    except EvalSetError as exc:  # a damaged evaluation.json: no matter to --eval-input
        pointer, damaged = None, exc
    if args.eval_input:
        specs = args.eval_input.split(",")
        allowlist.check_corpus(specs, args.allowed_corpus_prefixes)
        return eval_sets.from_input(specs, args.eval_max_bytes), None
    if damaged is not None:
        return None, f"{UNSCORABLE}: {damaged}"
    if pointer is None:
        documents = (text for entry in listed_files(preprocess, "val/")
                     for text in read_doc_texts(entry["uri"]))  # fmt: skip
        source = f"validation split of {preprocess['run_root']}"
        return eval_sets.from_documents(documents, source, args.eval_max_bytes), None
    try:
        return eval_sets.load(registry, model_name, pointer), None
    except EvalSetError as exc:
        return None, f"{UNSCORABLE}: {exc}"


def copy_artifacts(manifests: dict, target: str) -> tuple[list[ArtifactFile], dict[str, bytes]]:
    """Copy each artifact into the version folder, checked against its stage's manifest."""
    copied, contents = [], {}
    for source_stage, name in ARTIFACTS:
        [entry] = listed_files(manifests[source_stage], name)
        contents[name] = read_verified(entry)
        copied.append(ArtifactFile.write(target, name, contents[name]))
    return copied, contents


def gate(publication: Publication, latest: dict | None, evaluation_set: EvalSet | None,
         problem: str | None) -> dict:  # fmt: skip
    """Score the candidate and the current latest on the evaluation set and decide.

    Returns what ``promotion.json`` records, including the ``latest.json`` pointer to
    write if (and once) the version is promoted.
    """
    p = publication
    final = p.manifests["train"]["stats"]["final"]
    metrics = {k: float(final[k]) for k in GATED_METRICS}
    candidate = current = None
    if evaluation_set is not None:
        eval_sets.store(p.registry, p.model_name, evaluation_set)
        candidate = score_candidate(p.contents, evaluation_set)
        if latest is not None:
            current, problem = score_published(p.registry, p.model_name, latest["version"],
                                               evaluation_set)  # fmt: skip
    passed, reason = promotion_decision(
        metrics, latest, p.tolerance, candidate=candidate,
        latest_bpb=current.bits_per_byte if current else None, problem=problem,
    )  # fmt: skip
    awaiting = passed and p.require_approval
    set_description = evaluation_set.describe() if evaluation_set else None
    return {
        "promoted": passed and not awaiting, "gate_passed": passed, "awaiting_approval": awaiting,
        "reason": reason + ("; awaiting human approval" if awaiting else ""),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tolerance": p.tolerance, "compared_to": latest["version"] if latest else None,
        **metrics,
        "evaluation": {"set": set_description,
                       "candidate": candidate.to_dict() if candidate else None,
                       "latest": current.to_dict() if current else None},
        "pointer": latest_pointer(p, metrics, candidate, set_description, latest),
    }  # fmt: skip


def score_candidate(contents: dict[str, bytes], evaluation_set: EvalSet) -> Score:
    """The candidate's score on the evaluation set; a model whose weights are not finite
    numbers is bad input (it scores NaN), refused before any version is complete."""
    score = score_artifacts(contents["model.safetensors"], json.loads(contents["config.json"]),
                            contents["tokenizer.json"].decode(),
                            evaluation_set.documents)  # fmt: skip
    if not math.isfinite(score.bits_per_byte):
        raise PipelineError(
            f"the model scores {score.bits_per_byte} bits/byte on the evaluation set: its "
            "weights are not finite numbers. Nothing was promoted; train it again (lower the "
            "learning rates, or raise --warmup-steps)"
        )
    return score


def gate_baseline(registry: str, model_name: str, version: str) -> tuple[dict | None, bool]:
    """The pointer a candidate is gated against, and whether this is a republication of the
    current latest (a rerun): that compares with what it replaced, and leaves ``latest.json``
    as it is, its first promotion time included. Read before anything is written: a damaged
    or foreign ``latest.json`` is a ``RegistryError`` naming the fix, and nothing is published."""
    latest = current_latest(registry, model_name)
    if latest is not None and latest["version"] == version:
        return latest.get("previous"), True
    return latest, False


def latest_pointer(p: Publication, metrics: dict, candidate: Score | None,
                   set_description: dict | None, latest: dict | None) -> dict:  # fmt: skip
    """What ``latest.json`` will say if this version is promoted."""
    return {
        "version": p.version, "uri": version_uri(p.registry, p.model_name, p.version),
        "val_bpb": metrics["val_bpb"], "val_loss": metrics["val_loss"],
        "eval_bpb": candidate.bits_per_byte if candidate else None,
        "eval_sha256": set_description["sha256"] if set_description else None,
        "run_root": p.manifests["train"]["run_root"],
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "previous": {k: latest.get(k) for k in ("version", "uri", "val_bpb", "eval_bpb")}
        if latest else None,
    }  # fmt: skip


def score_published(
    registry: str, model_name: str, version: str, evaluation_set: EvalSet
) -> tuple[Score | None, str | None]:
    """Score a published version on the evaluation set, its files checked against the
    checksums its ``run.json`` recorded; a version that cannot be scored is a reason not
    to replace it, never a crash of the publish job."""
    folder = version_uri(registry, model_name, version)
    try:
        recorded = recorded_checksums(folder)
        files = {name: read_verified({"uri": storage.join(folder, name), "sha256": recorded[name]})
                 for name in MODEL_FILES}  # fmt: skip
        score = score_artifacts(
            files["model.safetensors"],
            json.loads(files["config.json"]),
            files["tokenizer.json"].decode(),
            evaluation_set.documents,
        )
    # What a damaged version raises: files of the wrong shape (TypeError), weights that do not
    # fit their config.json (torch's RuntimeError). A storage fault is none of these: retried.
    except (PipelineError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        return None, f"the current latest {version} cannot be scored on the evaluation set: {exc}"
    return score, None


def recorded_checksums(folder: str) -> dict[str, str]:
    """``{path: sha256}`` from a published version's ``run.json`` (read bounded): what its
    files must match. Damaged → RegistryError naming the file."""
    uri = storage.join(folder, "run.json")
    storage.refuse_symlinks(folder, uri)
    run = json_objects.parse(storage.read_bounded(uri, lineage.MAX_RECORD_BYTES, "run.json"), uri,
                         required=("artifacts",), error=RegistryError,
                         fix="not a complete version; publish under another --version")  # fmt: skip
    return lineage.checksums(run)


def export_hf(target: str, contents: dict[str, bytes]) -> tuple[list[ArtifactFile], dict]:
    """Write ``hf/`` (the transformers layout); a model no stock class represents is
    published without it, with the reason recorded and logged as a warning."""
    try:
        files = hf_export.export(
            json.loads(contents["config.json"]),
            contents["model.safetensors"],
            contents["tokenizer.json"].decode(),
        )
    except hf_export.NotExportable as exc:
        entrypoint.log.warning("no Hugging Face export: %s", exc)
        return [], {"exported": False, "reason": str(exc)}
    written = [ArtifactFile.write(target, f"{hf_export.FOLDER}/{name}", data)
               for name, data in files.items()]  # fmt: skip
    config = json.loads(files["config.json"])
    return written, {"exported": True, "folder": hf_export.FOLDER,
                     "architecture": config["architectures"][0]}  # fmt: skip


def describe_version(publication: Publication, decision: dict, hf: dict,
                     copied: list[ArtifactFile]) -> list[ArtifactFile]:  # fmt: skip
    """Write ``MODEL_CARD.md`` and ``run.json`` (every input, parameter and checksum)."""
    p = publication
    card = render_model_card(publication, decision, hf)
    written = [ArtifactFile.write(p.target, "MODEL_CARD.md", card.encode())]
    run_record = {
        "model_name": p.model_name,
        "version": p.version,
        "run_root": p.run_root,
        "airflow": p.airflow,
        "code_version": code_version(),
        "hf_export": hf,
        "inputs": p.refs,
        "params": {stage: m["params"] for stage, m in p.manifests.items()},
        "lineage": lineage_record(p.manifests["train"]["stats"]),
        "artifacts": [f.to_dict() for f in copied + written],
    }
    written.append(
        ArtifactFile.write(
            p.target, "run.json", json.dumps(run_record, indent=2, sort_keys=True).encode()
        )
    )
    return written


def lineage_record(train_stats: dict) -> dict:
    """The parent version (None: trained from scratch) and the tokens in the weights: this
    run's and, with every ancestor's, in all (a continued run's children add to it)."""
    return {
        "parent": train_stats.get("init_from"),
        "tokens_trained": train_stats["tokens_trained"],
        "tokens_trained_total": train_stats.get("tokens_trained_total",
                                                train_stats["tokens_trained"]),
    }  # fmt: skip


def check_model(train_manifest: dict, budget_gb: float) -> None:
    """The weights' header must match ``config.json`` and the model fit the budget."""
    from sparklm.model.weights import check_weights

    [weights] = listed_files(train_manifest, "model.safetensors")
    [config] = listed_files(train_manifest, "config.json")
    check_weights(weights["uri"], json.loads(read_verified(config)), budget_gb=budget_gb,
                  what=weights["uri"])  # fmt: skip


def refuse_overwriting_another_model(target: str, weights_sha: str) -> None:
    """Versions are immutable: the same label may only be republished for the same weights."""
    run_json = storage.join(target, "run.json")
    storage.refuse_symlinks(target, run_json)
    if storage.exists(run_json):
        existing = recorded_checksums(target).get("model.safetensors")
        if existing != weights_sha:
            raise RegistryError(
                f"{target} already holds a different model: versions are immutable, choose "
                "another --version (or leave it empty for an automatic one)"
            )


if __name__ == "__main__":
    entrypoint.run(main)
