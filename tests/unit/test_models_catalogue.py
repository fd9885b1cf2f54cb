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


def a_registry(tmp_path, monkeypatch, *models: str):
    """``models``, each with two complete versions and ``latest.json`` naming v2, as the
    view's registry."""
    from llm_pipeline import models_view

    registry = tmp_path / "registry"
    for name in models:
        for version in ("v1", "v2"):
            published_version(registry, name, version)
        latest = {"version": "v2", "uri": f"file://{registry}/{name}/v2"}
        write_text(registry / name / "latest.json", json.dumps(latest))
    monkeypatch.setattr(models_view, "configured_registry", lambda: f"file://{registry}")
    return registry


@pytest.mark.parametrize("damage", ["damaged", "linked pointer", "linked folder"])
def test_an_unreadable_evaluation_set_pointer_is_reported_with_the_versions(
    tmp_path, monkeypatch, damage
):
    """A damaged ``evaluation.json`` (an EvalSetError) or a link at it or at ``evaluation/``
    (SymlinkRefused) used to make the model's endpoint answer 500."""
    from llm_pipeline import models_view

    registry = a_registry(tmp_path, monkeypatch, "m")
    elsewhere = write_text(tmp_path / "elsewhere" / "evaluation.json", json.dumps({"sha256": "a"}))
    if damage == "damaged":
        write_text(registry / "m" / "evaluation.json", "{")
    elif damage == "linked pointer":
        (registry / "m" / "evaluation.json").symlink_to(elsewhere)
    else:
        (registry / "m" / "evaluation").symlink_to(elsewhere.parent)
    detail = models_view.model("m")
    assert detail["evaluation"] is None and detail["evaluation_problem"]
    if damage != "damaged":
        assert "symbolic link" in detail["evaluation_problem"]
    assert [v["version"] for v in detail["versions"]] == ["v2", "v1"]
    assert all(v["promoted"] is True and v["metrics"] for v in detail["versions"])
    assert detail["latest"]["version"] == "v2" and detail["latest_problem"] is None


def test_a_readable_evaluation_set_pointer_is_shown_without_a_problem(tmp_path, monkeypatch):
    from llm_pipeline import models_view

    registry = a_registry(tmp_path, monkeypatch, "m")
    write_text(registry / "m" / "evaluation.json", json.dumps({"sha256": "ab" * 32}))
    detail = models_view.model("m")
    assert detail["evaluation"] == {"sha256": "ab" * 32} and detail["evaluation_problem"] is None


@pytest.mark.parametrize(("file", "content", "error"), [
    ("promotion.json", "[1]", "AttributeError"),
    ("promotion.json", json.dumps({"promoted": True, "evaluation": "x"}), "AttributeError"),
    ("promotion.json", json.dumps({"evaluation": {"candidate": "x"}}), "AttributeError"),
    ("run.json", json.dumps({"lineage": {"parent": "v0"}}), "AttributeError"),
    ("metrics.csv", "round,tokens,train_loss,val_loss,val_bpb\n1,inf,5,5,3\n", "OverflowError"),
])  # fmt: skip
def test_a_version_of_any_shape_is_listed_with_its_problem_and_the_others_stay(
    tmp_path, monkeypatch, file, content, error
):
    """A hand-edited file of an unexpected shape raised what isolated_summary did not catch
    (AttributeError, OverflowError): a 500 for the whole model."""
    from llm_pipeline import models_view

    registry = a_registry(tmp_path, monkeypatch, "m")
    write_text(registry / "m" / "v1" / file, content)
    by_version = {v["version"]: v for v in models_view.model("m")["versions"]}
    assert by_version["v1"]["reason"].startswith(f"cannot be shown: {error}: ")
    assert by_version["v2"]["promoted"] is True and by_version["v2"]["is_latest"]
    assert by_version["v2"]["tokens_trained"] == 8 and by_version["v2"]["samples"]


@pytest.mark.parametrize("damage", ["a folder", "permission denied"])
def test_a_latest_pointer_that_cannot_be_read_is_that_models_problem(tmp_path, monkeypatch, damage):
    """An OSError reading one model's ``latest.json`` (a folder by that name; no permission,
    or S3's AccessDenied, both a PermissionError) used to make /api/models answer 500, and
    the page showed no model at all."""
    from llm_pipeline import models_view

    registry = a_registry(tmp_path, monkeypatch, "a", "b")
    if damage == "a folder":
        (registry / "a" / "latest.json").unlink()
        (registry / "a" / "latest.json").mkdir()
    else:
        real = models_view.current_latest

        def denied(registry: str, name: str):
            if name == "a":
                raise PermissionError(13, "Access Denied", f"{registry}/a/latest.json")
            return real(registry, name)

        monkeypatch.setattr(models_view, "current_latest", denied)
    listing = {m["name"]: m for m in models_view.models()["models"]}
    assert listing["a"]["latest"] is None and "latest.json" in listing["a"]["problem"]
    assert listing["b"] == {"name": "b", "latest": "v2", "problem": None}
    detail = models_view.model("a")
    assert detail["latest"] is None and detail["latest_problem"] == listing["a"]["problem"]
    assert [v["version"] for v in detail["versions"]] == ["v2", "v1"]


def test_a_model_folder_linked_out_of_the_registry_is_never_read(tmp_path, monkeypatch):
    """``registry/m`` a link to a folder elsewhere: its version files were read through it
    (each file was checked from its own version folder down, not from the registry)."""
    from fastapi import HTTPException

    from llm_pipeline import models_view

    registry = a_registry(tmp_path, monkeypatch, "ok")
    published_version(tmp_path / "elsewhere", "m", "v1")
    (registry / "m").symlink_to(tmp_path / "elsewhere" / "m")
    with pytest.raises(HTTPException) as refused:
        models_view.loss_png("m", "v1")
    assert refused.value.status_code == 404 and "symbolic link" in str(refused.value.detail)
    summary = models_view.isolated_summary(f"file://{registry}", "m", "v1", latest=None)
    assert summary["reason"].startswith("cannot be shown: SymlinkRefused: ")
    assert summary["promoted"] is None and summary["metrics"] == [] and summary["samples"] == []
    assert models_view.loss_png("ok", "v1").body == b"\x89PNG fake"
    assert models_view.model("ok")["versions"][0]["promoted"] is True
