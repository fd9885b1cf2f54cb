"""The preprocess job on local[2]: counts, splits, and clear errors for bad corpora."""

import gzip
import io
import os

import pyarrow.parquet as pq
import pytest

from sparklm import storage
from sparklm.errors import PipelineError
from sparklm.stage import listed_files
from support import small_corpus, write_text


def read_docs(manifest, split):
    rows = []
    for entry in listed_files(manifest, f"{split}/"):
        rows += pq.read_table(io.BytesIO(storage.read_bytes(entry["uri"]))).to_pylist()
    return rows


def test_documents_are_cleaned_deduplicated_and_split(run_job, tmp_path):
    corpus = small_corpus(tmp_path / "in", documents=40)
    # A duplicate paragraph, an invalid byte, and a gzip copy of another article.
    with open(corpus, "ab") as f:
        f.write(
            b" = Extra = \n Paragraph 0 of article 1 talks about topic 1 and the number "
            b"31 , which matters for the story of article 1 .\n A line with a bad \xff byte.\n"
        )
    write_text(
        tmp_path / "in" / "more.txt.gz",
        gzip.compress(b" = Gz = \n compressed text is read too\n"),
    )
    root = f"file://{tmp_path / 'run'}"
    manifest = run_job("preprocess", ["--run-root", root, "--input", str(tmp_path / "in")])

    stats = manifest["stats"]
    assert stats["input"]["files"] == 2
    assert stats["input"]["invalid_utf8_bytes_replaced"] == 1
    assert stats["dropped"]["duplicate"]["lines"] == 1
    assert stats["train"]["documents"] + stats["val"]["documents"] == 42
    assert stats["val"]["documents"] >= 1
    train, val = read_docs(manifest, "train"), read_docs(manifest, "val")
    assert len(train) == stats["train"]["documents"] and len(val) == stats["val"]["documents"]
    assert not {d["doc_id"] for d in train} & {d["doc_id"] for d in val}
    texts = [d["text"] for d in train + val]
    assert any("compressed text is read too" in t for t in texts)
    assert any("bad \ufffd byte" in t for t in texts)
    article = next(t for t in texts if t.startswith("= Article number 5 ="))
    assert article.count("\n") == 4  # heading + 4 paragraphs, in order
    assert [ln.split()[1] for ln in article.split("\n")[1:]] == ["0", "1", "2", "3"]


def test_rerun_gives_identical_shards(run_job, tmp_path):
    corpus = small_corpus(tmp_path / "in", documents=12)
    root = f"file://{tmp_path / 'run'}"
    first = run_job("preprocess", ["--run-root", root, "--input", corpus])
    second = run_job("preprocess", ["--run-root", root, "--input", corpus])
    assert first["files"] == second["files"]


def test_a_10mb_single_line_is_handled(run_job, tmp_path):
    corpus = write_text(
        tmp_path / "in" / "long.txt",
        " = Long = \n" + "word " * 2_000_000 + "\n = Short = \n a short article\n",
    )
    root = f"file://{tmp_path / 'run'}"
    manifest = run_job("preprocess", ["--run-root", root, "--input", corpus])
    assert manifest["stats"]["input"]["bytes"] > 10_000_000
    longest = max(
        (d["text"] for d in read_docs(manifest, "train") + read_docs(manifest, "val")), key=len
    )
    assert len(longest) > 9_000_000


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no input file matches"),
        ({"empty.txt": b""}, "produced no usable text"),
        ({"image.png": b"\x89PNG\r\n\x1a\n" + os.urandom(20000)}, r"binary: \d+"),
        ({"tiny.txt": b"a\nb\n\n c \n"}, "too_short: 3"),
        ({"one.txt": b" = Only = \n a single article with enough text\n"}, "single document"),
    ],
    ids=["no-match", "empty", "binary", "filtered-out", "one-document"],
)
def test_bad_corpora_fail_clearly_without_a_manifest(run_job, tmp_path, files, message):
    for name, data in files.items():
        write_text(tmp_path / "in" / name, data)
    root = tmp_path / "run"
    with pytest.raises(PipelineError, match=message):
        run_job("preprocess", ["--run-root", f"file://{root}", "--input", f"{tmp_path}/in/*"])
    assert not (root / "preprocess" / "manifest.json").exists()


def test_missing_bucket_fails_before_any_work(run_job, s3_server, tmp_path):
    corpus = small_corpus(tmp_path / "in", documents=3)
    with pytest.raises(PipelineError, match="bucket 'missing-bucket' .* does not exist"):
        run_job("preprocess", ["--run-root", "s3://missing-bucket/run", "--input", corpus])


def test_an_explicit_validation_corpus_replaces_the_hash_split(run_job, tmp_path):
    train = small_corpus(tmp_path / "train", documents=10)
    held_out = write_text(tmp_path / "held" / "test.txt",
                          " = Held out one = \n first held out text\n"
                          " = Held out two = \n second held out text\n")  # fmt: skip
    root = f"file://{tmp_path / 'run'}"
    manifest = run_job("preprocess", ["--run-root", root, "--input", train,
                                      "--val-input", held_out])  # fmt: skip
    assert manifest["stats"]["train"]["documents"] == 10
    assert manifest["stats"]["val"]["documents"] == 2
    assert all("held out" in d["text"] for d in read_docs(manifest, "val"))
