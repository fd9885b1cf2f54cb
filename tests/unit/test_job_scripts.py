"""Job scripts stay thin: what executors run is defined in ``sparklm``, not in the script."""

import ast

import pytest

from helpers.paths import JOBS
from llm_pipeline.pipeline import PIPELINE


@pytest.mark.parametrize("script", [job.script for job in PIPELINE])
def test_job_scripts_define_no_classes(script):
    """spark-submit runs a script as ``__main__``, so cloudpickle ships its classes by value;
    pyspark 3.5's cloudpickle (EMR 7.x) rebuilds such a dataclass without its fields
    (generate died with ``KeyError: 'temperature'``). Classes belong in ``sparklm``, which
    executors import (``--py-files sparklm.zip``) and cloudpickle sends by reference."""
    tree = ast.parse((JOBS / script).read_text(encoding="utf-8"))
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert not classes, f"jobs/{script} defines {classes}: move them into jobs/sparklm/"
