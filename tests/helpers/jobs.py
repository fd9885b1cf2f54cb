"""Running the jobs and the DAG from a test: in-process, by spark-submit, with small settings."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from helpers.paths import JOBS, REPO

# The client compiler only, for every Spark JVM the tests start (fixtures/jvm.py says why).
JIT_C1_ONLY = "-XX:TieredStopAtLevel=1"
# A small model that learns real Wikipedia text (the default corpus, vocab 512) in about a
# minute on local[2]: validation 4.51 nats/token against a unigram entropy of 5.31.
TRAINED = ["--context-len", "64", "--n-layer", "2", "--n-head", "2", "--n-embd", "64",
           "--batch-size", "16", "--muon-adamw-lr", "1e-2", "--warmup-steps", "10",
           "--partitions", "2", "--rounds", "16", "--local-steps", "40",
           "--eval-tokens", "8192"]  # fmt: skip
# A one-block model for tests about plumbing, not learning.
TINY = ["--context-len", "32", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
        "--batch-size", "4", "--eval-tokens", "512"]  # fmt: skip
# Trained for a few steps, such a model scores worse than its evaluation set's unigram
# baseline (3.5 against 2.2 bits/byte), which a first version must be within the promotion
# tolerance of. Tests about plumbing that expect it promoted give this tolerance.
TINY_TOLERANCE = 4
# DAG Params for a whole pipeline run that is small enough for a test, still every stage for real.
SMALL_CONF = {
    "vocab_size": 300, "partitions": 2, "rounds": 2, "local_steps": 3, "batch_size": 4,
    "context_len": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, "eval_tokens": 512,
    "max_new_tokens": 16, "prompts": ["Paragraph 1 of"], "promotion_tolerance": TINY_TOLERANCE,
}  # fmt: skip


def load_dag():
    """Parse ``dags/`` as the scheduler does; parse per test, after its env is set."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags["llm_decoder"]


def copy_stages(source: str, target: Path, stages: Sequence[str]) -> str:
    """Copy committed stages of the local run root ``source`` into ``target``; its URI.

    Manifests list paths relative to their stage, so the copy is a valid run root.
    """
    for stage in stages:
        shutil.copytree(source.removeprefix("file://") + f"/{stage}", target / stage)
    return f"file://{target}"


def copy_prefix(source: str, target: str) -> None:
    """Copy every file under the URI ``source`` to the same place under ``target`` (a stage
    of one run root into another, on any filesystem)."""
    from sparklm.runtime import storage

    for uri in storage.list_files(source):
        storage.write_bytes(target + uri[len(source) :], storage.read_bytes(uri))


def stage_checksums(run_root: str, stage: str, names: tuple[str, ...] = ()) -> dict[str, str]:
    """``{path: sha256}`` of the files a stage's manifest lists (those whose path starts with
    one of ``names``, if given): what two runs are compared by."""
    from sparklm.runtime.stages import read_manifest

    files = read_manifest(run_root, stage)["files"]
    return {f["path"]: f["sha256"] for f in files if not names or f["path"].startswith(names)}


def model_sha256(run_root: str) -> str:
    """The checksum train's manifest records for the weights it wrote."""
    return stage_checksums(run_root, "train")["model.safetensors"]


def load_job(name: str) -> ModuleType:
    """Import ``jobs/{name}.py`` as a module, as spark-submit runs it: shipped by value.

    Spark pickles the job's partition functions for the workers; spark-submit runs
    the script as ``__main__``, which cloudpickle sends by value. Registering the
    module for by-value pickling does the same for an in-process run.
    """
    from pyspark import cloudpickle

    module_name = f"llm_job_{name}"
    spec = importlib.util.spec_from_file_location(module_name, JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def spark_submit(
    script: str,
    *args: str,
    master: str = "local[2]",
    env: dict | None = None,
    timeout: float = 600,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run ``spark-submit --master {master} {options…} jobs/{script} args…`` as a user would.

    The driver's stderr reaches spark-submit's stdout; both come back in ``stdout``.
    """
    return subprocess.run(
        ["spark-submit", "--master", master, *options, str(JOBS / script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
