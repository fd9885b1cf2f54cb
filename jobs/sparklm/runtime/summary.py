"""Print what a run produced: ``python -m sparklm.runtime.summary RUN_ROOT``."""

from __future__ import annotations

import json
import sys

from sparklm.runtime import storage
from sparklm.runtime.stages import MANIFEST, stage_uri
from sparklm.settings import STAGES


def summarize(run_root: str) -> list[str]:
    lines = [f"run root: {run_root}"]
    for stage in STAGES:
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
        sys.exit("usage: python -m sparklm.runtime.summary RUN_ROOT")
    print("\n".join(summarize(sys.argv[1])))
