"""``make run`` and ``make airflow`` are one local deployment: what ``make run`` trained is what
the UI shows, and a run started in the UI publishes into the same registry (its gate compares
with the model ``make run`` promoted: tests/ui/test_trigger_form.py)."""

import json

import httpx
import pytest

from helpers.oracles import chained_manifests
from llm_pipeline.pipeline import PIPELINE
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage

pytestmark = pytest.mark.slow


def test_the_models_view_lists_what_make_run_published(airflow_stack, made_run):
    stack = airflow_stack
    assert made_run["registry"] == stack.registry  # the Variable make run set, not a default
    listing = stack.get("/llm-models/api/models")
    assert listing["registry"] == stack.registry
    # The form's run may since have been approved over it (tests/ui/test_trigger_form.py):
    # the view lists what latest.json says, and make run's version, promoted.
    latest = read_latest(made_run["registry"], made_run["model"])["version"]
    [listed] = [m for m in listing["models"] if m["name"] == made_run["model"]]
    assert listed["latest"] == latest
    detail = stack.get(f"/llm-models/api/models/{made_run['model']}")
    [version] = [v for v in detail["versions"] if v["version"] == made_run["version"]]
    assert version["promoted"] and version["is_latest"] == (latest == made_run["version"])
    anonymous = httpx.get(f"{stack.url}/llm-models/api/models", timeout=30)
    assert anonymous.status_code in (401, 403)


def test_make_run_commits_five_chained_stages_on_file_urls(made_run):
    """``airflow dags test`` against file:// (the s3:// run: tests/airflow/test_approval.py)."""
    root = made_run["run_root"]
    assert root.startswith("file:///")
    manifests = chained_manifests(root, [job.stage for job in PIPELINE])
    assert manifests["tokenize"]["stats"]["vocab_size"] == 300
    assert manifests["train"]["stats"]["final"]["round"] == 2
    version = manifests["publish"]["stats"]["version_uri"]
    assert version == f"{made_run['registry']}/{made_run['model']}/{made_run['version']}"
    assert json.loads(storage.read_bytes(f"{version}/promotion.json"))["promoted"]
    assert storage.exists(f"{version}/MODEL_CARD.md")
