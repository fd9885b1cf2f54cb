"""A stage clears only what the pipeline created; nothing goes through a symbolic link."""

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers.corpora import write_text
from helpers.oracles import tree_checksums
from sparklm.runtime import storage
from sparklm.runtime.ownership import CHECKOUT, MARKER, NotOwned, check_run_root
from sparklm.runtime.stages import (
    ArtifactFile,
    begin_stage,
    commit_stage,
    invalidate_stage,
    read_manifest,
)
from sparklm.runtime.storage import SymlinkRefused


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder of someone's files that no stage may touch."""
    folder = tmp_path / "victim"
    write_text(folder / "thesis.tex", "years of work")
    write_text(folder / "data" / "results.csv", "a,b\n1,2\n")
    return folder


def test_a_stage_folder_the_pipeline_did_not_create_is_refused_and_kept(tmp_path, victim):
    root = tmp_path / "run"
    (root / "train").mkdir(parents=True)
    for path in victim.rglob("*"):  # the user's files, where train would clear
        if path.is_file():
            write_text(root / "train" / path.relative_to(victim), path.read_bytes())
    before = tree_checksums(root)
    for clear in (begin_stage, invalidate_stage):
        with pytest.raises(
            NotOwned,
            match=r"holds files the pipeline did not write .* Nothing "
            "was deleted. Move those files away or choose another --run-root$",
        ):
            clear(f"file://{root}", "train")
    assert tree_checksums(root) == before


def test_a_symlinked_stage_folder_is_refused_and_its_target_kept(tmp_path, victim):
    root = tmp_path / "run"
    root.mkdir()
    (root / "preprocess").symlink_to(victim, target_is_directory=True)
    before = tree_checksums(victim)
    with pytest.raises(SymlinkRefused) as refused:
        begin_stage(f"file://{root}", "preprocess")
    assert str(refused.value) == (
        f"{root}/preprocess is a symbolic link (to {victim}): the pipeline never follows links "
        "inside a run root or registry, where it could read, overwrite or delete files it does "
        "not own. Replace the link with a real folder or file, or choose another location"
    )
    assert tree_checksums(victim) == before


def test_a_symlinked_run_root_is_refused(tmp_path, victim):
    (tmp_path / "run").symlink_to(victim, target_is_directory=True)
    before = tree_checksums(victim)
    with pytest.raises(NotOwned, match="symbolic link"):
        check_run_root(f"file://{tmp_path / 'run'}")
    with pytest.raises(SymlinkRefused):
        begin_stage(f"file://{tmp_path / 'run'}", "preprocess")
    assert tree_checksums(victim) == before


def test_symlinked_manifests_are_neither_read_nor_replaced(tmp_path, victim):
    root = f"file://{tmp_path / 'run'}"
    uri = begin_stage(root, "tokenize")
    commit_stage(root, "tokenize", files=[ArtifactFile.write(uri, "a.bin", b"x")], params={},
                 stats={})  # fmt: skip
    manifest = tmp_path / "run" / "tokenize" / "manifest.json"
    write_text(victim / "manifest.json", manifest.read_text())
    manifest.unlink()
    manifest.symlink_to(victim / "manifest.json")
    before = tree_checksums(victim)
    with pytest.raises(SymlinkRefused, match="manifest.json is a symbolic link"):
        read_manifest(root, "tokenize")
    with pytest.raises(SymlinkRefused):
        begin_stage(root, "tokenize")
    assert manifest.is_symlink() and tree_checksums(victim) == before


def test_links_inside_an_owned_stage_are_removed_not_followed(tmp_path, victim):
    root = f"file://{tmp_path / 'run'}"
    uri = begin_stage(root, "generate")
    (tmp_path / "run" / "generate" / "planted").symlink_to(victim, target_is_directory=True)
    before = tree_checksums(victim)
    begin_stage(root, "generate")
    assert sorted(os.listdir(tmp_path / "run" / "generate")) == [MARKER]
    assert tree_checksums(victim) == before
    with pytest.raises(SymlinkRefused):  # nor is anything written through one
        (tmp_path / "run" / "generate" / "sub").symlink_to(victim, target_is_directory=True)
        ArtifactFile.write(uri, "sub/out.json", b"{}")
    assert tree_checksums(victim) == before


def test_the_marker_is_written_before_any_data_and_survives_clearing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-12-04")
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # created_at is UTC whatever the machine's zone
    time.tzset()
    root = f"file://{tmp_path / 'run'}"
    try:
        uri = begin_stage(root, "preprocess")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    marker = json.loads((tmp_path / "run" / "preprocess" / MARKER).read_text())
    created = datetime.strptime(marker.pop("created_at"), "%Y-%m-%dT%H:%M:%SZ")
    assert abs(created.replace(tzinfo=UTC).timestamp() - time.time()) < 60
    # Whose folder it is, and which Airflow run made it: what a person finding it needs.
    assert marker == {"owner": "llm-decoder-pipeline", "run_root": root, "stage": "preprocess",
                      "airflow_run_id": "manual__2026-12-04"}  # fmt: skip
    ArtifactFile.write(uri, "train/part-00000.parquet", b"rows")
    begin_stage(root, "preprocess")  # a rerun: the pipeline's own folder is cleared
    assert os.listdir(tmp_path / "run" / "preprocess") == [MARKER]


def test_a_symlinked_marker_does_not_make_a_folder_the_pipelines(tmp_path, victim):
    root = tmp_path / "run"
    begin_stage(f"file://{root}", "train")
    marker = root / "train" / MARKER
    marker.unlink()
    marker.symlink_to(victim / "thesis.tex")
    before = tree_checksums(victim)
    with pytest.raises(SymlinkRefused, match=f"{MARKER} is a symbolic link"):
        begin_stage(f"file://{root}", "train")
    assert tree_checksums(victim) == before


def test_empty_or_half_claimed_folders_are_adopted(tmp_path):
    root = tmp_path / "run"
    (root / "tokenize").mkdir(parents=True)
    (root / "train").mkdir()
    (root / "train" / f"{MARKER}.tmp-{'0123abcd' * 4}").write_bytes(b"")  # killed while claiming
    for stage in ("tokenize", "train"):
        begin_stage(f"file://{root}", stage)
        assert os.listdir(root / stage) == [MARKER]


@pytest.mark.parametrize("name", [f"{MARKER}-notes.txt", f"{MARKER}.d/readme", f"{MARKER}.tmp-x"])
def test_a_name_that_only_starts_like_the_marker_is_someone_elses(tmp_path, name):
    root = tmp_path / "run"
    write_text(root / "train" / name, "mine")
    before = tree_checksums(root)
    with pytest.raises(NotOwned, match="holds files the pipeline did not write"):
        begin_stage(f"file://{root}", "train")
    assert tree_checksums(root) == before


@pytest.mark.parametrize("name", ["INDEX", "X/part-00000"])
def test_a_foreign_s3_file_is_named_whatever_its_name(s3_server, name):
    top = name.split("/")[0]
    root = s3_server.uri("ownership-names", top)
    storage.write_bytes(f"{root}/train/{name}", b"someone's")
    with pytest.raises(NotOwned, match=f"e.g. '{top}'"):
        begin_stage(root, "train")
    assert storage.read_bytes(f"{root}/train/{name}") == b"someone's"


def test_a_rerun_on_s3_clears_what_other_nodes_wrote(s3_server):
    """Executors on other machines write a stage's shards; the driver's listing must see
    them, or a rerun would leave the old shards next to the new ones."""
    root = s3_server.uri("ownership-nodes")
    uri = begin_stage(root, "tokenize")
    assert storage.children(uri) == [MARKER]
    key = uri.removeprefix(f"s3://{s3_server.bucket}/") + "/train/part-00000.bin"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=b"rows")
    assert storage.children(uri) == [MARKER, "train"]
    begin_stage(root, "tokenize")
    assert storage.list_files(uri) == [f"{uri}/{MARKER}"]


def test_an_empty_s3_folder_made_by_a_console_is_adopted(s3_server):
    """The S3 console's "Create folder" (and Hadoop's s3a) leaves a ``train/`` placeholder
    object: the folder is still empty, not someone else's files."""
    root = s3_server.uri("ownership-placeholder")
    prefix = root.removeprefix(f"s3://{s3_server.bucket}/")
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{prefix}/train/", Body=b"")
    uri = begin_stage(root, "train")
    assert storage.children(uri) == [MARKER]


def test_claiming_works_on_s3_and_refuses_foreign_prefixes(s3_server):
    root = s3_server.uri("ownership")
    storage.write_bytes(f"{root}/train/notes.txt", b"someone's")
    with pytest.raises(NotOwned, match="notes.txt"):
        begin_stage(root, "train")
    assert storage.read_bytes(f"{root}/train/notes.txt") == b"someone's"
    uri = begin_stage(root, "tokenize")
    ArtifactFile.write(uri, "a.bin", b"x")
    begin_stage(root, "tokenize")
    assert storage.list_files(uri) == [f"{uri}/{MARKER}"]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:////", "filesystem root"),
        ("file:///", "filesystem root"),
        ("/", "filesystem root"),
        ("s3://bucket", "whole bucket"),
        ("s3://bucket/", "whole bucket"),
        (f"file://{os.path.expanduser('~')}", "home directory"),
        (f"file://{CHECKOUT}", "project checkout"),
        (f"file://{CHECKOUT.parent}", "project checkout"),
        ("pkg://gensim/test", "pkg://"),
        ("file:///tmp/run/../etc", r"'\.\.'"),
    ],
)  # fmt: skip
def test_run_roots_that_are_not_a_runs_own_are_refused(uri, reason):
    with pytest.raises(NotOwned, match=reason):
        check_run_root(uri)


def test_each_refused_run_root_gets_its_reason_and_the_fix(tmp_path, victim):
    home, fix = (
        os.path.expanduser("~"),
        f"Choose a folder of its own, e.g. file://{CHECKOUT}/runs/NAME",
    )
    (tmp_path / "link").symlink_to(victim, target_is_directory=True)
    expected = {
        "pkg://gensim/test": "run root 'pkg://gensim/test' is a pkg:// URI, which names files "
        "inside an installed Python package: write run roots as file:///path or "
        "s3://bucket/prefix",
        "file:///tmp/./run": "run root 'file:///tmp/./run' contains '.' or '..' segments: write "
        "it out in full",
        "s3://bucket/": "run root 's3://bucket/' is a whole bucket: stages would be created at "
        "its top level. Write s3://bucket/SOME/PREFIX",
        "file:///": "run root 'file:///' is, or holds, the filesystem root (/): a run would "
        f"create and clear its stage folders there. {fix}",
        f"file://{home}": f"run root 'file://{home}' is, or holds, the home directory ({home}): "
        f"a run would create and clear its stage folders there. {fix}",
        f"file://{CHECKOUT}": f"run root 'file://{CHECKOUT}' is, or holds, the project checkout "
        f"({CHECKOUT}): a run would create and clear its stage folders there. {fix}",
        f"file://{tmp_path}/link": f"run root 'file://{tmp_path}/link' is a symbolic link (to "
        f"{victim}): the pipeline never follows links where it clears and writes. Give the real "
        "folder instead",
    }  # fmt: skip
    for uri, message in expected.items():
        with pytest.raises(NotOwned) as refused:
            check_run_root(uri)
        assert str(refused.value) == message


@pytest.mark.parametrize("name", ["exp-*", "exp-?", "exp-[1]"])
def test_run_roots_with_glob_characters_are_refused(name):
    for uri in (f"s3://bucket/runs/{name}", f"file:///srv/runs/{name}/x"):
        with pytest.raises(storage.StorageError, match=rf"^run root '{re.escape(uri)}' contains "):
            check_run_root(uri)


def test_ordinary_run_roots_pass_unchanged(tmp_path):
    assert check_run_root(f"file://{tmp_path}/run") == f"file://{tmp_path}/run"
    assert check_run_root(f"file://{CHECKOUT}/runs/x") == f"file://{CHECKOUT}/runs/x"
    assert check_run_root("s3://bucket/runs/x") == "s3://bucket/runs/x"
    assert check_run_root("file:///X") == "file:///X"  # a top-level folder holds no other
    assert check_run_root("s3://bucket/X") == "s3://bucket/X"


def test_uris_are_normalized_without_following_links(tmp_path, victim):
    (tmp_path / "link").symlink_to(victim, target_is_directory=True)
    assert storage.normalize_uri(str(tmp_path / "link")) == f"file://{tmp_path}/link"
