"""Naming and validating where a run's artifacts live."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


class RunRootError(ValueError):
    """A run root URI that would write somewhere it should not."""


def run_id_segment(run_id: str) -> str:
    """Make an Airflow run id (``manual__2026-01-01T00:00:00+00:00``) safe as one path segment."""
    segment = SAFE_SEGMENT.sub("_", run_id).strip("._")
    if not segment:
        raise RunRootError(f"run id {run_id!r} has no usable characters")
    return segment


def validate_run_root(uri: str, what: str = "run root") -> str:
    """Accept ``file:///abs/path`` or ``s3://bucket/prefix`` without ``..`` or empty segments.

    ``what`` names the location in the message (the registry is checked the same way).
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", "s3"):
        raise RunRootError(f"{what} {uri!r} must start with file:/// or s3://")
    if parsed.scheme == "s3" and not parsed.netloc:
        raise RunRootError(f"{what} {uri!r} has no bucket: write s3://BUCKET/PREFIX")
    if parsed.scheme == "file" and (parsed.netloc or not parsed.path.startswith("/")):
        raise RunRootError(f"{what} {uri!r} must be an absolute file:///path")
    segments = parsed.path.strip("/").split("/")
    if any(s in ("..", ".") for s in segments) or "//" in parsed.path.rstrip("/"):
        raise RunRootError(f"{what} {uri!r} contains '..', '.' or an empty path segment")
    return uri.rstrip("/")


def default_base() -> str:
    """Where runs and the registry go when neither the Params nor the Variables say.

    A run without conf (an Asset event, the cron) must not write into the code's
    checkout or site-packages, so the fallback is Airflow's own home
    (``$AIRFLOW_HOME``, else ``~/airflow``, as Airflow resolves it).
    """
    home = Path(os.path.expanduser(os.environ.get("AIRFLOW_HOME", "~/airflow"))).resolve()
    return f"file://{home / 'llm_decoder'}"


def run_root_for(requested: str, run_id: str, runs_base: str) -> str:
    """The run root a DAG run writes to: the requested one, or ``{runs_base}/{run_id}``."""
    if requested:
        return validate_run_root(requested)
    return validate_run_root(f"{runs_base.rstrip('/')}/{run_id_segment(run_id)}")


def require_s3(plan: dict[str, str]) -> None:
    """EMR nodes share no disk with Airflow: every location of an EMR run must be on S3."""
    for key, uri in plan.items():
        if not uri.startswith("s3://"):
            raise RunRootError(
                f"env=emr needs s3:// locations, but {key} is {uri!r}: set the {key} Param "
                f"(or the llm_runs_base / llm_registry Variables) to an s3:// URI"
            )
