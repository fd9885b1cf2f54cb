"""Corpus readers: formats by suffix or content, splits that cover every record once,
documents that do not depend on how files were cut, source names that do not depend on
where a package is installed."""

import bz2
import gzip
import json
import random
import subprocess
import sys
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.corpora import READ_OPTIONS, mediawiki_page, source_file, write_text
from sparklm.data import records as records_module
from sparklm.data.decompression import ReadLimits
from sparklm.data.sources import (
    JSONL,
    MAX_HEADING_CHARS,
    MEDIAWIKI,
    PARQUET,
    TEXT,
    LineRecord,
    ReadOptions,
    continued_documents,
    group_splits,
    plan_splits,
    read_split,
    source_names,
)
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError


def read(paths, split_bytes=10**9, options=READ_OPTIONS, held_out=False):
    files = [replace(source_file(p), held_out=held_out) for p in paths]
    splits = plan_splits(files, split_bytes, options)
    return splits, [r for s in splits for r in read_split(s, options)]


def by_document(records):
    """The records with each document id replaced by A, B, … in order of first appearance."""
    names = {}
    return [replace(r, doc_id=names.setdefault(r.doc_id, chr(ord("A") + len(names))))
            for r in records]  # fmt: skip


def resolved(splits, records):
    """``(position, doc_id, doc_start)`` of every line once the lines that open a plain-text
    range are given the document begun in an earlier range, as the preprocess job does."""
    last_starts = {}
    for r in records:
        if r.doc_start is not None:
            key = (r.source, r.split_start)
            last_starts[key] = max(last_starts.get(key, 0), r.doc_start)
    continued = continued_documents(splits, last_starts)
    return [
        (r.position, r.doc_id, r.doc_start) if r.doc_id is not None
        else (r.position, *continued[(r.source, r.split_start)])
        for r in records
    ]  # fmt: skip


def test_plain_text_is_ranged_and_compressed_files_are_whole(tmp_path):
    a = write_text(tmp_path / "a.txt", b"x" * 25)
    b = write_text(tmp_path / "b.txt.bz2", bz2.compress(b"hello\n"))
    splits = plan_splits([source_file(a), source_file(b)], 10, READ_OPTIONS)
    assert [(s.start, s.end, s.codec) for s in splits] == [
        (0, 10, None), (10, 20, None), (20, 25, None), (0, None, "bz2")]  # fmt: skip


def test_plain_text_headings_start_documents(tmp_path):
    path = write_text(tmp_path / "wiki.txt",
                      " = First = \n one paragraph here\n = = Section = = \n more text here\n"
                      " = Second = \n another paragraph\n")  # fmt: skip
    _, records = read([path])
    docs = [r.doc_id for r in records]
    assert docs[0] == docs[1] == docs[2] == docs[3] != docs[4] == docs[5]


def test_documents_do_not_depend_on_how_a_file_is_cut(tmp_path):
    """Lines that open a range belong to the document begun in an earlier range, including
    the untitled document a file may open with."""
    rng = random.Random(3)
    lines = [f" an untitled opening paragraph {p} " * rng.randint(1, 30) for p in range(4)]
    for d in range(30):
        lines += [f" = Title {d} = "] + [f" paragraph {p} of {d} " * rng.randint(1, 30)
                                          for p in range(rng.randint(0, 6))]  # fmt: skip
    path = write_text(tmp_path / "corpus.txt", "\n".join(lines) + "\n")
    expected = None
    for split_bytes in (97, 1000, 4096, 10**9):
        splits, records = read([path], split_bytes)
        docs = resolved(splits, records)
        assert len(splits) > 1 or split_bytes == 10**9
        assert expected is None or docs == expected, split_bytes
        expected = docs
    assert len({d for _, d, _ in expected}) == 31
    assert expected[0] == (0, expected[0][1], 0)  # the untitled document starts the file


def test_compressed_text_counts_decompressed_offsets(tmp_path):
    path = write_text(tmp_path / "c.txt.bz2", bz2.compress(b"line one is here\nline two is here\n"))
    _, records = read([path])
    assert [(r.position, r.text) for r in records] == [
        (0, "line one is here"), (17, "line two is here")]  # fmt: skip


def test_formats_are_detected_by_content_when_the_name_says_nothing(tmp_path):
    jsonl = write_text(tmp_path / "data-00000", b'{"text": "a record of text"}\n')
    wiki = write_text(
        tmp_path / "dump",
        gzip.compress(
            f"<mediawiki>{mediawiki_page(1, 'T', 'Wiki text here.')}</mediawiki>".encode()
        ),
    )
    text = write_text(tmp_path / "notes", gzip.compress(b"just some plain text\n"))
    table = tmp_path / "table"
    pq.write_table(pa.table({"text": ["a parquet row of text"]}), table)
    _, records = read([jsonl, wiki, text, table])
    kept = {r.source.rsplit("/", 1)[1]: r.text for r in records if r.drop_reason is None}
    assert kept == {
        "data-00000": "a record of text",
        "dump": "Wiki text here.",
        "notes": "just some plain text",
        "table": "a parquet row of text",
    }
    large = write_text(tmp_path / "large", b'{"text": "x"}\n' * 100)  # planned on the driver
    assert [s.fmt for s in plan_splits([source_file(large)], 512, READ_OPTIONS)] == [JSONL] * 3
    assert plan_splits([source_file(table)], 10, READ_OPTIONS)[0].fmt == PARQUET


def test_json_lines_records_without_usable_text_are_counted_and_dropped(tmp_path):
    lines = [
        {"text": "first record text"},
        {"meta": {"content": "nested text"}},
        {"other": "no text field"},
        {"text": 42},
        {"text": None},
        {"text": ["list"]},
    ]
    body = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n\n" + json.dumps(
        {"text": "line one\nline two"}) + "\n"  # fmt: skip
    path = write_text(tmp_path / "data.jsonl", body)
    _, records = read([path])
    assert [r.drop_reason for r in records] == [
        None,
        "missing_text_field",
        "missing_text_field",
        "non_string_text_field",
        "missing_text_field",
        "non_string_text_field",
        "invalid_json",
        "empty",
        None,
        None,
    ]
    assert [r.text for r in records if r.drop_reason is None] == [
        "first record text", "line one", "line two"]  # fmt: skip
    assert len({r.doc_id for r in records}) == len(lines) + 3  # one document per record
    nested = ReadOptions(4, ReadLimits(), ("meta", "content"))
    _, records = read([path], options=nested)
    assert [r.text for r in records if r.drop_reason is None] == ["nested text"]


def test_a_json_lines_record_over_the_cap_is_dropped_not_parsed(tmp_path):
    big = json.dumps({"text": "word " * 2000})
    path = write_text(tmp_path / "data.jsonl.gz",
                      gzip.compress(f'{{"text": "small one"}}\n{big}\n'.encode()))  # fmt: skip
    options = ReadOptions(4, ReadLimits(max_record_bytes=4096))
    _, records = read([path], options=options)
    assert [(r.text, r.drop_reason, r.raw_bytes) for r in records] == [
        ("small one", None, 9), ("", "record_too_large", len(big))]  # fmt: skip


@pytest.mark.parametrize("split_bytes", [1000, 10**9])
def test_a_json_lines_record_over_the_cap_is_one_dropped_record_across_ranges(
    tmp_path, split_bytes
):
    """Counted once, with all its bytes, by the range holding its first byte."""
    big = json.dumps({"text": "word " * 2000})
    lines = ['{"text": "first record"}', big, '{"text": "last record"}']
    path = write_text(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    options = ReadOptions(4, ReadLimits(max_record_bytes=4096))
    splits, records = read([path], split_bytes=split_bytes, options=options)
    assert len(splits) == (11 if split_bytes == 1000 else 1)
    assert [(r.text, r.drop_reason, r.raw_bytes) for r in records] == [
        ("first record", None, 12), ("", "record_too_large", len(big)),
        ("last record", None, 11)]  # fmt: skip


def test_parquet_row_groups_are_splits_and_every_row_is_read_once(tmp_path):
    path = tmp_path / "data.parquet"
    texts = [f"row number {i} of the table" for i in range(1000)]
    table = pa.table({"id": list(range(1000)), "text": texts})
    pq.write_table(table, path, row_group_size=100)
    splits, records = read([path], split_bytes=1)
    assert len(splits) == 10 and [(s.start, s.end) for s in splits][:2] == [(0, 1), (1, 2)]
    assert [r.text for r in records] == texts
    assert len({r.doc_id for r in records}) == 1000
    with pytest.raises(PipelineError, match=r"no string column 'body' \(its string columns: text"):
        plan_splits([source_file(path)], 1, ReadOptions(4, ReadLimits(), ("body",)))


def test_a_parquet_value_over_the_cap_is_dropped_and_its_neighbours_kept(tmp_path):
    path = tmp_path / "data.parquet"
    texts = ["first row", "x" * 10_000, None, "last row"]
    pq.write_table(pa.table({"text": texts}), path)
    _, records = read([path], options=ReadOptions(4, ReadLimits(max_record_bytes=4096)))
    assert [r.text for r in records if r.drop_reason is None] == ["first row", "last row"]
    assert [(r.drop_reason, r.raw_bytes) for r in records if r.drop_reason] == [
        ("record_too_large", 10_000), ("missing_text_field", 0)]  # fmt: skip


def test_a_parquet_row_group_that_expands_past_the_ratio_is_refused_naming_the_flag(tmp_path):
    path = tmp_path / "bomb.parquet"  # 24 MiB of one letter: a few KB compressed
    pq.write_table(pa.table({"text": ["first row", "a" * (24 << 20), "last row"]}), path,
                   compression="zstd")  # fmt: skip
    refused = r"bomb.parquet row group 0: its text column decompresses to 25,16.* raise "
    with pytest.raises(PipelineError, match=refused + r"--max-compression-ratio \(now 200\)"):
        read([path])
    # Raised, the file is read; the value is over --max-record-bytes, so it is dropped, and
    # each executor checks the row groups it reads as the driver did.
    raised = ReadLimits(max_record_bytes=1 << 20, max_compression_ratio=100_000)
    _, records = read([path], options=ReadOptions(4, raised))
    assert [r.text for r in records if r.drop_reason is None] == ["first row", "last row"]
    with pytest.raises(PipelineError, match="row group 0"):
        list(records_module.parquet_texts(f"file://{path}", 0, 1, ("text",), ReadLimits()))


def test_a_parquet_batch_holds_rows_up_to_a_byte_budget_not_a_row_count(tmp_path):
    assert records_module.batch_rows(32 << 20) == 8  # the default --max-record-bytes
    assert records_module.batch_rows(1 << 20) == 256 and records_module.batch_rows(1 << 30) == 1
    # One 4 MiB value repeated through a dictionary: a 2 MiB file within the ratio, which
    # 256-row batches decoded into 1 GiB at a time.
    path = tmp_path / "repeated.parquet"
    value = random.Random(0).randbytes(3 << 20).hex()[: 4 << 20]
    repeated = pa.DictionaryArray.from_arrays(pa.array([0] * 300, pa.int32()), pa.array([value]))
    # Written as a plain string column (no Arrow schema kept), which readers decode in full.
    pq.write_table(pa.table({"text": repeated}), path, compression="zstd", store_schema=False,
                   dictionary_pagesize_limit=64 << 20)  # fmt: skip
    del value, repeated
    # The child's own peak (VmHWM: its address space's, not inherited from this process).
    read_all = (
        "import re; from sparklm.data import records; "
        "from sparklm.data.decompression import ReadLimits; "
        f"rows = records.parquet_texts('file://{path}', 0, 1, ('text',), ReadLimits()); "
        "count = sum(1 for _ in rows); "
        "status = open('/proc/self/status').read(); "
        "print(count, int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1]) >> 10)"
    )
    done = subprocess.run([sys.executable, "-c", read_all], capture_output=True, text=True,
                          check=True)  # fmt: skip
    rows, peak_mb = map(int, done.stdout.split())
    assert rows == 300 and peak_mb < 400, done.stdout


def test_many_small_files_are_grouped_into_few_tasks(tmp_path):
    files = [write_text(tmp_path / f"f{i:05d}.txt", f"file {i} says hello\n") for i in range(2000)]
    splits = plan_splits([source_file(f) for f in files], 2**20, READ_OPTIONS)
    tasks = group_splits(splits, 2**20)
    assert len(splits) == 2000 and 2 <= len(tasks) <= 200
    assert [s for task in tasks for s in task] == splits


@pytest.mark.parametrize("package", ["corpuspkg", "CorpusX"])  # any last letter
def test_package_files_are_named_by_package_not_by_install_location(tmp_path, monkeypatch, package):
    for site in ("site-a", "site-b"):
        write_text(tmp_path / site / package / "__init__.py", "")
        write_text(tmp_path / site / package / "data" / "c.txt", "text\n")
    names = []
    for site in ("site-a", "site-b"):
        monkeypatch.syspath_prepend(str(tmp_path / site))
        monkeypatch.delitem(sys.modules, package, raising=False)
        [uri] = storage.expand([f"pkg://{package}/data"])
        assert f"/{site}/" in uri
        names.append(source_names([f"pkg://{package}/data"], [uri])[uri])
        monkeypatch.undo()
    assert names == [f"pkg://{package}/data/c.txt"] * 2
    other = f"file://{tmp_path}/x.txt"
    assert source_names(["/somewhere"], [other]) == {other: other}


def test_mediawiki_dump_yields_articles_without_markup(tmp_path):
    xml = ("<mediawiki>" + mediawiki_page(7, "Lobster", "'''Lobsters''' are [[crustacean]]s."
           "[[File:Lobster.jpg|thumb|A lobster]]\n{| class=\"wikitable\"\n| cell || soup\n|}\n"
           "They live in the [[Atlantic Ocean|sea]].{{citation needed}}")
           + mediawiki_page(8, "Lobsters", "#REDIRECT [[Lobster]]").replace(
               "<ns>0</ns>", "<ns>0</ns><redirect title=\"Lobster\" />")
           + mediawiki_page(9, "Talk:Lobster", "Discussion about lobsters.", namespace=1)
           + "</mediawiki>")  # fmt: skip
    path = write_text(tmp_path / "dump.xml.bz2", bz2.compress(xml.encode()))
    splits, records = read([path])
    assert splits[0].fmt == MEDIAWIKI
    kept = [r for r in records if r.drop_reason is None]
    assert [r.text for r in kept] == ["Lobsters are crustaceans.", "They live in the sea."]
    assert len({r.doc_id for r in kept}) == 1
    pages = sorted(r.drop_reason for r in records if (r.drop_reason or "").endswith("_page"))
    assert pages == ["non_article_page", "redirect_page"]


def test_text_suffix_is_ranged(tmp_path):
    path = write_text(tmp_path / "a.txt", "abc\n" * 100)
    assert {s.fmt for s in plan_splits([source_file(path)], 64, READ_OPTIONS)} == {TEXT}


def test_long_paragraphs_of_records_are_cut_like_long_lines(tmp_path):
    paragraph = " ".join(f"word{i}" for i in range(20_000))  # ~130 KB, one paragraph
    path = write_text(tmp_path / "data.jsonl", json.dumps({"text": "Title\n" + paragraph}) + "\n")
    _, records = read([path], options=ReadOptions(4, ReadLimits(max_line_bytes=4096)))
    assert records[0].text == "Title" and len(records) > 30
    assert all(len(r.text.encode()) <= 4096 for r in records)
    assert " ".join(r.text for r in records[1:]).split() == paragraph.split()
    assert [r.position for r in records] == sorted({r.position for r in records})


def test_a_text_field_is_a_dotted_path_into_nested_records_and_never_empty():
    assert records_module.field_path("meta.content") == ("meta", "content")
    with pytest.raises(ValueError, match=r"^--text-field 'meta\.\.content' has an empty path "):
        records_module.field_path("meta..content")


@pytest.mark.parametrize(
    ("line", "text", "drop_reason"),
    [(b'{"text": "hi"}', "hi", None),
     (b"not json", None, records_module.INVALID_JSON),
     (b'{"other": 1}', None, records_module.MISSING_FIELD),
     (b'{"text": null}', None, records_module.MISSING_FIELD),
     (b'{"text": 5}', None, records_module.NOT_A_STRING)],
)  # fmt: skip
def test_a_json_record_yields_its_text_or_why_not_and_counts_its_bytes_either_way(
    line, text, drop_reason
):
    """The bytes of dropped records are reported with the reason (preprocess's stats)."""
    assert records_module.jsonl_text(line, ("text",)) == records_module.RecordText(
        text, drop_reason, len(line)
    )


def test_each_line_of_a_held_out_text_file_carries_its_bytes_and_drop_reason(tmp_path):
    """Preprocess's statistics (bytes read, invalid UTF-8 replaced, lines dropped by reason)
    and the train/validation sides come from these fields."""
    path = write_text(tmp_path / "notes.txt", b"intro line here\nab\nbad \xff byte in this line\n"
                                              b" = Title = \nafter the title\n")  # fmt: skip
    src = source_file(path).source
    _, records = read([path], held_out=True)
    assert by_document(records) == [
        LineRecord(src, "A", 0, 0, 0, "intro line here", None, 0, 15, True),
        LineRecord(src, "A", 0, 0, 16, "", "too_short", 0, 2, True),
        LineRecord(src, "A", 0, 0, 19, "bad \ufffd byte in this line", None, 1, 23, True),
        LineRecord(src, "B", 43, 0, 43, "= Title =", None, 0, 11, True),
        LineRecord(src, "B", 43, 0, 55, "after the title", None, 0, 15, True),
    ]


def test_each_line_of_a_held_out_json_lines_file_carries_its_bytes_and_drop_reason(tmp_path):
    """A record's paragraphs are positioned at their byte offsets in its text (after the
    record's own offset); dropped records keep their bytes; JSON's lone surrogates are
    replaced and counted like invalid UTF-8."""
    text = "first paragraph\nx \ud800 and a lone surrogate in a longer line\n\nlast one here"
    replaced = "x \ufffd\ufffd\ufffd and a lone surrogate in a longer line"
    first = json.dumps({"text": text})
    assert len(first) == 92
    path = write_text(tmp_path / "data.jsonl", first + "\n   \n{not json\n")
    src = source_file(path).source
    _, records = read([path], held_out=True)
    assert by_document(records) == [
        LineRecord(src, "A", 0, None, 0, "first paragraph", None, 0, 15, True),
        LineRecord(src, "A", 0, None, 16, replaced, None, 3, 43, True),
        LineRecord(src, "A", 0, None, 60, "", "empty", 0, 0, True),
        LineRecord(src, "A", 0, None, 61, "last one here", None, 0, 13, True),
        LineRecord(src, "B", 93, None, 93, "", "empty", 0, 3, True),
        LineRecord(src, "C", 97, None, 97, "", "invalid_json", 0, 9, True),
    ]


def test_a_json_lines_file_cut_into_ranges_yields_every_record_once(tmp_path):
    texts = [f"record number {i} " * (i % 7 + 1) for i in range(200)]
    path = write_text(
        tmp_path / "data.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in texts)
    )
    splits, records = read([path], split_bytes=97)
    assert len(splits) > 50
    assert [r.text for r in records] == [t.strip() for t in texts]
    assert len({r.doc_id for r in records}) == 200


def test_identical_files_at_different_paths_hold_different_documents(tmp_path):
    """Document ids name the source: two copies of a file are two documents each (ids decide
    the train/validation side and which copy of a line deduplication keeps)."""
    wiki = f"<mediawiki>{mediawiki_page(3, 'T', 'Wiki text here.')}</mediawiki>"
    bodies = {"a.txt": "plain text here\n", "a.jsonl": '{"text": "a record"}\n', "a.xml": wiki}
    for name in [*bodies, "a.parquet"]:
        copies = [tmp_path / folder / name for folder in ("one", "two")]
        for path in copies:
            if name in bodies:
                write_text(path, bodies[name])
            else:
                path.parent.mkdir(exist_ok=True)
                pq.write_table(pa.table({"text": ["a parquet row"]}), path)
        _, records = read(copies)
        ids = {r.source: r.doc_id for r in records if r.drop_reason is None}
        assert len(ids) == 2 and len(set(ids.values())) == 2, name


def test_a_title_line_starts_a_document_up_to_the_title_length_limit(tmp_path):
    """Longer lines are never titles (the title pattern is only tried on short lines)."""
    title = "= " + "T" * (MAX_HEADING_CHARS - 4) + " ="
    longer = "= " + "L" * (MAX_HEADING_CHARS - 3) + " ="
    assert len(title) == MAX_HEADING_CHARS
    path = write_text(tmp_path / "a.txt", f"intro text\n{title}\nbody text\n{longer}\nmore text\n")
    _, records = read([path])
    assert [r.doc_id for r in by_document(records)] == ["A", "B", "B", "B", "B"]


def test_an_unnamed_json_lines_file_may_begin_with_blank_lines(tmp_path):
    path = write_text(tmp_path / "data-00000", '\n\n{"text": "a record of text"}\n')
    _, records = read([path])
    assert [r.text for r in records if r.drop_reason is None] == ["a record of text"]


def test_a_files_suffix_decides_its_format_over_its_content(tmp_path):
    """Content is only consulted when the name says nothing, whatever the file's size."""
    records_txt = write_text(tmp_path / "records.txt", '{"text": "kept verbatim"}\n' * 20)
    prose_jsonl = write_text(tmp_path / "prose.jsonl", "plain prose, not a record\n" * 20)
    for split_bytes in (64, 10**9):
        _, records = read([records_txt, prose_jsonl], split_bytes)
        by_file = {(r.source.rsplit("/", 1)[1], r.text, r.drop_reason) for r in records}
        assert by_file == {("records.txt", '{"text": "kept verbatim"}', None),
                           ("prose.jsonl", "", "invalid_json")}  # fmt: skip


def test_a_text_mentioning_mediawiki_past_its_first_bytes_is_still_plain_text(tmp_path):
    """Formats are told from a file's first bytes: a corpus about MediaWiki is not a dump."""
    prose = "".join(f"line {i} of plain prose about wikis\n" for i in range(200))
    mention = "an export begins with <mediawiki xmlns=...>"
    assert len(prose.encode()) > 4096
    notes = write_text(tmp_path / "notes", prose + mention + "\n")
    packed = write_text(tmp_path / "notes.gz", gzip.compress((prose + mention + "\n").encode()))
    for paths, split_bytes in [([notes], 10**9), ([notes], 1024), ([packed], 1024)]:
        _, records = read(paths, split_bytes)
        assert [r.text for r in records][-2:] == ["line 199 of plain prose about wikis", mention]


def test_unnamed_files_larger_than_a_split_are_recognised_on_the_driver(tmp_path):
    """Compressed ones are read whole by one task and decompressed; plain ones are ranged."""
    body = "".join(json.dumps({"text": f"record {i} of the data"}) + "\n" for i in range(50))
    packed = write_text(tmp_path / "data-00001", gzip.compress(body.encode()))
    plain = write_text(tmp_path / "data-00002", body)
    wiki = f"<mediawiki>{mediawiki_page(1, 'T', 'Wiki text here.')}</mediawiki>"
    dump = write_text(tmp_path / "dump", gzip.compress(wiki.encode()))
    splits, records = read([packed, plain, dump], split_bytes=32)
    assert [s.end for s in splits if s.uri.endswith(("00001", "dump"))] == [None, None]
    assert len([s for s in splits if s.uri.endswith("00002")]) > 50
    kept = [(r.source.rsplit("/", 1)[1], r.text) for r in records if r.drop_reason is None]
    expected = [f"record {i} of the data" for i in range(50)]
    assert kept == ([("data-00001", t) for t in expected] + [("data-00002", t) for t in expected]
                    + [("dump", "Wiki text here.")])  # fmt: skip


def test_lines_are_positioned_in_dump_and_table_order(tmp_path):
    """Positions order a source's lines (the first of duplicate lines is the one kept)."""
    two = "first paragraph of the text\nsecond paragraph of the text"
    xml = "<mediawiki>" + "".join(mediawiki_page(i, f"Page {i}", two) for i in (7, 8, 9))
    dump = write_text(tmp_path / "dump.xml", xml + "</mediawiki>")
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"text": [two] * 3}), table)
    for path in (dump, table):
        _, records = read([path])
        positions = [r.position for r in records]
        assert len(positions) == 6 and positions == sorted(set(positions)), path.name
        assert all(r.doc_start <= r.position for r in records)


def test_a_dump_page_without_a_numeric_id_is_still_read(tmp_path):
    page = mediawiki_page(0, "No id", "Text of a page without an id.").replace("<id>0</id>", "")
    dump = write_text(tmp_path / "dump.xml", f"<mediawiki>{page}</mediawiki>")
    _, records = read([dump])
    assert [r.text for r in records] == ["Text of a page without an id."]


@pytest.mark.parametrize("page_id", [str(2**31), str(2**63), "²", "1" * 5000])
def test_a_dump_page_whose_id_cannot_position_its_lines_is_read_like_one_without_an_id(
    tmp_path, page_id
):
    """Positions are Spark longs (``id << 32``): an id of 2**31 or more, or one that is not
    ASCII digits ("²".isdigit() is true), must neither overflow one nor fail the task."""
    pages = [mediawiki_page(2**31 - 1, "Last", "The largest id still positions its page."),
             mediawiki_page(0, "Odd", "Text of a page with an odd id.").replace(
                 "<id>0</id>", f"<id>{page_id}</id>")]  # fmt: skip
    dump = write_text(tmp_path / "dump.xml", f"<mediawiki>{''.join(pages)}</mediawiki>")
    _, records = read([dump])
    assert [(r.text, r.position) for r in records] == [
        ("The largest id still positions its page.", (2**31 - 1) << 32),
        ("Text of a page with an odd id.", 0)]  # fmt: skip
