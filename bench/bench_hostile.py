"""``make bench-hostile``: peak memory and time of hostile corpora next to ordinary ones.

Each bomb is built here (a few KB to a few hundred KB compressed) and run with
spark-submit exactly as a user would, next to an ordinary corpus of WikiText
text with the same codec and about the same compressed size. Reported per run:
exit status, the job's ``ERROR:`` line if any, wall seconds, and the peak RSS of
the largest Python process (driver or worker) and of the JVM, sampled every
50 ms over the whole process tree. Goal: a bomb costs no more memory than the
ordinary corpus (it fails fast naming the flag, or streams in bounded memory).

    python bench/bench_hostile.py [--out bench/out/hostile]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import psutil
from common import (
    JOBS,
    LOG4J,
    file_uri,
    fmt,
    fresh_dir,
    job_env,
    load_average,
    load_note,
    markdown_table,
    write_results,
)
from corpora import articles, require_wikitext

MIB = 2**20
RAISED_RATIO = ["--max-compression-ratio", "100000"]


def run_sampled(script: str, run_root: Path, args: list[str]) -> dict:
    """spark-submit one job; its status, error line, wall time and peak RSS (MB)."""
    run_root.mkdir(parents=True, exist_ok=True)
    log = run_root / f"{Path(script).stem}.log"
    cmd = ["spark-submit", "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "--conf", f"spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:{LOG4J}",
           str(JOBS / script), "--run-root", file_uri(run_root), *args]  # fmt: skip
    peaks = {"python": 0.0, "java": 0.0}
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=job_env(), stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            for process in _tree(root):
                try:
                    kind = "java" if "java" in process.name() else "python"
                    peaks[kind] = max(peaks[kind], process.memory_info().rss / MIB)
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.05)
    errors = [line for line in log.read_text(errors="replace").splitlines()
              if line.startswith("ERROR: ")]  # fmt: skip
    return {"status": proc.returncode, "error": errors[0][7:] if errors else "",
            "wall_s": time.perf_counter() - started, "python_peak_mb": peaks["python"],
            "java_peak_mb": peaks["java"]}  # fmt: skip


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def one_line_gz(path: Path, unit: bytes, total: int) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as f:
        for _ in range(total // MIB):
            f.write((unit * (MIB // len(unit) + 1))[:MIB])
    return path


def page_bomb(path: Path) -> Path:
    pages = "".join(f"<page><title>{escape(t)}</title><ns>0</ns><id>{i}</id><revision><text>"
                    f"{escape(' '.join(p))}</text></revision></page>"
                    for i, (t, p) in enumerate(articles(1)[:20], 1))  # fmt: skip
    compressor = bz2.BZ2Compressor(9)
    data = compressor.compress(b"<mediawiki>" + pages.encode())
    data += compressor.compress(b"<page><title>Bomb</title><ns>0</ns><id>999</id><revision><text>")
    for _ in range(64):
        data += compressor.compress(b"a" * MIB)
    data += compressor.compress(b"</text></revision></page></mediawiki>") + compressor.flush()
    path.write_bytes(data)
    return path


def nested_bomb(path: Path) -> Path:
    path.write_bytes(bz2.compress(b"<mediawiki>" + b"<a>" * 1_000_000))
    return path


def pretoken_bomb(path: Path) -> Path:
    word = "ab" * 8192
    records = "\n".join(json.dumps({"text": f"document {i} says {word}"}) for i in range(4096))
    path.write_bytes(gzip.compress(records.encode()))
    return path


def one_value_jsonl_gz(path: Path, total: int) -> Path:
    """JSON Lines: ordinary records around one record whose text is ``total`` bytes."""
    small = [json.dumps({"text": "\n".join(p)}) for _, p in articles(1)[:20]]
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(("\n".join(small[:10]) + '\n{"text": "').encode())
        for _ in range(total // MIB):
            f.write(b"a" * MIB)
        f.write(('"}\n' + "\n".join(small[10:]) + "\n").encode())
    return path


def parquet_bytes(jsonl: bytes) -> bytes:
    """The ``text`` of each JSON Lines record as a Parquet file (zstd), one row each."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [json.loads(line)["text"] for line in jsonl.decode().splitlines() if line.strip()]
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), sink,
                   compression="zstd")  # fmt: skip
    return sink.getvalue()


def one_value_parquet(path: Path, total: int) -> Path:
    """Parquet: ordinary rows around one row whose text is ``total`` bytes."""
    small = [json.dumps({"text": "\n".join(p)}) for _, p in articles(1)[:20]]
    big = json.dumps({"text": "a" * total})
    path.write_bytes(parquet_bytes("\n".join([*small[:10], big, *small[10:]]).encode()))
    return path


def ordinary(path: Path, compressed_bytes: int, compress: Callable[[bytes], bytes],
             as_jsonl: bool = False) -> Path:  # fmt: skip
    """WikiText articles, as text (or JSON Lines), compressed to about ``compressed_bytes``."""
    docs, copies = [], 1
    while True:
        docs = articles(copies)
        lines = ([json.dumps({"text": "\n".join(p)}) for _, p in docs] if as_jsonl else
                 [f" = {t} = \n" + "\n".join(p) for t, p in docs])  # fmt: skip
        if len(compress("\n".join(lines).encode())) >= compressed_bytes or copies >= 64:
            break
        copies *= 2
    low, high = 1, len(lines)  # the shortest prefix compressing to at least the target
    while low < high:
        middle = (low + high) // 2
        if len(compress("\n".join(lines[:middle]).encode())) >= compressed_bytes:
            high = middle
        else:
            low = middle + 1
    path.write_bytes(compress("\n".join(lines[:low]).encode()))
    return path


def cases(out: Path) -> list[tuple[str, str, Path, list[str], Callable, bool]]:
    """(name, stage, bomb corpus, extra flags, codec, JSON Lines?) for each hostile input."""
    return [
        ("gz: one 256 MiB line, default flags", "preprocess",
         one_line_gz(out / "bomb-256.txt.gz", b"a", 256 * MIB), [], gzip.compress, False),
        ("gz: one 64 MiB line of words, ratio raised", "preprocess",
         one_line_gz(out / "line-64.txt.gz", b"anarchism originated as a term of abuse ",
                     64 * MIB), RAISED_RATIO, gzip.compress, False),
        ("bz2 XML: a 64 MiB page, ratio raised", "preprocess", page_bomb(out / "page.xml.bz2"),
         RAISED_RATIO, bz2.compress, False),
        ("bz2 XML: 1 M nested elements, ratio raised", "preprocess",
         nested_bomb(out / "nested.xml.bz2"), RAISED_RATIO, bz2.compress, False),
        ("tokenize: a 16 KB pre-token × 4096", "tokenize", pretoken_bomb(out / "words.jsonl.gz"),
         RAISED_RATIO, gzip.compress, True),
        ("JSON Lines gz: one 200 MiB record, ratio raised", "preprocess",
         one_value_jsonl_gz(out / "record.jsonl.gz", 200 * MIB), RAISED_RATIO, gzip.compress,
         True),
        ("Parquet (zstd): one 200 MiB value, default flags", "preprocess",
         one_value_parquet(out / "value.parquet", 200 * MIB), [], parquet_bytes, True),
        ("Parquet (zstd): one 200 MiB value, ratio raised", "preprocess",
         one_value_parquet(out / "value-raised.parquet", 200 * MIB), RAISED_RATIO,
         parquet_bytes, True),
    ]  # fmt: skip


def measure(out: Path, stage: str, corpus: Path, flags: list[str]) -> dict:
    root = out / f"run-{corpus.name}"
    preprocess = run_sampled("preprocess.py", root, ["--input", file_uri(corpus), *flags])
    if stage == "preprocess":
        return preprocess
    if preprocess["status"] != 0:
        return {**preprocess, "error": f"(preprocess) {preprocess['error']}"}
    return run_sampled("tokenize_corpus.py", root, ["--vocab-size", "512"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "hostile")
    parser.add_argument("--only", default="", help="run only the cases whose name holds this")
    args = parser.parse_args()
    require_wikitext()
    out = fresh_dir(args.out)
    results = {"load_average_start": load_average(), "runs": []}
    for name, stage, bomb, flags, compress, as_jsonl in cases(out):
        if args.only not in name:
            continue
        size = bomb.stat().st_size
        # Ordinary text of the same codec (plain text or JSON Lines, never XML: a dump's
        # size depends on its markup, and the question is what a bomb costs against text).
        text_name = f"ordinary-{bomb.name.split('.')[0]}{'.jsonl' if as_jsonl else '.txt'}"
        plain = ordinary(out / (text_name + bomb.suffixes[-1]), max(size, 16 * 1024), compress,
                         as_jsonl)  # fmt: skip
        for kind, corpus in (("bomb", bomb), ("ordinary", plain)):
            run = measure(out, stage, corpus, flags)
            results["runs"].append(
                {
                    "case": name,
                    "kind": kind,
                    "stage": stage,
                    "compressed_bytes": corpus.stat().st_size,
                    **run,
                }
            )
    results["load_average_end"] = load_average()
    table = markdown_table(
        ["input", "corpus", "compressed KB", "exit", "wall s", "largest Python RSS MB",
         "JVM RSS MB", "error"],
        [[r["case"], r["kind"], fmt(r["compressed_bytes"] / 1024, 1), r["status"],
          fmt(r["wall_s"], 1), fmt(r["python_peak_mb"]), fmt(r["java_peak_mb"]),
          r["error"][:90]] for r in results["runs"]],
    )  # fmt: skip
    markdown = "\n".join([
        "## Hostile corpora next to ordinary ones (same codec, about the same compressed size)",
        "", table, "",
        "Ordinary corpora are WikiText-2 articles, at least 16 KB compressed. The job's stage "
        "is preprocess, or preprocess then tokenize (measured) for the pre-token bomb.",
        "\n" + load_note(results),
    ])  # fmt: skip
    print(markdown)
    write_results(out, markdown, results)


if __name__ == "__main__":
    main()
