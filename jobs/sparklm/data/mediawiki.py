"""MediaWiki XML dumps: pages streamed in bounded memory; multistream dumps cut at their streams.

Pages are parsed with expat's callbacks rather than an element tree: nothing is
kept between pages (an ``iterparse`` tree keeps every emptied page attached to
the root), a page's text is kept only up to ``max_text_bytes`` (MediaWiki itself
refuses pages over 2 MiB), and nesting deeper than any dump has is refused.

A ``…-multistream.xml.bz2`` dump is a concatenation of bz2 streams of about 100
pages each; its ``…-multistream-index.txt.bz2`` gives every stream's byte offset.
Splits cut at those offsets let each task decompress only its own streams.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from xml.parsers import expat

from sparklm.data.decompression import CappedReader, ReadLimits, bomb_message, open_decompressed
from sparklm.data.lines import iter_records
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

ARTICLE_NAMESPACE = "0"
# A dump nests five deep (mediawiki/page/revision/contributor/username); far more is not a dump.
MAX_XML_DEPTH = 64
CHUNK_BYTES = 1 << 20
# enwiki-…-pages-articles-multistream.xml.bz2 ↔ …-multistream-index.txt.bz2 (also the
# numbered parts: …-multistream1.xml-p1p41242.bz2 ↔ …-multistream-index1.txt-p1p41242.bz2).
_MULTISTREAM_DUMP = re.compile(
    r"^(?P<stem>.*-multistream)(?P<part>\d*)\.xml(?P<pages>-p\d+p\d+)?\.bz2$"
)
_MULTISTREAM_INDEX = re.compile(r"^.*-multistream-index\d*\.txt(-p\d+p\d+)?\.bz2$")
_NON_ARTICLE_LINK = re.compile(r"^\s*(file|image|category|media)\s*:", re.IGNORECASE)
# Fields of a page, by the path of their element below <page>.
_FIELDS = {("page", "id"): "page_id", ("page", "ns"): "namespace",
           ("page", "revision", "text"): "text"}  # fmt: skip


@dataclass(frozen=True)
class Page:
    """One page of a dump; ``text`` is empty when its wikitext exceeded the cap."""

    page_id: str
    namespace: str
    redirect: bool
    text: str
    text_bytes: int
    oversized: bool


class PageParser:
    """Incremental expat parser that hands out each page as soon as it is closed."""

    def __init__(self, name: str, max_text_bytes: int) -> None:
        self._name, self._max_text_bytes = name, max_text_bytes
        self._parser = expat.ParserCreate()
        self._parser.buffer_text = True
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._characters
        self._parser.EntityDeclHandler = self._refuse_entities
        self._path: list[str] = []
        self._page: dict | None = None
        self._field: str | None = None  # the page field whose text is being read
        self._done: list[Page] = []

    def feed(self, data: bytes, final: bool = False) -> list[Page]:
        """Parse the next bytes of the document; return the pages they completed."""
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            raise PipelineError(
                f"{self._name} is not well-formed XML ({exc}): a truncated or corrupted dump; "
                "download it again or remove it from --input"
            ) from None
        pages, self._done = self._done, []
        return pages

    def _start(self, name: str, attributes: dict) -> None:
        self._path.append(name.rsplit(":", 1)[-1])
        if len(self._path) > MAX_XML_DEPTH:
            raise PipelineError(
                f"{self._name} nests XML elements more than {MAX_XML_DEPTH} deep (line "
                f"{self._parser.CurrentLineNumber}): not a MediaWiki dump; remove it from --input"
            )
        tail = self._path[-1]
        if tail == "page":
            self._page = {"page_id": [], "namespace": [], "text": [], "text_bytes": 0,
                          "redirect": False}  # fmt: skip
        elif self._page is None:
            return
        elif tail == "redirect" and self._path[-2] == "page":
            self._page["redirect"] = True
        elif tail in ("id", "ns", "text"):
            path = self._path
            self._field = _FIELDS.get(tuple(path[-3:])) or _FIELDS.get(tuple(path[-2:]))

    def _end(self, name: str) -> None:
        self._field = None
        if self._path.pop() == "page" and self._page is not None:
            page, self._page = self._page, None
            oversized = page["text_bytes"] > self._max_text_bytes
            self._done.append(Page(
                page_id="".join(page["page_id"]).strip(),
                namespace="".join(page["namespace"]).strip() or ARTICLE_NAMESPACE,
                redirect=page["redirect"],
                text="" if oversized else "".join(page["text"]),
                text_bytes=page["text_bytes"],
                oversized=oversized,
            ))  # fmt: skip

    def _characters(self, data: str) -> None:
        field = self._field
        if field is None or self._page is None:
            return
        if field == "text":
            self._page["text_bytes"] += len(data.encode())
            if self._page["text_bytes"] <= self._max_text_bytes:
                self._page["text"].append(data)
        elif len(self._page[field]) < 64:
            self._page[field].append(data)

    def _refuse_entities(self, name, *_args) -> None:
        raise PipelineError(
            f"{self._name} declares XML entities ({name!r}): MediaWiki dumps never do, and "
            "entity expansion can blow up memory; remove it from --input"
        )


def iter_pages(chunks: Iterable[bytes], name: str, max_text_bytes: int) -> Iterator[Page]:
    """Pages of the XML document whose bytes ``chunks`` yields, in order."""
    parser = PageParser(name, max_text_bytes)
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.feed(b"", final=True)


def dump_pages(uri: str, codec: str | None, limits: ReadLimits) -> Iterator[Page]:
    """Every page of a whole dump file (plain XML or compressed), decompression capped."""
    if codec is None:
        with storage.open_binary(uri) as f:
            yield from iter_pages(_chunks(f), uri, limits.max_record_bytes)
        return
    with open_decompressed(uri, codec, limits) as f:
        yield from iter_pages(_chunks(f), uri, limits.max_record_bytes)


def _chunks(f) -> Iterator[bytes]:
    while chunk := f.read(CHUNK_BYTES):
        yield chunk


def index_of_dump(dump_uri: str) -> str | None:
    """The index URI that belongs to a multistream dump's URI, or None for other files."""
    head, _, name = dump_uri.rpartition("/")
    match = _MULTISTREAM_DUMP.match(name)
    if not match:
        return None
    stem, part, pages = match.group("stem", "part", "pages")
    return f"{head}/{stem}-index{part}.txt{pages or ''}.bz2"


def is_index(uri: str) -> bool:
    return _MULTISTREAM_INDEX.match(uri.rpartition("/")[2]) is not None


def stream_offsets(index_uri: str, dump_bytes: int, limits: ReadLimits) -> list[int]:
    """The distinct stream offsets an index lists (``offset:page_id:title`` lines), sorted.

    Read on the driver as a stream: only the offsets are kept (one per ~100 pages).
    """
    offsets: set[int] = set()
    with open_decompressed(index_uri, "bz2", limits) as f:
        for number, (_, line, _) in enumerate(iter_records(f, limits.max_line_bytes), 1):
            field = line.split(b":", 1)[0]
            if not field.isdigit() or int(field) >= dump_bytes:
                raise PipelineError(
                    f"line {number} of the multistream index {index_uri} is not "
                    "'offset:page_id:title' with an offset inside its dump: use the index "
                    "published with this dump, or remove the index to read the dump in one task"
                )
            offsets.add(int(field))
    return sorted(offsets)


def stream_ranges(offsets: list[int], dump_bytes: int, split_bytes: int) -> list[tuple[int, int]]:
    """Cut ``[0, dump_bytes)`` at stream offsets into ranges of about ``split_bytes``."""
    ranges, start = [], 0
    for offset in offsets:
        if offset - start >= split_bytes:
            ranges.append((start, offset))
            start = offset
    ranges.append((start, dump_bytes))
    return ranges


def multistream_pages(
    uri: str, start: int, end: int, dump_bytes: int, limits: ReadLimits
) -> Iterator[Page]:
    """Pages of the bz2 streams in ``[start, end)`` of a multistream dump.

    Only the first range holds the ``<mediawiki>`` opening (with the siteinfo) and only
    the last its closing tag; the others get a synthetic root so each range parses alone.
    """
    opening = b"" if start == 0 else b"<mediawiki>"
    closing = b"" if end == dump_bytes else b"</mediawiki>"
    cap, _ = limits.decompressed_cap(end - start)
    with storage.open_binary(uri) as f:
        f.seek(start)
        streams = CappedReader(
            _Bz2Streams(f, end - start, f"{uri} bytes {start}-{end}"),
            cap,
            bomb_message(f"{uri} bytes {start}-{end}", end - start, limits),
        )
        chunks = _chain([opening], _chunks(streams), [closing])
        yield from iter_pages(chunks, uri, limits.max_record_bytes)


def _chain(*parts: Iterable[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield from part


class _Bz2Streams:
    """The concatenated bz2 streams in the next ``length`` bytes of ``f``, decompressed on
    demand, at most ``size`` bytes per read."""

    def __init__(self, f, length: int, name: str) -> None:
        self._f, self._left, self._name = f, length, name
        self._decompressor = bz2.BZ2Decompressor()
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_BYTES if size < 0 else size
        while True:
            if self._decompressor.eof:
                self._pending = self._decompressor.unused_data + self._pending
                if not self._pending and not self._left:
                    return b""
                self._decompressor = bz2.BZ2Decompressor()
            if self._decompressor.needs_input and not self._pending:
                self._pending = self._f.read(min(CHUNK_BYTES, self._left))
                self._left -= len(self._pending)
                if not self._pending:
                    raise PipelineError(
                        f"{self._name} does not end at a bz2 stream boundary: the multistream "
                        "index does not belong to this dump (or the dump is truncated)"
                    )
            try:
                data = self._decompressor.decompress(self._pending, max_length=size)
            except OSError as exc:
                raise PipelineError(f"{self._name} is not a bz2 stream ({exc}): the multistream "
                                    "index does not belong to this dump") from None  # fmt: skip
            self._pending = b""
            if data:
                return data


def wiki_to_text(wikitext: str) -> str:
    """Plain text of an article: markup stripped by mwparserfromhell.

    Top-level tables and links to files, images and categories are dropped first: their
    leftovers ("thumb|200px|…", cell soup) are not prose. They are filtered out of the
    node list in one pass; ``Wikicode.remove`` would search the whole tree for each one,
    which made this function most of preprocess's time on a dump.
    """
    import mwparserfromhell
    from mwparserfromhell.nodes import Tag, Wikilink

    def is_prose(node) -> bool:
        if isinstance(node, Wikilink):
            return not _NON_ARTICLE_LINK.match(str(node.title))
        return not (isinstance(node, Tag) and node.tag == "table")

    code = mwparserfromhell.parse(wikitext)
    code.nodes = [node for node in code.nodes if is_prose(node)]
    return code.strip_code(normalize=True, collapse=True, keep_template_params=False)
