"""Preprocess: raw corpus files → cleaned, de-duplicated documents split into train/val.

    spark-submit jobs/preprocess.py --run-root URI --input URI[,URI…] \
        [--val-fraction 0.1] [--min-chars 8] [--split-mb 64]

Output under ``{run_root}/preprocess/``: ``train/part-*.parquet`` and
``val/part-*.parquet`` (doc_id, source, text) plus ``manifest.json`` with the
counts of documents, lines and bytes kept and dropped by reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import astuple, replace
from functools import partial

from sparklm import allowlist, faults, sparkjob, storage
from sparklm.errors import PipelineError
from sparklm.shards import write_doc_shard
from sparklm.sources import plan_splits, read_split
from sparklm.stage import begin_stage, commit_stage

STAGE = "preprocess"
SPLITS = ("train", "val")
TARGET_SHARD_BYTES = 64 * 2**20
MIN_SPLIT_BYTES = 2**20


def parse_args(argv: Sequence[str]):
    p = sparkjob.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--input",
        required=True,
        help="comma-separated files, directories or globs (.txt, .txt.gz, .txt.bz2, "
        "MediaWiki .xml/.xml.bz2 dumps); file://, s3:// or pkg://",
    )
    p.add_argument(
        "--val-input",
        help="optional held-out corpus (same forms as --input): its documents form the "
        "validation split and --val-fraction is ignored",
    )
    p.add_argument(
        "--allowed-corpus-prefixes",
        help="comma-separated URI prefixes every input must lie under, or '*' for anywhere "
        f"(default: ${allowlist.CORPUS_ENV}, else anywhere)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of documents held out for validation (default 0.1)",
    )
    p.add_argument(
        "--min-chars", type=int, default=8, help="drop cleaned lines shorter than this (default 8)"
    )
    p.add_argument(
        "--split-mb",
        type=float,
        default=64,
        help="largest byte range of a plain-text file one task reads (default 64)",
    )
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 0.5:
        p.error("--val-fraction must be between 0 and 0.5 (exclusive), e.g. 0.1")
    if args.min_chars < 1:
        p.error("--min-chars must be at least 1")
    if args.split_mb <= 0:
        p.error("--split-mb must be positive")
    return args


def read_partition(splits, *, min_chars: int, val_fraction: float, val_files: frozenset[str]):
    """Partition function: read the splits of one task into row tuples.

    With an explicit validation corpus (``val_files``), a document's split follows
    the file it came from instead of its hash.
    """
    faults.fail_first_attempt("preprocess:read-task")
    for split in splits:
        for record in read_split(split, min_chars=min_chars, val_fraction=val_fraction):
            if val_files:
                record = replace(record, split="val" if split.uri in val_files else "train")
            yield astuple(record)


def write_partition(index, rows, *, stage: str, split: str):
    """Partition function: write the documents of one shuffle partition as one Parquet shard."""
    written = write_doc_shard(
        stage, f"{split}/part-{index:05d}.parquet", ((r.doc_id, r.source, r.text) for r in rows)
    )
    return [written] if written else []


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    started = time.time()
    inputs = args.input.split(",") + (args.val_input.split(",") if args.val_input else [])
    allowlist.check_corpus(inputs, args.allowed_corpus_prefixes)
    val_files = storage.expand(args.val_input.split(",")) if args.val_input else []
    files = sorted(set(storage.expand(args.input.split(","))) | set(val_files))
    storage.check_writable(args.run_root)

    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.window import Window

    spark = sparkjob.spark_session("llm-preprocess")
    sc = spark.sparkContext
    parallelism = sc.defaultParallelism
    total_bytes = sum(storage.size(f) for f in files)
    split_bytes = int(
        min(args.split_mb * 2**20, max(MIN_SPLIT_BYTES, math.ceil(total_bytes / (2 * parallelism))))
    )
    splits = plan_splits(files, split_bytes)
    sparkjob.log.info(
        "preprocess: %d file(s), %.1f MB, %d split(s) of ≤ %.1f MB",
        len(files),
        total_bytes / 1e6,
        len(splits),
        split_bytes / 1e6,
    )

    schema = T.StructType(
        [
            T.StructField("doc_id", T.StringType()),
            T.StructField("source", T.StringType()),
            T.StructField("position", T.LongType()),
            T.StructField("text", T.StringType()),
            T.StructField("drop_reason", T.StringType()),
            T.StructField("invalid_bytes", T.LongType()),
            T.StructField("raw_bytes", T.LongType()),
            T.StructField("split", T.StringType()),
            T.StructField("split_key", T.DoubleType()),
        ]
    )
    rows = sc.parallelize(splits, len(splits)).mapPartitions(
        partial(
            read_partition,
            min_chars=args.min_chars,
            val_fraction=args.val_fraction,
            val_files=frozenset(val_files),
        )
    )
    lines = spark.createDataFrame(rows, schema).persist(StorageLevel.MEMORY_AND_DISK)

    by_reason = {
        r["drop_reason"] or "kept": r
        for r in lines.groupBy("drop_reason")
        .agg(
            F.count("*").alias("lines"),
            F.sum("raw_bytes").alias("bytes"),
            F.sum("invalid_bytes").alias("invalid_bytes"),
        )
        .collect()
    }
    dropped = {
        reason: {"lines": r["lines"], "bytes": r["bytes"]}
        for reason, r in by_reason.items()
        if reason != "kept"
    }

    # Exact duplicate paragraphs: keep the first occurrence in corpus order.
    first_seen = Window.partitionBy("text").orderBy("source", "position", "doc_id")
    unique = (
        lines.where(F.col("drop_reason").isNull())
        .withColumn("occurrence", F.row_number().over(first_seen))
        .where(F.col("occurrence") == 1)
    )
    docs = (
        unique.groupBy("doc_id", "source", "split", "split_key")
        .agg(
            F.sort_array(F.collect_list(F.struct("position", "text"))).alias("lines"),
            F.sum("raw_bytes").alias("raw_bytes"),
        )
        .select(
            "doc_id",
            "source",
            "split",
            "split_key",
            "raw_bytes",
            F.concat_ws("\n", F.col("lines.text")).alias("text"),
            F.size("lines").alias("lines"),
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    split_stats = {
        r["split"]: r.asDict()
        for r in docs.groupBy("split")
        .agg(
            F.count("*").alias("documents"),
            F.sum("lines").alias("lines"),
            F.sum(F.octet_length("text")).alias("bytes"),
            F.sum("raw_bytes").alias("raw_bytes"),
        )
        .collect()
    }
    kept = by_reason.get("kept")
    unique_lines = sum(s["lines"] for s in split_stats.values())
    if kept and kept["lines"] > unique_lines:
        dropped["duplicate"] = {
            "lines": kept["lines"] - unique_lines,
            "bytes": kept["bytes"] - sum(s["raw_bytes"] for s in split_stats.values()),
        }
    docs, split_stats = ensure_both_splits(docs, split_stats, dropped, args)

    stage = begin_stage(args.run_root, STAGE)
    files_written = []
    for split in SPLITS:
        counts = split_stats[split]
        shards = max(
            1,
            min(
                counts["documents"],
                max(parallelism, math.ceil(counts["bytes"] / TARGET_SHARD_BYTES)),
            ),
        )
        written = (
            docs.where(F.col("split") == split)
            .select("doc_id", "source", "text")
            .repartition(shards, "doc_id")
            .sortWithinPartitions("doc_id")
            .rdd.mapPartitionsWithIndex(partial(write_partition, stage=stage, split=split))
            .collect()
        )
        files_written.extend(written)
        split_stats[split] = {
            "documents": counts["documents"],
            "lines": counts["lines"],
            "bytes": counts["bytes"],
            "shards": len(written),
        }

    faults.crash_point("preprocess:before-commit")
    lines.unpersist()
    docs.unpersist()
    manifest = commit_stage(
        args.run_root,
        STAGE,
        files=files_written,
        started_at=started,
        params={
            "input": args.input,
            "val_fraction": args.val_fraction,
            "min_chars": args.min_chars,
            "val_input": args.val_input,
            "split_bytes": split_bytes,
        },
        stats={
            "input": {
                "files": len(files),
                "splits": len(splits),
                "lines": sum(r["lines"] for r in by_reason.values()),
                "bytes": sum(r["bytes"] for r in by_reason.values()),
                "invalid_utf8_bytes_replaced": sum(r["invalid_bytes"] for r in by_reason.values()),
            },
            "dropped": dropped,
            "driver_peak_rss_mb": round(sparkjob.peak_rss_mb(), 1),
            **split_stats,
        },
    )
    sparkjob.log.info(
        "preprocess committed: train %s, val %s, dropped %s",
        split_stats["train"],
        split_stats["val"],
        dropped,
    )
    return manifest


def ensure_both_splits(docs, split_stats: dict, dropped: dict, args):
    """Refuse corpora that cannot be split by document; give a tiny corpus one doc on each side.

    With few documents the hash split can leave a side empty. Moving the
    document with the smallest (for val) or largest (for train) split key keeps
    the split deterministic and still by document.
    """
    from pyspark.sql import functions as F

    total = sum(s["documents"] for s in split_stats.values())
    if total == 0:
        reasons = ", ".join(f"{k}: {v['lines']}" for k, v in sorted(dropped.items())) or "none"
        raise PipelineError(
            f"corpus {args.input!r} produced no usable text (lines dropped by reason: {reasons}). "
            "Point --input at UTF-8 text or MediaWiki XML dumps (.txt, .txt.gz, .txt.bz2, .xml, "
            f".xml.bz2) or lower --min-chars ({args.min_chars})"
        )
    if total == 1:
        raise PipelineError(
            f"corpus {args.input!r} holds a single document; the train/validation split is by "
            "document, so at least 2 are needed. Add documents (in plain text, a line such as "
            "' = Title = ' starts a new one; each file is one at least)"
        )
    for split, order in (("val", F.asc("split_key")), ("train", F.desc("split_key"))):
        if split not in split_stats:
            donor = "train" if split == "val" else "val"
            moved = docs.where(F.col("split") == donor).orderBy(order, "doc_id").first()
            sparkjob.log.warning(
                "no document hashed into %s; moving document %s there", split, moved["doc_id"]
            )
            docs = docs.withColumn(
                "split", F.when(F.col("doc_id") == moved["doc_id"], split).otherwise(F.col("split"))
            )
            one = {
                "documents": 1,
                "lines": moved["lines"],
                "bytes": len(moved["text"].encode()),
                "raw_bytes": moved["raw_bytes"],
            }
            split_stats[split] = one
            split_stats[donor] = {k: split_stats[donor][k] - one[k] for k in one}
    return docs, split_stats


if __name__ == "__main__":
    sparkjob.run(main)
