"""URIs and the fsspec storage path, on local disk and on the real S3 server."""

import pytest

from sparklm import storage
from sparklm.storage import StorageError


def test_bare_paths_become_absolute_file_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize_uri("runs/x") == f"file://{tmp_path}/runs/x"


@pytest.mark.parametrize("uri", ["s3a://bucket/x", "hdfs://nn/x", "s3://", "  "])
def test_unusable_uris_are_refused_with_the_fix(uri):
    with pytest.raises(StorageError, match="s3://|URI"):
        storage.normalize_uri(uri)


def test_package_uri_resolves_to_an_installed_file():
    uri = storage.normalize_uri("pkg://sparklm/storage.py")
    assert uri.startswith("file://") and storage.exists(uri)
    with pytest.raises(StorageError, match="not installed"):
        storage.normalize_uri("pkg://no_such_package_xyz/data.txt")


def test_expand_files_dirs_and_globs(tmp_path):
    for name in ("a.txt", "b.txt", "sub/c.txt", "sub/_SUCCESS", ".hidden"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    got = storage.expand([str(tmp_path / "*.txt"), str(tmp_path / "sub")])
    assert [u.rsplit("/", 1)[1] for u in got] == ["a.txt", "b.txt", "c.txt"]


def test_expand_names_what_matched_nothing(tmp_path):
    with pytest.raises(StorageError, match=r"no input file matches '.*nothing\*\.txt'"):
        storage.expand([str(tmp_path / "nothing*.txt")])


def test_s3_round_trip_range_reads_and_listing(s3_server):
    root = s3_server.uri("storage-test")
    storage.write_bytes(f"{root}/a/b.bin", b"0123456789")
    assert storage.read_bytes(f"{root}/a/b.bin") == b"0123456789"
    fs, path = storage.filesystem(f"{root}/a/b.bin")
    assert fs.cat_file(path, start=2, end=5) == b"234"
    assert storage.list_files(root) == [f"{root}/a/b.bin"]
    assert storage.expand([f"{root}/a/*.bin"]) == [f"{root}/a/b.bin"]
    storage.remove_tree(root)
    assert not storage.exists(f"{root}/a/b.bin")


def test_missing_bucket_is_named_with_the_fix(s3_server):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' .* does not exist: create it"):
        storage.check_writable("s3://no-such-bucket/runs/x")
    storage.check_writable(s3_server.uri("runs", "x"))
