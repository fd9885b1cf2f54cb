"""``make bench-data``: the data stages against a single-process baseline, and their memory.

1. Tokenize throughput: the Spark tokenize stage's MB/s ÷ HF ``tokenizers``
   encoding the same documents in one process (goal ≥ 0.8). Reported for the
   encode phase (what the baseline does) and for the whole stage (plus the
   distributed counting and vocabulary training the baseline does not do).
2. Driver memory: the Python driver's peak RSS of preprocess and tokenize
   with the corpus ×1 and ×8 (goal: ratio ≤ 1.2 — nothing collects the corpus).
3. Preprocess per format, the same articles as plain text, .txt.gz, .jsonl.zst,
   Parquet and a multistream .xml.bz2 dump: MB of text per second with one and
   with two executor cores (``local[1]`` vs ``local[2]``, run side by side) and
   their ratio (goal ≥ 1.7 for the splittable formats: text, Parquet,
   multistream; a .gz or .zst file is one task), and the driver's peak RSS at
   two corpus sizes (goal: flat).

Needs WikiText-2 raw (valid.txt, test.txt) in ../shared/data/wikitext-2-raw.

    python bench/bench_data.py [--copies 1,8] [--format-copies 4,32]
                               [--formats txt,parquet,…] [--out bench/out/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import (
    file_uri,
    fmt,
    fresh_dir,
    goal,
    goals_table,
    load_average,
    load_note,
    markdown_table,
    read_manifest,
    spark_submit,
    write_results,
)
from corpora import FORMATS, require_wikitext, scaled_corpus, write_formats

MASTERS = ("local[1]", "local[2]")
SPLITTABLE = ("txt", "parquet", "multistream.xml.bz2")
ENCODE_GOAL = 0.8  # tokenize's encode phase ÷ single-process HF tokenizers
FLAT_MEMORY_GOAL = 1.2  # driver peak RSS, largest corpus ÷ smallest
EXECUTORS_GOAL = 1.7  # preprocess job time on 1 executor core ÷ on 2


def baseline_encode_mb_s(run_root: Path) -> float:
    """Single-process HF tokenizers on every preprocessed document, with the stage's vocab."""
    from tokenizers import Tokenizer

    from sparklm.data.document_shards import read_doc_texts
    from sparklm.runtime.stages import listed_files
    from sparklm.runtime.stages import read_manifest as read_stage

    tokenizer = Tokenizer.from_file(str(run_root / "tokenize" / "tokenizer.json"))
    manifest = read_stage(file_uri(run_root), "preprocess")
    documents = [text for f in listed_files(manifest) for text in read_doc_texts(f["uri"])]
    size = sum(len(d.encode()) for d in documents)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        tokenizer.encode_batch_fast(documents, add_special_tokens=False)  # as the stage does
        best = min(best, time.perf_counter() - started)
    return size / best / 1e6


def format_runs(out: Path, copies: int, formats: list[str]) -> dict:
    """Preprocess each format's corpus on local[1] and local[2], one right after the other."""
    runs = {}
    for name, (path, text_bytes) in write_formats(out / f"formats-x{copies}", copies,
                                                  formats).items():  # fmt: skip
        for master in MASTERS:
            root = out / f"pre-{name}-x{copies}-{master[6]}"
            job = spark_submit("preprocess.py", root, ["--input", file_uri(path)], master=master)
            manifest = read_manifest(root, "preprocess")
            runs[f"{name} x{copies} {master}"] = {
                "format": name, "copies": copies, "master": master, "text_mb": text_bytes / 1e6,
                "wall_s": job.wall_s, "job_s": manifest["seconds"],
                "read_s": manifest["stats"]["seconds"]["read"],
                "tasks": manifest["stats"]["input"]["tasks"],
                "driver_rss_mb": manifest["stats"]["driver_peak_rss_mb"],
            }  # fmt: skip
    return runs


def format_tables(runs: dict, formats: list[str], sizes: list[int]) -> str:
    rows = []
    for name in formats:
        for copies in sizes:
            one, two = (runs[f"{name} x{copies} {m}"] for m in MASTERS)
            rows.append([name, f"×{copies}", fmt(one["text_mb"], 1), two["tasks"],
                         fmt(one["text_mb"] / one["job_s"], 2),
                         fmt(two["text_mb"] / two["job_s"], 2),
                         fmt(one["job_s"] / two["job_s"], 2),
                         fmt(one["read_s"] / two["read_s"], 2),
                         fmt(one["driver_rss_mb"]), fmt(two["driver_rss_mb"])])  # fmt: skip
    return markdown_table(
        [
            "format",
            "corpus",
            "text MB",
            "tasks",
            "MB/s local[1]",
            "MB/s local[2]",
            "2 ÷ 1 (job)",
            "2 ÷ 1 (read phase)",
            "driver RSS MB [1]",
            "driver RSS MB [2]",
        ],
        rows,
    )


def goals(results: dict, formats: list[str], format_sizes: list[int]) -> list[dict]:
    """Each goal of the sections that ran, with what was measured (results.json's "goals")."""
    sizes = results["sizes"]
    found = [goal(f"tokenize encode phase ÷ single-process HF tokenizers (×{c})",
                  r["encode_mb_s"] / r["baseline_mb_s"], ENCODE_GOAL, at_least=True)
             for c, r in sizes.items()]  # fmt: skip
    if len(sizes) > 1:
        small, large = sizes[min(sizes)], sizes[max(sizes)]
        found += [goal(f"{stage} driver peak RSS ×{max(sizes)} ÷ ×{min(sizes)}",
                       large[f"{stage}_driver_rss_mb"] / small[f"{stage}_driver_rss_mb"],
                       FLAT_MEMORY_GOAL) for stage in ("preprocess", "tokenize")]  # fmt: skip
    runs = results["formats"]
    for name in formats if format_sizes else []:
        kind = "splittable" if name in SPLITTABLE else "one task per file"
        largest = max(format_sizes)
        one, two = (runs[f"{name} x{largest} {m}"] for m in MASTERS)
        found.append(
            goal(
                f"preprocess {name} ({kind}) ×{largest}: job s on 1 core ÷ on 2",
                one["job_s"] / two["job_s"],
                EXECUTORS_GOAL,
                at_least=True,
            )
        )
        if len(format_sizes) > 1:
            small = runs[f"{name} x{min(format_sizes)} {MASTERS[-1]}"]
            found.append(goal(f"preprocess {name}: driver peak RSS ×{largest} ÷ "
                              f"×{min(format_sizes)}", two["driver_rss_mb"]
                              / small["driver_rss_mb"], FLAT_MEMORY_GOAL))  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,8", help="corpus sizes, as WikiText-2 copies")
    parser.add_argument(
        "--format-copies",
        default="4,32",
        help="corpus sizes of the per-format runs (empty: skip them)",
    )
    parser.add_argument("--formats", default=",".join(FORMATS), help="formats to compare")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "data")
    args = parser.parse_args()
    require_wikitext()
    out = fresh_dir(args.out)
    results = {"load_average_start": load_average(), "sizes": {}, "formats": {}}
    formats = args.formats.split(",")
    format_sizes = [int(c) for c in args.format_copies.split(",") if c]
    for copies in format_sizes:
        results["formats"].update(format_runs(out, copies, formats))
    for copies in [int(c) for c in args.copies.split(",") if c]:
        corpus, size = scaled_corpus(out / f"corpus-x{copies}", copies)
        root = out / f"run-x{copies}"
        pre = spark_submit("preprocess.py", root, ["--input", file_uri(corpus)])
        tok = spark_submit("tokenize_corpus.py", root, ["--vocab-size", "4096"])
        p, t = read_manifest(root, "preprocess"), read_manifest(root, "tokenize")
        text_mb = (p["stats"]["train"]["bytes"] + p["stats"]["val"]["bytes"]) / 1e6
        results["sizes"][copies] = {
            "corpus_mb": size / 1e6,
            "text_mb": text_mb,
            "preprocess_wall_s": pre.wall_s,
            "tokenize_wall_s": tok.wall_s,
            "tokenize_stage_s": t["seconds"],
            "encode_s": t["stats"]["seconds"]["encode"],
            "encode_mb_s": text_mb / t["stats"]["seconds"]["encode"],
            "stage_mb_s": text_mb / t["seconds"],
            "baseline_mb_s": baseline_encode_mb_s(root),
            "preprocess_driver_rss_mb": p["stats"]["driver_peak_rss_mb"],
            "tokenize_driver_rss_mb": t["stats"]["driver_peak_rss_mb"],
        }
    results["load_average_end"] = load_average()
    sizes = results["sizes"]
    throughput = markdown_table(
        ["corpus", "text MB", "encode phase MB/s", "whole stage MB/s", "single-process MB/s",
         "encode ÷ single", "stage ÷ single"],
        [[f"×{c}", fmt(r["text_mb"], 1), fmt(r["encode_mb_s"], 2), fmt(r["stage_mb_s"], 2),
          fmt(r["baseline_mb_s"], 2), fmt(r["encode_mb_s"] / r["baseline_mb_s"], 2),
          fmt(r["stage_mb_s"] / r["baseline_mb_s"], 2)] for c, r in sizes.items()],
    )  # fmt: skip
    memory = markdown_table(
        ["corpus", "text MB", "preprocess driver RSS MB", "tokenize driver RSS MB",
         "preprocess wall s", "tokenize wall s"],
        [[f"×{c}", fmt(r["text_mb"], 1), fmt(r["preprocess_driver_rss_mb"]),
          fmt(r["tokenize_driver_rss_mb"]), fmt(r["preprocess_wall_s"], 1),
          fmt(r["tokenize_wall_s"], 1)] for c, r in sizes.items()],
    )  # fmt: skip
    lines = ["## Tokenize throughput (goal: ≥ 0.8 of single-process HF tokenizers)", "",
             throughput, "", "## Driver peak memory (goal: largest ÷ smallest ≤ 1.2)", "",
             memory, ""] if sizes else []  # fmt: skip
    if len(sizes) > 1:
        small, large = sizes[min(sizes)], sizes[max(sizes)]
        lines.append(
            f"Driver RSS ×{max(sizes)} ÷ ×{min(sizes)}: preprocess "
            f"{large['preprocess_driver_rss_mb'] / small['preprocess_driver_rss_mb']:.2f}, "
            f"tokenize {large['tokenize_driver_rss_mb'] / small['tokenize_driver_rss_mb']:.2f}."
        )
    if format_sizes:
        lines += ["", "## Preprocess per format, 1 vs 2 executor cores (goal: ≥ 1.7 for "
                  f"{', '.join(SPLITTABLE)}; driver RSS flat across sizes)", "",
                  format_tables(results["formats"], formats, format_sizes), "",
                  "MB/s: text MB ÷ the job's own seconds (Spark session to commit); read "
                  "phase: reading, cleaning and counting, before the shuffles."]  # fmt: skip
    results["goals"] = goals(results, formats, format_sizes)
    if results["goals"]:
        lines += ["", "## Goals", "", goals_table(results["goals"])]
    lines.append("\n" + load_note(results))
    markdown = "\n".join(lines)
    print(markdown)
    write_results(out, markdown, results)


if __name__ == "__main__":
    main()
