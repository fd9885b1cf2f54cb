"""The publish job: registry layout and checksums, the promotion gate, name safety."""

import hashlib
import json
from pathlib import Path

import pytest

from sparklm import storage
from sparklm.registry import RegistryError
from support import REPO, TINY, copy_stages

TINY_TRAIN = [*TINY, "--rounds", "1", "--local-steps", "2"]
VERSION_FILES = {"model.safetensors", "config.json", "tokenizer.json", "metrics.csv", "loss.png",
                 "generated.jsonl", "generated.txt", "MODEL_CARD.md", "run.json",
                 "promotion.json", "hf"}  # fmt: skip


@pytest.fixture
def published_run(run_job, trained_run, copy_run, tmp_path):
    """A copy of the trained run with generations, and an empty registry."""
    root = copy_run(trained_run, ("preprocess", "tokenize", "train"))
    run_job("generate", ["--run-root", root, "--prompt", "The history of",
                         "--max-new-tokens", "12"])  # fmt: skip
    return root, f"file://{tmp_path / 'registry'}"


def publish(run_job, root, registry, *extra):
    return run_job("publish", ["--run-root", root, "--registry", registry,
                               "--model-name", "wiki-gpt", *extra])  # fmt: skip


def read_json(uri):
    return json.loads(storage.read_bytes(uri))


def test_layout_checksums_card_and_latest(run_job, published_run):
    root, registry = published_run
    manifest = publish(run_job, root, registry)
    version_uri = manifest["stats"]["version_uri"]
    folder = Path(version_uri.removeprefix("file://"))
    assert {p.name for p in folder.iterdir()} == VERSION_FILES
    run = read_json(f"{version_uri}/run.json")
    assert {a["path"] for a in run["artifacts"]} == VERSION_FILES - {"run.json", "promotion.json",
                                                                     "hf"} | {
        f"hf/{p.name}" for p in (folder / "hf").iterdir()}  # fmt: skip
    for artifact in run["artifacts"]:
        data = (folder / artifact["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    assert set(run["inputs"]) == {"preprocess", "tokenize", "train", "generate"}
    latest = read_json(f"{registry}/wiki-gpt/latest.json")
    assert latest["version"] == manifest["params"]["version"] and latest["uri"] == version_uri
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| round | tokens |" in card and "bits/byte" in card and "The history of" in card
    assert "(qwen3 block)" in card and "Muon on the blocks' matrices" in card  # the recipe
    assert read_json(f"{version_uri}/promotion.json")["promoted"] is True

    again = publish(run_job, root, registry)  # republishing the same run is idempotent
    assert again["params"]["version"] == manifest["params"]["version"]
    assert read_json(f"{registry}/wiki-gpt/latest.json")["version"] == latest["version"]
    assert again["stats"]["promoted"] is True


def test_a_worse_model_is_published_but_not_promoted(run_job, published_run, copy_run,
                                                     tmp_path):  # fmt: skip
    root, registry = published_run
    good = publish(run_job, root, registry)
    worse = copy_stages(root, tmp_path / "worse", ("preprocess", "tokenize"))
    run_job("train", ["--run-root", worse, *TINY_TRAIN])
    run_job("generate", ["--run-root", worse, "--prompt", "x", "--max-new-tokens", "4"])
    bad = publish(run_job, worse, registry)
    assert bad["stats"]["promoted"] is False
    assert "worse than latest version" in bad["stats"]["reason"]
    promotion = read_json(f"{bad['stats']['version_uri']}/promotion.json")
    assert promotion["promoted"] is False and promotion["compared_to"] == good["params"]["version"]
    assert read_json(f"{registry}/wiki-gpt/latest.json")["version"] == good["params"]["version"]

    with pytest.raises(RegistryError, match="already holds a different model"):
        publish(run_job, worse, registry, "--version", good["params"]["version"])


@pytest.mark.parametrize("name", ["../escape", "a/b", "s3:x", ".."])
def test_bad_model_names_are_refused_and_nothing_is_written(run_job, published_run, name):
    root, registry = published_run
    with pytest.raises(RegistryError, match="invalid model name"):
        run_job("publish", ["--run-root", root, "--registry", registry, "--model-name", name])
    assert not Path(registry.removeprefix("file://")).exists()


def test_registry_outside_the_allowed_prefix_is_refused(run_job, published_run, monkeypatch,
                                                        tmp_path):  # fmt: skip
    root, registry = published_run
    monkeypatch.setenv("LLM_REGISTRY_ALLOWED_PREFIXES", f"file://{tmp_path}/allowed")
    with pytest.raises(RegistryError, match="outside the allowed locations"):
        publish(run_job, root, registry)


def test_registry_cli_samples_the_latest_version(run_job, published_run):
    import subprocess
    import sys

    root, registry = published_run
    publish(run_job, root, registry)
    out = subprocess.run(
        [sys.executable, "-m", "jobs.generate", "--registry", registry, "--model-name",
         "wiki-gpt", "--prompt", "The history of", "--max-new-tokens", "8"],
        cwd=REPO,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.startswith("The history of")
