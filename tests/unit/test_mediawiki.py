"""MediaWiki dumps: pages streamed in bounded memory, hostile XML refused clearly, multistream
dumps cut at their streams with every page read exactly once."""

import bz2
import tracemalloc

import pytest

from helpers.corpora import article_pages, mediawiki_page, multistream_dump, write_text
from sparklm.data import mediawiki
from sparklm.data.decompression import ReadLimits
from sparklm.data.sources import ReadOptions, SourceFile, corpus_files, plan_splits, read_split
from sparklm.runtime.errors import PipelineError

OPTIONS = ReadOptions(min_chars=4, limits=ReadLimits())


def page_ids(records) -> set[str]:
    return {r.doc_id for r in records if r.drop_reason is None}


def read_all(path, split_bytes: int, options: ReadOptions = OPTIONS):
    file = SourceFile(f"file://{path}", f"file://{path}", path.stat().st_size)
    splits = plan_splits([file], split_bytes, options)
    return splits, [[r for r in read_split(s, options)] for s in splits]


@pytest.mark.parametrize("split_bytes", [1, 300, 1000, 10**9])
def test_a_multistream_dump_is_cut_at_streams_and_every_page_is_read_once(tmp_path, split_bytes):
    pages = article_pages(40)
    dump, _ = multistream_dump(tmp_path, pages, pages_per_stream=3)
    splits, per_split = read_all(dump, split_bytes)
    assert all(s.multistream for s in splits)
    if split_bytes == 1:
        assert len(splits) == 1 + 14  # the siteinfo stream, then one per 3 pages
    if split_bytes == 10**9:
        assert len(splits) == 1
    ids = [page_ids(records) for records in per_split]
    assert sum(len(i) for i in ids) == len(set().union(*ids)) == 40  # each page exactly once
    plain = write_text(tmp_path / "plain.xml.bz2", bz2.compress(bz2.decompress(dump.read_bytes())))
    [whole], [records] = read_all(plain, split_bytes)
    assert not whole.multistream
    lines = sorted((r.position, r.text) for split in per_split for r in split)
    assert lines == sorted((r.position, r.text) for r in records)  # as read in one stream


def test_the_index_is_not_read_as_text_when_its_dump_is(tmp_path):
    dump, index = multistream_dump(tmp_path, article_pages(5))
    uris = [f"file://{dump}", f"file://{index}", f"file://{tmp_path / 'other.txt'}"]
    assert corpus_files(uris) == [uris[0], uris[2]]
    assert corpus_files(uris[1:]) == uris[1:]  # an index on its own is just a file


def test_an_index_that_does_not_match_its_dump_is_refused(tmp_path):
    dump, index = multistream_dump(tmp_path, article_pages(9))
    index.write_bytes(bz2.compress(b"17:10:Article 0\n"))  # not a stream boundary
    with pytest.raises(PipelineError, match="does not belong to this dump"):
        read_all(dump, 1)
    index.write_bytes(bz2.compress(b"garbage\n"))
    with pytest.raises(PipelineError, match="is not 'offset:page_id:title'"):
        read_all(dump, 1)


def test_a_page_over_the_record_cap_is_dropped_and_counted(tmp_path):
    xml = ("<mediawiki>\n" + mediawiki_page(1, "Small", "A small page of text.")
           + mediawiki_page(2, "Huge", "word " * 100_000) + "</mediawiki>\n")  # fmt: skip
    path = write_text(tmp_path / "dump.xml", xml)
    options = ReadOptions(4, ReadLimits(max_record_bytes=64 * 1024))
    [_], [records] = read_all(path, 10**9, options)
    assert [r.text for r in records if r.drop_reason is None] == ["A small page of text."]
    [huge] = [r for r in records if r.drop_reason == "record_too_large"]
    assert huge.raw_bytes == 500_000


def test_pages_do_not_accumulate_while_a_dump_streams():
    pages = [mediawiki_page(i, f"P{i}", "text").encode() for i in range(50_000)]
    chunks = [b"<mediawiki>", *(b"".join(pages[i : i + 500]) for i in range(0, 50_000, 500)),
              b"</mediawiki>"]  # fmt: skip
    del pages
    tracemalloc.start()
    count = sum(1 for _ in mediawiki.iter_pages(iter(chunks), "big.xml", 2**20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 50_000
    assert peak < 2**20  # an element tree keeping its emptied pages holds ~4 MB here


def test_deep_nesting_is_refused_before_it_costs_memory():
    deep = b"<mediawiki>" + b"<a>" * 1_000_000
    with pytest.raises(PipelineError, match=r"bomb\.xml nests XML elements more than 64 deep"):
        list(mediawiki.iter_pages([deep], "bomb.xml", 2**20))


def test_malformed_xml_names_the_file():
    with pytest.raises(PipelineError, match=r"broken\.xml is not well-formed XML .*line 1"):
        list(mediawiki.iter_pages([b"<mediawiki><page><title>x</page>"], "broken.xml", 2**20))


def test_entity_declarations_are_refused():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><mediawiki>&b;</mediawiki>')  # fmt: skip
    with pytest.raises(PipelineError, match="declares XML entities"):
        list(mediawiki.iter_pages([laughs], "laughs.xml", 2**20))


def test_index_names_follow_wikimedia_conventions():
    base = "s3://b/enwiki-20260101-pages-articles-multistream"
    assert mediawiki.index_of_dump(f"{base}.xml.bz2") == f"{base}-index.txt.bz2"
    assert (mediawiki.index_of_dump(f"{base}3.xml-p100p200.bz2")
            == f"{base}-index3.txt-p100p200.bz2")  # fmt: skip
    assert mediawiki.index_of_dump("s3://b/enwiki-latest-pages-articles.xml.bz2") is None
    assert mediawiki.is_index(f"{base}-index3.txt-p100p200.bz2")


def test_wiki_to_text_drops_file_links_and_tables():
    text = mediawiki.wiki_to_text(
        "A [[File:x.png|thumb|caption]]b\n{|\n|a||b\n|}\n[[Category:Things]]"
    )
    assert "thumb" not in text and "caption" not in text and "||" not in text
    assert "Category" not in text
