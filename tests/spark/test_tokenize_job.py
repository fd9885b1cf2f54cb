"""The tokenize job on local[2]: vocabulary from counts, lossless token shards."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from helpers.corpora import small_corpus
from helpers.jobs import copy_stages, load_job
from sparklm.data.document_shards import read_doc_texts
from sparklm.data.tokenizer import decode
from sparklm.runtime import storage
from sparklm.runtime.stages import StageNotCommitted, listed_files


@pytest.fixture(scope="module")
def tokenized(wikitext_run, tmp_path_factory):
    """The session's preprocessed Wikipedia text, tokenized again with a 1024-token vocabulary."""
    root = copy_stages(wikitext_run, tmp_path_factory.mktemp("tok"), ("preprocess",))
    return load_job("tokenize_corpus").main(["--run-root", root, "--vocab-size", "1024"])


def test_token_shards_decode_back_to_the_documents(tokenized):
    tokenizer = Tokenizer.from_str(
        storage.read_bytes(listed_files(tokenized, "tokenizer.json")[0]["uri"]).decode()
    )
    eod = tokenized["stats"]["eod"]
    preprocess = tokenized["inputs"]["preprocess"]["manifest"].rsplit("/", 1)[0]
    for split in ("train", "val"):
        for entry in listed_files(tokenized, f"{split}/"):
            ids = np.frombuffer(storage.read_bytes(entry["uri"]), dtype=tokenized["stats"]["dtype"])
            assert len(ids) == entry["tokens"]
            docs, current = [], []
            for i in ids.tolist():
                if i == eod:
                    docs.append(decode(tokenizer, current))
                    current = []
                else:
                    current.append(i)
            shard = f"{preprocess}/{entry['path'].replace('.bin', '.parquet')}"
            assert docs == list(read_doc_texts(shard))


def test_manifest_reports_tokens_bytes_and_vocab(tokenized):
    stats = tokenized["stats"]
    assert stats["vocab_size"] == 1024 and stats["dtype"] == "uint16"
    for split in ("train", "val"):
        assert stats[split]["tokens"] > 0
        assert 2.0 < stats[split]["bytes_per_token"] < 6.0
    assert stats["train"]["tokens"] > 5 * stats["val"]["tokens"]


def test_tokenize_without_preprocess_names_the_missing_stage(run_job, tmp_path):
    with pytest.raises(StageNotCommitted, match="run the preprocess job"):
        run_job("tokenize_corpus", ["--run-root", f"file://{tmp_path}"])


def test_a_vocabulary_larger_than_the_corpus_supports_shrinks_with_a_warning(
    run_job, tmp_path, caplog
):
    corpus = small_corpus(tmp_path / "in", documents=12)
    root = f"file://{tmp_path / 'run'}"
    run_job("preprocess", ["--run-root", root, "--input", corpus])
    manifest = run_job("tokenize_corpus", ["--run-root", root, "--vocab-size", "60000"])
    stats = manifest["stats"]
    assert stats["requested_vocab_size"] == 60000
    assert 258 < stats["vocab_size"] < 2000 and stats["dtype"] == "uint16"
    assert "vocabulary is smaller than the requested 60000" in caplog.text


def test_bytes_per_token_counts_utf8_bytes_not_characters(run_job, tmp_path):
    """bits/byte divides by UTF-8 bytes: on text that is mostly not ASCII, characters would
    be off by a factor of about two (on WikiText only by 0.2 %, which no test would see)."""
    lines = []
    for d in range(60):
        lines += ["", f" = Άρθρο {d} = ", ""]
        lines += [f" Το κείμενο {d} μιλά για το θέμα {d % 5} — «σημαντικό» ή όχι ; {p} ."
                  for p in range(3)]  # fmt: skip
    corpus = tmp_path / "greek.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = f"file://{tmp_path / 'run'}"
    preprocess = run_job("preprocess", ["--run-root", root, "--input", str(corpus)])
    stats = run_job("tokenize_corpus", ["--run-root", root, "--vocab-size", "300"])["stats"]
    for split in ("train", "val"):
        docs = [doc for entry in listed_files(preprocess, f"{split}/")
                for doc in read_doc_texts(entry["uri"])]  # fmt: skip
        assert docs, split
        utf8 = sum(len(doc.encode("utf-8")) + 1 for doc in docs)  # +1: each document boundary
        assert stats[split]["bytes"] == utf8
        assert utf8 > 1.5 * sum(len(doc) + 1 for doc in docs)  # the corpus is not ASCII
        assert stats[split]["bytes_per_token"] == utf8 / stats[split]["tokens"]
