"""Promotion on the same bytes: the candidate and the current latest are both scored on the
registry's evaluation set, whatever corpus each was trained on."""

import json

import pytest

from helpers.corpora import small_corpus
from helpers.jobs import copy_stages, load_job
from sparklm.runtime import storage

SMALL_MODEL = ["--context-len", "64", "--n-layer", "1", "--n-head", "2", "--n-embd", "64",
               "--batch-size", "16", "--muon-adamw-lr", "3e-3", "--warmup-steps", "5",
               "--partitions", "2", "--rounds", "3", "--local-steps", "20",
               "--eval-tokens", "4096"]  # fmt: skip


def prepare(root: str, corpus: str, vocab_size: int) -> str:
    """preprocess → tokenize ``corpus`` into ``root``, in process."""
    load_job("preprocess").main(["--run-root", root, "--input", corpus])
    load_job("tokenize_corpus").main(["--run-root", root, "--vocab-size", str(vocab_size)])
    return root


def train_and_generate(root: str) -> str:
    """train → generate on a prepared run root, in process."""
    load_job("train").main(["--run-root", root, *SMALL_MODEL])
    load_job("generate").main(["--run-root", root, "--prompt", "The history of",
                               "--max-new-tokens", "4"])  # fmt: skip
    return root


@pytest.fixture(scope="module")
def runs(spark, wikitext_run, tmp_path_factory):
    """A model trained on Wikipedia (the bundled dump, tokenized once for the session) and one
    on a small synthetic corpus whose own validation split is far easier than Wikipedia's."""
    base = tmp_path_factory.mktemp("gate")
    wiki = train_and_generate(copy_stages(wikitext_run, base / "wiki", ("preprocess", "tokenize")))
    corpus = small_corpus(base / "corpus", documents=60)
    other = train_and_generate(prepare(f"file://{base / 'other'}", str(corpus), 300))
    return wiki, other, corpus


def publish(root, registry, *extra):
    return load_job("publish").main(["--run-root", root, "--registry", registry,
                                     "--model-name", "wiki-gpt", *extra])  # fmt: skip


def read_json(uri):
    return json.loads(storage.read_bytes(uri))


def own_val_bpb(manifest_stats):
    return manifest_stats["val_bpb"]


def test_a_model_better_on_its_own_split_but_worse_on_the_registry_set_is_not_promoted(
    runs, tmp_path
):  # fmt: skip
    wiki, other, _ = runs
    registry = f"file://{tmp_path / 'registry'}"
    first = publish(wiki, registry)["stats"]
    assert first["promoted"]
    pointer = read_json(f"{registry}/wiki-gpt/evaluation.json")
    assert pointer["source"] == f"validation split of {wiki}"
    assert first["evaluation"]["set"]["sha256"] == pointer["sha256"]

    second = publish(other, registry)["stats"]
    # On its own validation split the other model looks far better …
    assert own_val_bpb(second) < own_val_bpb(first)
    # … but on the registry's evaluation set, the same bytes for both, it is worse.
    scores = second["evaluation"]
    assert scores["set"]["sha256"] == pointer["sha256"]
    assert scores["candidate"]["bytes"] == scores["latest"]["bytes"]
    assert scores["candidate"]["bits_per_byte"] > scores["latest"]["bits_per_byte"]
    assert scores["latest"]["bits_per_byte"] == pytest.approx(
        first["evaluation"]["candidate"]["bits_per_byte"], rel=1e-6)  # fmt: skip
    assert second["promoted"] is False and "worse than latest version" in second["reason"]
    assert read_json(f"{registry}/wiki-gpt/latest.json")["version"] == first["version_uri"].split(
        "/")[-1]  # fmt: skip
    card = storage.read_bytes(f"{second['version_uri']}/MODEL_CARD.md").decode()
    assert pointer["sha256"] in card
    assert f"{scores['candidate']['bits_per_byte']:.4f}" in card
    assert f"{scores['latest']['bits_per_byte']:.4f}" in card


def test_a_candidate_that_cannot_be_scored_is_published_but_not_promoted(runs, tmp_path):
    wiki, other, _ = runs
    registry = f"file://{tmp_path / 'registry'}"
    first = publish(wiki, registry)["stats"]
    for stored in (tmp_path / "registry" / "wiki-gpt" / "evaluation").iterdir():
        stored.unlink()  # the set named by evaluation.json is gone
    second = publish(other, registry)["stats"]
    assert second["promoted"] is False
    promotion = read_json(f"{second['version_uri']}/promotion.json")
    assert promotion["promoted"] is False and "is missing" in promotion["reason"]
    assert storage.exists(f"{second['version_uri']}/model.safetensors")
    latest = read_json(f"{registry}/wiki-gpt/latest.json")
    assert latest["uri"] == first["version_uri"]


def test_an_explicit_evaluation_set_is_used_and_put_in_force_on_promotion(runs, tmp_path):
    wiki, other, corpus = runs
    registry = f"file://{tmp_path / 'registry'}"
    publish(wiki, registry)
    second = publish(other, registry, "--eval-input", str(corpus))["stats"]
    scores = second["evaluation"]
    assert scores["set"]["source"] == str(corpus)
    # On the synthetic corpus's own text the synthetic model wins, and its set takes over.
    assert scores["candidate"]["bits_per_byte"] < scores["latest"]["bits_per_byte"]
    assert second["promoted"] is True
    assert read_json(f"{registry}/wiki-gpt/evaluation.json")["sha256"] == scores["set"]["sha256"]
    assert read_json(f"{registry}/wiki-gpt/latest.json")["eval_sha256"] == scores["set"]["sha256"]


def test_the_published_hf_folder_is_the_trained_model(runs, tmp_path):
    """Real weights and real text: transformers' logits equal ours, and its greedy generation
    is what ``python -m jobs.generate --registry … --temperature 0`` prints."""
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.paths import REPO
    from sparklm.model.weights import load_model

    wiki, _, _ = runs
    registry = f"file://{tmp_path / 'registry'}"
    version = publish(wiki, registry)["stats"]["version_uri"]
    folder = version.removeprefix("file://")
    run = read_json(f"{version}/run.json")
    assert run["hf_export"] == {"exported": True, "folder": "hf",  # the default block
                                "architecture": "Qwen3ForCausalLM"}  # fmt: skip
    assert {a["path"] for a in run["artifacts"]} >= {
        f"hf/{n}"
        for n in (
            "config.json",
            "model.safetensors",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        )
    }
    hf = AutoModelForCausalLM.from_pretrained(f"{folder}/hf").eval()
    tok = AutoTokenizer.from_pretrained(f"{folder}/hf")
    ours = load_model(storage.read_bytes(f"{version}/model.safetensors"),
                      read_json(f"{version}/config.json"))  # fmt: skip
    text = eval_text(registry)
    ids = tok(text, return_tensors="pt")["input_ids"][:, : ours.config.context_len]
    with torch.no_grad():
        diff = (ours(ids)[0] - hf(ids).logits).abs().max().item()
    print(f"qwen3 trained model, real text: max |logit diff| = {diff:.3e}")
    assert diff <= 1e-4

    prompt, new = "The history of", 24
    printed = subprocess.run(
        [sys.executable, "-m", "jobs.generate", "--registry", registry, "--model-name",
         "wiki-gpt", "--prompt", prompt, "--max-new-tokens", str(new), "--temperature", "0"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    out = hf.generate(**tok(prompt, return_tensors="pt"), do_sample=False, max_new_tokens=new)
    assert printed == tok.decode(out[0], skip_special_tokens=True) + "\n\n"


def eval_text(registry: str) -> str:
    pointer = read_json(f"{registry}/wiki-gpt/evaluation.json")
    return read_json_lines(f"{registry}/wiki-gpt/{pointer['file']}")[0]["text"]


def read_json_lines(uri: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_bytes(uri).decode().splitlines()]
