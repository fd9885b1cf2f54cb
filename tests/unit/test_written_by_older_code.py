"""What an older version of the project wrote still loads: a registry version, its evaluation
set, its pointer, a training checkpoint and a config.json, all written by commit 43cd560 (before
the library was regrouped into layers and the settings spec), kept in tests/data."""

import json
import shutil

import pytest

from helpers.paths import REPO
from sparklm.model.decoding import Decoding, generate
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.weights import load_latest_checkpoint, load_model
from sparklm.registry import eval_set as eval_sets
from sparklm.registry.versions import list_versions, read_latest
from sparklm.runtime import storage

WRITTEN = REPO / "tests" / "data" / "written-by-43cd560"
MODEL = "old-gpt"


@pytest.fixture
def registry(tmp_path) -> str:
    """The old registry, copied; its pointer names its absolute location, which moves too."""
    shutil.copytree(WRITTEN / "registry", tmp_path / "registry")
    pointer = tmp_path / "registry" / MODEL / "latest.json"
    latest = json.loads(pointer.read_text())
    latest["uri"] = f"file://{tmp_path}/registry/{MODEL}/{latest['version']}"
    pointer.write_text(json.dumps(latest))
    return f"file://{tmp_path}/registry"


def test_an_old_version_loads_samples_and_shows_in_the_models_view(registry):
    from llm_pipeline.models_view import version_summary

    latest = read_latest(registry, MODEL)
    assert list_versions(registry, MODEL) == [latest["version"]]
    folder = latest["uri"]
    model = load_model(storage.read_bytes(f"{folder}/model.safetensors"),
                       json.loads(storage.read_bytes(f"{folder}/config.json")))  # fmt: skip
    assert len(generate(model, [1, 2, 3], 5, Decoding(temperature=0.0))) == 5
    summary = version_summary(registry, MODEL, latest["version"], latest)
    assert summary["promoted"] is True and summary["is_latest"] and summary["metrics"]
    assert summary["eval_bpb"] == pytest.approx(latest["eval_bpb"])


def test_an_old_evaluation_set_is_still_the_one_in_force(registry):
    pointer = eval_sets.current(registry, MODEL)
    evaluation = eval_sets.load(registry, MODEL, pointer)
    assert evaluation.describe()["sha256"] == read_latest(registry, MODEL)["eval_sha256"]


def test_an_old_checkpoint_resumes(tmp_path):
    shutil.copytree(WRITTEN / "train", tmp_path / "train")
    pointer = json.loads((tmp_path / "train" / "checkpoints" / "latest.json").read_text())
    checkpoint = load_latest_checkpoint(f"file://{tmp_path}/train", pointer["fingerprint"])
    assert checkpoint is not None and checkpoint.round == 2 and checkpoint.step == 6
    config = GPTConfig.from_dict(json.loads((tmp_path / "train" / "config.json").read_text()))
    model = GPT(config)  # the config of the old run builds the model the checkpoint fits
    assert checkpoint.params.numel() == sum(p.numel() for p in model.parameters())
