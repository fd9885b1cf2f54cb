"""The Spark trainer on local[2]: agrees with single-process torch, learns context, resumes."""

import csv
import io
import logging
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.jobs import TINY, TRAINED, load_job
from helpers.oracles import single_process_training
from helpers.paths import JOBS
from sparklm.data.token_shards import read_range
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.training import TrainConfig
from sparklm.model.weights import load_model, parse_safetensors
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import listed_files, read_manifest


def final_weights(root):
    manifest = read_manifest(root, "train")
    [weights] = listed_files(manifest, "model.safetensors")
    return parse_safetensors(storage.read_bytes(weights["uri"]), "weights")


def train_tokens(root):
    tokenize = read_manifest(root, "tokenize")
    dtype = np.dtype(tokenize["stats"]["dtype"])
    shards = listed_files(tokenize, "train/")
    total = tokenize["stats"]["train"]["tokens"]
    return tokenize, torch.from_numpy(read_range(shards, dtype, 0, total))


# The Qwen3 block (the train job's default): rotary positions, RMSNorm, SwiGLU, QK-norm.
QWEN3 = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True}
# GPT-2's block (GPTConfig's own defaults), which the job trains only when asked to.
GPT2 = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False}


def block_flags(switches: dict) -> list[str]:
    """GPTConfig switches as train job flags (booleans as true/false)."""
    return [
        a
        for k, v in switches.items()
        for a in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else v)
    ]


@pytest.mark.parametrize(
    ("optimizer", "block"), [("adamw", GPT2), ("muon", QWEN3)], ids=["adamw-gpt2", "muon-qwen3"]
)
def test_one_partition_averaging_every_step_matches_single_process_torch(
    run_job, wikitext_run, copy_run, optimizer, block
):
    """DL4J's ParameterAveraging-vs-single-machine check, for this trainer: AdamW's moments and
    Muon's momentum buffers go through the averaging every step and must come back intact."""
    root = copy_run(wikitext_run)
    rounds = 6
    run_job("train", ["--run-root", root, *TINY, "--partitions", "1", "--local-steps", "1",
                      "--rounds", rounds, "--warmup-steps", "2", "--optimizer", optimizer,
                      *block_flags(block)])  # fmt: skip
    spark_weights = final_weights(root)

    tokenize, tokens = train_tokens(root)
    cfg = TrainConfig(partitions=1, rounds=rounds, local_steps=1, batch_size=4, warmup_steps=2,
                      optimizer=optimizer)  # fmt: skip
    model_cfg = GPTConfig(vocab_size=tokenize["stats"]["vocab_size"], context_len=32,
                          n_layer=1, n_head=2, n_embd=32, **block)  # fmt: skip
    model = single_process_training(model_cfg, cfg, tokens, seed=cfg.seed)

    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(spark_weights[name], tensor, atol=2e-6, rtol=1e-5)
    assert not torch.equal(spark_weights["lm_head.weight"], GPT(model_cfg).lm_head.weight)


def unigram_entropy(root) -> float:
    tokenize = read_manifest(root, "tokenize")
    dtype = np.dtype(tokenize["stats"]["dtype"])
    val = read_range(listed_files(tokenize, "val/"), dtype, 0, tokenize["stats"]["val"]["tokens"])
    p = np.bincount(val) / len(val)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_validation_loss_falls_well_below_the_unigram_entropy(trained_run):
    """The old model learned word frequencies only (loss stuck at the unigram entropy)."""
    final = read_manifest(trained_run, "train")["stats"]["final"]
    floor = unigram_entropy(trained_run)
    assert final["val_loss"] < floor - 0.5, (final, floor)


def test_metrics_csv_plot_and_model_artifacts(trained_run):
    manifest = read_manifest(trained_run, "train")
    [metrics] = listed_files(manifest, "metrics.csv")
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(metrics["uri"]).decode())))
    assert list(rows[0]) == [
        "round", "inner_steps", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpb",
        "val_acc", "tokens_per_s", "seconds", "lr", "driver_rss_mb", "executor_rss_mb",
    ]  # fmt: skip
    rounds = int(TRAINED[TRAINED.index("--rounds") + 1])
    assert [int(r["round"]) for r in rows] == list(range(1, rounds + 1))
    assert all(math.isfinite(float(v)) for r in rows for v in r.values())
    val = [float(r["val_loss"]) for r in rows]
    assert val[-1] < val[0]
    bpb = float(rows[-1]["val_bpb"])
    stats = read_manifest(trained_run, "tokenize")["stats"]["val"]
    assert bpb == pytest.approx(val[-1] / math.log(2) / stats["bytes_per_token"], rel=1e-4)
    [plot] = listed_files(manifest, "loss.png")
    assert storage.read_bytes(plot["uri"])[:8] == b"\x89PNG\r\n\x1a\n"
    [config] = listed_files(manifest, "config.json")
    [weights] = listed_files(manifest, "model.safetensors")
    import json

    model = load_model(
        storage.read_bytes(weights["uri"]), json.loads(storage.read_bytes(config["uri"]))
    )
    assert model.num_params(non_embedding=False) == manifest["stats"]["parameters"]


def test_rerun_with_the_same_settings_is_idempotent(run_job, wikitext_run, copy_run, caplog):
    """A rerun of a committed train stage retrains nothing and keeps its files; a rerun from
    scratch (the stage removed) trains the very same model again."""
    import shutil

    args = [*TINY, "--partitions", "2", "--rounds", "2", "--local-steps", "3"]
    root = copy_run(wikitext_run)
    before = run_job("train", ["--run-root", root, *args])["files"]
    with caplog.at_level(logging.INFO, logger="sparklm"):
        assert run_job("train", ["--run-root", root, *args])["files"] == before
    assert "train: resuming after round 2 of 2" in caplog.text  # nothing retrained

    shutil.rmtree(root.removeprefix("file://") + "/train")
    again = run_job("train", ["--run-root", root, *args])["files"]
    model = ("model.safetensors", "config.json")  # metrics.csv also holds timings
    assert [f for f in again if f["path"] in model] == [f for f in before if f["path"] in model]


def test_a_rerun_on_s3_resumes_too(run_job, wikitext_run, s3_server, caplog):
    """The same on the S3 server: the committed stage's checkpoints are found, not retrained."""
    args = [*TINY, "--partitions", "2", "--rounds", "2", "--local-steps", "3"]
    root = s3_server.uri("runs", "train-rerun")
    for stage in ("preprocess", "tokenize"):
        for uri in storage.list_files(f"{wikitext_run}/{stage}"):
            storage.write_bytes(root + uri[len(wikitext_run) :], storage.read_bytes(uri))
    before = run_job("train", ["--run-root", root, *args])["files"]
    with caplog.at_level(logging.INFO, logger="sparklm"):
        assert run_job("train", ["--run-root", root, *args])["files"] == before
    assert "train: resuming after round 2 of 2" in caplog.text


def test_nan_loss_fails_clearly_and_checkpoints_nothing(run_job, wikitext_run, copy_run,
                                                        monkeypatch):  # fmt: skip
    root = copy_run(wikitext_run)
    monkeypatch.setenv("LLM_FAULT", "train:loss:round-2")  # the second round's loss is NaN
    diverged = r"diverged in round (\d+): .* Lower --muon-lr"
    with pytest.raises(PipelineError, match=diverged) as error:
        run_job("train", ["--run-root", root, *TINY, "--rounds", "3", "--local-steps", "2"])
    bad_round = int(re.search(r"round (\d+)", str(error.value)).group(1))
    checkpoints = root.removeprefix("file://") + "/train/checkpoints"
    saved = [n for n in os.listdir(checkpoints) if n.startswith("round-")] if os.path.isdir(
        checkpoints) else []  # fmt: skip
    assert bad_round == 2
    assert saved and all(int(name.removeprefix("round-")) < bad_round for name in saved)
    assert not os.path.exists(root.removeprefix("file://") + "/train/manifest.json")


def test_context_longer_than_the_data_is_refused(run_job, wikitext_run, copy_run):
    root = copy_run(wikitext_run)
    # Many replicas, each with a slice shorter than the context; a budget that admits the
    # model (evaluating 4096-token windows is estimated at about 140 GB), so the data check
    # speaks.
    with pytest.raises(PipelineError, match="--context-len 4096 is larger than the data"):
        run_job("train", ["--run-root", root, "--context-len", "4096", "--partitions", "1024",
                          "--batch-size", "1", "--memory-budget-gb", "1000"])  # fmt: skip


def test_killed_train_job_resumes_from_the_last_round(run_job, wikitext_run, copy_run, tmp_path):
    """SIGKILL spark-submit after a checkpoint; the rerun continues and ends where an
    uninterrupted run ends."""
    args = [*TINY, "--partitions", "2", "--rounds", "5", "--local-steps", "3"]
    killed = copy_run(wikitext_run)
    latest = killed.removeprefix("file://") + "/train/checkpoints/latest.json"
    process = subprocess.Popen(
        ["spark-submit", "--master", "local[2]", str(JOBS / "train.py"), "--run-root", killed,
         *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (os.path.exists(latest) and '"round": 2' in Path(latest).read_text()):
        assert process.poll() is None, "train exited before its second checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not os.path.exists(killed.removeprefix("file://") + "/train/manifest.json")

    resumed = subprocess.run(
        ["spark-submit", "--master", "local[2]", str(JOBS / "train.py"), "--run-root", killed,
         *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "train: resuming after round" in resumed.stdout  # the driver's stderr joins stdout

    uninterrupted = str(tmp_path / "straight")
    for stage in ("preprocess", "tokenize"):
        import shutil

        shutil.copytree(
            wikitext_run.removeprefix("file://") + f"/{stage}", f"{uninterrupted}/{stage}"
        )
    run_job("train", ["--run-root", f"file://{uninterrupted}", *args])
    a, b = final_weights(killed), final_weights(f"file://{uninterrupted}")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-6)
    rows = read_manifest(killed, "train")["stats"]["final"]
    assert rows["round"] == 5


class Crash(Exception):
    """Stands for the driver dying right after a checkpoint."""


@pytest.mark.parametrize(
    ("optimizer", "outer"),
    [("adamw", "avg"), ("adamw", "nesterov"), ("muon", "avg"), ("muon", "nesterov")],
)
def test_resuming_after_a_crash_is_bit_identical_for_every_optimizer(
    run_job, wikitext_run, copy_run, monkeypatch, caplog, optimizer, outer
):
    """Whatever the inner and outer optimizer, the checkpoint holds all the state: AdamW's
    moments and step, Muon's momentum buffers, the outer Nesterov momentum. (The SIGKILL test
    above proves the same for a real kill, for the default settings.)"""
    args = ["--run-root", None, *TINY, "--partitions", "2", "--rounds", "4", "--local-steps",
            "2", "--optimizer", optimizer, "--outer", outer, "--outer-momentum", "0.5",
            *block_flags(QWEN3 if optimizer == "muon" else {})]  # fmt: skip
    straight, crashed = copy_run(wikitext_run, name="straight"), copy_run(wikitext_run)
    run_job("train", [straight if a is None else a for a in args])

    job = load_job("train")
    save = job.save_checkpoint

    def save_then_crash_after_round_2(stage, checkpoint):
        save(stage, checkpoint)
        if checkpoint.round == 2:
            raise Crash

    monkeypatch.setattr(job, "save_checkpoint", save_then_crash_after_round_2)
    argv = [str(crashed if a is None else a) for a in args]
    with pytest.raises(Crash):
        job.main(argv)
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="sparklm"):
        resumed = load_job("train").main(argv)
    assert "train: resuming after round 2 of 4" in caplog.text
    assert resumed["stats"]["final"]["round"] == 4
    a, b = final_weights(crashed), final_weights(straight)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("partitions", [3, 9])
def test_replica_updates_are_summed_in_an_order_fixed_by_partition_index(spark, partitions):
    """Float sums depend on their order; treeAggregate's shuffle adds in arrival order, so a
    retried round on a cluster could end in other weights. The sum must be the fold of each
    group of consecutive partitions (fan-in ⌈√P⌉ beyond 4 partitions), then of the groups."""
    train = load_job("train")
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-4, 4, partitions)
    updates = [torch.randn(4096, generator=generator) * s for s in scales]
    rdd = spark.sparkContext.parallelize(range(partitions), partitions).map(lambda i: updates[i])
    if partitions <= train.MAX_DRIVER_FAN_IN:
        groups = [updates]
    else:
        fan_in = math.ceil(math.sqrt(partitions))
        groups = [updates[g : g + fan_in] for g in range(0, partitions, fan_in)]

    def fold(tensors):
        total = tensors[0]
        for t in tensors[1:]:
            total = total + t
        return total

    expected = fold([fold(group) for group in groups])
    assert torch.equal(train.sum_in_partition_order(rdd), expected)
    assert not torch.equal(fold(updates[::-1]), expected)  # the order does change the floats
