"""The library's folders are its layers (settings → runtime → data → model → registry): a module
imports only from its own layer or those below, and nothing in it imports the Airflow side.
The contracts live in pyproject.toml ([tool.importlinter]); ``make check`` runs them too."""

import shutil
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPO


def test_no_module_imports_up_a_layer_or_the_airflow_side():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    result = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout
