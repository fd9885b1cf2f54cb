"""Faults really injected: killed stages, a failing Spark task, S3 going away, reruns."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.corpora import small_corpus, write_text
from helpers.jobs import TINY, copy_stages, load_dag, load_job, spark_submit
from helpers.paths import JOBS
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import StageNotCommitted, read_manifest

TINY_TRAIN = [*TINY, "--partitions", "2"]


def files(root: str, stage: str) -> list[dict]:
    return read_manifest(root, stage)["files"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A corpus and an undisturbed preprocess + tokenize of it: the reference for this module."""
    base = tmp_path_factory.mktemp("faults")
    corpus = small_corpus(base / "corpus", documents=20)
    root = f"file://{base / 'clean'}"
    for script, args in STAGE_ARGS.items():
        done = spark_submit(script, "--run-root", root, *args(corpus))
        assert done.returncode == 0, done.stdout[-2000:]
    return corpus, root


STAGE_ARGS = {
    "preprocess.py": lambda corpus: ["--input", str(corpus)],
    "tokenize_corpus.py": lambda corpus: ["--vocab-size", "300"],
}


@pytest.mark.parametrize(
    ("stage", "script"), [("preprocess", "preprocess.py"), ("tokenize", "tokenize_corpus.py")]
)
def test_a_stage_killed_before_its_commit_leaves_no_manifest_and_reruns_cleanly(
    clean_run, tmp_path, stage, script
):  # fmt: skip
    corpus, clean = clean_run
    upstream = ["preprocess"] if stage == "tokenize" else []
    crashed = copy_stages(clean, tmp_path / "crashed", upstream)
    args = STAGE_ARGS[script](corpus)

    killed = spark_submit(script, "--run-root", crashed, *args,
                          env={"LLM_FAULT": f"{stage}:before-commit"})  # fmt: skip
    assert killed.returncode != 0
    written = list((tmp_path / "crashed" / stage).rglob("part-*"))
    assert written, "the job died after writing data files"
    with pytest.raises(StageNotCommitted):  # downstream refuses the half-written stage
        read_manifest(crashed, stage)

    rerun = spark_submit(script, "--run-root", crashed, *args)
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    assert files(crashed, stage) == files(clean, stage)


def test_a_spark_task_failing_once_is_retried_with_an_identical_result(clean_run, tmp_path):
    corpus, clean = clean_run
    flaky = f"file://{tmp_path / 'flaky'}"
    # local[2,4]: two cores, up to four attempts per task (plain local[N] never retries).
    result = spark_submit("preprocess.py", "--run-root", flaky, "--input", corpus,
                          master="local[2,4]",
                          env={"LLM_FAULT": "preprocess:read-task"})  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert "injected task failure at preprocess:read-task" in result.stdout
    assert files(flaky, "preprocess") == files(clean, "preprocess")


def test_train_survives_the_s3_server_restarting_mid_run(s3_server, wikitext_run, tmp_path):
    root = s3_server.uri("runs", "s3-restart")
    for stage in ("preprocess", "tokenize"):
        for path in Path(wikitext_run.removeprefix("file://"), stage).rglob("*"):
            if path.is_file():
                relative = path.relative_to(wikitext_run.removeprefix("file://"))
                storage.write_bytes(f"{root}/{relative}", path.read_bytes())
    process = subprocess.Popen(
        ["spark-submit", "--master", "local[2]", str(JOBS / "train.py"), "--run-root", root,
         *TINY_TRAIN, "--rounds", "8", "--local-steps", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = s3_server.client()
    key = "runs/s3-restart/train/checkpoints/latest.json"
    deadline = time.monotonic() + 300
    while True:  # wait until training is under way, then pull the server out from under it
        assert process.poll() is None and time.monotonic() < deadline
        try:
            if json.loads(client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())[
                    "round"] >= 2:  # fmt: skip
                break
        except client.exceptions.NoSuchKey:
            pass
        time.sleep(0.2)
    s3_server.stop()
    time.sleep(4)
    s3_server.start()
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert read_manifest(root, "train")["stats"]["final"]["round"] == 8


def test_unreachable_s3_fails_with_a_clear_retryable_error(tmp_path):
    result = spark_submit(
        "tokenize_corpus.py", "--run-root", "s3://nowhere/run",
        env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "LLM_S3_MAX_ATTEMPTS": "2"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "ERROR: storage unreachable at http://127.0.0.1:9 after 2 attempts" in result.stdout
    # The attempts themselves are counted in unit/test_storage.py (LLM_S3_MAX_ATTEMPTS).


def test_publish_killed_before_moving_latest_publishes_nothing_half_done(
    run_job, trained_run, copy_run, tmp_path
):
    root = copy_run(trained_run, ("preprocess", "tokenize", "train"))
    run_job("generate", ["--run-root", root, "--prompt", "The", "--max-new-tokens", "4"])
    registry = f"file://{tmp_path / 'registry'}"
    args = ["--run-root", root, "--registry", registry, "--model-name", "m"]
    killed = spark_submit("publish.py", *args, env={"LLM_FAULT": "publish:before-latest"})
    assert killed.returncode != 0
    assert not (tmp_path / "registry" / "m" / "latest.json").exists()
    with pytest.raises(StageNotCommitted):
        read_manifest(root, "publish")
    assert spark_submit("publish.py", *args).returncode == 0
    latest = read_latest(f"file://{tmp_path / 'registry'}", "m")
    assert latest["version"] == read_manifest(root, "publish")["params"]["version"]


def test_killed_train_task_is_retried_by_airflow_and_resumes(airflow_db, monkeypatch, tmp_path,
                                                             wikitext_run, capfd):  # fmt: skip
    """SIGKILL the train task's spark-submit mid-round; Airflow's retry resumes it."""
    import psutil

    monkeypatch.setenv("LLM_RETRY_DELAY_SECONDS", "1")
    dag = load_dag()
    run_dir = tmp_path / "run"
    copy_stages(wikitext_run, run_dir, ("preprocess", "tokenize"))
    latest = run_dir / "train" / "checkpoints" / "latest.json"
    killed = []

    def kill_train_after_first_round():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            if latest.exists() and json.loads(latest.read_text())["round"] >= 1:
                for proc in psutil.process_iter(["cmdline"]):
                    cmdline = " ".join(proc.info["cmdline"] or [])
                    # This run's train job only: other Spark jobs on the machine are not ours.
                    ours = f"train.py --run-root file://{run_dir}"
                    if "SparkSubmit" in cmdline and ours in cmdline:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_train_after_first_round, daemon=True)
    killer.start()
    conf = {"run_root": f"file://{run_dir}", "registry": f"file://{tmp_path / 'registry'}",
            "vocab_size": 512, "partitions": 2, "rounds": 4, "local_steps": 4, "batch_size": 4,
            "context_len": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, "eval_tokens": 512,
            "max_new_tokens": 8}  # fmt: skip
    # Only train runs for real: its inputs are committed, and what follows it is not the point.
    run = dag.test(
        run_conf=conf, mark_success_pattern=r"local\.(preprocess|tokenize|generate|publish)"
    )
    killer.join(timeout=5)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert killed, "the train task was never killed"
    assert run.state == "success", {k: v.state for k, v in tis.items()}
    assert tis["local.train"].try_number == 2
    # Equal weights alone would not show a resume: training is deterministic from round 0 too.
    log = capfd.readouterr()
    assert "train: resuming after round" in log.out + log.err
    assert read_manifest(f"file://{run_dir}", "train")["stats"]["final"]["round"] == 4
    uninterrupted = tmp_path / "straight"
    copy_stages(f"file://{run_dir}", uninterrupted, ("preprocess", "tokenize"))
    load_job("train").main(["--run-root", f"file://{uninterrupted}", *TINY_TRAIN,
                            "--rounds", "4", "--local-steps", "4"])  # fmt: skip
    weights = [f for f in files(f"file://{run_dir}", "train") if f["path"] == "model.safetensors"]
    assert weights == [f for f in files(f"file://{uninterrupted}", "train")
                       if f["path"] == "model.safetensors"]  # fmt: skip


def two_stages(corpus: Path, root: str) -> subprocess.Popen:
    """preprocess then tokenize ``corpus`` into ``root`` with spark-submit, in the background,
    as ``clean_run`` does (``STAGE_ARGS``, local[2])."""
    commands = [
        f"spark-submit --master local[2] {JOBS}/{script} --run-root {root} "
        + " ".join(map(str, args(corpus)))
        for script, args in STAGE_ARGS.items()
    ]
    return subprocess.Popen(["bash", "-c", " && ".join(commands)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def other_corpus(directory: Path, documents: int) -> Path:
    """A corpus in the same layout as ``small_corpus`` but of other words, so that its
    vocabulary differs: two corpora of one template can learn the very same 300 tokens."""
    lines = []
    for d in range(documents):
        lines += ["", f" = Essay {d} = ", ""]
        lines += [f" Quick brown foxes jump over lazy dogs while zebras yawn , essay {d} line {p} ."
                  for p in range(4)]  # fmt: skip
    return write_text(directory / "corpus.txt", "\n".join(lines) + "\n")


def test_two_runs_at_once_do_not_interfere(clean_run, tmp_path):
    """Two pipelines on two run roots at the same time each get exactly their own data: the
    very files the same pipeline wrote into another run root when it ran alone (``clean_run``,
    whose corpus run b reads)."""
    corpus, alone = clean_run
    roots = {"a": f"file://{tmp_path / 'a'}", "b": f"file://{tmp_path / 'b'}"}
    corpora = {"a": other_corpus(tmp_path / "corpus-a", documents=12), "b": corpus}
    for process in [two_stages(corpora[name], roots[name]) for name in roots]:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-2000:]
    for name, documents in (("a", 12), ("b", 20)):
        pre, tok = read_manifest(roots[name], "preprocess"), read_manifest(roots[name], "tokenize")
        assert pre["stats"]["train"]["documents"] + pre["stats"]["val"]["documents"] == documents
        assert tok["inputs"]["preprocess"]["manifest"] == f"{roots[name]}/preprocess/manifest.json"
    for stage in ("preprocess", "tokenize"):
        assert files(roots["b"], stage) == files(alone, stage), stage
    # Run a learned its own vocabulary from its own corpus: state shared between runs (a
    # tokenizer cached outside the run root) would hand both runs one.
    [tokenizer_a, tokenizer_b] = [[f["sha256"] for f in files(roots[name], "tokenize")
                                   if f["path"] == "tokenizer.json"] for name in roots]  # fmt: skip
    assert tokenizer_a and tokenizer_a != tokenizer_b
