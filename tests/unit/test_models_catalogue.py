"""The Models view's module: importable by the api-server without torch or Spark."""

import subprocess
import sys

from helpers.paths import REPO


def test_the_view_never_loads_torch_or_spark():
    code = ("import sys, llm_pipeline.models_view; print(*[m for m in "
            "('torch', 'pyspark', 'tokenizers') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)  # fmt: skip
    assert out.stdout.strip() == ""


def test_a_version_without_promotion_json_is_listed_with_its_state_unknown(tmp_path):
    """A version folder whose publish never wrote promotion.json (copied by hand, or a
    publish from before the file existed) is shown, not a server error."""
    from llm_pipeline.models_view import version_summary

    (tmp_path / "m" / "v1").mkdir(parents=True)
    summary = version_summary(f"file://{tmp_path}", "m", "v1", latest=None)
    assert summary["version"] == "v1"
    assert summary["promoted"] is None and summary["eval_bpb"] is None
    assert summary["is_latest"] is False
