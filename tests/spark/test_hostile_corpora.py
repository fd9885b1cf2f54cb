"""Hostile corpora, run with spark-submit as a user would: each bomb is a few KB built here.

The job either succeeds with flat memory or exits 2 with an ``ERROR:`` line naming
the flag to raise; either way no Python process of the job grows past a stated bound
(sampled with psutil over the whole process tree: the driver, the JVM's Python workers).
"""

import bz2
import gzip
import json
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from helpers.corpora import article_pages, mediawiki_page, write_text
from helpers.paths import JOBS
from sparklm.runtime.stages import read_manifest

# The Python driver imports pyspark and pyarrow (~150 MB); a worker cleaning 1 MiB lines
# needs tens of MB more. Holding a 64 MiB line (let alone 256 MiB) costs far above this.
PYTHON_RSS_BOUND_MB = 600


def submit(script: str, *args, timeout: float = 900) -> tuple[int, str, float]:
    """Run ``spark-submit jobs/{script}``; its exit status, output and the largest RSS (MB)
    any Python process of its tree reached."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            ["spark-submit", "--master", "local[2]", "--conf", "spark.ui.enabled=false",
             str(JOBS / script), *map(str, args)],
            stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        root, peak, deadline = psutil.Process(proc.pid), 0.0, time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{script} still running after {timeout}s")
            peak = max(peak, _largest_python_rss_mb(root))
            time.sleep(0.05)
        log.seek(0)
        return proc.returncode, log.read(), peak


def _largest_python_rss_mb(root: psutil.Process) -> float:
    largest = 0.0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return largest
    for process in processes:
        try:
            if "python" in process.name():
                largest = max(largest, process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            continue
    return largest


def gzip_one_line(path: Path, unit: bytes, total: int) -> Path:
    """A .gz holding one line of ``total`` bytes of ``unit`` repeated, written in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=9) as f:
        chunk = unit * (2**20 // len(unit))
        for _ in range(total // len(chunk)):
            f.write(chunk)
    return path


def error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("ERROR: "))


def gzip_bomb(folder: Path) -> Path:
    """One 256 MiB line in a .gz of about 255 KB."""
    return gzip_one_line(folder / "bomb.txt.gz", b"a", 256 * 2**20)


def parquet_bomb(folder: Path) -> Path:
    """One 256 MiB value among ordinary rows, in a zstd row group of a few KB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    texts = ["an ordinary row of text"] * 10 + ["a" * (256 << 20)] + ["another row"] * 10
    pq.write_table(pa.table({"text": texts}), folder / "bomb.parquet", compression="zstd")
    return folder / "bomb.parquet"


@pytest.mark.parametrize(
    ("build", "refusal"),
    [
        (gzip_bomb, "bomb.txt.gz decompresses to more than"),
        # Refused on the driver, from the footer, before any task reads a page.
        (parquet_bomb, "bomb.parquet row group 0: its text column decompresses to"),
    ],
    ids=["gzip", "parquet"],
)
def test_a_compression_bomb_stops_with_the_flag_to_raise(tmp_path, build, refusal):
    bomb = build(tmp_path / "in")
    assert bomb.stat().st_size < 300_000
    status, output, peak = submit("preprocess.py", "--run-root", f"file://{tmp_path / 'run'}",
                                  "--input", bomb)  # fmt: skip
    assert status == 2, output[-3000:]
    assert refusal in error_line(output)
    assert "raise --max-compression-ratio (now 200)" in error_line(output)
    assert peak < PYTHON_RSS_BOUND_MB
    assert not (tmp_path / "run" / "preprocess" / "manifest.json").exists()


def test_a_64mib_line_preprocesses_with_flat_memory(tmp_path):
    unit = b"anarchism originated as a term of abuse first used against "
    text = gzip_one_line(tmp_path / "in" / "one-line.txt.gz", unit, 64 * 2**20)
    status, output, peak = submit(
        "preprocess.py",
        "--run-root",
        f"file://{tmp_path / 'run'}",
        "--input",
        text,
        "--max-compression-ratio",
        "100000",
    )
    assert status == 0, output[-3000:]
    assert peak < PYTHON_RSS_BOUND_MB
    stats = read_manifest(f"file://{tmp_path / 'run'}", "preprocess")["stats"]
    assert stats["input"]["bytes"] == 64 * (2**20 // len(unit)) * len(unit)  # every byte read
    assert stats["input"]["lines"] >= 64  # cut into pieces of at most 1 MiB


def test_a_bz2_page_bomb_is_dropped_and_counted(tmp_path):
    pages = "".join(mediawiki_page(*page) for page in article_pages(20))
    xml = (
        b"<mediawiki>" + pages.encode() + b"<page><title>Bomb</title><ns>0</ns><id>99</id>"
        b"<revision><text>" + b"a" * (64 * 2**20) + b"</text></revision></page></mediawiki>"
    )
    dump = write_text(tmp_path / "in" / "dump.xml.bz2", bz2.compress(xml))
    del xml
    assert dump.stat().st_size < 20_000
    status, output, peak = submit(
        "preprocess.py",
        "--run-root",
        f"file://{tmp_path / 'run'}",
        "--input",
        dump,
        "--max-compression-ratio",
        "100000",
    )
    assert status == 0, output[-3000:]
    assert peak < PYTHON_RSS_BOUND_MB
    stats = read_manifest(f"file://{tmp_path / 'run'}", "preprocess")["stats"]
    assert stats["dropped"]["record_too_large"] == {"lines": 1, "bytes": 64 * 2**20}
    assert stats["train"]["documents"] + stats["val"]["documents"] == 20


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<mediawiki>" + b"<a>" * 1_000_000, "nests XML elements more than 64 deep"),
        (b"<mediawiki><page><title>x</title></mediawiki>", "is not well-formed XML"),
    ],
    ids=["deep-nesting", "malformed"],
)
def test_hostile_xml_fails_clearly_without_a_retry(tmp_path, xml, message):
    dump = write_text(tmp_path / "in" / "dump.xml.bz2", bz2.compress(xml))
    status, output, peak = submit(
        "preprocess.py",
        "--run-root",
        f"file://{tmp_path / 'run'}",
        "--input",
        dump,
        "--max-compression-ratio",
        "100000",
    )
    assert status == 2, output[-3000:]
    assert message in error_line(output) and "dump.xml.bz2" in error_line(output)
    assert peak < PYTHON_RSS_BOUND_MB


def test_a_16kb_pretoken_repeated_4096_times_tokenizes_with_flat_memory(run_job, tmp_path):
    word = "ab" * 8192  # one 16 KB pre-token
    records = "\n".join(json.dumps({"text": f"document {i} says {word}"}) for i in range(4096))
    corpus = write_text(tmp_path / "in" / "words.jsonl.gz", gzip.compress(records.encode()))
    root = f"file://{tmp_path / 'run'}"
    run_job("preprocess", ["--run-root", root, "--input", corpus,
                           "--max-compression-ratio", "100000"])  # fmt: skip
    status, output, peak = submit("tokenize_corpus.py", "--run-root", root, "--vocab-size", "512")
    assert status == 0, output[-3000:]
    assert peak < PYTHON_RSS_BOUND_MB  # counted whole, this pre-token took the trainer 2.5 GB
    assert read_manifest(root, "tokenize")["stats"]["train"]["documents"] > 3000
