"""EMR mode: the code bundle, the cluster definition and the steps, from the same job list.

Nothing here talks to AWS; the DAG's tasks upload the bundle with the
Amazon provider's S3Hook and drive the cluster with its EMR operators.
"""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_pipeline.pipeline import EMR_NODE_VENV, PIPELINE, SparkJob, spark_conf
from sparklm import settings

# The EMR release a run gets by default and the Apache Spark it ships (EMR Release Guide,
# "Spark release history": emr-7.9.0 runs Spark 3.5.5-amzn-0). The trigger form's default
# and the Spark of the tests' EMR node environment (`make venv-emr`) both come from here.
EMR_RELEASE_LABEL = settings.DEFAULT_EMR_RELEASE
EMR_SPARK_VERSION = "3.5.5"
PACKAGE = "sparklm"
STEP_ACTION_ON_FAILURE = "CANCEL_AND_WAIT"  # later steps are cancelled; the teardown terminates
JOB_FLOW_FILE = Path(__file__).with_name("job_flow.json")
BOOTSTRAP_FILE = Path(__file__).with_name("bootstrap.sh")
TORCH_INSTALLER = Path("tools") / "install_torch.py"  # in the project, beside constraints.txt


def build_bundle(project_dir: Path) -> dict[str, bytes]:
    """Everything an EMR node needs to run the jobs, as ``{relative path: bytes}``.

    - ``jobs/<script>.py`` and ``jobs/conf/*``: the entry scripts and their config,
    - ``sparklm.zip``: the shared library for ``--py-files`` (executors import it),
    - ``requirements.txt`` + ``constraints.txt``: the jobs' dependencies, pinned,
    - ``bootstrap.sh`` + ``install_torch.py``: the bootstrap action that installs them on
      every node (torch's CPU build the same way ``make setup`` installs it).
    """
    jobs = project_dir / "jobs"
    files: dict[str, bytes] = {}
    for job in PIPELINE:
        files[f"jobs/{job.script}"] = (jobs / job.script).read_bytes()
    for conf in sorted((jobs / "conf").iterdir()):
        files[f"jobs/conf/{conf.name}"] = conf.read_bytes()
    files["sparklm.zip"] = _zip_package(jobs / PACKAGE)
    files["requirements.txt"] = _jobs_requirements(project_dir / "pyproject.toml").encode()
    files["constraints.txt"] = (project_dir / "constraints.txt").read_bytes()
    files["bootstrap.sh"] = BOOTSTRAP_FILE.read_bytes()
    files["install_torch.py"] = (project_dir / TORCH_INSTALLER).read_bytes()
    return files


def bundle_version(files: dict[str, bytes]) -> str:
    """A content hash: the same code always lands under the same prefix."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def _zip_package(package_dir: Path) -> bytes:
    """Zip the package's sources with fixed timestamps, so the bytes depend only on the code."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package_dir.rglob("*.py")):
            info = zipfile.ZipInfo(
                f"{PACKAGE}/{path.relative_to(package_dir)}", (1980, 1, 1, 0, 0, 0)
            )
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _jobs_requirements(pyproject: Path) -> str:
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    return "\n".join(extras["jobs"]) + "\n"


def spark_submit_args(job: SparkJob, code_uri: str, plan: str) -> list[str]:
    """The ``command-runner.jar`` arguments of one step: spark-submit of the uploaded script.

    ``code_uri`` is a Jinja expression for the bundle's URI (known once it is uploaded),
    ``plan`` one for the run's plan; Airflow renders the steps when they are added.
    """
    code_jobs = f"({code_uri} ~ '/jobs')"
    return [
        "spark-submit",
        "--deploy-mode", "client",
        "--py-files", f"{{{{ {code_uri} }}}}/sparklm.zip",
        *(arg for key, value in spark_conf(f"{EMR_NODE_VENV}/conf").items()
          for arg in ("--conf", f"{key}={value}")),
        f"{{{{ {code_jobs} }}}}/{job.script}",
        *job.arguments(code_root=code_jobs, plan=plan),
    ]  # fmt: skip


def emr_steps(code_uri: str, plan: str) -> list[dict[str, Any]]:
    """One step per pipeline job, in order; a failed step cancels the ones after it."""
    return [
        {
            "Name": f"llm_decoder {job.stage}",
            "ActionOnFailure": STEP_ACTION_ON_FAILURE,
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": spark_submit_args(job, code_uri, plan),
            },
        }
        for job in PIPELINE
    ]


def job_flow_overrides(
    name: str, code_uri: str, log_uri: str, params: Mapping[str, Any], tags: dict[str, str]
) -> dict[str, Any]:
    """The versioned cluster definition (``job_flow.json``) with this run's values filled in:
    its name, log folder, tags and the ``emr_*`` Params (release, roles, subnet)."""
    overrides = json.loads(JOB_FLOW_FILE.read_text())
    overrides["Name"] = name
    overrides["LogUri"] = log_uri
    overrides["ReleaseLabel"] = params["emr_release_label"]
    overrides["JobFlowRole"] = params["emr_job_flow_role"]
    overrides["ServiceRole"] = params["emr_service_role"]
    if params["emr_subnet_id"]:
        overrides["Instances"]["Ec2SubnetId"] = params["emr_subnet_id"]
    for action in overrides["BootstrapActions"]:
        action["ScriptBootstrapAction"] = {"Path": f"{code_uri}/bootstrap.sh", "Args": [code_uri]}
    overrides["Tags"] = overrides["Tags"] + [{"Key": k, "Value": v} for k, v in tags.items()]
    return overrides
