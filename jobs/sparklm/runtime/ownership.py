"""What the pipeline owns: run roots it may write to, and stage folders it created itself.

A stage clears its folder before writing, so the pipeline must never mistake
someone else's folder for its own. Each stage folder gets a small marker object
when the pipeline creates it, before any data; a folder that already exists
with files but without the marker is refused, and nothing in it is touched.
Run roots that are a filesystem root, a bare bucket, the home directory or the
project checkout (or hold either), or whose names hold glob characters, are refused outright.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

MARKER = "_llm_owned.json"
MARKER_TEMPORARY = re.compile(re.escape(MARKER) + r"\.tmp-[0-9a-f]{32}")
# The checkout this code runs from (on EMR: the folder holding the code bundle's zip).
CHECKOUT = Path(__file__).resolve().parents[2]


class NotOwned(PipelineError):
    """A location the pipeline did not create, or must never use as its own."""


def check_run_root(raw: str) -> str:
    """Normalize a ``--run-root`` value, refusing locations a run must never clear stages in.

    Used as the argparse ``type`` of every job's ``--run-root``.
    """
    storage.refuse_glob_characters(raw.strip(), "run root")
    parsed = urlparse(raw.strip())
    if parsed.scheme == storage.PACKAGE_SCHEME:
        raise NotOwned(
            f"run root {raw!r} is a pkg:// URI, which names files inside an installed Python "
            "package: write run roots as file:///path or s3://bucket/prefix"
        )
    if any(segment in (".", "..") for segment in parsed.path.split("/")):
        raise NotOwned(f"run root {raw!r} contains '.' or '..' segments: write it out in full")
    uri = storage.normalize_uri(raw)
    path = storage.local_path(uri)
    if path is None:
        bucket_root = urlparse(uri).path.strip("/") == ""
        if bucket_root:
            raise NotOwned(
                f"run root {raw!r} is a whole bucket: stages would be created at its top level. "
                f"Write s3://{urlparse(uri).netloc}/SOME/PREFIX"
            )
        return uri
    for name, protected in (("the filesystem root", "/"),
                            ("the home directory", os.path.expanduser("~")),
                            ("the project checkout", str(CHECKOUT))):  # fmt: skip
        if _is_same_or_above(path, protected):
            raise NotOwned(
                f"run root {raw!r} is, or holds, {name} ({protected}): a run would create and "
                "clear its stage folders there. Choose a folder of its own, e.g. "
                f"file://{CHECKOUT}/runs/NAME"
            )
    if os.path.islink(path):
        raise NotOwned(
            f"run root {raw!r} is a symbolic link (to {os.readlink(path)}): the pipeline never "
            "follows links where it clears and writes. Give the real folder instead"
        )
    return uri


def _is_same_or_above(path: str, protected: str) -> bool:
    path, protected = os.path.normpath(path), os.path.normpath(protected)
    return path == protected or protected.startswith(path.rstrip("/") + "/")


def claim_stage(run_root: str, stage_uri: str) -> None:
    """Make sure the pipeline owns ``stage_uri`` (a folder of ``run_root``), creating it if absent.

    Owned means: the marker is there, or the folder does not exist / is empty
    (nothing in it can be lost), in which case the marker is written now,
    before any data. Anything else — a folder of someone else's files — is
    refused. Links at or below the run root are refused too.
    """
    storage.refuse_symlinks(run_root, stage_uri)
    names = storage.children(stage_uri)
    if MARKER in names:
        storage.refuse_symlinks(stage_uri, storage.join(stage_uri, MARKER))
        return
    # An interrupted claim leaves at most the marker's temporary file (storage.write_bytes
    # names it "<name>.tmp-<32 hex digits>"): still unclaimed. Any other name is someone's.
    foreign = [name for name in names if not MARKER_TEMPORARY.fullmatch(name)]
    if foreign:
        raise NotOwned(
            f"{stage_uri} already exists and holds files the pipeline did not write "
            f"(e.g. {foreign[0]!r}; its marker {MARKER} is missing). Nothing was deleted. Move "
            "those files away or choose another --run-root"
        )
    marker = {
        "owner": "llm-decoder-pipeline",
        "run_root": run_root,
        "stage": stage_uri.rsplit("/", 1)[-1],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "airflow_run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
    }
    storage.write_bytes(storage.join(stage_uri, MARKER), json.dumps(marker, indent=2).encode())
