"""The artifact contract: manifest last, readers see only committed stages."""

import io
import json
import os
import shutil
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers.corpora import write_text
from helpers.paths import JOBS
from llm_pipeline.emr.bundle import _zip_package
from sparklm.runtime import stages, storage
from sparklm.runtime.stages import (
    ArtifactFile,
    StageNotCommitted,
    UnsafeManifest,
    begin_stage,
    code_version,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)
from sparklm.runtime.storage import SymlinkRefused

# The library under test, wherever it is imported from (make bench-mutation stages a copy).
LIBRARY = Path(stages.__file__).resolve().parents[1]


def commit(root, stage="preprocess", payload=b"data"):
    uri = begin_stage(root, stage)
    files = [ArtifactFile.write(uri, "train/part-00000.bin", payload, tokens=3)]
    return commit_stage(root, stage, files=files, params={"p": 1}, stats={"n": 1})


def test_stage_without_manifest_is_not_readable(tmp_path):
    root = f"file://{tmp_path}"
    uri = begin_stage(root, "preprocess")
    ArtifactFile.write(uri, "train/part-00000.bin", b"half written")
    with pytest.raises(StageNotCommitted, match="run the preprocess job"):
        read_manifest(root, "preprocess")


def test_manifest_lists_files_with_checksums(tmp_path):
    root = f"file://{tmp_path}"
    manifest = commit(root)
    assert read_manifest(root, "preprocess") == manifest
    [entry] = listed_files(manifest, "train/")
    assert entry["bytes"] == 4 and entry["tokens"] == 3
    assert entry["sha256"] == "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    assert storage.read_bytes(entry["uri"]) == b"data"


def test_the_manifest_records_the_stage_its_code_inputs_settings_time_and_sorted_files(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # created_at is UTC whatever the machine's zone
    time.tzset()
    root = f"file://{tmp_path}"
    uri = begin_stage(root, "tokenize")
    files = [ArtifactFile.write(uri, path, b"x") for path in ("val/b", "train/c", "train/a")]
    inputs = {"preprocess": {"manifest": f"{root}/preprocess/manifest.json", "sha256": "ab"}}
    started = time.time() - 2.5
    try:
        manifest = commit_stage(root, "tokenize", files=files, params={"vocab_size": 512},
                                stats={"tokens": 3}, inputs=inputs, started_at=started)  # fmt: skip
    finally:
        monkeypatch.undo()
        time.tzset()
    written = json.loads((tmp_path / "tokenize" / "manifest.json").read_text())
    assert written == manifest
    assert (written["stage"], written["run_root"]) == ("tokenize", root)
    assert written["code_version"] == code_version()
    assert (written["params"], written["stats"]) == ({"vocab_size": 512}, {"tokens": 3})
    assert written["inputs"] == inputs
    assert [f["path"] for f in written["files"]] == ["train/a", "train/c", "val/b"]
    created = datetime.strptime(written["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(created.timestamp() - (started + 2.5)) < 5
    # Wall seconds since the job started, to the millisecond.
    seconds = written["seconds"]
    assert isinstance(seconds, float) and 2.5 <= seconds < 7.5 and seconds == round(seconds, 3)


def test_rerun_invalidates_first_then_replaces(tmp_path):
    root = f"file://{tmp_path}"
    commit(root, payload=b"old")
    stale = tmp_path / "preprocess" / "stale.bin"
    stale.write_bytes(b"debris")
    uri = begin_stage(root, "preprocess")
    # From this moment the stage reads as absent and its old files are gone.
    with pytest.raises(StageNotCommitted):
        read_manifest(root, "preprocess")
    assert not stale.exists()
    files = [ArtifactFile.write(uri, "train/part-00000.bin", b"new")]
    commit_stage(root, "preprocess", files=files, params={}, stats={})
    [entry] = listed_files(read_manifest(root, "preprocess"))
    assert storage.read_bytes(entry["uri"]) == b"new"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b'{"stage": "preprocess", "fi', "not JSON"), (b"[]", "holds a list, not an object"),
     (b'{"stage": "preprocess"}', "lacks 'params', 'stats', 'files'"),
     (None, "larger than 1,024 bytes")],
)  # fmt: skip
def test_a_damaged_or_oversized_manifest_is_named_with_the_job_to_rerun(
    tmp_path, monkeypatch, content, problem
):
    """Never a JSONDecodeError or KeyError from a downstream job, and never read whole past
    its bound: memory stays bounded whatever the file holds."""
    root = f"file://{tmp_path}"
    commit(root)
    path = tmp_path / "preprocess" / "manifest.json"
    monkeypatch.setattr(stages, "MAX_MANIFEST_BYTES", 1024)
    path.write_bytes(b" " * 2048 if content is None else content)
    # input_ref only hashes the bytes: it is bounded, and the reader of the content refuses it.
    for read in (read_manifest, input_ref) if content is None else (read_manifest,):
        with pytest.raises(StageNotCommitted) as exc:
            read(root, "preprocess")
        assert str(exc.value).startswith(f"file://{path} is damaged")
        assert problem in str(exc.value)
        assert str(exc.value).endswith("run the preprocess job for this run root again (it "
                                       "rewrites the stage)")  # fmt: skip


def test_input_ref_pins_the_upstream_manifest(tmp_path):
    root = f"file://{tmp_path}"
    commit(root)
    ref = input_ref(root, "preprocess")
    assert ref["manifest"].endswith("preprocess/manifest.json") and len(ref["sha256"]) == 64


def test_manifest_refuses_nan(tmp_path):
    root = f"file://{tmp_path}"
    begin_stage(root, "train")
    with pytest.raises(ValueError):
        commit_stage(root, "train", files=[], params={}, stats={"loss": float("nan")})
    assert not (tmp_path / "train" / "manifest.json").exists()


def test_local_writes_leave_no_temporary_files(tmp_path):
    storage.write_bytes(f"file://{tmp_path}/a/b.json", json.dumps({"x": 1}).encode())
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


@pytest.mark.parametrize(
    "path",
    ["model.safetensors/../../../victim/secret.txt", "../victim/secret.txt", "/etc/hostname",
     "file:///etc/hostname", "s3://bucket/key", "file:secret", "train/./part", "train//part",
     "a\\..\\b", 5, None],
)  # fmt: skip
def test_manifest_entries_cannot_leave_their_stage_folder(tmp_path, path):
    root = f"file://{tmp_path / 'run'}"
    write_text(tmp_path / "victim" / "secret.txt", "secret")
    manifest = commit(root, "train")
    manifest["files"][0]["path"] = path
    (tmp_path / "run" / "train" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        UnsafeManifest,
        match=r"is not a plain relative path inside .*train: the "
        r"pipeline only reads and writes files inside their own stage folder\. The "
        "manifest was edited or corrupted: rerun the stage that wrote it$",
    ):
        listed_files(read_manifest(root, "train"))


def test_manifest_entries_are_not_read_through_links(tmp_path):
    root = f"file://{tmp_path / 'run'}"
    write_text(tmp_path / "victim" / "part-00000.bin", "secret")
    commit(root, "tokenize")
    shard_folder = tmp_path / "run" / "tokenize" / "train"
    for shard in shard_folder.iterdir():
        shard.unlink()
    shard_folder.rmdir()
    shard_folder.symlink_to(tmp_path / "victim", target_is_directory=True)
    with pytest.raises(SymlinkRefused, match="train is a symbolic link"):
        listed_files(read_manifest(root, "tokenize"))


def test_the_code_version_covers_the_job_script_as_well_as_the_library(tmp_path, monkeypatch):
    """A resumed train run must not mix code versions: editing only the job script changes
    the version its fingerprint and manifests record."""
    from sparklm.runtime.stages import code_version

    script = tmp_path / "train.py"
    script.write_text("print('one')\n")
    first = code_version(str(script))
    script.write_text("print('two')\n")
    assert code_version(str(script)) != first
    monkeypatch.setattr("sys.argv", [str(script)])  # what spark-submit starts Python with
    assert code_version() == code_version(str(script))


def test_the_code_version_changes_with_any_module_of_the_library(tmp_path, monkeypatch):
    """Every module counts, subpackages too: a resumed train run must not continue checkpoints
    written by a different model or optimizer."""
    package = shutil.copytree(LIBRARY, tmp_path / "sparklm",
                              ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.setattr(stages.resources, "files", lambda name: package)
    script = str(JOBS / "train.py")
    first = code_version(script)
    assert code_version(script) == first
    with (package / "model" / "gpt.py").open("a") as source:
        source.write("# changed\n")
    assert code_version(script) != first


def test_the_code_version_changes_when_a_module_moves_to_another_subpackage(tmp_path, monkeypatch):
    """Modules are imported by their dotted path, so where a file lies is code too: the same
    files under a renamed subpackage are not the same program."""
    package = shutil.copytree(LIBRARY, tmp_path / "sparklm",
                              ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.setattr(stages.resources, "files", lambda name: package)
    script = str(JOBS / "train.py")
    first = code_version(script)
    (package / "model").rename(package / "models")  # sorts where model did
    assert code_version(script) != first


def test_the_code_version_is_the_same_from_emrs_zip_of_the_library(monkeypatch):
    script = str(JOBS / "train.py")
    unzipped = code_version(script)
    archive = zipfile.ZipFile(io.BytesIO(_zip_package(LIBRARY)))  # as build_bundle zips it
    monkeypatch.setattr(stages.resources, "files", lambda name: zipfile.Path(archive, "sparklm/"))
    assert code_version(script) == unzipped


def test_a_launcher_that_is_not_a_python_script_is_not_part_of_the_code_version(tmp_path):
    launcher = tmp_path / "pyspark-shell"
    launcher.write_text("#!/bin/sh\n")
    assert code_version(str(launcher)) == code_version(str(tmp_path / "no-such-script.py"))
    assert os.path.exists(launcher)
