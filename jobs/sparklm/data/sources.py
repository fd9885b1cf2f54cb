"""Corpus readers: plan splits of every input file by format, read each split into cleaned lines.

Formats, by file name suffix and otherwise by content: plain text, JSON Lines
(``--text-field``), Parquet (a string column) and MediaWiki XML dumps, each plain or
compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``). The driver plans splits from
file sizes, Parquet footers and multistream indexes only; tasks open their splits
through fsspec and stream them, so no corpus byte passes through the driver.

Splits that parallelise: byte ranges of uncompressed text and JSON Lines (a record
belongs to the range holding its first byte), Parquet row groups, and the bz2
streams of a multistream dump. A compressed file is one split. Small splits are
grouped into tasks (``group_splits``), so 10 000 small files make a few tasks.
"""

from __future__ import annotations

import io
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlparse

from sparklm.data import mediawiki, records
from sparklm.data.cleaning import clean_line, document_id
from sparklm.data.decompression import (
    ReadLimits,
    codec_from_magic,
    codec_from_name,
    open_decompressed,
    strip_codec_suffix,
)
from sparklm.data.lines import iter_lines, iter_records
from sparklm.runtime import storage

TEXT, JSONL, PARQUET, MEDIAWIKI, AUTO = "text", "jsonl", "parquet", "mediawiki", "auto"
SUFFIX_FORMATS = {".txt": TEXT, ".text": TEXT, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL,
                  ".parquet": PARQUET, ".xml": MEDIAWIKI}  # fmt: skip
SNIFF_BYTES = 4096
PARQUET_MAGIC = b"PAR1"
# Opening a file costs about as much as reading this many bytes (cf. Spark's
# openCostInBytes): it keeps thousands of tiny files from all landing in one task.
OPEN_COST_BYTES = 64 * 1024
# In plain text a line such as " = Homarus gammarus = " (WikiText's article title)
# starts a new document; "= = Section = =" does not. Titles are short: longer lines
# are never tested, which also keeps the regex linear.
DOC_HEADING = re.compile(r"^\s*=\s+[^=\s].*?\s+=\s*$")
MAX_HEADING_CHARS = 256
# Positions are Spark longs: ``page id << 32`` plus a byte offset within the page (at most
# --max-record-bytes, below 2**32) stays below 2**63 for ids up to this one.
MAX_PAGE_ID = 2**31 - 1


@dataclass(frozen=True)
class SourceFile:
    """An input file: where it is, the name documents are identified by, its size."""

    uri: str
    source: str
    size: int
    held_out: bool = False


@dataclass(frozen=True)
class InputSplit:
    """A piece of one input file, read by one task.

    ``start``/``end`` are byte offsets (text and JSON Lines ranges, the compressed
    offsets of a multistream range) or row group indices (Parquet); ``end`` None
    means the whole file. ``weight`` is what grouping balances (bytes plus an open cost).
    """

    uri: str
    source: str
    fmt: str
    codec: str | None = None
    start: int = 0
    end: int | None = None
    size: int = 0
    weight: int = 0
    held_out: bool = False
    multistream: bool = False


@dataclass(frozen=True)
class ReadOptions:
    """What every reader needs besides its split."""

    min_chars: int
    limits: ReadLimits
    text_field: tuple[str, ...] = ("text",)


@dataclass(frozen=True)
class LineRecord:
    """One cleaned (or dropped) line with the document it belongs to.

    ``doc_id``/``doc_start`` are None for the lines of a plain-text range before its
    first title line: their document began in an earlier range, which the job
    resolves once every range is read. ``position`` orders lines within a source
    (byte offsets; ``doc_start`` is the document's first position).
    """

    source: str
    doc_id: str | None
    doc_start: int | None
    split_start: int | None
    position: int
    text: str
    drop_reason: str | None
    invalid_bytes: int
    raw_bytes: int
    held_out: bool


# LineRecord's fields as Spark SQL columns, in order.
LINE_COLUMNS = {"source": "string", "doc_id": "string", "doc_start": "long",
                "split_start": "long", "position": "long", "text": "string",
                "drop_reason": "string", "invalid_bytes": "long", "raw_bytes": "long",
                "held_out": "boolean"}  # fmt: skip


def source_names(specs: Iterable[str], uris: Iterable[str]) -> dict[str, str]:
    """The name each file's documents are identified by: its URI, except that a file of an
    installed package keeps its ``pkg://package/…`` name, so the train/validation split does
    not depend on where Python is installed."""
    roots = {}
    for spec in specs:
        parsed = urlparse(spec.strip())
        root = storage.package_root(spec) if parsed.scheme == storage.PACKAGE_SCHEME else None
        if root is not None:
            roots[root.rstrip("/") + "/"] = f"pkg://{parsed.netloc}/"
    return {
        uri: next(
            (name + uri[len(root) :] for root, name in roots.items() if uri.startswith(root)), uri
        )  # fmt: skip
        for uri in uris
    }


def corpus_files(uris: list[str]) -> list[str]:
    """The files to read: a multistream dump's index is metadata, not text, once its dump is."""
    indexes = {mediawiki.index_of_dump(uri) for uri in uris}
    return [uri for uri in uris if not (mediawiki.is_index(uri) and uri in indexes)]


def plan_splits(
    files: Iterable[SourceFile], split_bytes: int, options: ReadOptions
) -> list[InputSplit]:
    """Splits of about ``split_bytes`` of every file, by format."""
    if split_bytes <= 0:
        raise ValueError("split_bytes must be positive")
    return [split for file in files for split in _plan_file(file, split_bytes, options)]


def _plan_file(file: SourceFile, split_bytes: int, options: ReadOptions) -> list[InputSplit]:
    name = file.uri.rsplit("/", 1)[-1]
    codec = codec_from_name(name)
    fmt = SUFFIX_FORMATS.get(posixpath.splitext(strip_codec_suffix(name).lower())[1], AUTO)
    whole = InputSplit(file.uri, file.source, fmt, codec, size=file.size,
                       weight=file.size + OPEN_COST_BYTES, held_out=file.held_out)  # fmt: skip
    index = mediawiki.index_of_dump(file.uri) if codec == "bz2" else None
    if index and storage.exists(index):
        return _multistream_splits(whole, index, split_bytes, options)
    if codec is None and fmt == AUTO and file.size > split_bytes:
        with storage.open_binary(file.uri) as f:  # a large file without a known suffix
            head = f.read(SNIFF_BYTES)
        codec = codec_from_magic(head)
        fmt = AUTO if codec else PARQUET if head.startswith(PARQUET_MAGIC) else detect_format(head)
        whole = replace(whole, codec=codec, fmt=fmt)
    if codec is not None or fmt in (MEDIAWIKI, AUTO):
        return [whole]
    if fmt == PARQUET:
        return _row_group_splits(whole, split_bytes, options)
    return [
        replace(whole, start=s, end=min(s + split_bytes, file.size),
                weight=min(split_bytes, file.size - s) + OPEN_COST_BYTES)
        for s in range(0, max(file.size, 1), split_bytes)
    ]  # fmt: skip


def _row_group_splits(whole: InputSplit, split_bytes: int, options: ReadOptions):
    groups = records.parquet_row_groups(whole.uri, options.text_field, options.limits)
    splits, first, weight = [], 0, 0
    for group in groups:
        weight += group.compressed_bytes
        if weight >= split_bytes or group is groups[-1]:
            splits.append(
                replace(whole, start=first, end=group.index + 1, weight=weight + OPEN_COST_BYTES)
            )
            first, weight = group.index + 1, 0
    return splits


def _multistream_splits(whole: InputSplit, index: str, split_bytes: int, options: ReadOptions):
    offsets = mediawiki.stream_offsets(index, whole.size, options.limits)
    return [
        replace(whole, fmt=MEDIAWIKI, start=start, end=end,
                weight=end - start + OPEN_COST_BYTES, multistream=True)
        for start, end in mediawiki.stream_ranges(offsets, whole.size, split_bytes)
    ]  # fmt: skip


def group_splits(splits: Iterable[InputSplit], target_weight: int) -> list[list[InputSplit]]:
    """Consecutive splits packed into tasks of about ``target_weight`` each."""
    groups: list[list[InputSplit]] = []
    current: list[InputSplit] = []
    weight = 0
    for split in splits:
        if current and weight + split.weight > target_weight:
            groups.append(current)
            current, weight = [], 0
        current.append(split)
        weight += split.weight
    return groups + ([current] if current else [])


def continued_documents(
    splits: Iterable[InputSplit], last_starts: dict[tuple[str, int], int]
) -> dict[tuple[str, int], tuple[str, int]]:
    """``(source, split start) → (doc_id, doc_start)`` for the lines that open each plain-text
    range after the first: they belong to the document begun last in an earlier range.

    ``last_starts`` holds the last document start each range saw, by ``(source, start)``.
    The result depends on the file's content only, not on how it was cut into ranges.
    """
    starts: dict[str, list[int]] = {}
    for split in splits:
        if split.fmt == TEXT and split.end is not None:
            starts.setdefault(split.source, []).append(split.start)
    continued = {}
    for source, offsets in starts.items():
        current = 0
        for start in sorted(offsets):
            if start > 0:
                continued[(source, start)] = (document_id(source, current), current)
            current = last_starts.get((source, start), current)
    return continued


def detect_format(head: bytes) -> str:
    """Text, JSON Lines or a MediaWiki dump, from the first (decompressed) bytes."""
    if b"<mediawiki" in head:
        return MEDIAWIKI
    if head.lstrip().startswith(b'{"'):
        return JSONL
    return TEXT


def read_split(split: InputSplit, options: ReadOptions) -> Iterator[LineRecord]:
    """Read, clean and attribute to documents every line of one split."""
    limits = options.limits
    if split.fmt == PARQUET:
        yield from _parquet_records(split, options)
    elif split.multistream:
        end = split.size if split.end is None else split.end  # None: to the end of the file
        pages = mediawiki.multistream_pages(split.uri, split.start, end, split.size, limits)
        yield from _page_records(split, pages, options)
    elif split.end is not None:
        with storage.open_binary(split.uri) as f:
            yield from _line_records(split, split.fmt, f, options, split.start, split.end)
    else:
        yield from _whole_file_records(split, options)


def _whole_file_records(split: InputSplit, options: ReadOptions) -> Iterator[LineRecord]:
    with storage.open_binary(split.uri) as f:
        head = f.read(SNIFF_BYTES)
    codec = split.codec or codec_from_magic(head)
    if codec is None and head.startswith(PARQUET_MAGIC):
        yield from _parquet_records(split, options)
        return
    fmt = split.fmt
    if fmt == AUTO and codec is not None:
        with open_decompressed(split.uri, codec, options.limits) as f:
            head = f.read(SNIFF_BYTES)
    if fmt == AUTO:
        fmt = detect_format(head)
    if fmt == MEDIAWIKI:
        pages = mediawiki.dump_pages(split.uri, codec, options.limits)
        yield from _page_records(split, pages, options)
        return
    if codec is None:
        with storage.open_binary(split.uri) as f:
            yield from _line_records(split, fmt, f, options)
        return
    with open_decompressed(split.uri, codec, options.limits) as f:
        yield from _line_records(split, fmt, f, options)


def _line_records(split: InputSplit, fmt: str, f, options: ReadOptions,
                  start: int = 0, end: int | None = None) -> Iterator[LineRecord]:  # fmt: skip
    """Plain text or JSON Lines from ``f`` (raw and seekable for a range, else a stream)."""
    if fmt == JSONL:
        yield from _jsonl_records(
            split, iter_lines(f, options.limits.max_record_bytes, start, end), options
        )
    else:
        lines = iter_records(f, options.limits.max_line_bytes, start, end)
        yield from _text_records(split, lines, options)


def _text_records(split: InputSplit, lines, options: ReadOptions) -> Iterator[LineRecord]:
    """Lines of plain text; a title line starts a new document, and so does the file's start."""
    doc_id, doc_start = (document_id(split.source, 0), 0) if split.start == 0 else (None, None)
    for offset, raw, _ in lines:
        cleaned = clean_line(raw, options.min_chars)
        if cleaned.drop_reason is None and is_heading(cleaned.text):
            doc_id, doc_start = document_id(split.source, offset), offset
        yield LineRecord(
            split.source,
            doc_id,
            doc_start,
            split.start,
            offset,
            cleaned.text,
            cleaned.drop_reason,
            cleaned.invalid_bytes,
            len(raw),
            split.held_out,
        )


def is_heading(text: str) -> bool:
    return len(text) <= MAX_HEADING_CHARS and DOC_HEADING.match(text) is not None


def _jsonl_records(split: InputSplit, lines, options: ReadOptions) -> Iterator[LineRecord]:
    """One document per record, at the record's byte offset; one too large to parse is one
    dropped row of all its bytes."""
    for offset, line, size in lines:
        if line is None:
            record = records.RecordText(None, records.TOO_LARGE, size)
        elif not line.strip():
            record = records.RecordText(None, "empty", len(line))
        else:
            record = records.jsonl_text(line, options.text_field)
        yield from _document_lines(split, document_id(split.source, offset), offset, record,
                                   options)  # fmt: skip


def _parquet_records(split: InputSplit, options: ReadOptions) -> Iterator[LineRecord]:
    """One document per row; a row's lines are positioned after ``row << 32``."""
    first, end = (split.start, split.end) if split.fmt == PARQUET else (0, None)
    if end is None:
        end = len(records.parquet_row_groups(split.uri, options.text_field, options.limits))
    texts = records.parquet_texts(split.uri, first, end, options.text_field, options.limits)
    for row, record in texts:
        yield from _document_lines(split, document_id(split.source, f"row-{row}"), row << 32,
                                   record, options)  # fmt: skip


def _page_records(split: InputSplit, pages, options: ReadOptions) -> Iterator[LineRecord]:
    """One document per article page; other namespaces, redirects and oversized pages are
    dropped and counted. Pages are positioned after ``page id << 32`` (dump order)."""
    for page in pages:
        doc_id = document_id(split.source, f"page-{page.page_id}")
        base = page_position(page.page_id)
        if page.namespace != mediawiki.ARTICLE_NAMESPACE or page.redirect or page.oversized:
            reason = ("non_article_page" if page.namespace != mediawiki.ARTICLE_NAMESPACE
                      else "redirect_page" if page.redirect else records.TOO_LARGE)  # fmt: skip
            record = records.RecordText(None, reason, page.text_bytes)
        else:
            record = records.RecordText(mediawiki.wiki_to_text(page.text), None, page.text_bytes)
        yield from _document_lines(split, doc_id, base, record, options)


def page_position(page_id: str) -> int:
    """``page id << 32``, where a page's lines are positioned: 0 (as for a page without an id,
    which is still read) unless the id is ASCII digits of at most ``MAX_PAGE_ID``.

    ``"²".isdigit()`` is true and ``int`` refuses it; a larger id would overflow Spark's long.
    """
    if not (page_id.isascii() and page_id.isdigit()) or len(page_id) > len(str(MAX_PAGE_ID)):
        return 0
    number = int(page_id)
    return number << 32 if number <= MAX_PAGE_ID else 0


def _document_lines(
    split: InputSplit, doc_id: str, base: int, record: records.RecordText, options: ReadOptions
) -> Iterator[LineRecord]:
    """The lines of one record's text (paragraphs, long ones cut), or one dropped line."""
    if record.text is None:
        yield LineRecord(split.source, doc_id, base, None, base, "", record.drop_reason, 0,
                         record.raw_bytes, split.held_out)  # fmt: skip
        return
    for offset, raw in paragraphs(record.text, options.limits.max_line_bytes):
        cleaned = clean_line(raw, options.min_chars)
        yield LineRecord(
            split.source,
            doc_id,
            base,
            None,
            base + offset,
            cleaned.text,
            cleaned.drop_reason,
            cleaned.invalid_bytes,
            len(raw),
            split.held_out,
        )


def paragraphs(text: str, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line)`` of a text's lines, lines longer than the limit cut in pieces."""
    offset = 0
    for paragraph in text.split("\n"):
        data = paragraph.encode("utf-8", "surrogatepass")  # JSON may hold lone surrogates
        if len(data) <= max_line_bytes:
            yield offset, data
        else:
            for piece_offset, piece, _ in iter_records(io.BytesIO(data), max_line_bytes):
                yield offset + piece_offset, piece
        offset += len(data) + 1
