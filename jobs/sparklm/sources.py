"""Corpus readers: plain text in byte ranges, compressed text, MediaWiki XML dumps.

The driver only lists files and plans splits; partitions open their split
through fsspec and stream it, so no corpus byte passes through the driver.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

from sparklm import storage
from sparklm.cleaning import assign_split, clean_line, document_id, split_key

# Files whose bytes cannot be cut at arbitrary offsets: read whole, one split each.
WHOLE_FILE_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".xml")
# In plain text a line such as " = Homarus gammarus = " (WikiText's article title)
# starts a new document; "= = Section = =" does not.
DOC_HEADING = re.compile(r"^\s*=\s+[^=\s].*?\s+=\s*$")
MEDIAWIKI_SNIFF_BYTES = 4096
ARTICLE_NAMESPACE = "0"
_NON_ARTICLE_LINK = re.compile(r"^\s*(file|image|category|media)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class InputSplit:
    """A piece of one input file: ``[start, end)`` in bytes, or the whole file when end is None.

    A line belongs to the split in which its first byte lies, so splits of
    any size cover every line exactly once.
    """

    uri: str
    start: int = 0
    end: int | None = None


@dataclass(frozen=True)
class LineRecord:
    """One cleaned (or dropped) paragraph with the document it belongs to."""

    doc_id: str
    source: str
    position: int
    text: str
    drop_reason: str | None
    invalid_bytes: int
    raw_bytes: int
    split: str
    split_key: float


def plan_splits(uris: list[str], split_bytes: int) -> list[InputSplit]:
    """Cut plain-text files into byte ranges of about ``split_bytes``; keep others whole."""
    if split_bytes <= 0:
        raise ValueError("split_bytes must be positive")
    splits: list[InputSplit] = []
    for uri in uris:
        if uri.lower().endswith(WHOLE_FILE_SUFFIXES):
            splits.append(InputSplit(uri))
            continue
        size = storage.size(uri)
        starts = range(0, max(size, 1), split_bytes)
        splits.extend(InputSplit(uri, s, min(s + split_bytes, size)) for s in starts)
    return splits


def iter_range_lines(f, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line)`` for every line whose first byte lies in ``[start, end)``.

    ``f`` is a seekable binary file. The line straddling ``start`` belongs to
    the previous split, so it is skipped by reading through the first newline
    at or after ``start - 1``.
    """
    if start > 0:
        f.seek(start - 1)
        f.readline()
    else:
        f.seek(0)
    offset = f.tell()
    while offset < end:
        line = f.readline()
        if not line:
            return
        yield offset, line.rstrip(b"\n")
        offset += len(line)


def read_split(split: InputSplit, *, min_chars: int, val_fraction: float) -> Iterator[LineRecord]:
    """Read, clean and attribute to documents every line of one split."""
    if split.end is not None:
        with storage.open_binary(split.uri) as f:
            yield from _text_records(
                split, iter_range_lines(f, split.start, split.end), min_chars, val_fraction
            )
        return
    with storage.open_binary(split.uri, compression="infer") as f:
        head = f.read(MEDIAWIKI_SNIFF_BYTES)
    if b"<mediawiki" in head:
        yield from _mediawiki_records(split.uri, min_chars, val_fraction)
        return
    with storage.open_binary(split.uri, compression="infer") as f:
        # A decompressed stream has no byte offsets to report; line numbers stand in.
        numbered = enumerate(line.rstrip(b"\n") for line in f)
        yield from _text_records(split, numbered, min_chars, val_fraction)


def _text_records(
    split: InputSplit, lines: Iterator[tuple[int, bytes]], min_chars: int, val_fraction: float
) -> Iterator[LineRecord]:
    doc_id = document_id(split.uri, split.start)
    for offset, raw in lines:
        cleaned = clean_line(raw, min_chars)
        if cleaned.drop_reason is None and DOC_HEADING.match(cleaned.text):
            doc_id = document_id(split.uri, offset)
        yield _record(doc_id, split.uri, offset, raw, cleaned, val_fraction)


def _record(doc_id, source, position, raw, cleaned, val_fraction) -> LineRecord:
    return LineRecord(
        doc_id=doc_id,
        source=source,
        position=position,
        text=cleaned.text,
        drop_reason=cleaned.drop_reason,
        invalid_bytes=cleaned.invalid_bytes,
        raw_bytes=len(raw),
        split=assign_split(doc_id, val_fraction),
        split_key=split_key(doc_id),
    )


def _mediawiki_records(uri: str, min_chars: int, val_fraction: float) -> Iterator[LineRecord]:
    """One document per article page; paragraphs of its plain text become lines."""
    for page_id, namespace, redirect, wikitext in iter_mediawiki_pages(uri):
        doc_id = document_id(uri, f"page-{page_id}")
        if namespace != ARTICLE_NAMESPACE or redirect:
            reason = "non_article_page" if namespace != ARTICLE_NAMESPACE else "redirect_page"
            raw = wikitext.encode()
            yield LineRecord(doc_id, uri, 0, "", reason, 0, len(raw), "train", 0.0)
            continue
        for position, paragraph in enumerate(wiki_to_text(wikitext).split("\n")):
            raw = paragraph.encode()
            cleaned = clean_line(raw, min_chars)
            yield _record(doc_id, uri, position, raw, cleaned, val_fraction)


def iter_mediawiki_pages(uri: str) -> Iterator[tuple[str, str, bool, str]]:
    """Stream ``(page_id, namespace, is_redirect, wikitext)`` from a MediaWiki XML dump."""
    with storage.open_binary(uri, compression="infer") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if _local_name(elem.tag) != "page":
                continue
            fields = {_local_name(child.tag): child for child in elem}
            revision = fields.get("revision")
            text_elem = None
            if revision is not None:
                text_elem = next((c for c in revision if _local_name(c.tag) == "text"), None)
            yield (
                (fields["id"].text or "").strip() if "id" in fields else "",
                (fields["ns"].text or "").strip() if "ns" in fields else ARTICLE_NAMESPACE,
                "redirect" in fields,
                (text_elem.text or "") if text_elem is not None else "",
            )
            elem.clear()


def wiki_to_text(wikitext: str) -> str:
    """Plain text of an article: markup stripped by mwparserfromhell.

    Tables and links to files, images and categories are removed first: their
    leftovers ("thumb|200px|…", cell soup) are not prose.
    """
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks(recursive=False):
        if _NON_ARTICLE_LINK.match(str(link.title)):
            code.remove(link)
    for table in code.filter_tags(recursive=False, matches=lambda node: node.tag == "table"):
        code.remove(table)
    return code.strip_code(normalize=True, collapse=True, keep_template_params=False)


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
