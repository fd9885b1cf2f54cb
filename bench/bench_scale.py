"""``make bench-scale``: every stage on the corpus ×1, ×4, ×16 — time and driver memory.

Goals: preprocess and tokenize time grow at most linearly (×16 data ≤ ×18
time) and the driver's peak memory stays flat (×16 ≤ 1.2 × the ×1 value),
because partitions read, clean, count and encode the data and the driver only
sees counts and file lists. Training runs a fixed number of steps (its time
should not depend on the corpus size); generate and publish are data-independent.

    python bench/bench_scale.py [--copies 1,4,16] [--out bench/out/scale]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import (
    file_uri,
    fmt,
    fresh_dir,
    load_average,
    load_note,
    markdown_table,
    read_manifest,
    spark_submit,
    write_results,
)
from corpora import scaled_corpus

from llm_pipeline.pipeline import PIPELINE

STAGES = tuple(job.stage for job in PIPELINE)
SCRIPTS = {job.stage: job.script for job in PIPELINE}
TRAIN = ["--partitions", "2", "--rounds", "2", "--local-steps", "10", "--eval-tokens", "8192"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,4,16", help="corpus sizes, as WikiText-2 copies")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "scale")
    args = parser.parse_args()
    out = fresh_dir(args.out)
    results: dict = {"load_average_start": load_average(), "sizes": {}}
    for copies in [int(c) for c in args.copies.split(",")]:
        corpus, size = scaled_corpus(out / f"corpus-x{copies}", copies)
        root = out / f"run-x{copies}"
        stage_args = {
            "preprocess": ["--input", file_uri(corpus)],
            "tokenize": ["--vocab-size", "4096"],
            "train": TRAIN,
            "generate": ["--prompt", "The history of", "--max-new-tokens", "32"],
            "publish": ["--registry", file_uri(out / "registry"), "--model-name", f"x{copies}"],
        }
        row = {"corpus_mb": size / 1e6}
        for stage in STAGES:
            run = spark_submit(SCRIPTS[stage], root, stage_args[stage])
            manifest = read_manifest(root, stage)
            row[f"{stage}_wall_s"] = run.wall_s
            row[f"{stage}_stage_s"] = manifest["seconds"]
            row[f"{stage}_driver_rss_mb"] = manifest["stats"].get("driver_peak_rss_mb")
        results["sizes"][copies] = row
    results["load_average_end"] = load_average()
    sizes = results["sizes"]
    smallest = sizes[min(sizes)]
    time_table = markdown_table(
        ["corpus", "MB", *[f"{s} s" for s in STAGES], "preprocess ×", "tokenize ×"],
        [[f"×{c}", fmt(r["corpus_mb"], 1), *[fmt(r[f"{s}_wall_s"], 1) for s in STAGES],
          fmt(r["preprocess_wall_s"] / smallest["preprocess_wall_s"], 2),
          fmt(r["tokenize_wall_s"] / smallest["tokenize_wall_s"], 2)]
         for c, r in sizes.items()],
    )  # fmt: skip
    memory_table = markdown_table(
        ["corpus", "preprocess driver MB", "tokenize driver MB", "train driver MB",
         "preprocess ×", "tokenize ×"],
        [[f"×{c}", fmt(r["preprocess_driver_rss_mb"]), fmt(r["tokenize_driver_rss_mb"]),
          fmt(r["train_driver_rss_mb"]),
          fmt(r["preprocess_driver_rss_mb"] / smallest["preprocess_driver_rss_mb"], 2),
          fmt(r["tokenize_driver_rss_mb"] / smallest["tokenize_driver_rss_mb"], 2)]
         for c, r in sizes.items()],
    )  # fmt: skip
    markdown = "\n".join([
        "## Wall time per stage (spark-submit, local[2]); × = ratio to the smallest corpus", "",
        time_table, "",
        "## Python driver peak RSS (from each stage's manifest)", "", memory_table, "",
        load_note(results),
    ])  # fmt: skip
    print(markdown)
    write_results(out, markdown, results)


if __name__ == "__main__":
    main()
