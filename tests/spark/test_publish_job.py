"""The publish job: registry layout and checksums, the promotion gate, name safety."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from helpers.jobs import TINY, TINY_TOLERANCE, copy_stages
from helpers.oracles import sample_independently
from helpers.paths import REPO
from sparklm.registry.versions import RegistryError
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

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


def test_a_first_version_that_learned_nothing_is_published_but_not_promoted(
    run_job, published_run, copy_run, tmp_path
):
    """With nothing to compare with, a first version must be within the tolerance of its
    evaluation set's unigram baseline; a model trained for two steps is not."""
    root, registry = published_run
    untrained = copy_stages(root, tmp_path / "untrained", ("preprocess", "tokenize"))
    run_job("train", ["--run-root", untrained, *TINY_TRAIN])
    run_job("generate", ["--run-root", untrained, "--prompt", "x", "--max-new-tokens", "4"])
    refused = publish(run_job, untrained, registry)["stats"]
    assert refused["promoted"] is False
    assert "worse than the set's unigram baseline" in refused["reason"]
    promotion = read_json(f"{refused['version_uri']}/promotion.json")
    candidate = promotion["evaluation"]["candidate"]
    assert candidate["bits_per_byte"] > candidate["unigram_bits_per_byte"] > 0
    assert not storage.exists(f"{registry}/wiki-gpt/latest.json")

    widened = publish(run_job, untrained, f"{registry}-2", "--tolerance", str(TINY_TOLERANCE))
    assert widened["stats"]["promoted"] is True
    assert "<= its unigram baseline" in widened["stats"]["reason"]
    # The model that learned passes on its own (the trained run: 16 rounds of 40 steps).
    trained = publish(run_job, root, f"{registry}-3")["stats"]
    assert trained["promoted"] is True, trained["reason"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "s3:x", ".."])
def test_bad_model_names_are_refused_and_nothing_is_written(run_job, published_run, name):
    root, registry = published_run
    with pytest.raises(PipelineError, match=f"--model-name '{re.escape(name)}' does not match"):
        run_job("publish", ["--run-root", root, "--registry", registry, "--model-name", name])
    assert not Path(registry.removeprefix("file://")).exists()


def test_registry_outside_the_allowed_prefix_is_refused(run_job, published_run, monkeypatch,
                                                        tmp_path):  # fmt: skip
    root, registry = published_run
    monkeypatch.setenv("LLM_REGISTRY_ALLOWED_PREFIXES", f"file://{tmp_path}/allowed")
    with pytest.raises(RegistryError, match="outside the allowed locations"):
        publish(run_job, root, registry)


def test_registry_cli_samples_the_latest_version(run_job, published_run, tmp_path):
    """The latest promoted version, not the newest one: a worse model published after it."""
    import subprocess
    import sys

    from sparklm.registry.versions import read_latest

    root, registry = published_run
    good = publish(run_job, root, registry)
    worse = copy_stages(root, tmp_path / "worse", ("preprocess", "tokenize"))
    run_job("train", ["--run-root", worse, *TINY_TRAIN])
    run_job("generate", ["--run-root", worse, "--prompt", "x", "--max-new-tokens", "4"])
    assert publish(run_job, worse, registry)["stats"]["promoted"] is False
    out = subprocess.run(
        [sys.executable, "-m", "jobs.generate", "--registry", registry, "--model-name",
         "wiki-gpt", "--prompt", "The history of", "--max-new-tokens", "8"],
        cwd=REPO,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    latest = read_latest(registry, "wiki-gpt")["uri"]
    assert latest == good["stats"]["version_uri"]
    record = {"prompt": "The history of", "max_new_tokens": 8, "temperature": 0.8, "top_k": 50,
              "top_p": 0.95, "seed": 0}  # the CLI's defaults  # fmt: skip
    files = (f"{latest}/{name}" for name in ("model.safetensors", "config.json", "tokenizer.json"))
    completion = sample_independently(*files, record)
    assert completion.strip()
    assert out.stdout == f"The history of{completion}\n\n"


@pytest.mark.parametrize(
    ("stage", "name"), [("train", "model.safetensors"), ("generate", "generated.txt")]
)
def test_an_artifact_changed_after_its_stage_committed_is_not_published(run_job, published_run,
                                                                         stage, name):  # fmt: skip
    """Publish copies only bytes that match their stage's manifest; latest stays unmoved."""
    from sparklm.runtime.errors import PipelineError
    from sparklm.runtime.stages import listed_files, read_manifest

    root, registry = published_run
    [entry] = listed_files(read_manifest(root, stage), name)
    path = Path(entry["uri"].removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit, at the end: past the safetensors header, so only the sum tells
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=f"{name} no longer matches the checksum"):
        publish(run_job, root, registry)
    assert not Path(registry.removeprefix("file://"), "wiki-gpt", "latest.json").exists()


def test_a_new_version_is_gated_against_a_version_older_code_published(run_job, published_run,
                                                                       tmp_path):  # fmt: skip
    """The gate scores the latest published by commit 43cd560 on its evaluation set, read by
    the checksums its run.json recorded, and compares: registries outlive the code."""
    root, _ = published_run
    registry = tmp_path / "old-registry"
    shutil.copytree(REPO / "tests" / "data" / "written-by-43cd560" / "registry", registry)
    pointer = registry / "old-gpt" / "latest.json"
    old = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**old, "uri": f"file://{registry}/old-gpt/{old['version']}"}))
    manifest = run_job("publish", ["--run-root", root, "--registry", f"file://{registry}",
                                   "--model-name", "old-gpt"])  # fmt: skip
    decision = read_json(f"{manifest['stats']['version_uri']}/promotion.json")
    assert decision["compared_to"] == old["version"]
    assert decision["evaluation"]["latest"]["bits_per_byte"] == pytest.approx(
        old["eval_bpb"], rel=1e-4
    )
    assert decision["evaluation"]["set"]["sha256"] == old["eval_sha256"]
