"""The preprocess job on local[2]: counts, splits, and clear errors for bad corpora."""

import gzip
import io
import json
import logging
import os
import random
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.corpora import article_pages, multistream_dump, small_corpus, write_text
from sparklm.data import holdout
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.stages import listed_files


def read_docs(manifest, split):
    rows = []
    for entry in listed_files(manifest, f"{split}/"):
        rows += pq.read_table(io.BytesIO(storage.read_bytes(entry["uri"]))).to_pylist()
    return rows


def all_docs(manifest):
    return read_docs(manifest, "train") + read_docs(manifest, "val")


def shakespeare_like(path, lines: int = 6000):
    """One file of dialogue without titles, like tiny-shakespeare's input.txt."""
    rng = random.Random(1)
    speakers = ["FIRST CITIZEN:", "MENENIUS:", "CORIOLANUS:", "VOLUMNIA:"]
    words = ["the", "of", "and", "to", "my", "lord", "that", "you", "is", "in", "not", "with"]
    out = []
    for i in range(lines):
        if i % 5 == 0:
            out += ["", rng.choice(speakers)]
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + f", {i}.")
    return write_text(path, "\n".join(out) + "\n")


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


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no input file matches"),
        ({"empty.txt": b""}, "is empty: its files hold no bytes"),
        (
            {"image.png": b"\x89PNG\r\n\x1a\n" + os.urandom(20000)},
            r"is binary data, not text: [\d,]+ of its [\d,]+ bytes .* binary: \d+",
        ),
        (
            {
                "image.png": b"\x89PNG\r\n\x1a\n" + os.urandom(20000) + b"\n = A title = \n"
                b"a readable line of text that passes every filter\n"
            },
            r"is binary data, not text",
        ),
        ({"tiny.txt": b"a\nb\n\n c \n"}, "too_short: 3"),
        (
            {"one.txt": b" = Only = \n a single article with enough text\n"},
            "1 document.* too little to hold out a validation split",
        ),
    ],
    ids=["no-match", "empty", "binary", "binary-with-a-text-line", "filtered-out", "one-document"],
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


def test_one_text_file_without_titles_is_split_into_blocks_with_a_warning(
    run_job, tmp_path, caplog
):
    corpus = shakespeare_like(tmp_path / "in" / "input.txt")
    with caplog.at_level(logging.WARNING, logger="sparklm"):
        manifest = run_job("preprocess", ["--run-root", f"file://{tmp_path / 'run'}",
                                          "--input", corpus])  # fmt: skip
    stats = manifest["stats"]
    assert (stats["split_unit"], stats["source_documents"]) == ("block", 1)
    assert stats["block_bytes"] == holdout.MIN_BLOCK_BYTES  # 240 kB of text
    assert "holding out contiguous blocks of ~4096 bytes" in caplog.text
    total = stats["train"]["bytes"] + stats["val"]["bytes"]
    assert 0.1 <= stats["val"]["bytes"] / total <= 0.1 + 2 * stats["block_bytes"] / total
    out = {line for doc in all_docs(manifest) for line in doc["text"].split("\n")}
    assert out == {line for line in corpus.read_text().split("\n") if line}  # nothing lost


def test_a_one_line_corpus_is_cut_into_pieces_and_nothing_is_lost(run_job, tmp_path):
    rng = random.Random(8)
    words = [f"w{rng.randrange(5000)}" for _ in range(400_000)]
    corpus = write_text(tmp_path / "in" / "text8", " ".join(words))  # ~2.4 MB, no newline
    manifest = run_job("preprocess", ["--run-root", f"file://{tmp_path / 'run'}", "--input",
                                      corpus, "--max-line-bytes", "65536"])  # fmt: skip
    stats = manifest["stats"]
    assert stats["split_unit"] == "block" and stats["input"]["lines"] > 36
    docs = all_docs(manifest)
    lines = [line for doc in docs for line in doc["text"].split("\n")]
    assert max(len(line.encode()) for line in lines) <= stats["block_bytes"]
    assert Counter(w for doc in docs for w in doc["text"].split()) == Counter(words)
    assert 0.1 <= stats["val"]["bytes"] / (stats["train"]["bytes"] + stats["val"]["bytes"]) < 0.15


@pytest.mark.parametrize("layout", ["documents", "blocks"])
def test_the_split_does_not_depend_on_how_files_are_cut_into_tasks(run_job, tmp_path, layout):
    corpus = (small_corpus(tmp_path / "in", documents=40) if layout == "documents"
              else shakespeare_like(tmp_path / "in" / "input.txt", lines=2000))  # fmt: skip
    runs = [run_job("preprocess", ["--run-root", f"file://{tmp_path / f'run-{mb}'}",
                                   "--input", corpus, "--split-mb", mb])
            for mb in ("0.002", "64")]  # fmt: skip
    assert runs[0]["stats"]["input"]["splits"] > 5 and runs[1]["stats"]["input"]["splits"] == 1
    assert runs[0]["files"] == runs[1]["files"]


def test_json_lines_and_parquet_datasets_with_bad_records(run_job, tmp_path):
    good = [{"text": f"record {i} holds a line of text"} for i in range(25)]
    bad = [{"title": "no text"}, {"text": None}, {"text": 7}, {"text": {"a": 1}}]
    lines = "\n".join(json.dumps(r) for r in good + bad) + "\n{broken\n"
    write_text(tmp_path / "in" / "part-0.jsonl.zst",
               pa.Codec("zstd").compress(lines.encode(), asbytes=True))  # fmt: skip
    write_text(
        tmp_path / "in" / "part-1.json.gz",
        gzip.compress(
            "\n".join(
                json.dumps({"text": f"gzipped record {i} of text"}) for i in range(10)
            ).encode()
        ),
    )
    texts = [f"parquet row {i} of the table" if i % 20 else None for i in range(40)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in" / "rows.parquet",
                   row_group_size=10)  # fmt: skip
    manifest = run_job("preprocess", ["--run-root", f"file://{tmp_path / 'run'}", "--input",
                                      tmp_path / "in", "--split-mb", "0.0001"])  # fmt: skip
    stats = manifest["stats"]
    assert stats["input"]["files"] == 3 and stats["input"]["splits"] >= 4 + 2
    assert {k: v["lines"] for k, v in stats["dropped"].items()} == {
        "missing_text_field": 2 + 2,
        "non_string_text_field": 2,
        "invalid_json": 1,
    }
    assert stats["train"]["documents"] + stats["val"]["documents"] == 25 + 10 + 38
    assert {d["text"] for d in all_docs(manifest)} >= {
        "parquet row 1 of the table",
        "gzipped record 9 of text",
    }


def test_ten_thousand_tiny_files_are_read_by_a_few_tasks(run_job, tmp_path):
    for i in range(10_000):
        write_text(tmp_path / "in" / f"{i // 1000}" / f"file-{i:05d}.txt",
                   f"tiny file number {i} has one line\n")  # fmt: skip
    manifest = run_job("preprocess", ["--run-root", f"file://{tmp_path / 'run'}",
                                      "--input", tmp_path / "in"])  # fmt: skip
    stats = manifest["stats"]
    assert stats["input"]["files"] == stats["input"]["splits"] == 10_000
    assert stats["input"]["tasks"] <= 16
    assert stats["train"]["documents"] + stats["val"]["documents"] == 10_000


def test_a_multistream_dump_spreads_over_tasks_and_reads_every_page_once(run_job, tmp_path):
    dump, index = multistream_dump(tmp_path / "in", article_pages(40), pages_per_stream=3)
    manifest = run_job("preprocess", ["--run-root", f"file://{tmp_path / 'run'}", "--input",
                                      tmp_path / "in", "--split-mb", "0.0005"])  # fmt: skip
    stats = manifest["stats"]
    assert stats["input"]["files"] == 1  # the index is read for offsets, not as text
    assert stats["input"]["splits"] > 4 and stats["input"]["tasks"] > 4
    docs = all_docs(manifest)
    assert len(docs) == len({d["doc_id"] for d in docs}) == 40
    assert sorted(int(d["text"].split()[1]) for d in docs) == list(range(40))


def test_package_corpus_split_does_not_depend_on_the_install_location(
    run_job, tmp_path, monkeypatch
):
    for site in ("venv-a", "venv-b"):
        write_text(tmp_path / site / "corpuspkg" / "__init__.py", "")
        small_corpus(tmp_path / site / "corpuspkg" / "data", documents=20)
    manifests = []
    for site in ("venv-a", "venv-b"):
        monkeypatch.syspath_prepend(str(tmp_path / site))
        monkeypatch.delitem(sys.modules, "corpuspkg", raising=False)
        manifests.append(run_job("preprocess", ["--run-root", f"file://{tmp_path / site}-run",
                                                "--input", "pkg://corpuspkg/data"]))  # fmt: skip
        monkeypatch.undo()
    assert manifests[0]["files"] == manifests[1]["files"]
    assert {d["source"] for d in all_docs(manifests[0])} == {"pkg://corpuspkg/data/corpus.txt"}


def test_the_spark_split_key_is_the_documented_one(spark):
    from helpers.jobs import load_job
    from sparklm.data.cleaning import document_id, split_key

    ids = [document_id("file:///c.txt", i) for i in range(2000)]
    column = load_job("preprocess").split_key_column
    frame = spark.createDataFrame([(i,) for i in ids], "id string")
    rows = frame.select("id", column(frame["id"]).alias("key")).collect()
    assert {r["id"]: r["key"] for r in rows} == {i: split_key(i) for i in ids}
