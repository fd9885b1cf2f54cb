"""Preprocess: raw corpus files → cleaned, de-duplicated documents split into train/val.

    spark-submit jobs/preprocess.py --run-root URI --input URI[,URI…] [--val-input URI]
        [--val-fraction 0.1] [--text-field text] …   (--help lists every setting)

Reads plain text, JSON Lines, Parquet and MediaWiki dumps (plain or .gz/.bz2/.xz/.zst).
Output under ``{run_root}/preprocess/``: ``train/part-*.parquet`` and
``val/part-*.parquet`` (doc_id, source, text) plus ``manifest.json`` with the
counts of documents, lines and bytes kept and dropped by reason, and what the
split held out (documents, or blocks of a corpus with too few documents).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, astuple
from functools import partial
from itertools import pairwise

from sparklm import settings
from sparklm.data import holdout
from sparklm.data.decompression import ReadLimits
from sparklm.data.document_shards import write_doc_shard
from sparklm.data.lines import cut_text
from sparklm.data.records import field_path
from sparklm.data.sources import (
    LINE_COLUMNS,
    OPEN_COST_BYTES,
    TEXT,
    ReadOptions,
    SourceFile,
    continued_documents,
    corpus_files,
    group_splits,
    plan_splits,
    read_split,
    source_names,
)
from sparklm.runtime import allowlist, entrypoint, fault_injection, shared_paths, storage
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.process_memory import peak_rss_mb
from sparklm.runtime.stages import begin_stage, commit_stage

STAGE = "preprocess"
SPLITS = ("train", "val")
TARGET_SHARD_BYTES = 64 * 2**20
MIN_SPLIT_BYTES = 2**20


def parse_args(argv: Sequence[str]):
    p = entrypoint.parser(__doc__.splitlines()[0])
    p.add_argument("--allowed-corpus-prefixes",
                   help="comma-separated URI prefixes every input must lie under, or '*' for "
                        f"anywhere (default: ${allowlist.CORPUS_ENV}, else anywhere)")  # fmt: skip
    settings.add_arguments(p, STAGE)
    args = p.parse_args(argv)
    try:
        field_path(args.text_field)
    except ValueError as exc:
        p.error(str(exc))
    return args


def read_options(args) -> ReadOptions:
    limits = ReadLimits(args.max_line_bytes, args.max_record_bytes, args.max_decompressed_gb,
                        args.max_compression_ratio)  # fmt: skip
    return ReadOptions(args.min_chars, limits, field_path(args.text_field))


def read_partition(tasks, *, options: ReadOptions):
    """Partition function: read every split of this partition's task into row tuples."""
    fault_injection.fail_first_attempt("preprocess:read-task")
    for task in tasks:
        for split in task:
            for record in read_split(split, options):
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
    files, options = check_inputs(args)
    spark = entrypoint.spark_session("llm-preprocess")
    shared_paths.check_executors_see(spark.sparkContext,
                                     [args.run_root, *(f.uri for f in files)])  # fmt: skip
    clock = [("start", time.time())]  # phases, for the benchmarks' throughput per phase
    read = read_corpus(spark, files, options, args.split_mb)
    clock.append(("read", time.time()))
    docs, layout, split_stats = deduplicate_and_split(spark, read, args)
    clock.append(("deduplicate_and_split", time.time()))
    stage = begin_stage(args.run_root, STAGE)
    files_written = write_splits(docs, split_stats, stage, spark.sparkContext.defaultParallelism)
    clock.append(("write", time.time()))
    fault_injection.crash_point("preprocess:before-commit")
    read["unique"].unpersist()
    docs.unpersist()
    stats = {
        "input": {"files": len(files), "splits": len(read["splits"]), "tasks": len(read["tasks"]),
                  **read["input_stats"]},
        "dropped": read["dropped"], "split_unit": layout["unit"],
        "block_bytes": layout["block_bytes"], "source_documents": layout["documents"],
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": {name: round(t - before, 3) for (_, before), (name, t) in pairwise(clock)},
        **split_stats,
    }  # fmt: skip
    manifest = commit_stage(args.run_root, STAGE, files=files_written, started_at=started,
                            params=recorded_params(args, options, read["split_bytes"]),
                            stats=stats)  # fmt: skip
    entrypoint.log.info("preprocess committed: train %s, val %s, dropped %s",
                        split_stats["train"], split_stats["val"], read["dropped"])  # fmt: skip
    return manifest


def check_inputs(args) -> tuple[list[SourceFile], ReadOptions]:
    """Every input under the corpus allow-list and readable, the run root writable: refused
    before a Spark session is paid for."""
    inputs = args.corpus.split(",") + (args.val_input.split(",") if args.val_input else [])
    allowlist.check_corpus(inputs, args.allowed_corpus_prefixes)
    options = read_options(args)
    files = list_inputs(args)
    storage.check_writable(args.run_root)
    return files, options


def read_corpus(spark, files: list[SourceFile], options: ReadOptions, split_mb: float) -> dict:
    """Read every file into cleaned lines (persisted), with what was dropped and why."""
    parallelism = spark.sparkContext.defaultParallelism
    splits, tasks, split_bytes = plan_reading(files, options, split_mb, parallelism)
    entrypoint.widen_shuffles(spark, len(tasks))
    lines = read_lines(spark, tasks, options)
    dropped, input_stats, kept = drop_counts(lines)
    return {"splits": splits, "tasks": tasks, "split_bytes": split_bytes, "lines": lines,
            "dropped": dropped, "input_stats": input_stats, "kept": kept}  # fmt: skip


def deduplicate_and_split(spark, read: dict, args):
    """Documents from the lines, duplicates dropped (and counted in ``read['dropped']``), each
    assigned to train or validation. The lines are released; the documents stay persisted
    (``read['unique']``) until the splits are written."""
    unique = first_occurrences(resolve_documents(spark, read["lines"], read["splits"]))
    layout = choose_layout(unique, args, read["input_stats"], read["dropped"])
    read["lines"].unpersist()
    kept = read["kept"]
    if kept["lines"] > layout["lines"]:
        read["dropped"]["duplicate"] = {"lines": kept["lines"] - layout["lines"],
                                        "bytes": kept["bytes"] - layout["raw_bytes"]}  # fmt: skip
    docs, split_stats = assign_splits(to_units(unique, layout), layout, args)
    read["unique"] = unique  # released once the splits are written
    return docs, layout, split_stats


def recorded_params(args, options: ReadOptions, split_bytes: int) -> dict:
    """The settings the manifest records (what a rerun must match)."""
    return {"input": args.corpus, "val_fraction": args.val_fraction, "min_chars": args.min_chars,
            "val_input": args.val_input, "text_field": args.text_field,
            "split_bytes": split_bytes, **asdict(options.limits)}  # fmt: skip


def list_inputs(args) -> list[SourceFile]:
    """Every input file with its size and the name its documents go by."""
    specs = args.corpus.split(",")
    val_specs = args.val_input.split(",") if args.val_input else []
    val_files = set(corpus_files(storage.expand(val_specs))) if val_specs else set()
    uris = sorted(set(corpus_files(storage.expand(specs))) | val_files)
    names = source_names(specs + val_specs, uris)
    return [SourceFile(uri, names[uri], storage.size(uri), uri in val_files) for uri in uris]


def plan_reading(files: list[SourceFile], options: ReadOptions, split_mb: float,
                 parallelism: int):  # fmt: skip
    """Splits of about two per core (1–``split_mb`` MB each), grouped into tasks.

    Opening a file counts as reading OPEN_COST_BYTES, so many small files make a few
    tasks of many files each rather than a task per file.
    """
    total_bytes = sum(f.size for f in files)
    work = total_bytes + OPEN_COST_BYTES * len(files)
    split_bytes = int(
        min(split_mb * 2**20, max(MIN_SPLIT_BYTES, math.ceil(work / (2 * parallelism))))
    )
    splits = plan_splits(files, split_bytes, options)
    tasks = group_splits(splits, split_bytes)
    entrypoint.log.info(
        "preprocess: %d file(s), %.1f MB, %d split(s) of ≤ %.1f MB in %d task(s)",
        len(files),
        total_bytes / 1e6,
        len(splits),
        split_bytes / 1e6,
        len(tasks),
    )
    return splits, tasks, split_bytes


def read_lines(spark, tasks, options: ReadOptions):
    """Every line of the corpus, cleaned or with the reason it was dropped (persisted)."""
    from pyspark import StorageLevel

    schema = ", ".join(f"{name} {kind}" for name, kind in LINE_COLUMNS.items())
    rows = spark.sparkContext.parallelize(tasks, len(tasks)).mapPartitions(
        partial(read_partition, options=options)
    )
    return spark.createDataFrame(rows, schema).persist(StorageLevel.MEMORY_AND_DISK)


def drop_counts(lines) -> tuple[dict, dict, dict]:
    """Dropped lines and bytes by reason, the input's totals, and the kept lines and bytes."""
    from pyspark.sql import functions as F

    by_reason = {
        r["drop_reason"] or "kept": r
        for r in lines.groupBy("drop_reason").agg(
            F.count("*").alias("lines"), F.sum("raw_bytes").alias("bytes"),
            F.sum("invalid_bytes").alias("invalid_bytes"),
        ).collect()
    }  # fmt: skip
    dropped = {reason: {"lines": r["lines"], "bytes": r["bytes"]}
               for reason, r in by_reason.items() if reason != "kept"}  # fmt: skip
    kept = by_reason.get("kept")
    totals = {
        "lines": sum(r["lines"] for r in by_reason.values()),
        "bytes": sum(r["bytes"] for r in by_reason.values()),
        "invalid_utf8_bytes_replaced": sum(r["invalid_bytes"] for r in by_reason.values()),
    }
    return dropped, totals, {"lines": kept["lines"] if kept else 0,
                             "bytes": kept["bytes"] if kept else 0}  # fmt: skip


def resolve_documents(spark, lines, splits):
    """Give the lines that open a plain-text range the document begun in an earlier range."""
    from pyspark.sql import functions as F

    if not any(split.fmt == TEXT and split.start > 0 for split in splits):
        return lines  # every document began in the range its lines were read from
    last_starts = {
        (r["source"], r["split_start"]): r["last_start"]
        for r in lines.where(F.col("split_start").isNotNull() & F.col("doc_start").isNotNull())
        .groupBy("source", "split_start").agg(F.max("doc_start").alias("last_start")).collect()
    }  # fmt: skip
    continued = continued_documents(splits, last_starts)
    if not continued:
        return lines
    table = spark.createDataFrame(
        [(source, start, doc_id, doc_start) for (source, start), (doc_id, doc_start)
         in continued.items()],
        "source string, split_start long, continued_id string, continued_start long",
    )  # fmt: skip
    resolved = {
        "doc_id": F.coalesce("doc_id", "continued_id").alias("doc_id"),
        "doc_start": F.coalesce("doc_start", "continued_start").alias("doc_start"),
    }
    return lines.join(F.broadcast(table), ["source", "split_start"], "left").select(
        *[resolved.get(c, F.col(c)) for c in LINE_COLUMNS]
    )


def first_occurrences(lines):
    """Kept lines without exact duplicates (persisted): the first in corpus order stays."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    first_seen = Window.partitionBy("text").orderBy("source", "position", "doc_id")
    return (
        lines.where(F.col("drop_reason").isNull())
        .withColumn("occurrence", F.row_number().over(first_seen))
        .where(F.col("occurrence") == 1)
        .drop("occurrence")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def choose_layout(unique, args, input_stats: dict, dropped: dict) -> dict:
    """Split by document, or — with too few documents — by blocks of contiguous text."""
    from pyspark.sql import functions as F

    totals = unique.agg(F.countDistinct("doc_id").alias("documents"), F.count("*").alias("lines"),
                        F.sum(F.octet_length("text")).alias("text_bytes"),
                        F.sum("raw_bytes").alias("raw_bytes")).first()  # fmt: skip
    documents, text_bytes = totals["documents"], totals["text_bytes"] or 0
    not_text = not_a_text_corpus(args.corpus, input_stats, dropped)
    if documents == 0 or not_text:
        reasons = ", ".join(f"{k}: {v['lines']}" for k, v in sorted(dropped.items())) or "none"
        raise PipelineError(
            f"{not_text or f'corpus {args.corpus!r} produced no usable text'} (lines dropped by "
            f"reason: {reasons}). Point --input at UTF-8 text, JSON Lines (with --text-field), "
            f"Parquet or MediaWiki dumps, or lower --min-chars ({args.min_chars})"
        )
    layout = {"documents": documents, "lines": totals["lines"], "text_bytes": text_bytes,
              "raw_bytes": totals["raw_bytes"] or 0, "unit": "document", "block_bytes": None,
              "unit_bytes": holdout.MAX_DOCUMENT_BYTES}  # fmt: skip
    if args.val_input or documents >= holdout.min_documents(args.val_fraction):
        return layout
    block = holdout.block_bytes(text_bytes, args.val_fraction)
    if text_bytes < 2 * block:
        raise PipelineError(
            f"corpus {args.corpus!r} holds {documents} document(s) with {text_bytes:,} bytes of "
            f"text: too little to hold out a validation split (at least {2 * block:,} bytes, "
            f"or {holdout.min_documents(args.val_fraction)} documents). Add text, or give a "
            "held-out corpus with --val-input"
        )
    entrypoint.log.warning(
        "corpus holds %d document(s), fewer than the %d a split by document needs: holding out "
        "contiguous blocks of ~%d bytes by hash instead", documents,
        holdout.min_documents(args.val_fraction), block)  # fmt: skip
    return {**layout, "unit": "block", "block_bytes": block, "unit_bytes": block}


def not_a_text_corpus(corpus: str, input_stats: dict, dropped: dict) -> str | None:
    """What the user gave, when it is not text at all: empty files, or mostly binary data
    (a picture, an archive the readers do not know). None for a corpus of text."""
    total = input_stats["bytes"] or 0
    binary = (dropped.get("binary") or {}).get("bytes") or 0
    if total == 0:
        return f"corpus {corpus!r} is empty: its files hold no bytes"
    if 2 * binary >= total:
        return (f"corpus {corpus!r} is binary data, not text: {binary:,} of its {total:,} bytes "
                "are in lines of NUL bytes, invalid UTF-8 or control characters")  # fmt: skip
    return None


def to_units(unique, layout: dict):
    """One row per unit (a document, a part of a huge one, or a block) with its text."""
    from pyspark.sql import functions as F

    size = layout["unit_bytes"]
    lines = cut_long_lines(unique, size) if layout["unit"] == "block" else unique.withColumn(
        "piece", F.lit(0))  # fmt: skip
    part = F.floor((F.col("position") - F.col("doc_start")) / size).cast("long")
    tag = "#block-" if layout["unit"] == "block" else "#part-"
    hashed = F.substring(F.sha1(F.concat("doc_id", F.lit(tag), part.cast("string"))), 1, 20)
    unit = hashed if layout["unit"] == "block" else F.when(part == 0, F.col("doc_id")).otherwise(
        hashed)  # fmt: skip
    return (
        lines.withColumn("unit_id", unit)
        .groupBy("unit_id", "source", "held_out")
        .agg(
            F.sort_array(F.collect_list(F.struct("position", "piece", "text"))).alias("lines"),
            F.sum("raw_bytes").alias("raw_bytes"),
        )  # fmt: skip
        .select(
            F.col("unit_id").alias("doc_id"),
            "source",
            "held_out",
            split_key_column(F.col("unit_id")).alias("split_key"),
            "raw_bytes",
            F.concat_ws("\n", F.col("lines.text")).alias("text"),
            F.size("lines").alias("lines"),
        )  # fmt: skip
    )


def cut_long_lines(unique, max_bytes: int):
    """Lines longer than a block cut at whitespace into pieces, positioned where they start."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    piece = T.StructType([T.StructField("offset", T.LongType()),
                          T.StructField("text", T.StringType())])  # fmt: skip
    cut = F.udf(lambda text: cut_text(text, max_bytes), T.ArrayType(piece))
    long = F.octet_length("text") > max_bytes
    pieces = (
        unique.where(long)
        .select("*", F.posexplode(cut("text")).alias("piece", "cut"))
        .withColumn("position", F.col("position") + F.col("cut.offset"))
        .withColumn("text", F.col("cut.text"))
        .drop("cut")
    )
    return unique.where(~long).withColumn("piece", F.lit(0)).unionByName(pieces)


def split_key_column(unit_id):
    """``cleaning.split_key`` in Spark SQL: the first 8 bytes of sha256("split:" + id) / 2⁶⁴."""
    from pyspark.sql import functions as F

    digest = F.sha2(F.concat(F.lit("split:"), unit_id), 256)
    return F.conv(F.substring(digest, 1, 16), 16, 10).cast("double") / float(2**64)


def assign_splits(units, layout: dict, args):
    """Each unit's side: the held-out corpus, the hash of its document, or a block quota."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if args.val_input:
        side = F.when(F.col("held_out"), "val").otherwise("train")
    elif layout["unit"] == "block":
        blocks = units.select("doc_id", "split_key", F.octet_length("text").alias("bytes"))
        held = holdout.validation_blocks(
            ((r["doc_id"], r["split_key"], r["bytes"]) for r in blocks.toLocalIterator()),
            args.val_fraction)  # fmt: skip
        side = F.when(F.col("doc_id").isin(sorted(held)), "val").otherwise("train")
    else:
        side = F.when(F.col("split_key") < args.val_fraction, "val").otherwise("train")
    docs = units.withColumn("split", side).persist(StorageLevel.MEMORY_AND_DISK)
    split_stats = {
        r["split"]: r.asDict()
        for r in docs.groupBy("split").agg(
            F.count("*").alias("documents"), F.sum("lines").alias("lines"),
            F.sum(F.octet_length("text")).alias("bytes"), F.sum("raw_bytes").alias("raw_bytes"),
        ).collect()
    }  # fmt: skip
    return ensure_both_splits(docs, split_stats, args)


def ensure_both_splits(docs, split_stats: dict, args):
    """Give each side at least one unit.

    With few documents the hash split can leave a side empty. Moving the unit with
    the smallest (for val) or largest (for train) split key keeps the split
    deterministic and still by document.
    """
    from pyspark.sql import functions as F

    if sum(s["documents"] for s in split_stats.values()) < 2:
        raise PipelineError(
            f"corpus {args.corpus!r} (with --val-input {args.val_input!r}) makes a single document "
            "or block: the training and the validation split need one each; add text"
        )
    for split, order in (("val", F.asc("split_key")), ("train", F.desc("split_key"))):
        if split not in split_stats:
            donor = "train" if split == "val" else "val"
            moved = docs.where(F.col("split") == donor).orderBy(order, "doc_id").first()
            entrypoint.log.warning(
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


def write_splits(docs, split_stats: dict, stage: str, parallelism: int) -> list:
    """Write each side as Parquet shards of about TARGET_SHARD_BYTES; record their counts."""
    from pyspark.sql import functions as F

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
        )  # fmt: skip
        files_written.extend(written)
        split_stats[split] = {"documents": counts["documents"], "lines": counts["lines"],
                              "bytes": counts["bytes"], "shards": len(written)}  # fmt: skip
    return files_written


if __name__ == "__main__":
    entrypoint.run(main)
