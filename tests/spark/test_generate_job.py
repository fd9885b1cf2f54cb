"""The generate job: prompts over partitions, reproducible sampling, clear prompt errors."""

import pytest

from helpers.oracles import generated_records, sample_independently
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import listed_files, read_manifest


def test_prompts_file_and_inline_prompts_are_all_completed(run_job, trained_run, copy_run,
                                                           tmp_path):  # fmt: skip
    root = copy_run(trained_run, ("preprocess", "tokenize", "train"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The history of\n\n = Robert Boulter = \nIn 1990 ,\n", encoding="utf-8")
    argv = [
        "--run-root",
        root,
        "--prompts",
        prompts,
        "--prompt",
        "The lobster",
        "--prompts-json",
        '["Its album"]',
        "--max-new-tokens",
        "24",
        "--seed",
        "5",
    ]
    manifest = run_job("generate", argv)
    got = generated_records(manifest)
    assert [r["prompt"] for r in got] == [
        "The history of",
        "= Robert Boulter =",
        "In 1990 ,",
        "The lobster",
        "Its album",
    ]
    assert all(0 < r["new_tokens"] <= 24 and r["completion"] for r in got)
    assert all(r["temperature"] == 0.8 and r["top_k"] == 50 for r in got)
    assert [r["seed"] for r in got] == [5, 6, 7, 8, 9]
    # The recorded seed is the one used: sampling each prompt again here with it gives the same.
    assert [resample(root, r) for r in got] == [r["completion"] for r in got]
    [text] = listed_files(manifest, "generated.txt")
    assert "The history of" in storage.read_bytes(text["uri"]).decode()

    again = generated_records(run_job("generate", argv))
    assert [r["completion"] for r in again] == [r["completion"] for r in got]


def resample(root: str, record: dict) -> str:
    """``record``'s completion sampled again in this process from the run's model."""
    [weights] = listed_files(read_manifest(root, "train"), "model.safetensors")
    [config] = listed_files(read_manifest(root, "train"), "config.json")
    [tokenizer] = listed_files(read_manifest(root, "tokenize"), "tokenizer.json")
    return sample_independently(weights["uri"], config["uri"], tokenizer["uri"], record)


def test_greedy_decoding_is_deterministic_and_independent_of_the_seed(run_job, trained_run,
                                                                      copy_run):  # fmt: skip
    root = copy_run(trained_run, ("preprocess", "tokenize", "train"))
    base = [
        "--run-root",
        root,
        "--prompt",
        "The history of",
        "--temperature",
        "0",
        "--max-new-tokens",
        "16",
    ]
    a = generated_records(run_job("generate", [*base, "--seed", "1"]))
    b = generated_records(run_job("generate", [*base, "--seed", "2"]))
    assert a[0]["completion"] == b[0]["completion"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompts", "/no/such/prompts.txt"], "prompts file .* does not exist"),
        (["--prompts", "EMPTY"], "no prompts"),
        (["--prompts-json", "{not json"], "--prompts-json must be a JSON list of strings"),
        (["--prompt", "x", "--top-p", "0"], "--top-p must be > 0 and <= 1, got 0"),
    ],
)
def test_bad_prompt_input_is_refused(run_job, trained_run, tmp_path, extra, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    with pytest.raises(PipelineError, match=message):
        run_job("generate", ["--run-root", trained_run, *extra])
