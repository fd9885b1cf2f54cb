"""The artifact contract: a stage is complete only once its ``manifest.json`` exists.

Every stage writes under ``{run_root}/{stage}/``. ``begin_stage`` deletes the
old manifest *first*, so from that moment downstream readers see the stage as
absent, then clears the old files. ``commit_stage`` writes the manifest
*last*, listing every file with its size and checksum. Readers only open files
a manifest lists, so a killed writer can leave debris but never a half stage.

Only folders the pipeline created are cleared (``ownership``), nothing is read,
written or deleted through a symbolic link below the run root, and a manifest
entry can only name a file inside its own stage folder.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from sparklm.runtime import json_objects, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.ownership import MARKER, claim_stage

MANIFEST = "manifest.json"
# A manifest lists a stage's files at a few hundred bytes each; one past this bound was not
# written by a stage, and reading it whole could exhaust the reader's memory.
MAX_MANIFEST_BYTES = 64 * 2**20


class StageNotCommitted(PipelineError):
    """An upstream stage has no manifest: it never ran, failed, or is being rewritten."""


class UnsafeManifest(PipelineError):
    """A manifest entry that names something outside its stage folder."""


def stage_uri(run_root: str, stage: str) -> str:
    return storage.join(run_root, stage)


def invalidate_stage(run_root: str, stage: str) -> str:
    """Delete ``stage``'s manifest so readers see it as absent; return the stage URI.

    Refuses (deleting nothing) a stage folder the pipeline did not create. The
    train stage stops here to keep its checkpoints for a resume.
    """
    uri = stage_uri(run_root, stage)
    claim_stage(run_root, uri)
    manifest = storage.join(uri, MANIFEST)
    storage.refuse_symlinks(run_root, manifest)
    storage.remove_tree(manifest)
    return uri


def clear_stage(uri: str) -> None:
    """Delete everything in an invalidated stage folder but its ownership marker."""
    storage.clear_folder(uri, keep=MARKER)


def begin_stage(run_root: str, stage: str) -> str:
    """Invalidate and clear ``stage`` under ``run_root``; return the stage URI to write into."""
    uri = invalidate_stage(run_root, stage)
    clear_stage(uri)
    return uri


@dataclass(frozen=True)
class ArtifactFile:
    """One file a stage produced, addressed relative to the stage directory."""

    path: str
    bytes: int
    sha256: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def write(cls, stage: str, path: str, data: builtins.bytes, **extra: Any) -> ArtifactFile:
        """Write ``data`` to ``{stage}/{path}`` and describe it for the manifest.

        ``stage`` is any folder the pipeline owns (a stage, a registry version);
        no link at or below it is written through.
        """
        uri = confined_uri(stage, path)
        storage.refuse_symlinks(stage, uri)
        storage.write_bytes(uri, data)
        return cls(path, len(data), hashlib.sha256(data).hexdigest(), dict(extra))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, **self.extra}


def commit_stage(  # noqa: PLR0913 (a manifest's fields, each passed by keyword)
    run_root: str,
    stage: str,
    *,
    files: list[ArtifactFile],
    params: Mapping[str, Any],
    stats: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` for ``stage``; until this returns the stage does not exist."""
    manifest = {
        "stage": stage,
        "run_root": run_root,
        "code_version": code_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started_at, 3) if started_at else None,
        "params": dict(params),
        "inputs": {name: dict(ref) for name, ref in (inputs or {}).items()},
        "stats": dict(stats),
        "files": [f.to_dict() for f in sorted(files, key=lambda f: f.path)],
    }
    data = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False).encode()
    storage.write_bytes(manifest_uri(run_root, stage), data)
    return manifest


def read_manifest(run_root: str, stage: str) -> dict[str, Any]:
    """Read a committed stage's manifest or explain which task has to run first.

    Files are listed relative to the stage, and ``run_root`` is set to where
    the manifest was read from, so a run root stays valid when it is copied
    (e.g. from a laptop to S3).
    """
    uri, data = _committed_manifest(run_root, stage)
    manifest = json_objects.parse(data, uri, required=("params", "stats", "files"),
                                  error=StageNotCommitted, fix=_rerun(stage))  # fmt: skip
    return {**manifest, "run_root": run_root}


def _committed_manifest(run_root: str, stage: str) -> tuple[str, bytes]:
    """Where the committed manifest is and its bytes, read up to ``MAX_MANIFEST_BYTES``;
    StageNotCommitted (naming the job to run) when there is none, or none that can be one."""
    uri = manifest_uri(run_root, stage)
    if not storage.exists(uri):
        raise StageNotCommitted(
            f"stage {stage!r} is not complete under {run_root}: {uri} is missing; run the "
            f"{stage} job for this run root first (or check --run-root)"
        )
    return uri, json_objects.read_bounded(uri, MAX_MANIFEST_BYTES, "manifest",
                                          error=StageNotCommitted, fix=_rerun(stage))  # fmt: skip


def _rerun(stage: str) -> str:
    return f"run the {stage} job for this run root again (it rewrites the stage)"


def manifest_uri(run_root: str, stage: str) -> str:
    """Where ``stage``'s manifest lives; refused when a link below the run root leads there."""
    uri = storage.join(stage_uri(run_root, stage), MANIFEST)
    storage.refuse_symlinks(run_root, uri)
    return uri


def input_ref(run_root: str, stage: str) -> dict[str, str]:
    """Identify an upstream manifest by URI and checksum, for lineage in our own manifest."""
    uri, data = _committed_manifest(run_root, stage)
    return {"manifest": uri, "sha256": hashlib.sha256(data).hexdigest()}


def listed_files(manifest: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """The manifest's file entries under ``prefix``, each with its absolute ``uri`` added.

    Every entry must name a file inside the stage folder, reached without a link:
    a manifest saying ``model.safetensors/../../../etc/hostname`` is refused, so no
    stage (publish least of all) can be made to read what the pipeline does not own.
    """
    root = stage_uri(manifest["run_root"], manifest["stage"])
    entries = []
    for entry in manifest["files"]:
        uri = confined_uri(root, entry["path"])  # every entry, so a corrupted one is named
        if entry["path"].startswith(prefix):
            storage.refuse_symlinks(root, uri)
            entries.append({**entry, "uri": uri})
    return entries


def confined_uri(folder: str, path: str) -> str:
    """``{folder}/{path}`` for a plain relative path; anything that could leave ``folder`` is
    refused (absolute paths, ``..``, ``.``, empty segments, URI schemes, backslashes)."""
    parts = path.split("/") if isinstance(path, str) else [""]
    if any(part in ("", ".", "..") for part in parts) or ":" in parts[0] or "\\" in path:
        raise UnsafeManifest(
            f"{path!r} is not a plain relative path inside {folder}: the pipeline only reads and "
            "writes files inside their own stage folder. The manifest was edited or corrupted: "
            "rerun the stage that wrote it"
        )
    return storage.join(folder, path)


def code_version(script: str | None = None) -> str:
    """Identify the code that produced an artifact: every file the job runs.

    A digest of this package's sources (the same zipped for EMR's ``--py-files`` or not)
    and of the job's entry script, ``script`` or else the one Python was started with
    (``sys.argv[0]``, what spark-submit runs). A train run's fingerprint includes it, so a
    resumed run never continues checkpoints written by other code.
    """
    digest = hashlib.sha256()
    for name, source in _python_sources(resources.files("sparklm")):
        digest.update(name.encode())
        digest.update(source.read_bytes())
    entry_script = Path(script or sys.argv[0])
    if entry_script.suffix == ".py" and entry_script.is_file():
        digest.update(b"\0" + entry_script.name.encode() + b"\0")
        digest.update(entry_script.read_bytes())
    return "src-" + digest.hexdigest()[:12]


def _python_sources(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """Every ``.py`` file under ``folder`` and its subpackages, by relative path, sorted: the
    same walk over the installed folder and over the zip EMR imports it from."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _python_sources(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".py"):
            yield f"{prefix}{entry.name}", entry
