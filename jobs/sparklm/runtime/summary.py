"""Print what a run produced: ``python -m sparklm.runtime.summary RUN_ROOT``."""

from __future__ import annotations

import sys

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import manifest_uri, read_manifest
from sparklm.settings import STAGES


def summarize(run_root: str) -> list[str]:
    lines = [f"run root: {run_root}"]
    for stage in STAGES:
        uri = manifest_uri(run_root, stage)
        if not storage.exists(uri):
            lines.append(f"  {stage:<10} not committed")
            continue
        try:
            manifest = read_manifest(run_root, stage)
        except PipelineError as exc:
            lines.append(f"  {stage:<10} {exc}")
            continue
        lines.append(
            f"  {stage:<10} {len(manifest['files'])} files, {manifest.get('seconds')} s  → {uri}"
        )
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sparklm.runtime.summary RUN_ROOT")
    print("\n".join(summarize(sys.argv[1])))
