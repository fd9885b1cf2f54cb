"""What the EMR branch's Python tasks do: upload the code bundle, fill in the cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from airflow.sdk import Variable

from llm_pipeline.emr.bundle import build_bundle, bundle_version, job_flow_overrides

BUNDLE_MARKER = "BUNDLE.json"
# Roles a run may give its cluster unless the llm_emr_allowed_roles Variable lists others:
# the roles EMR's own defaults create. A trigger-form field must not pick an admin role.
DEFAULT_ALLOWED_ROLES = "EMR_EC2_DefaultRole,EMR_DefaultRole"


def code_base(run_root: str) -> str:
    """Where code bundles live: the llm_emr_code_base Variable, else beside the run root."""
    bucket = urlparse(run_root).netloc
    return Variable.get("llm_emr_code_base", default=f"s3://{bucket}/llm-decoder/code").rstrip("/")


def upload_bundle(project_dir: Path, plan: dict[str, str], aws_conn_id: str) -> str:
    """Upload the bundle under ``{code_base}/{version}`` unless that version is already there.

    The marker file is written last, so an interrupted upload is redone next time.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    files = build_bundle(project_dir)
    version = bundle_version(files)
    code_uri = f"{code_base(plan['run_root'])}/{version}"
    bucket, prefix = S3Hook.parse_s3_url(code_uri)
    hook = S3Hook(aws_conn_id=aws_conn_id)
    if hook.check_for_key(f"{prefix}/{BUNDLE_MARKER}", bucket):
        return code_uri
    for name, data in sorted(files.items()):
        hook.load_bytes(data, key=f"{prefix}/{name}", bucket_name=bucket, replace=True)
    marker = {"version": version, "files": sorted(files)}
    hook.load_string(json.dumps(marker), key=f"{prefix}/{BUNDLE_MARKER}", bucket_name=bucket,
                     replace=True)  # fmt: skip
    return code_uri


def check_roles(params: dict[str, Any]) -> None:
    """The cluster's instance profile and service role must be on the deployment's allow-list."""
    from airflow.sdk.exceptions import AirflowFailException

    raw = Variable.get("llm_emr_allowed_roles", default=DEFAULT_ALLOWED_ROLES)
    allowed = {role.strip() for role in raw.split(",") if role.strip()}
    for param in ("emr_job_flow_role", "emr_service_role"):
        if params[param] not in allowed:
            raise AirflowFailException(
                f"{param} {params[param]!r} is not an allowed EMR role {sorted(allowed)}: pick "
                "one of them, or have the deployment add it to the llm_emr_allowed_roles Variable"
            )


def cluster_overrides(
    plan: dict[str, str], code_uri: str, params: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """The cluster definition for this run; its roles are checked first (``check_roles``)."""
    check_roles(params)
    return job_flow_overrides(
        name=f"llm-decoder {run_id}"[:256],
        code_uri=code_uri,
        log_uri=f"{plan['run_root']}/emr-logs/",
        params=params,
        tags={"run_id": run_id[:256], "code_version": code_uri.rsplit("/", 1)[-1]},
    )
