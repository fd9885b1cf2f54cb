"""The Models view's module: importable by the api-server without torch or Spark."""

import json
import subprocess
import sys

import pytest

from helpers.corpora import write_text
from helpers.paths import REPO


def test_the_view_never_loads_torch_or_spark():
    code = ("import sys, llm_pipeline.models_view; print(*[m for m in "
            "('torch', 'pyspark', 'tokenizers') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)  # fmt: skip
    assert out.stdout.strip() == ""


def test_a_version_without_promotion_json_is_listed_with_its_state_unknown(tmp_path):
    """A version folder whose publish never wrote promotion.json (copied by hand, or a
    publish from before the file existed) is shown, not a server error."""
    from llm_pipeline.models_view import version_summary

    (tmp_path / "m" / "v1").mkdir(parents=True)
    summary = version_summary(f"file://{tmp_path}", "m", "v1", latest=None)
    assert summary["version"] == "v1"
    assert summary["promoted"] is None and summary["eval_bpb"] is None
    assert summary["is_latest"] is False


def published_version(registry, model: str, version: str) -> None:
    """A complete version folder with readable files."""
    folder = registry / model / version
    write_text(folder / "promotion.json", json.dumps({"promoted": True, "reason": "first"}))
    write_text(folder / "metrics.csv", "round,tokens,train_loss,val_loss,val_bpb\n1,8,5,5,3\n")
    write_text(folder / "generated.jsonl", json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    write_text(folder / "loss.png", b"\x89PNG fake")


def test_a_broken_version_is_listed_with_its_problem_and_the_others_stay(tmp_path, monkeypatch):
    """One malformed version (an unparsable metrics.csv, a sample without ``prompt``) used to
    make the API answer 500 and the page show no model at all."""
    from llm_pipeline import models_view

    for version in ("v1", "v2", "v3"):
        published_version(tmp_path, "m", version)
    write_text(tmp_path / "m" / "v2" / "metrics.csv", "round,tokens\nnot,numbers\n")
    write_text(tmp_path / "m" / "v3" / "generated.jsonl", json.dumps({"text": "x"}) + "\n")
    monkeypatch.setattr(models_view, "configured_registry", lambda: f"file://{tmp_path}")
    detail = models_view.model("m")
    by_version = {v["version"]: v for v in detail["versions"]}
    assert by_version["v1"]["promoted"] is True and by_version["v1"]["metrics"]
    for broken in ("v2", "v3"):
        assert by_version[broken]["reason"].startswith("cannot be shown: ")
        assert by_version[broken]["metrics"] == [] and by_version[broken]["samples"] == []
    assert set(by_version["v2"]) == set(by_version["v1"])  # the page finds every field


def test_a_registry_file_linked_elsewhere_is_never_served(tmp_path, monkeypatch):
    from fastapi import HTTPException

    from llm_pipeline import models_view

    published_version(tmp_path / "registry", "m", "v1")
    secret = write_text(tmp_path / "elsewhere" / "secret.png", b"\x89PNG someone else's")
    plot = tmp_path / "registry" / "m" / "v1" / "loss.png"
    plot.unlink()
    plot.symlink_to(secret)
    monkeypatch.setattr(models_view, "configured_registry",
                        lambda: f"file://{tmp_path / 'registry'}")  # fmt: skip
    with pytest.raises(HTTPException) as refused:
        models_view.loss_png("m", "v1")
    assert refused.value.status_code == 404 and "link" in str(refused.value.detail)


def test_the_views_api_documents_nothing_to_anonymous_visitors():
    from llm_pipeline.models_view import app

    assert (app.docs_url, app.redoc_url, app.openapi_url) == (None, None, None)


def test_a_continued_version_names_its_parent(tmp_path):
    """The parent comes from run.json's lineage; a version trained from scratch, or published
    before lineage was recorded, has none."""
    from llm_pipeline.models_view import version_summary

    published_version(tmp_path, "m", "v1")
    published_version(tmp_path, "m", "v2")
    lineage = {"parent": {"version": "v1", "uri": f"file://{tmp_path}/m/v1"}}
    write_text(tmp_path / "m" / "v2" / "run.json", json.dumps({"lineage": lineage}))
    registry = f"file://{tmp_path}"
    assert version_summary(registry, "m", "v2", latest=None)["parent"] == "v1"
    assert version_summary(registry, "m", "v1", latest=None)["parent"] is None
