"""Corpus readers: formats by suffix or content, splits that cover every record once,
documents that do not depend on how files were cut, source names that do not depend on
where a package is installed."""

import bz2
import gzip
import json
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.corpora import mediawiki_page, write_text
from sparklm.data import records as records_module
from sparklm.data.decompression import ReadLimits
from sparklm.data.sources import (
    JSONL,
    MEDIAWIKI,
    PARQUET,
    TEXT,
    ReadOptions,
    SourceFile,
    continued_documents,
    group_splits,
    plan_splits,
    read_split,
    source_names,
)
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

OPTIONS = ReadOptions(min_chars=4, limits=ReadLimits())


def source(path) -> SourceFile:
    return SourceFile(f"file://{path}", f"file://{path}", path.stat().st_size)


def read(paths, split_bytes=10**9, options=OPTIONS):
    splits = plan_splits([source(p) for p in paths], split_bytes, options)
    return splits, [r for s in splits for r in read_split(s, options)]


def test_plain_text_is_ranged_and_compressed_files_are_whole(tmp_path):
    a = write_text(tmp_path / "a.txt", b"x" * 25)
    b = write_text(tmp_path / "b.txt.bz2", bz2.compress(b"hello\n"))
    splits = plan_splits([source(a), source(b)], 10, OPTIONS)
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
    """Lines that open a range belong to the document begun in an earlier range."""
    rng = random.Random(3)
    lines = []
    for d in range(30):
        lines += [f" = Title {d} = "] + [f" paragraph {p} of {d} " * rng.randint(1, 30)
                                          for p in range(rng.randint(0, 6))]  # fmt: skip
    path = write_text(tmp_path / "corpus.txt", "\n".join(lines) + "\n")
    expected = None
    for split_bytes in (97, 1000, 4096, 10**9):
        splits, records = read([path], split_bytes)
        last_starts = {}
        for r in records:
            if r.doc_start is not None:
                key = (r.source, r.split_start)
                last_starts[key] = max(last_starts.get(key, 0), r.doc_start)
        continued = continued_documents(splits, last_starts)
        docs = [(r.position, r.doc_id or continued[(r.source, r.split_start)][0])
                for r in records]  # fmt: skip
        assert len(splits) > 1 or split_bytes == 10**9
        assert expected is None or docs == expected, split_bytes
        expected = docs
    assert len({d for _, d in expected}) == 30


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
    assert [s.fmt for s in plan_splits([source(large)], 512, OPTIONS)] == [JSONL] * 3
    assert plan_splits([source(table)], 10, OPTIONS)[0].fmt == PARQUET


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
    assert records[0].text == "small one"
    assert {r.drop_reason for r in records[1:]} == {"record_too_large"}
    assert sum(r.raw_bytes for r in records[1:]) == len(big)


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
        plan_splits([source(path)], 1, ReadOptions(4, ReadLimits(), ("body",)))


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
    splits = plan_splits([source(f) for f in files], 2**20, OPTIONS)
    tasks = group_splits(splits, 2**20)
    assert len(splits) == 2000 and 2 <= len(tasks) <= 200
    assert [s for task in tasks for s in task] == splits


def test_package_files_are_named_by_package_not_by_install_location(tmp_path, monkeypatch):
    for site in ("site-a", "site-b"):
        write_text(tmp_path / site / "corpuspkg" / "__init__.py", "")
        write_text(tmp_path / site / "corpuspkg" / "data" / "c.txt", "text\n")
    names = []
    for site in ("site-a", "site-b"):
        monkeypatch.syspath_prepend(str(tmp_path / site))
        monkeypatch.delitem(sys.modules, "corpuspkg", raising=False)
        [uri] = storage.expand(["pkg://corpuspkg/data"])
        assert f"/{site}/" in uri
        names.append(source_names(["pkg://corpuspkg/data"], [uri])[uri])
        monkeypatch.undo()
    assert names == ["pkg://corpuspkg/data/c.txt"] * 2
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
    assert {s.fmt for s in plan_splits([source(path)], 64, OPTIONS)} == {TEXT}


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
