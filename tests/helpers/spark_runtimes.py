"""The two Sparks the jobs must run on, each without a development install of our code: the
EMR node environment (``.venv-emr``, the default EMR release's Spark 3.5) and the project's
pyspark 4.2."""

from __future__ import annotations

import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from emr_harness import EMR_VENV, node_environment, node_record

PROJECT_SPARK = "4.2.0"


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


def emr_node_runtime() -> SparkRuntime:
    node_record()  # a clear error if `make venv-emr` never ran
    return SparkRuntime(EMR_VENV / "bin" / "spark-submit", node_environment(EMR_VENV))


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
