"""``make run`` and ``make airflow`` are one local deployment: what ``make run`` trained is what
the UI shows, and a run started in the UI publishes into the same registry (its gate compares
with the model ``make run`` promoted: tests/ui/test_trigger_form.py)."""

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
    [listed] = [m for m in listing["models"] if m["name"] == made_run["model"]]
    assert listed["latest"] == made_run["version"]
    detail = stack.get(f"/llm-models/api/models/{made_run['model']}")
    [version] = [v for v in detail["versions"] if v["version"] == made_run["version"]]
    assert version["is_latest"] and version["promoted"]
    anonymous = httpx.get(f"{stack.url}/llm-models/api/models", timeout=30)
    assert anonymous.status_code in (401, 403)


def test_make_run_commits_five_chained_stages_on_file_urls(made_run):
    """``airflow dags test`` against file:// (the s3:// run: tests/airflow/test_approval.py)."""
    root = made_run["run_root"]
    assert root.startswith("file:///")
    manifests = chained_manifests(root, [job.stage for job in PIPELINE])
    assert manifests["tokenize"]["stats"]["vocab_size"] == 300
    assert manifests["train"]["stats"]["final"]["round"] == 2
    latest = read_latest(made_run["registry"], made_run["model"])
    assert latest["uri"] == manifests["publish"]["stats"]["version_uri"]
    assert storage.exists(f"{latest['uri']}/MODEL_CARD.md")
