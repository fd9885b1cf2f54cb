"""Hostile or careless inputs, through the real jobs: each ends in one ERROR line and exit 2
(or 1 when a retry can help), and nothing outside the run root changes."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.corpora import small_corpus, write_text
from helpers.jobs import TINY, copy_stages, load_job, spark_submit
from helpers.oracles import tree_checksums
from helpers.paths import REPO
from sparklm.data import tokenizer as bpe
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.weights import model_bytes
from sparklm.registry.versions import write_latest
from sparklm.runtime import entrypoint
from sparklm.runtime.stages import read_manifest

TINY_TRAIN = [*TINY, "--partitions", "2", "--rounds", "1", "--local-steps", "2"]


@pytest.fixture(scope="module")
def tokenized(spark, tmp_path_factory) -> str:
    """A small corpus preprocessed and tokenized, to copy into each test's run root."""
    base = tmp_path_factory.mktemp("hostile")
    root = f"file://{base / 'run'}"
    corpus = small_corpus(base / "corpus", documents=20)
    load_job("preprocess").main(["--run-root", root, "--input", str(corpus)])
    load_job("tokenize_corpus").main(["--run-root", root, "--vocab-size", "300"])
    return root


@pytest.fixture(scope="module")
def generated(tokenized, tmp_path_factory) -> str:
    """``tokenized`` plus a one-round model and its generations: everything publish reads."""
    root = copy_stages(tokenized, tmp_path_factory.mktemp("generated"), ("preprocess", "tokenize"))
    load_job("train").main(["--run-root", root, *TINY_TRAIN])
    load_job("generate").main(["--run-root", root, "--prompt", "The", "--max-new-tokens", "4"])
    return root


@pytest.fixture
def victim(tmp_path) -> Path:
    """Someone's files next to the run: no job may change them."""
    folder = tmp_path / "victim"
    write_text(folder / "secret.txt", "api-key-do-not-copy")
    write_text(folder / "papers" / "draft.tex", "years of work")
    return folder


def run_in_process(capsys, job: str, *argv) -> tuple[int, list[str]]:
    """Run a job's entry point as its ``__main__`` does; its exit status and ERROR lines."""
    with pytest.raises(SystemExit) as exit_info:
        entrypoint.run(load_job(job).main, [str(a) for a in argv])
    return exit_info.value.code, error_lines(capsys.readouterr().err)


def replace_committed_file(stage: Path, name: str, data: bytes) -> None:
    """Replace a committed file and its checksum in the stage's manifest, as someone who
    tampers with a stage consistently would."""
    (stage / name).write_bytes(data)
    manifest = json.loads((stage / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (stage / "manifest.json").write_text(json.dumps(manifest))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ERROR:")]


def test_train_never_clears_a_stage_folder_it_did_not_create(capsys, tokenized, tmp_path, victim):
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    for path in victim.rglob("*.*"):  # the user's files sit where train would clear
        write_text(tmp_path / "run" / "train" / path.relative_to(victim), path.read_bytes())
    before = tree_checksums(tmp_path / "run" / "train")
    code, errors = run_in_process(capsys, "train", "--run-root", root, *TINY_TRAIN)
    assert code == 2 and len(errors) == 1
    assert "train already exists and holds files the pipeline did not write" in errors[0]
    assert tree_checksums(tmp_path / "run" / "train") == before


def test_a_symlinked_stage_folder_is_refused_and_its_target_kept(capsys, tmp_path, victim):
    corpus = small_corpus(tmp_path / "corpus", documents=20)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "preprocess").symlink_to(victim, target_is_directory=True)
    before = tree_checksums(victim)
    code, errors = run_in_process(capsys, "preprocess", "--run-root", f"file://{tmp_path}/run",
                                  "--input", corpus)  # fmt: skip
    assert code == 2 and "preprocess is a symbolic link" in errors[0]
    assert tree_checksums(victim) == before


@pytest.mark.parametrize("run_root", ["file:////", "file:///", "/", "LINK"])
def test_run_roots_that_are_not_the_runs_own_are_refused(capsys, tmp_path, victim, run_root):
    (tmp_path / "link").symlink_to(victim, target_is_directory=True)
    run_root = run_root.replace("LINK", f"file://{tmp_path}/link")
    before = tree_checksums(victim)
    code, errors = run_in_process(capsys, "preprocess", "--run-root", run_root, "--input", "x.txt")
    assert code == 2 and ("filesystem root" in errors[0] or "symbolic link" in errors[0])
    assert tree_checksums(victim) == before


def test_publish_never_copies_a_file_a_manifest_points_outside_its_stage(
    capsys, generated, tmp_path, victim
):
    root = copy_stages(generated, tmp_path / "run", ("preprocess", "tokenize", "train", "generate"))
    manifest_path = tmp_path / "run" / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    [entry] = [f for f in manifest["files"] if f["path"] == "model.safetensors"]
    depth = len((tmp_path / "run" / "train").relative_to(tmp_path).parts) + 1
    entry["path"] = "model.safetensors/" + "../" * depth + "victim/secret.txt"
    entry["sha256"] = hashlib.sha256((victim / "secret.txt").read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    registry = tmp_path / "registry"
    code, errors = run_in_process(capsys, "publish", "--run-root", root, "--registry",
                                  f"file://{registry}", "--model-name", "m")  # fmt: skip
    assert code == 2 and "is not a plain relative path inside" in errors[0]
    assert not registry.exists()


def test_publish_refuses_weights_that_disagree_with_their_config(capsys, generated, tmp_path):
    root = copy_stages(generated, tmp_path / "run", ("preprocess", "tokenize", "train", "generate"))
    train = tmp_path / "run" / "train"
    config = json.loads((train / "config.json").read_text())
    wider = json.dumps({**config, "n_embd": config["n_embd"] * 2}).encode()
    replace_committed_file(train, "config.json", wider)
    registry = tmp_path / "registry"
    code, errors = run_in_process(capsys, "publish", "--run-root", root, "--registry",
                                  f"file://{registry}", "--model-name", "m")  # fmt: skip
    assert code == 2 and "the weights do not match config.json" in errors[0]
    assert not registry.exists()


def test_publish_refuses_a_model_whose_weights_are_not_finite(capsys, generated, tmp_path):
    """One ERROR line and exit 2 (not a JSON error with a traceback, retried), nothing promoted."""
    import torch

    root = copy_stages(generated, tmp_path / "run", ("preprocess", "tokenize", "train", "generate"))
    train = tmp_path / "run" / "train"
    model = GPT(GPTConfig.from_dict(json.loads((train / "config.json").read_text())))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    replace_committed_file(train, "model.safetensors", model_bytes(model))
    registry = tmp_path / "registry"
    code, errors = run_in_process(capsys, "publish", "--run-root", root, "--registry",
                                  f"file://{registry}", "--model-name", "m")  # fmt: skip
    assert code == 2 and len(errors) == 1
    assert "its weights are not finite numbers" in errors[0]
    assert not (registry / "m" / "latest.json").exists()
    assert not list(registry.glob("m/*/promotion.json"))  # no version is complete


def test_a_directory_corpus_never_reads_hidden_files(capsys, tmp_path):
    home = tmp_path / "home"
    small_corpus(home, documents=20)
    write_text(home / ".aws" / "credentials", "[default]\naws_secret_access_key = AKIAHIDDEN1\n")
    write_text(home / ".ssh" / "id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY----- HIDDEN2\n")
    root = f"file://{tmp_path / 'run'}"
    manifest = load_job("preprocess").main(["--run-root", root, "--input", str(home)])
    assert manifest["stats"]["input"]["files"] == 1
    shards = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*.parquet"))
    assert b"HIDDEN" not in shards


@pytest.mark.parametrize(
    ("corpus", "flags", "message"),
    [
        ("HOME/.aws/credentials", [], "hidden folder or file '.aws'"),
        ("HOME/.ssh", [], "hidden folder or file '.ssh'"),
        ("pkg://sparklm/../conf/prompts.txt", [], "inside its package"),
        ("pkg://gensim/../../../../../etc/hostname", [], "inside its package"),
        ("HOME/notes.txt", ["--allowed-corpus-prefixes", "s3://corpora/"],
         "outside the allowed locations"),
    ],
)  # fmt: skip
def test_corpora_outside_what_the_deployment_allows_are_refused(capsys, tmp_path, corpus, flags,
                                                                message):  # fmt: skip
    home = tmp_path / "home"
    write_text(home / "notes.txt", " = A = \nsome notes about things\n")
    write_text(home / ".aws" / "credentials", "secret")
    write_text(home / ".ssh" / "id_ed25519", "secret")
    root = tmp_path / "run"
    code, errors = run_in_process(capsys, "preprocess", "--run-root", f"file://{root}", "--input",
                                  corpus.replace("HOME", str(home)), *flags)  # fmt: skip
    assert code == 2 and len(errors) == 1 and message in errors[0]
    assert not (root / "preprocess").exists()


@pytest.mark.parametrize(
    "size",
    [["--n-embd", "512", "--n-head", "8", "--n-layer", "4", "--memory-budget-gb", "0.5"],
     ["--context-len", "8192", "--n-layer", "96", "--n-embd", "8192", "--n-head", "64"]],
)  # fmt: skip
def test_a_model_over_the_memory_budget_is_refused_before_allocating(capsys, tokenized, tmp_path,
                                                                     size):  # fmt: skip
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    code, errors = run_in_process(capsys, "train", "--run-root", root, *TINY, *size)
    assert code == 2 and "over the memory budget" in errors[0] and "Lower --batch-size" in errors[0]
    assert not (tmp_path / "run" / "train").exists()


def test_more_training_tokens_than_a_replica_can_hold_are_refused_naming_partitions(
    capsys, tokenized, tmp_path
):
    """A replica holds its token range in memory (4 bytes a token): a corpus that would not fit
    the budget beside the model is refused before any shard is read, naming --partitions."""
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    manifest = tmp_path / "run" / "tokenize" / "manifest.json"
    committed = json.loads(manifest.read_text())
    committed["stats"]["train"]["tokens"] = 3 * 10**9  # as a 3-billion-token corpus says
    manifest.write_text(json.dumps(committed))
    code, errors = run_in_process(capsys, "train", "--run-root", root, *TINY, "--partitions", "1")
    assert code == 2 and "beside 3,000,000,000 training tokens per replica" in errors[0]
    assert "over the memory budget of 8 GB" in errors[0] and "raise --partitions" in errors[0]
    assert not (tmp_path / "run" / "train").exists()


def registry_version(registry: Path, version: str, config: GPTConfig, weights_config: GPTConfig):
    """A version folder of model ``m`` with a real tokenizer, weights and a config.json."""
    folder = registry / "m" / version
    write_text(folder / "model.safetensors", model_bytes(GPT(weights_config)))
    write_text(folder / "config.json", json.dumps(config.to_dict()))
    tokenizer = bpe.train_from_counts({"hello": 5, "world": 3, " the": 7}, 300)
    write_text(folder / "tokenizer.json", tokenizer.to_str())
    return folder


def sample_from_registry(registry: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.generate", "--registry", f"file://{registry}",
         "--model-name", "m", "--prompt", "hello", "--max-new-tokens", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_sampling_a_registry_checks_the_header_and_the_pointer_first(tmp_path, victim):
    small = GPTConfig(vocab_size=300, context_len=16, n_layer=1, n_head=2, n_embd=16)
    wider = GPTConfig(vocab_size=300, context_len=16, n_layer=1, n_head=2, n_embd=32)
    registry = tmp_path / "registry"
    registry_version(registry, "v1", wider, small)  # config.json disagrees with the weights
    write_latest(f"file://{registry}", "m", {"version": "v1", "uri": f"file://{registry}/m/v1"})
    done = sample_from_registry(registry)
    assert done.returncode == 2 and "the weights do not match config.json" in done.stderr

    outside = registry_version(victim, "v1", small, small)  # a loadable model elsewhere
    write_latest(f"file://{registry}", "m", {"version": "v1", "uri": f"file://{outside}"})
    before = tree_checksums(victim)
    done = sample_from_registry(registry)
    assert done.returncode == 2, done.stdout
    assert "is not a version folder of its own registry" in error_lines(done.stderr)[0]
    assert tree_checksums(victim) == before


def test_a_spark_task_running_out_of_memory_fails_without_retry(tokenized, tmp_path, victim):
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    before = tree_checksums(victim)
    done = spark_submit("train.py", "--run-root", root, *TINY_TRAIN,
                        env={"LLM_FAULT": "train:replica:python"})  # fmt: skip
    assert done.returncode == 2, done.stdout[-3000:]
    [error] = error_lines(done.stdout)
    assert "a Spark task ran out of memory (MemoryError)" in error
    assert "lower --batch-size, --context-len" in error and "spark.executor.memory" in error
    with pytest.raises(Exception, match="not complete"):
        read_manifest(root, "train")
    assert tree_checksums(victim) == before


def test_a_torch_allocation_failure_fails_without_retry(tokenized, tmp_path):
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    done = spark_submit("train.py", "--run-root", root, *TINY_TRAIN,
                        env={"LLM_FAULT": "train:model:torch"})  # fmt: skip
    assert done.returncode == 2, done.stdout[-3000:]
    [error] = error_lines(done.stdout)
    assert "could not allocate memory for torch (DefaultCPUAllocator" in error


def test_a_java_out_of_memory_ends_spark_submit_with_exit_52(tokenized, tmp_path):
    """What SparkJobOperator turns into a failure without retry (tests/airflow)."""
    root = copy_stages(tokenized, tmp_path / "run", ("preprocess", "tokenize"))
    done = spark_submit("train.py", "--run-root", root, *TINY_TRAIN,
                        env={"LLM_FAULT": "train:session:jvm"})  # fmt: skip
    assert done.returncode == 52, done.stdout[-3000:]
    assert "java.lang.OutOfMemoryError" in done.stdout


def test_a_malformed_xml_dump_fails_without_retry(tmp_path, victim):
    dump = write_text(tmp_path / "corpus" / "dump.xml", (
        "<mediawiki><page><title>A</title><ns>0</ns><id>1</id><revision><text>Some article "
        "text that is long enough.</text></revision></page><page><title>B</title><ns>0</ns>\n"
        "<id>2</id><revision><text>Cut off"))  # fmt: skip
    before = tree_checksums(victim)
    done = spark_submit("preprocess.py", "--run-root", f"file://{tmp_path}/run", "--input", dump)
    assert done.returncode == 2, done.stdout[-3000:]
    [error] = error_lines(done.stdout)
    assert error.startswith("ERROR: ") and "dump.xml is not well-formed XML (" in error, error
    assert not (tmp_path / "run" / "preprocess" / "manifest.json").exists()
    assert tree_checksums(victim) == before


def test_a_transient_task_failure_stays_retryable(tmp_path):
    """A task that fails for no reason of its input (here: injected, plain local[2] gives it
    one attempt) exits 1, so Airflow retries it."""
    corpus = small_corpus(tmp_path / "corpus", documents=20)
    done = spark_submit("preprocess.py", "--run-root", f"file://{tmp_path}/run", "--input",
                        corpus, env={"LLM_FAULT": "preprocess:read-task"})  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    assert error_lines(done.stdout) == []
