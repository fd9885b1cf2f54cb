"""``make run`` and ``make airflow`` are one local deployment: what ``make run`` trained is what
the UI shows, and a run started in the UI publishes into the same registry (its gate compares
with the model ``make run`` promoted: tests/ui/test_trigger_form.py)."""

import httpx
import pytest

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
