"""Small corpora written by the tests: plain text, MediaWiki pages and multistream dumps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sparklm.data.decompression import ReadLimits
from sparklm.data.sources import ReadOptions, SourceFile

# What the readers get by default: the preprocess job's limits, lines of 4+ characters kept.
READ_OPTIONS = ReadOptions(min_chars=4, limits=ReadLimits())


def source_file(path: Path) -> SourceFile:
    """A local file as the planner sees it: named by its URI."""
    return SourceFile(f"file://{path}", f"file://{path}", path.stat().st_size)


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def small_corpus(directory: Path, documents: int = 40, paragraphs: int = 4) -> Path:
    """A plain-text corpus in WikiText layout: ``= Title =`` lines start documents."""
    lines = []
    for d in range(documents):
        lines += ["", f" = Article number {d} = ", ""]
        for p in range(paragraphs):
            lines.append(
                f" Paragraph {p} of article {d} talks about topic {d % 7} and the number "
                f"{d * 31 + p} , which matters for the story of article {d} ."
            )
    return write_text(directory / "corpus.txt", "\n".join(lines) + "\n")


def mediawiki_page(page_id: int, title: str, text: str, namespace: int = 0) -> str:
    """One ``<page>`` of a MediaWiki XML dump."""
    from xml.sax.saxutils import escape

    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{namespace}</ns>\n"
            f"    <id>{page_id}</id>\n    <revision>\n      <id>{page_id + 1000}</id>\n"
            f"      <text xml:space=\"preserve\">{escape(text)}</text>\n    </revision>\n"
            "  </page>\n")  # fmt: skip


def multistream_dump(
    directory: Path, pages: Sequence[tuple[int, str, str]], pages_per_stream: int = 3
) -> tuple[Path, Path]:
    """A ``…-multistream.xml.bz2`` dump of ``(id, title, text)`` pages and its index, laid out
    as Wikimedia publishes them: the siteinfo in a stream of its own, then one bz2 stream per
    ``pages_per_stream`` pages, then one holding ``</mediawiki>``; the index lists
    ``offset:page_id:title`` for every page."""
    import bz2

    data = bz2.compress(
        b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="en">\n'
        b"  <siteinfo>\n    <sitename>Testpedia</sitename>\n  </siteinfo>\n"
    )
    index = []
    for first in range(0, len(pages), pages_per_stream):
        stream = pages[first : first + pages_per_stream]
        index += [f"{len(data)}:{page_id}:{title}" for page_id, title, _ in stream]
        data += bz2.compress("".join(mediawiki_page(*page) for page in stream).encode())
    data += bz2.compress(b"</mediawiki>\n")
    stem = directory / "testwiki-20260101-pages-articles-multistream"
    dump = write_text(stem.with_name(stem.name + ".xml.bz2"), data)
    index_file = write_text(stem.with_name(stem.name + "-index.txt.bz2"),
                            bz2.compress(("\n".join(index) + "\n").encode()))  # fmt: skip
    return dump, index_file


def article_pages(count: int, first_id: int = 10) -> list[tuple[int, str, str]]:
    """``count`` distinct small articles as ``(id, title, wikitext)``."""
    return [
        (first_id + i, f"Article {i}",
         f"'''Article {i}''' is about [[topic {i % 7}]] and the number {i * 37}.\n\n"
         f"It has a second paragraph, which mentions {{{{cite|x}}}} article {i} again.")
        for i in range(count)
    ]  # fmt: skip
