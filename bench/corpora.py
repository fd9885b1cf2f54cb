"""Benchmark corpora: WikiText-2 raw scaled up by distinct copies.

Plain repetition would be undone by the preprocess stage's exact-duplicate
removal, so copy ``i`` tags every heading and paragraph with ``[i]``: the
same text statistics, no duplicates across copies.
"""

from __future__ import annotations

import os
from pathlib import Path

# WikiText-2 (raw) is not in the repository and no test needs it; benchmarks read it from
# $WIKITEXT2_DIR, else from the development machine's shared data folder.
WIKITEXT = Path(
    os.environ.get(
        "WIKITEXT2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw"
    )
)
BASE_FILES = ("valid.txt", "test.txt")
WHERE_TO_GET_IT = (
    "download WikiText-2 raw (wikitext-2-raw-v1: https://huggingface.co/datasets/Salesforce/"
    "wikitext, folder wikitext-2-raw-v1), save its validation and test splits as valid.txt and "
    "test.txt in one folder and set WIKITEXT2_DIR to it"
)


def require_wikitext(directory: Path = WIKITEXT) -> Path:
    """The WikiText-2 folder, or exit saying where to get it."""
    missing = [name for name in BASE_FILES if not (directory / name).is_file()]
    if missing:
        raise SystemExit(f"benchmark corpus missing: {directory} has no {', '.join(missing)}: "
                         f"{WHERE_TO_GET_IT}")  # fmt: skip
    return directory


def scaled_corpus(target: Path, copies: int) -> tuple[Path, int]:
    """Write ``copies`` distinct copies of WikiText-2 valid+test under ``target``.

    Returns the folder and its size in bytes.
    """
    target.mkdir(parents=True, exist_ok=True)
    total = 0
    source = require_wikitext()
    texts = {name: (source / name).read_text(encoding="utf-8").split("\n") for name in BASE_FILES}
    for copy in range(copies):
        for name in BASE_FILES:
            tagged = [_tag(line, copy) for line in texts[name]]
            data = "\n".join(tagged).encode()
            (target / f"{Path(name).stem}-{copy:03d}.txt").write_bytes(data)
            total += len(data)
    return target, total


def _tag(line: str, copy: int) -> str:
    stripped = line.strip()
    if not stripped:
        return line
    if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
        return f" = [{copy}] {stripped[2:]} "  # still a WikiText article title
    return f" [{copy}] {stripped}"


def articles(copies: int) -> list[tuple[str, list[str]]]:
    """WikiText-2 valid+test × ``copies`` (tagged as above) as ``(title, paragraphs)``."""
    out: list[tuple[str, list[str]]] = []
    texts = {name: (WIKITEXT / name).read_text(encoding="utf-8").split("\n") for name in BASE_FILES}
    for copy in range(copies):
        for name in BASE_FILES:
            for line in texts[name]:
                stripped = line.strip()
                if not stripped:
                    continue
                if is_title(stripped):
                    out.append((f"[{copy}] {stripped[2:-2]}", []))
                elif out:
                    out[-1][1].append(f"[{copy}] {stripped}")
    return out


def is_title(stripped: str) -> bool:
    """Whether a stripped WikiText line is an article title (`` = T = ``, not a section's)."""
    return stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= =")


# The formats bench-data compares, each holding the same articles.
FORMATS = ("txt", "txt.gz", "jsonl.zst", "parquet", "multistream.xml.bz2")


def write_formats(target: Path, copies: int, formats=FORMATS) -> dict[str, tuple[Path, int]]:
    """The same articles as one corpus per format under ``target``: ``{format: (path, text
    bytes)}``. The path is a file, or a folder (a multistream dump next to its index)."""
    import bz2
    import gzip
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = articles(copies)
    text = "".join(f" = {title} = \n" + "".join(f" {p}\n" for p in paragraphs)
                   for title, paragraphs in docs).encode()  # fmt: skip
    records = [{"title": t, "text": "\n".join(p)} for t, p in docs]
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in formats:
        path = target / f"corpus.{name}"
        if name == "txt":
            path.write_bytes(text)
        elif name == "txt.gz":
            path.write_bytes(gzip.compress(text, compresslevel=6))
        elif name == "jsonl.zst":
            lines = "".join(json.dumps(r) + "\n" for r in records).encode()
            path.write_bytes(pa.Codec("zstd").compress(lines, asbytes=True))
        elif name == "parquet":
            rows_per_group = max(1, len(records) * 2**20 // max(len(text), 1))  # ~1 MB groups
            pq.write_table(pa.Table.from_pylist(records), path, row_group_size=rows_per_group)
        else:  # multistream: 100 pages per bz2 stream and the index, as Wikimedia publishes
            path = target / "multistream"
            _write_multistream(path, records, bz2)
        out[name] = (path, len(text))
    return out


def _write_multistream(folder: Path, records: list[dict], bz2) -> None:
    from xml.sax.saxutils import escape

    folder.mkdir(parents=True, exist_ok=True)
    data = bz2.compress(b"<mediawiki>\n  <siteinfo><sitename>bench</sitename></siteinfo>\n")
    index = []
    for first in range(0, len(records), 100):
        pages = []
        for page_id, record in enumerate(records[first : first + 100], first + 1):
            index.append(f"{len(data)}:{page_id}:{record['title']}")
            pages.append(f"<page><title>{escape(record['title'])}</title><ns>0</ns>"
                         f"<id>{page_id}</id><revision><text>"
                         f"{escape(record['text'].replace(chr(10), chr(10) * 2))}</text>"
                         "</revision></page>\n")  # fmt: skip
        data += bz2.compress("".join(pages).encode())
    data += bz2.compress(b"</mediawiki>\n")
    (folder / "bench-pages-articles-multistream.xml.bz2").write_bytes(data)
    (folder / "bench-pages-articles-multistream-index.txt.bz2").write_bytes(
        bz2.compress(("\n".join(index) + "\n").encode())
    )
