"""Tokenize: train a byte-level BPE vocabulary on Spark-counted pre-tokens, encode every shard.

    spark-submit jobs/tokenize_corpus.py --run-root URI [--vocab-size 4096]
        [--init-from VERSION_URI]

With ``--init-from`` (a registry version's folder) no vocabulary is learned: the corpus is
encoded with that version's tokenizer, so a continued model reads the ids it was trained on.

(Not named ``tokenize.py``: spark-submit puts this folder first on sys.path,
where that name would shadow the standard library module.)

Output under ``{run_root}/tokenize/``: ``tokenizer.json``, ``train/part-*.bin``
and ``val/part-*.bin`` (little-endian token ids, an end-of-document token
after each document) and ``manifest.json`` with tokens, bytes and bytes per
token of each split.
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Sequence
from functools import partial

import numpy as np
from tokenizers import Tokenizer

from sparklm import settings
from sparklm.data import tokenizer as bpe
from sparklm.data.document_shards import read_doc_texts
from sparklm.data.token_shards import token_dtype
from sparklm.registry import lineage
from sparklm.runtime import entrypoint, fault_injection, shared_paths, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.process_memory import peak_rss_mb
from sparklm.runtime.stages import (
    ArtifactFile,
    begin_stage,
    commit_stage,
    input_ref,
    listed_files,
    read_manifest,
)

STAGE = "tokenize"
UPSTREAM = "preprocess"
# Distinct pre-tokens kept for BPE training: bounds driver memory on huge corpora.
MAX_PRETOKENS = 2_000_000
# Documents per shard whose decode(encode(x)) == x is checked while encoding.
ROUNDTRIP_CHECKS = 16


def parse_args(argv: Sequence[str]):
    p = entrypoint.parser(__doc__.splitlines()[0])
    settings.add_arguments(p, STAGE)
    return p.parse_args(argv)


def count_partition(shard_uris):
    """Partition function: pre-token counts of the documents in some shards."""
    for uri in shard_uris:
        yield from bpe.count_pretokens(read_doc_texts(uri)).items()


def encode_partition(shards, *, tokenizer_json: str, stage: str, dtype: str):
    """Partition function: encode each listed shard into a ``.bin`` of token ids."""
    from pyspark import TaskContext

    # tokenizers' thread pool would take every core in each of the concurrent tasks;
    # it reads this once, when the worker first encodes.
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, TaskContext.get().cpus())))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    eod = bpe.special_ids(tokenizer)["eod"]
    for split, index, uri in shards:
        documents = list(read_doc_texts(uri))
        try:
            ids = bpe.encode_documents(tokenizer, documents, eod, np.dtype(dtype),
                                       check=ROUNDTRIP_CHECKS)  # fmt: skip
        except ValueError as exc:
            raise PipelineError(f"{uri}: {exc}") from None
        text_bytes = sum(len(d.encode()) + 1 for d in documents)  # +1: the document boundary
        yield ArtifactFile.write(
            stage,
            f"{split}/part-{index:05d}.bin",
            ids.tobytes(),
            tokens=len(ids),
            documents=len(documents),
            text_bytes=text_bytes,
        )


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    started = time.time()
    upstream = read_manifest(args.run_root, UPSTREAM)
    train_shards = [f["uri"] for f in listed_files(upstream, "train/")]
    val_shards = [f["uri"] for f in listed_files(upstream, "val/")]
    parent = lineage.for_job(args.init_from)
    if parent is not None:
        parent.check_settings(vars(args), lambda name: settings.SETTINGS[name].cli_flag)
    sc = entrypoint.spark_session("llm-tokenize").sparkContext
    shared_paths.check_executors_see(sc, [args.run_root])
    tokenizer, origin, seconds = vocabulary(sc, train_shards, args.vocab_size, parent)
    trained = time.time()
    stage = begin_stage(args.run_root, STAGE)
    files, encoded = encode_shards(sc, tokenizer, stage, train_shards, val_shards)
    vocab_size = tokenizer.get_vocab_size()
    stats = {
        "vocab_size": vocab_size,
        "requested_vocab_size": args.vocab_size,
        "dtype": token_dtype(vocab_size).name,
        **bpe.special_ids(tokenizer),
        **origin,
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": {**seconds, "encode": round(time.time() - trained, 3)},
        **{split: split_stats(encoded, split) for split in ("train", "val")},
    }
    fault_injection.crash_point("tokenize:before-commit")
    manifest = commit_stage(
        args.run_root,
        STAGE,
        files=files,
        started_at=started,
        params={"vocab_size": args.vocab_size, "init_from": args.init_from},
        inputs={UPSTREAM: input_ref(args.run_root, UPSTREAM)},
        stats=stats,
    )
    entrypoint.log.info(
        "tokenize committed: vocab %d, train %s, val %s", vocab_size, stats["train"], stats["val"]
    )
    return manifest


def vocabulary(sc, train_shards: list[str], vocab_size: int,
               parent: lineage.Parent | None) -> tuple[Tokenizer, dict, dict]:  # fmt: skip
    """The tokenizer to encode with, where it came from (for the manifest) and the seconds
    spent: the parent version's, or one learned from the training split's pre-tokens."""
    if parent is not None:
        tokenizer = Tokenizer.from_str(parent.read("tokenizer.json").decode())
        entrypoint.log.info("tokenize: the tokenizer of version %s (%d tokens), not learned",
                            parent.version, tokenizer.get_vocab_size())  # fmt: skip
        return tokenizer, {
            "tokenizer_from": {"uri": storage.join(parent.uri, "tokenizer.json"),
                               "version": parent.version,
                               "sha256": parent.sha256("tokenizer.json")},
            "distinct_pretokens": None,
        }, {"count": 0.0, "train_vocab": 0.0}  # fmt: skip
    counting = time.time()
    counts, distinct = count_pretokens(sc, train_shards)
    counted = time.time()
    tokenizer = learn_vocabulary(counts, vocab_size)
    return (
        tokenizer,
        {"tokenizer_from": None, "distinct_pretokens": distinct},
        {"count": round(counted - counting, 3), "train_vocab": round(time.time() - counted, 3)},
    )


def count_pretokens(sc, shards: list[str]) -> tuple[dict[str, int], int]:
    """Count the training split's pre-tokens on Spark: the ``MAX_PRETOKENS`` most frequent
    (all of them, if fewer) and how many distinct ones there are."""
    started = time.time()
    counts_rdd = (
        sc.parallelize(shards, len(shards))
        .mapPartitions(count_partition)
        .reduceByKey(operator.add, sc.defaultParallelism)
        .cache()
    )
    distinct = counts_rdd.count()
    if distinct > MAX_PRETOKENS:
        counts = dict(counts_rdd.takeOrdered(MAX_PRETOKENS, key=lambda kv: (-kv[1], kv[0])))
    else:
        counts = dict(counts_rdd.collect())
    counts_rdd.unpersist()
    entrypoint.log.info(
        "tokenize: %d distinct pre-tokens counted in %.1fs; the vocabulary learns from %d of "
        "them (%d occurrences)",
        distinct,
        time.time() - started,
        len(counts),
        sum(counts.values()),
    )
    return counts, distinct


def learn_vocabulary(counts: dict[str, int], vocab_size: int):
    """Train the byte-level BPE on the counts; a corpus may support fewer tokens than asked."""
    if len(counts) < 2:
        raise PipelineError(
            "the training split has too little text to learn a vocabulary; "
            "give preprocess a larger corpus"
        )
    tokenizer = bpe.train_from_counts(counts, vocab_size)
    if tokenizer.get_vocab_size() < vocab_size:
        entrypoint.log.warning(
            "the corpus supports only %d tokens; vocabulary is smaller than the requested %d",
            tokenizer.get_vocab_size(),
            vocab_size,
        )
    return tokenizer


def encode_shards(
    sc, tokenizer, stage: str, train_shards: list[str], val_shards: list[str]
) -> tuple[list[ArtifactFile], list[ArtifactFile]]:
    """Write ``tokenizer.json`` and encode every shard of both splits on Spark: (every file
    written, the encoded shards)."""
    tokenizer_json = tokenizer.to_str()
    vocab_size = tokenizer.get_vocab_size()
    files = [
        ArtifactFile.write(stage, "tokenizer.json", tokenizer_json.encode(), vocab_size=vocab_size)
    ]
    work = [("train", i, uri) for i, uri in enumerate(train_shards)]
    work += [("val", i, uri) for i, uri in enumerate(val_shards)]
    encoded = (
        sc.parallelize(work, len(work))
        .mapPartitions(partial(encode_partition, tokenizer_json=tokenizer_json, stage=stage,
                               dtype=token_dtype(vocab_size).name))
        .collect()
    )  # fmt: skip
    return files + encoded, encoded


def split_stats(encoded: list[ArtifactFile], split: str) -> dict:
    """Tokens, text bytes, documents and shards of one split, from its encoded shards."""
    parts = [f for f in encoded if f.path.startswith(f"{split}/")]
    tokens = sum(f.extra["tokens"] for f in parts)
    text_bytes = sum(f.extra["text_bytes"] for f in parts)
    return {
        "tokens": tokens,
        "bytes": text_bytes,
        "documents": sum(f.extra["documents"] for f in parts),
        "bytes_per_token": text_bytes / tokens,
        "shards": len(parts),
    }


if __name__ == "__main__":
    entrypoint.run(main)
