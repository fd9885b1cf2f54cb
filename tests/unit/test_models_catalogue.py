"""The Models view's module: importable by the api-server without torch or Spark."""

import subprocess
import sys

from support import REPO


def test_the_view_never_loads_torch_or_spark():
    code = ("import sys, llm_pipeline.models_view; print(*[m for m in "
            "('torch', 'pyspark', 'tokenizers') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)  # fmt: skip
    assert out.stdout.strip() == ""
