"""Corpus readers: byte ranges cover every line once; MediaWiki dumps become articles."""

import bz2
import io
import random

import pytest

from sparklm.sources import InputSplit, iter_range_lines, plan_splits, read_split, wiki_to_text


def lines_by_ranges(data: bytes, split_bytes: int) -> list[bytes]:
    f = io.BytesIO(data)
    out = []
    for start in range(0, max(len(data), 1), split_bytes):
        out += [line for _, line in iter_range_lines(f, start, min(start + split_bytes, len(data)))]
    return out


@pytest.mark.parametrize("seed", range(20))
def test_every_line_lands_in_exactly_one_split(seed):
    rng = random.Random(seed)
    lines = [b"x" * rng.choice([0, 0, 1, 2, 5, 17, 300]) for _ in range(rng.randint(0, 60))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    expected = data.split(b"\n")
    if data.endswith(b"\n"):
        expected.pop()
    for split_bytes in (1, 2, 3, 7, 64, 1000, len(data) + 1):
        assert lines_by_ranges(data, split_bytes) == expected, split_bytes


def test_offsets_point_at_line_starts():
    data = b"alpha\nbeta\n\ngamma"
    got = list(iter_range_lines(io.BytesIO(data), 0, len(data)))
    assert got == [(0, b"alpha"), (6, b"beta"), (11, b""), (12, b"gamma")]


def test_plan_splits_ranges_text_and_keeps_compressed_whole(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"x" * 25)
    (tmp_path / "b.txt.bz2").write_bytes(bz2.compress(b"hello\n"))
    uris = [f"file://{tmp_path / 'a.txt'}", f"file://{tmp_path / 'b.txt.bz2'}"]
    splits = plan_splits(uris, 10)
    assert [(s.start, s.end) for s in splits] == [(0, 10), (10, 20), (20, 25), (0, None)]


def test_plain_text_headings_start_documents(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(
        " = First = \n one paragraph here\n = = Section = = \n more text here\n"
        " = Second = \n another paragraph\n",
        encoding="utf-8",
    )
    records = list(
        read_split(
            InputSplit(f"file://{path}", 0, path.stat().st_size), min_chars=4, val_fraction=0.1
        )
    )
    docs = [r.doc_id for r in records]
    assert docs[0] == docs[1] == docs[2] == docs[3] != docs[4] == docs[5]


def test_compressed_text_is_read_whole(tmp_path):
    path = tmp_path / "c.txt.bz2"
    path.write_bytes(bz2.compress(b"line one is here\nline two is here\n"))
    records = list(read_split(InputSplit(f"file://{path}"), min_chars=4, val_fraction=0.1))
    assert [r.text for r in records] == ["line one is here", "line two is here"]


MEDIAWIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page><title>Lobster</title><ns>0</ns><id>7</id>
    <revision><text>'''Lobsters''' are [[crustacean]]s.[[File:Lobster.jpg|thumb|A lobster]]
{| class="wikitable"
| cell || soup
|}
They live in the [[Atlantic Ocean|sea]].{{citation needed}}</text></revision></page>
  <page><title>Lobsters</title><ns>0</ns><id>8</id><redirect title="Lobster" />
    <revision><text>#REDIRECT [[Lobster]]</text></revision></page>
  <page><title>Talk:Lobster</title><ns>1</ns><id>9</id>
    <revision><text>Discussion about lobsters goes here.</text></revision></page>
</mediawiki>"""


def test_mediawiki_dump_yields_articles_without_markup(tmp_path):
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(MEDIAWIKI.encode()))
    records = list(read_split(InputSplit(f"file://{path}"), min_chars=4, val_fraction=0.1))
    kept = [r for r in records if r.drop_reason is None]
    assert [r.text for r in kept] == ["Lobsters are crustaceans.", "They live in the sea."]
    assert len({r.doc_id for r in kept}) == 1
    pages = sorted(r.drop_reason for r in records if (r.drop_reason or "").endswith("_page"))
    assert pages == ["non_article_page", "redirect_page"]


def test_wiki_to_text_drops_file_links_and_tables():
    text = wiki_to_text("A [[File:x.png|thumb|caption]]b\n{|\n|a||b\n|}\n[[Category:Things]]")
    assert "thumb" not in text and "caption" not in text and "||" not in text
    assert "Category" not in text
