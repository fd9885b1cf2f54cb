"""The Spark-version matrix: the five jobs shipped as the EMR steps ship them — the code
bundle, ``--py-files sparklm.zip``, no development install — on the Spark that the
default EMR release runs (3.5, in the EMR node environment ``.venv-emr``) and on the
project's pyspark 4.2.

Spark 3.5 bundles an older cloudpickle than pyspark 4 (a dataclass defined in a job
script lost its fields on executors: generate died with ``KeyError: 'temperature'``).
Both Sparks must run every stage from the bundle alone and produce the same artifacts.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from emr_harness import EMR_VENV, node_environment, node_record
from helpers.corpora import small_corpus
from helpers.jobs import TINY, TINY_TOLERANCE
from helpers.oracles import generated_records
from helpers.paths import REPO
from llm_pipeline.emr.bundle import EMR_SPARK_VERSION, build_bundle
from llm_pipeline.pipeline import PIPELINE
from sparklm.registry.versions import read_latest
from sparklm.runtime import storage
from sparklm.runtime.stages import listed_files, read_manifest

pytestmark = pytest.mark.slow

PROJECT_SPARK = "4.2.0"
STAGE_ARGS = {
    "preprocess": ["--input", "{corpus}"],
    "tokenize": ["--vocab-size", "300"],
    "train": [*TINY, "--partitions", "2", "--rounds", "2", "--local-steps", "3"],
    "generate": ["--prompts", "{bundle}/jobs/conf/prompts.txt", "--prompt", "Paragraph 2 of",
                 "--max-new-tokens", "8"],
    "publish": ["--registry", "{registry}", "--model-name", "matrix", "--tolerance",
                str(TINY_TOLERANCE)],
}  # fmt: skip


@dataclass(frozen=True)
class SparkRuntime:
    """A Python environment and the spark-submit that runs jobs in it."""

    spark_submit: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return self.env["PYSPARK_PYTHON"]

    def run_python(self, code: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-c", code], capture_output=True, text=True,
                              env=self.env, cwd="/")  # fmt: skip


def project_runtime(directory: Path) -> SparkRuntime:
    """The project's pyspark 4.2 and packages, minus the development install of ours.

    A bare virtualenv lists the project venv's site-packages in a ``.pth`` file: its
    packages import, but the ``.pth`` hooks inside it (the editable install of ``sparklm``
    and ``llm_pipeline``) are not run, as Python runs those of site directories only.
    """
    venv.create(directory, with_pip=False)
    site = next((directory / "lib").glob("python3.*/site-packages"))
    (site / "project-packages.pth").write_text(
        next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)) + "\n"
    )
    env = node_environment(directory)
    return SparkRuntime(Path(sys.executable).parent / "spark-submit", env)


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory) -> dict[str, SparkRuntime]:
    node_record()  # a clear error if `make venv-emr` never ran
    emr_node = SparkRuntime(EMR_VENV / "bin" / "spark-submit", node_environment(EMR_VENV))
    return {
        EMR_SPARK_VERSION: emr_node,
        PROJECT_SPARK: project_runtime(tmp_path_factory.mktemp("project-runtime")),
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The code bundle the EMR branch uploads, written to a folder."""
    target = tmp_path_factory.mktemp("bundle")
    for name, data in build_bundle(REPO).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    return target


@pytest.fixture(scope="module")
def pipeline_run(runtimes, bundle, tmp_path_factory):
    """``pipeline_run(version)``: every stage on that Spark, from the bundle, run once per
    module; ``{root, registry, outputs: {stage: CompletedProcess}}``."""
    base = tmp_path_factory.mktemp("matrix")
    corpus = small_corpus(base / "corpus", documents=24)
    runs: dict[str, dict] = {}

    def run(version: str) -> dict:
        if version in runs:
            return runs[version]
        runtime = runtimes[version]
        root, registry = f"file://{base / version / 'run'}", f"file://{base / version / 'reg'}"
        outputs = {}
        for job in PIPELINE:
            args = [a.format(corpus=corpus, bundle=bundle, registry=registry)
                    for a in STAGE_ARGS[job.stage]]  # fmt: skip
            done = subprocess.run(
                [runtime.spark_submit, "--master", "local[2]", "--py-files",
                 bundle / "sparklm.zip", "--conf", "spark.ui.enabled=false",
                 bundle / "jobs" / job.script, "--run-root", root, *args],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
                cwd=bundle, env=runtime.env,
            )  # fmt: skip
            outputs[job.stage] = done
            if done.returncode != 0:
                break
        runs[version] = {"root": root, "registry": registry, "outputs": outputs}
        return runs[version]

    return run


@pytest.mark.parametrize("version", [EMR_SPARK_VERSION, PROJECT_SPARK])
def test_every_stage_runs_from_the_bundle_alone(runtimes, pipeline_run, version):
    runtime = runtimes[version]
    probe = runtime.run_python("import pyspark; print(pyspark.__version__)")
    assert probe.stdout.strip() == version, probe.stderr
    for ours in ("sparklm", "llm_pipeline"):  # only the bundle's zip provides sparklm
        assert runtime.run_python(f"import {ours}").returncode != 0, f"{ours} is installed"

    run = pipeline_run(version)
    for stage, done in run["outputs"].items():
        assert done.returncode == 0, f"{stage} on Spark {version}:\n{done.stdout[-4000:]}"
    assert list(run["outputs"]) == [job.stage for job in PIPELINE]
    records = generated_records(read_manifest(run["root"], "generate"))
    assert [r["prompt"] for r in records][-1] == "Paragraph 2 of"
    assert all(r["temperature"] == 0.8 and r["top_k"] == 50 and r["new_tokens"] > 0
               for r in records)  # fmt: skip
    assert read_latest(run["registry"], "matrix")["uri"].startswith(run["registry"])


def artifacts(root: str, stage: str, names: tuple[str, ...] = ()) -> dict[str, str]:
    """``{path: sha256}`` of a stage's files (those starting with ``names``, if given)."""
    files = read_manifest(root, stage)["files"]
    return {f["path"]: f["sha256"] for f in files if not names or f["path"].startswith(names)}


def test_both_sparks_produce_the_same_artifacts(pipeline_run):
    spark35, spark42 = (pipeline_run(v) for v in (EMR_SPARK_VERSION, PROJECT_SPARK))
    assert all(done.returncode == 0 for run in (spark35, spark42)
               for done in run["outputs"].values())  # fmt: skip
    for stage in ("preprocess", "tokenize"):
        assert artifacts(spark35["root"], stage) == artifacts(spark42["root"], stage), stage
    weights = ("model.safetensors", "config.json")
    assert artifacts(spark35["root"], "train", weights) == artifacts(spark42["root"], "train",
                                                                     weights)  # fmt: skip

    def samples(run):
        return [{k: v for k, v in r.items() if k != "tokens_per_s"}
                for r in generated_records(read_manifest(run["root"], "generate"))]  # fmt: skip

    assert samples(spark35) == samples(spark42)
    for run in (spark35, spark42):
        [text] = listed_files(read_manifest(run["root"], "generate"), "generated.txt")
        assert "T=0.8, top-k=50" in storage.read_bytes(text["uri"]).decode()
