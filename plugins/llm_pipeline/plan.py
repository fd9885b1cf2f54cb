"""Planning a run: where its artifacts live, and refusing before any job what a job would refuse."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")
# A run root's folder: up to this much of the run id, then this much of its sha256.
READABLE_CHARS = 200
RUN_ID_DIGEST_CHARS = 12
LOCATIONS = ("run_root", "registry")


class PlanError(ValueError):
    """A run that must not start; retrying cannot change that, so the task fails at once."""


class RunRootError(PlanError):
    """A run root URI that would write somewhere it should not."""


@dataclass(frozen=True)
class Deployment:
    """Where this deployment keeps runs and models, and what its runs may read and publish to
    besides its defaults (the ``llm_*`` Variables; runs and models fall back to folders under
    Airflow's home)."""

    runs_base: str
    registry: str
    default_corpora: tuple[str, ...]
    corpus_prefixes: str = ""
    registry_prefixes: str = ""
    # What scheduled and asset-triggered runs continue from (the init_from Param's values;
    # empty: from scratch). A team switches its retraining to continued training here.
    retrain_init_from: str = ""

    @classmethod
    def from_variables(cls, default_corpora: tuple[str, ...]) -> Deployment:
        from airflow.sdk import Variable

        return cls(
            runs_base=Variable.get("llm_runs_base", default=f"{default_base()}/runs"),
            registry=Variable.get("llm_registry", default=default_registry()),
            default_corpora=default_corpora,
            corpus_prefixes=Variable.get("llm_corpus_allowed_prefixes", default=""),
            registry_prefixes=Variable.get("llm_registry_allowed_prefixes", default=""),
            retrain_init_from=Variable.get("llm_retrain_init_from", default=""),
        )


def run_id_segment(run_id: str) -> str:
    """An Airflow run id as one path segment, a different one for every run id: its safe
    characters, for people (``manual__2026-01-01T00_00_00_00_00``), then a hash of the whole id,
    since replacing the unsafe characters alone maps several run ids to one folder."""
    readable = SAFE_SEGMENT.sub("_", run_id).strip("._")[:READABLE_CHARS]
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:RUN_ID_DIGEST_CHARS]
    return f"{readable}-{digest}" if readable else digest


def validate_run_root(uri: str, what: str = "run root") -> str:
    """Accept ``file:///abs/path`` or ``s3://bucket/prefix`` without ``..`` or empty segments,
    and not a location a run must never clear stages in (``sparklm.runtime.ownership``): a
    filesystem root, a bare bucket, the home directory, the project checkout, a symbolic link,
    a name with glob characters.

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
    from sparklm.runtime.errors import (
        PipelineError,  # lazily: the DAG file must parse without sparklm
    )
    from sparklm.runtime.ownership import check_run_root
    from sparklm.runtime.storage import refuse_glob_characters

    try:
        refuse_glob_characters(uri, what)  # before check_run_root, which says "run root"
        check_run_root(uri)
    except PipelineError as exc:
        raise RunRootError(str(exc)) from None
    return uri.rstrip("/")


def default_registry() -> str:
    """Where models go when no ``llm_registry`` Variable says: what runs publish to and what
    the Models view shows."""
    return f"{default_base()}/registry"


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
    for key in LOCATIONS:
        if not plan[key].startswith("s3://"):
            raise RunRootError(
                f"env=emr needs s3:// locations, but {key} is {plan[key]!r}: set the {key} Param "
                f"(or the llm_runs_base / llm_registry Variables) to an s3:// URI"
            )


def make_plan(params: dict[str, Any], run_id: str, deployment: Deployment,
              run_type: str = "manual") -> dict[str, str]:  # fmt: skip
    """The locations every task of the run uses, the allow-lists its jobs enforce again, and
    the version folder it continues from (``init_from``, resolved once for every stage).

    The allow-lists are the deployment's prefixes plus what it configured as defaults, which
    is always allowed. Refuses what the
    jobs would refuse later, once a cluster or a Spark session is paid for: a run
    root that is not the run's own, a corpus or prompts file outside the allow-list
    (or under a hidden folder), a registry outside its allow-list, a model whose
    estimated training memory exceeds the budget, a value no setting allows, a version to
    continue from that does not exist or whose shape the Params contradict.
    """
    from sparklm.model.memory_estimate import Shape, check_budget, training_memory
    from sparklm.registry.versions import check_registry
    from sparklm.runtime import allowlist, storage
    from sparklm.runtime.errors import PipelineError
    from sparklm.settings import SettingError, check_values, ignored_settings

    try:
        check_values(params)  # what JSON schema lets through: NaN, infinities
    except SettingError as exc:
        raise PlanError(f"{exc}: fix the Param") from None
    for line in ignored_settings(params, label=lambda setting: setting.name):
        log.warning("%s", line)  # the train job says it again, for runs started without Airflow
    plan = {
        "run_root": run_root_for(params["run_root"], run_id, deployment.runs_base),
        "registry": validate_run_root(params["registry"] or deployment.registry, "registry"),
        "corpus_prefixes": allowlist.widen(
            deployment.corpus_prefixes, list(deployment.default_corpora)
        ),
        "registry_prefixes": allowlist.widen(deployment.registry_prefixes, [deployment.registry]),
    }
    if params["env"] == "emr":
        require_s3(plan)
    inputs = params["corpus"].split(",") + [p for p in [params["prompts_uri"]] if p]
    inputs += params["eval_input"].split(",") if params.get("eval_input") else []
    try:
        for spec in inputs:
            storage.input_uri(spec)
        allowlist.check_corpus(inputs, plan["corpus_prefixes"])
        check_registry(plan["registry"], allowlist.parse(plan["registry_prefixes"]))
        parent = continued_from(params, plan["registry"], deployment, run_type)
        plan["init_from"] = parent.uri if parent else ""
        shape = Shape.from_config({**params, **parent.config} if parent else params)
        check_budget(training_memory(shape, params["batch_size"]), params["memory_budget_gb"],
                     "the model these Params describe",
                     "the n_layer, n_embd, context_len or batch_size Params")  # fmt: skip
    except PipelineError as exc:
        raise PlanError(str(exc)) from None
    return plan


def continued_from(params: dict[str, Any], registry: str, deployment: Deployment,
                   run_type: str) -> Any:  # fmt: skip
    """The registry version a run continues from (a ``sparklm.registry.lineage.Parent``), or
    None: the ``init_from`` Param; for a run nobody triggered by hand (the cron, an Asset
    event, a backfill), the deployment's ``llm_retrain_init_from`` when the Param is empty."""
    from sparklm.registry import lineage
    from sparklm.settings import SETTINGS, SettingError

    init_from = params.get("init_from")
    if not init_from and run_type != "manual" and deployment.retrain_init_from:
        try:
            init_from = SETTINGS["init_from"].check(
                deployment.retrain_init_from, "the llm_retrain_init_from Variable"
            )
        except SettingError as exc:
            raise PlanError(f"{exc}: fix the Variable") from None
    uri = lineage.resolve(init_from, registry, params["model_name"])
    if uri is None:
        return None
    parent = lineage.Parent.open(uri)
    parent.check_settings(params)
    return parent
