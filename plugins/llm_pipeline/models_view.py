"""The "Models" view: the model registry inside the Airflow UI, read-only.

A FastAPI app that the api-server mounts at ``/llm-models`` (``plugins/llm_models.py``
registers it, with an external view that shows the page inside Airflow's UI):

- ``GET /llm-models/api/models`` — the registry and its model names, each with the
  version ``latest.json`` points to;
- ``GET /llm-models/api/models/{name}`` — the versions of one model, newest first: promotion
  state and reason, bits/byte (own validation split and the registry's evaluation set),
  tokens trained, the Airflow run that produced it, the metrics rows behind the loss
  curves, sample generations, the Hugging Face export;
- ``GET /llm-models/api/models/{name}/versions/{version}/loss.png`` — the training plot;
- ``GET /llm-models/`` — the page that draws all of that.

Every route requires a signed-in user allowed to read ``llm_decoder``'s runs (Airflow's
auth manager decides; no token, no data). The registry is the ``llm_registry`` Variable,
as for runs that name none, read through ``sparklm.runtime.storage`` (file:// and S3) and
``sparklm.registry.versions`` — neither imports torch, so the api-server never loads it.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from llm_pipeline.plan import default_registry, validate_run_root
from sparklm.registry import eval_set as eval_sets
from sparklm.registry.versions import (
    PROMOTION,
    check_name,
    current_latest,
    list_models,
    list_versions,
    version_uri,
)
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

DAG_ID = "llm_decoder"
URL_PREFIX = "/llm-models"
SAMPLES = 3
METRIC_COLUMNS = ("round", "tokens", "train_loss", "val_loss", "val_bpb")
# The largest registry file the view reads (a version's loss plot, metrics, generations).
MAX_FILE_BYTES = 16 * 2**20
# What the page gets for each version (a version that cannot be read gets them empty).
SUMMARY_FIELDS = ("version", "published_at", "is_latest", "promoted", "awaiting_approval",
                  "review", "reason", "val_bpb", "eval_bpb", "eval_latest_bpb", "eval_sha256",
                  "compared_to", "tokens_trained", "parent", "airflow", "run_root", "hf_export",
                  "metrics", "samples")  # fmt: skip


def reader_of_runs() -> Any:
    """Airflow's own check: may this user read ``llm_decoder``'s runs? (401/403 otherwise)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID))


def create_app() -> FastAPI:
    # No /docs, /redoc or /openapi.json: every route of the view needs a signed-in reader.
    app = FastAPI(title="LLM model registry", dependencies=[reader_of_runs()], docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    app.get("/", response_class=HTMLResponse)(page)
    app.get("/api/models")(models)
    app.get("/api/models/{name}")(model)
    app.get("/api/models/{name}/versions/{version}/loss.png")(loss_png)
    return app


def configured_registry() -> str:
    """The ``llm_registry`` Variable, else the default every run without one publishes to."""
    from airflow.models.variable import Variable

    uri = Variable.get("llm_registry", default_var=None) or default_registry()
    return validate_run_root(uri, "registry")


def page() -> str:
    return resources.files("llm_pipeline").joinpath("models_view.html").read_text("utf-8")


def models() -> dict[str, Any]:
    registry = configured_registry()
    found = []
    for name in list_models(registry):
        latest, problem = pointer_of(registry, name)
        found.append({"name": name, "latest": latest["version"] if latest else None,
                      "problem": problem})  # fmt: skip
    return {"registry": registry, "dag_id": DAG_ID, "models": found}


def model(name: str) -> dict[str, Any]:
    registry = configured_registry()
    name = checked("model name", name)
    versions = list_versions(registry, name)
    if not versions:
        raise HTTPException(404, f"no published version of {name!r} in {registry}")
    latest, problem = pointer_of(registry, name)
    evaluation, evaluation_problem = evaluation_of(registry, name)
    summaries = [isolated_summary(registry, name, v, latest) for v in versions]
    summaries.sort(key=lambda v: (v["published_at"] or "", v["version"]), reverse=True)
    return {"registry": registry, "name": name, "dag_id": DAG_ID,
            "latest": latest, "latest_problem": problem,
            "evaluation": evaluation, "evaluation_problem": evaluation_problem,
            "versions": summaries}  # fmt: skip


def loss_png(name: str, version: str) -> Response:
    registry = configured_registry()
    folder = version_uri(registry, checked("model name", name), checked("version", version))
    try:
        data = version_file(registry, folder, "loss.png")
    except PipelineError as exc:
        raise HTTPException(404, str(exc)) from None
    if data is None:
        raise HTTPException(404, f"{folder}/loss.png does not exist")
    return Response(data, media_type="image/png")


def checked(kind: str, value: str) -> str:
    """Names come from the URL: one safe path segment, or 404."""
    try:
        return check_name(kind, value)
    except PipelineError as exc:
        raise HTTPException(404, str(exc)) from None


def pointer_of(registry: str, name: str) -> tuple[dict | None, str | None]:
    """``latest.json``, or why it cannot be followed (shown, not raised): damaged, a link,
    or unreadable (no permission, S3 AccessDenied, a folder by that name)."""
    try:
        return current_latest(registry, name), None
    except (PipelineError, ValueError, OSError) as exc:
        return None, str(exc)


def evaluation_of(registry: str, name: str) -> tuple[dict | None, str | None]:
    """``evaluation.json``, or why it cannot be read (shown, not raised): a damaged pointer
    is an ``EvalSetError``, a link at it or at its folders ``SymlinkRefused``."""
    try:
        return eval_sets.current(registry, name), None
    except (PipelineError, ValueError, OSError) as exc:
        return None, str(exc)


def isolated_summary(registry: str, name: str, version: str, latest: dict | None) -> dict:
    """``version_summary``, or, for a version whose files cannot be read (malformed, linked
    out of its folder, too large), the same fields empty and the problem: one broken version
    never hides the others.

    Any ``Exception``, not a list of the expected ones: a hand-edited file of any JSON shape
    fails in ways no list keeps up with (``AttributeError`` for ``"evaluation": "x"``,
    ``OverflowError`` for ``tokens`` = inf), and whatever one version's files raise must not
    turn the whole model into a 500. The reason carries the exception's type and message."""
    try:
        return version_summary(registry, name, version, latest)
    except Exception as exc:
        return {**dict.fromkeys(SUMMARY_FIELDS), "version": version, "metrics": [],
                "samples": [], "is_latest": bool(latest and latest.get("version") == version),
                "reason": f"cannot be shown: {type(exc).__name__}: {exc}"[:500]}  # fmt: skip


def version_summary(registry: str, name: str, version: str, latest: dict | None) -> dict:
    """Everything the page shows about one version, from its files in the registry."""
    folder = version_uri(registry, name, version)
    promotion = read_json(registry, folder, PROMOTION) or {}
    run = read_json(registry, folder, "run.json") or {}
    metrics = metric_rows(registry, folder)
    evaluation = promotion.get("evaluation") or {}
    return {
        "version": version,
        "published_at": promotion.get("published_at"),
        "is_latest": bool(latest and latest.get("version") == version),
        "promoted": promotion.get("promoted"),
        "awaiting_approval": promotion.get("awaiting_approval", False),
        "review": promotion.get("review"),
        "reason": promotion.get("reason"),
        "val_bpb": promotion.get("val_bpb"),
        "eval_bpb": (evaluation.get("candidate") or {}).get("bits_per_byte"),
        "eval_latest_bpb": (evaluation.get("latest") or {}).get("bits_per_byte"),
        "eval_sha256": (evaluation.get("set") or {}).get("sha256"),
        "compared_to": promotion.get("compared_to"),
        "tokens_trained": int(metrics[-1]["tokens"]) if metrics else None,
        "parent": ((run.get("lineage") or {}).get("parent") or {}).get("version"),
        "airflow": run.get("airflow"),
        "run_root": run.get("run_root"),
        "hf_export": run.get("hf_export"),
        "metrics": metrics,
        "samples": samples(registry, folder),
    }


def version_file(registry: str, folder: str, name: str) -> bytes | None:
    """A file of a version folder, read the way the jobs read what users name: never through a
    link (checked from the registry down, so a linked model or version folder is refused too),
    only a regular file, at most ``MAX_FILE_BYTES``; None when it does not exist."""
    uri = storage.join(folder, name)
    storage.refuse_symlinks(registry, uri)
    if not storage.exists(uri):
        return None
    return storage.read_bounded(uri, MAX_FILE_BYTES, f"registry file {name}")


def read_json(registry: str, folder: str, name: str) -> dict | None:
    data = version_file(registry, folder, name)
    return json.loads(data) if data is not None else None


def metric_rows(registry: str, folder: str) -> list[dict[str, float]]:
    data = version_file(registry, folder, "metrics.csv")
    if data is None:
        return []
    rows = csv.DictReader(io.StringIO(data.decode()))
    return [{k: float(row[k]) for k in METRIC_COLUMNS} for row in rows]


def samples(registry: str, folder: str) -> list[dict[str, str]]:
    data = version_file(registry, folder, "generated.jsonl")
    if data is None:
        return []
    records = [json.loads(line) for line in data.decode().split("\n")[:SAMPLES] if line.strip()]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]


app = create_app()
