"""Continued training (``--init-from``): tokenize reuses a published version's tokenizer, train
starts from its weights and shape, publish records the lineage and still gates against latest."""

import json

import pytest
import torch
from safetensors.torch import load

from helpers.jobs import copy_stages, load_job
from sparklm.registry.lineage import LineageError
from sparklm.runtime import storage

# Not the model's shape (that comes from the version), only how long and how fast to train: one
# step at a learning rate so small that the weights stay the version's.
STAND_STILL = ["--partitions", "2", "--rounds", "1", "--local-steps", "1", "--batch-size", "4",
               "--eval-tokens", "8192", "--muon-adamw-lr", "1e-9", "--muon-lr", "1e-9"]  # fmt: skip


def read_json(uri):
    return json.loads(storage.read_bytes(uri))


def weights(uri):
    return load(storage.read_bytes(uri))


@pytest.fixture(scope="module")
def parent(trained_run, tmp_path_factory):
    """``trained_run`` with generations, published as the first version of a fresh registry
    (once for this module: the tests only read it, or publish a child beside it)."""
    folder = tmp_path_factory.mktemp("parent")
    root = copy_stages(trained_run, folder / "run", ("preprocess", "tokenize", "train"))
    load_job("generate").main(["--run-root", root, "--prompt", "The", "--max-new-tokens", "4"])
    registry = f"file://{folder / 'registry'}"
    published = load_job("publish").main(["--run-root", root, "--registry", registry,
                                          "--model-name", "wiki-gpt"])  # fmt: skip
    return published["stats"]["version_uri"], registry


def test_a_continued_run_starts_from_the_versions_tokenizer_and_weights(
    run_job, parent, wikitext_run, copy_run
):
    version, registry = parent
    root = copy_run(wikitext_run, ("preprocess",), name="continued")

    tokenized = run_job("tokenize_corpus", ["--run-root", root, "--init-from", version])
    assert tokenized["stats"]["tokenizer_from"]["uri"] == f"{version}/tokenizer.json"
    assert tokenized["stats"]["distinct_pretokens"] is None  # no vocabulary was learned
    assert storage.read_bytes(f"{root}/tokenize/tokenizer.json") == storage.read_bytes(
        f"{version}/tokenizer.json")  # fmt: skip

    trained = run_job("train", ["--run-root", root, "--init-from", version, *STAND_STILL])
    config = read_json(f"{version}/config.json")
    assert trained["params"]["model"] == config  # the version's shape, not the defaults
    before, after = (
        weights(f"{version}/model.safetensors"),
        weights(f"{root}/train/model.safetensors"),
    )
    assert before.keys() == after.keys()
    for name in before:  # a from-scratch model would differ everywhere
        torch.testing.assert_close(after[name], before[name], atol=1e-5, rtol=0)
    parent_metrics = read_json(f"{version}/run.json")["lineage"]
    assert parent_metrics["parent"] is None
    lineage = trained["stats"]["init_from"]
    assert lineage["version"] == version.rsplit("/", 1)[-1] and lineage["uri"] == version
    assert lineage["tokens_trained_total"] == parent_metrics["tokens_trained_total"]
    assert trained["stats"]["tokens_trained_total"] == (
        parent_metrics["tokens_trained_total"] + trained["stats"]["tokens_trained"])  # fmt: skip

    run_job("generate", ["--run-root", root, "--prompt", "The", "--max-new-tokens", "4"])
    published = run_job("publish", ["--run-root", root, "--registry", registry,
                                    "--model-name", "wiki-gpt", "--version", "child"])  # fmt: skip
    child = published["stats"]["version_uri"]
    record = read_json(f"{child}/run.json")
    assert record["lineage"]["parent"]["version"] == lineage["version"]
    assert record["params"]["train"]["init_from"] == version
    assert published["stats"]["compared_to"] == lineage["version"]  # gated against latest
    card = storage.read_bytes(f"{child}/MODEL_CARD.md").decode()
    assert f"Continued from version `{lineage['version']}`" in card
    assert f"{trained['stats']['tokens_trained_total']:,} tokens trained in all" in card


def test_train_refuses_tokens_another_tokenizer_encoded(run_job, parent, wikitext_run, copy_run):
    """wikitext_run's tokenize learned its own vocabulary: the version's weights would read
    those ids as other tokens."""
    version, _ = parent
    root = copy_run(wikitext_run, name="own-vocabulary")
    with pytest.raises(LineageError, match="were not encoded with that version's tokenizer"):
        run_job("train", ["--run-root", root, "--init-from", version, *STAND_STILL])
    assert not storage.exists(f"{root}/train/manifest.json")


@pytest.mark.parametrize(
    ("job", "flags", "message"),
    [("train", ["--n-layer", "3"], "--n-layer is 3, but version .* has n_layer 2"),
     ("tokenize_corpus", ["--vocab-size", "1000"],
      "--vocab-size is 1000, but version .* has vocab_size 512")],
)  # fmt: skip
def test_a_setting_that_contradicts_the_versions_shape_is_refused(
    run_job, parent, wikitext_run, copy_run, job, flags, message
):
    version, _ = parent
    root = copy_run(wikitext_run, name="contradicting")
    with pytest.raises(LineageError, match=message):
        run_job(job, ["--run-root", root, "--init-from", version, *flags])
