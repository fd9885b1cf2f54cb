"""Print what a run produced: ``python -m sparklm.summary RUN_ROOT``."""

from __future__ import annotations

import json
import sys

from sparklm import storage
from sparklm.stage import MANIFEST, stage_uri


def pipeline_stages() -> list[str]:
    """The stages in run order, as the DAG's job list defines them (``llm_pipeline.jobs``,
    a module without dependencies; imported here, not at the top, because the jobs' own
    nodes, EMR's included, never run this summary and do not ship that package)."""
    from llm_pipeline.jobs import PIPELINE

    return [job.stage for job in PIPELINE]


def summarize(run_root: str) -> list[str]:
    lines = [f"run root: {run_root}"]
    for stage in pipeline_stages():
        manifest_uri = storage.join(stage_uri(run_root, stage), MANIFEST)
        if not storage.exists(manifest_uri):
            lines.append(f"  {stage:<10} not committed")
            continue
        manifest = json.loads(storage.read_bytes(manifest_uri))
        lines.append(
            f"  {stage:<10} {len(manifest['files'])} files, {manifest['seconds']} s  "
            f"→ {manifest_uri}"
        )
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sparklm.summary RUN_ROOT")
    print("\n".join(summarize(sys.argv[1])))
