"""URIs and the fsspec storage path, on local disk and on the real S3 server."""

import os
import re
import time

import pytest

from helpers.corpora import write_text
from sparklm.runtime import storage
from sparklm.runtime.ownership import MARKER, check_run_root
from sparklm.runtime.stages import begin_stage
from sparklm.runtime.storage import StorageError, SymlinkRefused


def test_bare_paths_become_absolute_file_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize_uri("runs/x") == f"file://{tmp_path}/runs/x"


@pytest.mark.parametrize("uri", ["s3a://bucket/x", "hdfs://nn/x", "s3://", "  "])
def test_unusable_uris_are_refused_with_the_fix(uri):
    with pytest.raises(StorageError, match="s3://|URI"):
        storage.normalize_uri(uri)


def test_each_unusable_uri_gets_its_reason_and_the_fix():
    expected = {
        "  ": "empty URI: give a file:// path, an s3://bucket/prefix or a local path",
        "s3a://bucket/x": "unsupported URI scheme 's3a' in 's3a://bucket/x': use file://, s3:// "
        "(EMR and S3-compatible servers; s3a:// and s3n:// are Hadoop names for the same "
        "buckets, write s3:// instead) or pkg://",
    }
    for uri, message in expected.items():
        with pytest.raises(StorageError) as refused:
            storage.normalize_uri(uri)
        assert str(refused.value) == message


def test_one_location_has_one_uri_however_it_is_written(tmp_path, monkeypatch):
    """URIs are compared as strings (allow-listed prefixes, a registry pointer against its own
    registry) and recorded in manifests: every spelling of a location normalizes alike."""
    monkeypatch.chdir(tmp_path)
    spellings = {
        "//X/corpus.txt": "file:///X/corpus.txt",  # POSIX keeps a leading "//"; a URI does not
        "file:////X/corpus.txt": "file:///X/corpus.txt",
        "chapter#1.txt": f"file://{tmp_path}/chapter#1.txt",  # a bare path is no URL: no fragment
        "s3://bucket/registry/m/3/": "s3://bucket/registry/m/3",
        "s3://bucket/registry/m/3": "s3://bucket/registry/m/3",
    }
    assert {raw: storage.normalize_uri(raw) for raw in spellings} == spellings


def test_joined_uris_keep_every_character_of_the_base():
    assert storage.join("s3://bucket/runs/MAX", "train") == "s3://bucket/runs/MAX/train"
    assert storage.join("file:///X", "a", "b.bin") == "file:///X/a/b.bin"
    assert storage.join("s3://bucket/", "m") == "s3://bucket/m"


def test_package_uri_resolves_to_an_installed_file():
    uri = storage.normalize_uri("pkg://sparklm/runtime/storage.py")
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
    write_text(tmp_path / "a.txt", "text\n")
    with pytest.raises(StorageError) as refused:
        storage.expand([str(tmp_path / "a.txt"), "/no/such.txt", str(tmp_path / "b*.txt")])
    assert str(refused.value) == (
        f"no input file matches '/no/such.txt', '{tmp_path}/b*.txt': check the path or glob "
        "(local paths, file://, s3://bucket/prefix and pkg://package/path are accepted)"
    )


def test_a_spark_marker_named_directly_is_not_read_as_corpus(tmp_path):
    """``_SUCCESS`` and ``_temporary`` are Hadoop bookkeeping, not text, even when named."""
    write_text(tmp_path / "out" / "part-00000.txt", "text\n")
    write_text(tmp_path / "out" / "_SUCCESS", "")
    with pytest.raises(StorageError, match="no input file matches '.*/_SUCCESS'"):
        storage.expand([str(tmp_path / "out" / "_SUCCESS")])
    assert storage.expand([str(tmp_path / "out")]) == [f"file://{tmp_path}/out/part-00000.txt"]


def test_reading_a_missing_file_names_it():
    with pytest.raises(StorageError, match=r"^file:///no/such/file does not exist$"):
        storage.read_bytes("file:///no/such/file")


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


def test_a_run_root_with_a_glob_character_is_refused_before_touching_another_run(s3_server):
    """s3fs reads ``*`` in a path it deletes as a pattern: clearing a stage of ``runs/exp-*``
    would clear ``runs/exp-1``'s."""
    client, bucket = s3_server.client(), s3_server.bucket
    other = "glob-refused/exp-1/preprocess"
    for name in (MARKER, "manifest.json", "train/part-00000.parquet"):
        client.put_object(Bucket=bucket, Key=f"{other}/{name}", Body=b"{}")
    run_root = s3_server.uri("glob-refused", "exp-*")
    with pytest.raises(StorageError) as refused:
        begin_stage(check_run_root(run_root), "preprocess")
    assert str(refused.value) == (
        f"run root '{run_root}' contains the glob character '*', which storage would match "
        "against other folders' names: choose a run root without '*', '?' or '['"
    )
    assert storage.list_files(s3_server.uri(other)) == [
        s3_server.uri(other, name) for name in (MARKER, "manifest.json", "train/part-00000.parquet")
    ]


def test_removing_an_s3_tree_never_reads_its_name_as_a_glob(s3_server):
    """Keys with ``*``, ``?`` and ``[`` (written by another S3 client) are deleted literally,
    and nothing a pattern of them would match is."""
    client, bucket = s3_server.client(), s3_server.bucket
    names = ["exp-1", "exp-10", "exp-2", "exp-*", "exp-[1]", "exp-?"]
    for name in names:
        for key in ("stage/a.bin", "stage/b/c.bin", "manifest.json"):
            client.put_object(Bucket=bucket, Key=f"literal/{name}/{key}", Body=b"x")

    def left() -> set[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="literal/")
        return {o["Key"] for o in listed.get("Contents", [])}

    everything = left()
    storage.remove_tree(s3_server.uri("literal", "exp-[1]", "stage"))
    storage.remove_tree(s3_server.uri("literal", "exp-?", "manifest.json"))
    storage.remove_tree(s3_server.uri("literal", "exp-*"))
    gone = {k for k in everything if k.startswith(("literal/exp-[1]/stage/", "literal/exp-*/"))}
    gone.add("literal/exp-?/manifest.json")
    assert left() == everything - gone


def test_a_local_run_root_that_is_a_file_is_named_with_the_fix(tmp_path):
    write_text(tmp_path / "afile", "x")
    for root in (tmp_path / "afile", tmp_path / "afile" / "run"):
        with pytest.raises(StorageError) as refused:
            storage.check_writable(f"file://{root}")
        assert str(refused.value) == (
            f"cannot write in file://{root}: it is a file, or lies below one, not a folder. "
            "Choose another location, or move that file away"
        )


def test_a_local_run_root_the_job_may_not_create_is_named_with_the_fix(tmp_path, monkeypatch):
    """(Simulated: these tests may run as root, whom file modes do not stop.)"""
    root = tmp_path / "ro" / "run"

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(os, "makedirs", denied)
    with pytest.raises(StorageError) as refused:
        storage.check_writable(f"file://{root}")
    assert str(refused.value) == (
        f"cannot write in file://{root}: no permission to create {root}. Choose a location "
        "this job may write in, or grant it write access there"
    )


def test_missing_bucket_is_named_with_the_fix(s3_server):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' .* does not exist: create it"):
        storage.check_writable("s3://no-such-bucket/runs/x")
    storage.check_writable(s3_server.uri("runs", "x"))


def test_a_local_run_root_is_made_and_a_rerun_finds_it_made(tmp_path):
    root = tmp_path / "runs" / "x"
    storage.check_writable(f"file://{root}")
    assert root.is_dir()
    storage.check_writable(f"file://{root}")  # a rerun: the folder exists


def test_a_bucket_deleted_since_it_was_last_listed_is_named_missing(s3_server):
    """A long-lived process (the Airflow worker) checks again from S3, not from its listing
    cache: a bucket deleted since the last check is missing now."""
    client = s3_server.client()
    client.create_bucket(Bucket="deleted-later")
    client.put_object(Bucket="deleted-later", Key="runs/earlier", Body=b"")
    storage.check_writable("s3://deleted-later/runs/x")
    client.delete_object(Bucket="deleted-later", Key="runs/earlier")
    client.delete_bucket(Bucket="deleted-later")
    deadline = time.monotonic() + 30  # SeaweedFS drops a deleted bucket's folder a moment later
    while "deleted-later" in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        assert time.monotonic() < deadline, "the S3 server still lists the deleted bucket"
        time.sleep(0.1)
    with pytest.raises(StorageError, match="bucket 'deleted-later' .* does not exist: create it"):
        storage.check_writable("s3://deleted-later/runs/x")


def test_a_bucket_the_credentials_cannot_reach_is_named_with_the_fix(s3_server, monkeypatch):
    from s3fs import S3FileSystem

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(S3FileSystem, "_cache", {})  # a fresh client, with those credentials
    run_root = s3_server.uri("runs", "x")
    with pytest.raises(StorageError) as refused:
        storage.check_writable(run_root)
    assert str(refused.value) == (
        f"no access to bucket '{s3_server.bucket}' of run root {run_root}: check the AWS "
        "credentials and the bucket policy"
    )


@pytest.mark.parametrize(
    "spec",
    ["HOME/.aws/credentials", "HOME/.ssh", "HOME/.ssh/*", "HOME/project/.git/config",
     "HOME/.config/../.aws/credentials"],
)  # fmt: skip
def test_hidden_paths_are_never_read(tmp_path, spec):
    home = tmp_path / "home"
    for secret in (".aws/credentials", ".ssh/id_ed25519", "project/.git/config"):
        write_text(home / secret, "secret")
    with pytest.raises(StorageError, match="hidden folder or file '.(aws|ssh|git)'"):
        storage.expand([spec.replace("HOME", str(home))])


def test_a_hidden_path_is_refused_saying_why_and_what_to_do():
    with pytest.raises(StorageError) as refused:
        storage.input_uri("/home/u/.aws/credentials")
    assert str(refused.value) == (
        "'/home/u/.aws/credentials' goes through the hidden folder or file '.aws': the pipeline "
        "never reads hidden paths (credentials such as .ssh/ and .aws/ live there). Move the "
        "corpus to a visible folder"
    )


def test_a_directory_corpus_skips_everything_hidden_below_it(tmp_path):
    home = tmp_path / "home"
    for name in ("notes.txt", "books/a.txt", ".aws/credentials", ".ssh/id_ed25519",
                 "books/.git/config", "books/_temporary/part-0"):  # fmt: skip
        write_text(home / name, "x")
    got = storage.expand([str(home)]) + storage.expand([f"{home}/*/*"])
    assert sorted({u.removeprefix(f"file://{home}/") for u in got}) == ["books/a.txt", "notes.txt"]


def test_links_out_of_a_corpus_folder_are_refused(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    write_text(corpus / "a.txt", "fine")
    write_text(elsewhere / "secret.txt", "secret")
    (corpus / "b.txt").symlink_to(elsewhere / "secret.txt")
    with pytest.raises(SymlinkRefused, match="b.txt .* is a link to .*elsewhere/secret.txt"):
        storage.expand([str(corpus)])
    (corpus / "b.txt").unlink()
    (corpus / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SymlinkRefused, match="outside"):
        storage.expand([f"{corpus}/*"])


def test_a_named_corpus_file_linked_elsewhere_is_refused_with_the_fix(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", os.path.realpath(tmp_path / "elsewhere")
    write_text(tmp_path / "elsewhere" / "secret.txt", "secret")
    (corpus / "b.txt").parent.mkdir()
    (corpus / "b.txt").symlink_to(tmp_path / "elsewhere" / "secret.txt")
    with pytest.raises(SymlinkRefused) as refused:
        storage.expand([str(corpus / "b.txt")])
    assert str(refused.value) == (
        f"{corpus}/b.txt (matched by '{corpus}/b.txt') is a link to {elsewhere}/secret.txt, "
        f"outside {os.path.realpath(corpus)}: the pipeline only reads corpus files that really "
        "lie, visibly, where the corpus URI points. Copy the file there instead of linking it"
    )


def test_a_linked_corpus_folder_may_not_lead_into_a_hidden_one(tmp_path):
    write_text(tmp_path / "home" / ".ssh" / "id_ed25519", "secret")
    (tmp_path / "corpus").symlink_to(tmp_path / "home" / ".ssh", target_is_directory=True)
    with pytest.raises(SymlinkRefused) as refused:
        storage.expand([str(tmp_path / "corpus")])
    secret = os.path.realpath(tmp_path / "home" / ".ssh" / "id_ed25519")
    assert str(refused.value) == (
        f"{tmp_path}/corpus/id_ed25519 (matched by '{tmp_path}/corpus') is a link to {secret}, "
        "a hidden path: the pipeline only reads corpus files that really lie, visibly, where "
        "the corpus URI points. Copy the file there instead of linking it"
    )


@pytest.mark.parametrize(
    "uri", ["pkg://sparklm/../conf/prompts.txt", "pkg://gensim/../../../../etc/hostname",
            "pkg://gensim/./test/x", "pkg://gensim", "pkg://gensim/test/.hidden/x"],
)  # fmt: skip
def test_package_uris_cannot_leave_their_package(uri):
    with pytest.raises(StorageError, match=r"inside its package|hidden"):
        storage.expand([uri])
    if "hidden" not in uri:
        with pytest.raises(StorageError, match=rf"^{re.escape(uri)}: a pkg:// URI names a file "
                           r"inside its package, without '\.' or '\.\.' segments: write "
                           "pkg://PACKAGE/path/inside/it$"):  # fmt: skip
            storage.expand([uri])


def test_the_default_corpus_in_a_hidden_virtualenv_is_still_read():
    [uri] = storage.expand(["pkg://gensim/test/test_data/enwiki-latest-pages-articles1.xml-"
                            "p000000010p000030302-shortened.bz2"])  # fmt: skip
    assert storage.size(uri) > 1_000_000


def requests_until_given_up(monkeypatch, max_attempts: int) -> int:
    """How many HTTP requests one S3 call makes to an endpoint that hangs up on every one."""
    import socket
    import threading

    from s3fs import S3FileSystem

    listener = socket.create_server(("127.0.0.1", 0))
    requests = []

    def hang_up_on_everyone():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            requests.append(connection.recv(65536).split(b" ", 2)[:2])
            connection.close()

    threading.Thread(target=hang_up_on_everyone, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("LLM_S3_MAX_ATTEMPTS", str(max_attempts))
    S3FileSystem.clear_instance_cache()  # a cached client would keep the last endpoint
    try:
        with pytest.raises(Exception) as raised:
            storage.exists("s3://nowhere/run/manifest.json")
    finally:
        listener.close()
    message = storage.unreachable_message(raised.value)
    assert message and f"after {max_attempts} attempts" in message
    assert requests and all(r == [b"HEAD", b"/nowhere/run/manifest.json"] for r in requests)
    return len(requests)


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_s3_max_attempts_is_the_number_of_attempts_really_made(monkeypatch, max_attempts):
    """The error says "after N attempts": N requests were made, each sent twice over the wire
    (aiohttp sends a request again, once, when the server hangs up before answering)."""
    assert requests_until_given_up(monkeypatch, max_attempts) == 2 * max_attempts


def test_a_fifo_or_a_device_is_never_read_as_a_corpus_file(tmp_path):
    corpus = tmp_path / "corpus"
    write_text(corpus / "a.txt", "text\n")
    os.mkfifo(corpus / "pipe.txt")  # a reader would block on it for ever
    with pytest.raises(StorageError) as refused:
        storage.expand([str(corpus)])
    assert str(refused.value) == (
        f"{corpus}/pipe.txt (matched by '{corpus}') is not a regular file (a FIFO, a device or a "
        "socket): name the files to read, or copy the data into a regular file"
    )
    with pytest.raises(StorageError, match="not a regular file"):
        storage.expand(["/dev/zero"])


def test_a_folder_link_inside_a_corpus_folder_is_refused_naming_the_folder(tmp_path):
    corpus = tmp_path / "corpus"
    write_text(corpus / "a.txt", "text\n")
    write_text(corpus / "real" / "b.txt", "more text\n")
    (corpus / "inner").symlink_to("real")  # inside the corpus: still not followed
    with pytest.raises(StorageError) as refused:
        storage.expand([str(corpus)])
    assert str(refused.value) == (
        f"{corpus}/inner (matched by '{corpus}') is a link to the folder "
        f"{os.path.realpath(corpus)}/real: links to folders are not followed; name that folder "
        "in the corpus URI instead"
    )
    (corpus / "inner").unlink()
    write_text(tmp_path / "elsewhere" / "c.txt", "secret\n")
    (corpus / "outer").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SymlinkRefused, match="outer .* is a link to .*elsewhere, outside"):
        storage.expand([str(corpus)])


def test_a_prompts_file_linked_to_a_secret_is_refused_and_nothing_is_read(tmp_path):
    secret = write_text(tmp_path / "home" / ".aws" / "credentials", "aws_secret_access_key=x\n")
    prompts = tmp_path / "prompts" / "prompts.txt"
    prompts.parent.mkdir()
    prompts.symlink_to(secret)
    with pytest.raises(SymlinkRefused, match="is a link to"):
        storage.read_user_file(str(prompts), 1024, "prompts file")


def test_a_prompts_file_is_read_only_up_to_its_limit(tmp_path):
    prompts = write_text(tmp_path / "prompts.txt", "one prompt\n" * 200)
    assert storage.read_user_file(str(prompts), 4096, "prompts file").count(b"\n") == 200
    with pytest.raises(StorageError, match="prompts file .* is larger than 1,024 bytes"):
        storage.read_user_file(str(prompts), 1024, "prompts file")
    with pytest.raises(StorageError, match="not a regular file"):
        storage.read_user_file("/dev/zero", 1024, "prompts file")


def test_a_prompts_file_of_exactly_its_limit_is_read(tmp_path):
    prompts = write_text(tmp_path / "prompts.txt", "x" * 1023 + "\n")
    assert len(storage.read_user_file(str(prompts), 1024, "prompts file")) == 1024


def test_a_huge_file_is_refused_without_being_read_into_memory(tmp_path):
    """Memory stays bounded whatever the file: only the limit and one byte are read."""
    import tracemalloc

    huge = tmp_path / "prompts.txt"
    with huge.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB on paper, nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(StorageError, match="is larger than 1,024 bytes: shorten it"):
            storage.read_user_file(str(huge), 1024, "prompts file")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_a_prompts_glob_matching_several_files_is_refused_naming_them_all(tmp_path):
    for name in ("a.txt", "b.txt"):
        write_text(tmp_path / name, "one prompt\n")
    with pytest.raises(StorageError) as refused:
        storage.read_user_file(f"{tmp_path}/*.txt", 1024, "prompts file")
    assert str(refused.value) == (
        f"the prompts file '{tmp_path}/*.txt' matches 2 files: name one file"
    )


def test_a_version_file_that_is_a_fifo_is_never_read(tmp_path):
    """read_bounded is also called directly (a registry version's files), without expand."""
    os.mkfifo(tmp_path / "config.json")
    uri = f"file://{tmp_path}/config.json"
    with pytest.raises(StorageError) as refused:
        storage.read_bounded(uri, 1024, "version file config.json")
    assert str(refused.value) == (
        f"{tmp_path}/config.json (matched by '{uri}') is not a regular file (a FIFO, a device "
        "or a socket): name the files to read, or copy the data into a regular file"
    )


def test_a_uri_outside_its_root_is_refused(tmp_path):
    """The guard every owned write and read goes through: a checkpoint pointer naming
    ``../../elsewhere`` cannot lead out of its stage."""
    root = f"file://{tmp_path}/run/train"
    for uri in (f"file://{tmp_path}/run", f"file://{tmp_path}/run/elsewhere/x"):
        with pytest.raises(StorageError) as refused:
            storage.refuse_symlinks(root, uri)
        assert str(refused.value) == f"{uri} lies outside {root}"
    storage.refuse_symlinks(root, f"{root}/checkpoints/round-00001")


def connection_failure(error: type[Exception]) -> Exception:
    """What a storage call raises when the endpoint is down: botocore's error, wrapped."""
    try:
        try:
            raise error(endpoint_url="http://127.0.0.1:9/bucket/run/manifest.json")
        except error as inner:
            raise OSError("s3fs gave up") from inner
    except OSError as outer:
        return outer


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({"AWS_ENDPOINT_URL_S3": "http://s3.local:9000", "AWS_ENDPOINT_URL": "http://other"},
         "http://s3.local:9000"),
        ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "http://minio:9000"),
        ({}, "AWS S3"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("error", ["EndpointConnectionError", "ConnectTimeoutError",
                                   "ConnectionClosedError"])  # fmt: skip
def test_an_unreachable_endpoint_is_named_with_the_attempts_and_the_fix(
    monkeypatch, env, endpoint, error
):
    """The message a failed task ends with: which endpoint, how many tries, what to do."""
    import botocore.exceptions

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "LLM_S3_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    failure = connection_failure(getattr(botocore.exceptions, error))
    assert storage.unreachable_message(failure) == (
        f"storage unreachable at {endpoint} after 10 attempts ({failure.__cause__}). Check that "
        "the S3 endpoint is up and reachable from every node; retrying the task resumes from "
        "the last committed stage"
    )


def test_an_unreachable_endpoint_is_found_however_the_error_was_chained():
    import botocore.exceptions

    cause = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    raised_from = OSError("s3fs gave up")
    raised_from.__cause__ = cause  # `raise ... from cause`, outside the handler
    during = OSError("while handling it")
    during.__context__ = cause  # raised while handling it
    for failure in (raised_from, during):
        assert "storage unreachable at" in (storage.unreachable_message(failure) or "")
    assert storage.unreachable_message(OSError("no such bucket")) is None
