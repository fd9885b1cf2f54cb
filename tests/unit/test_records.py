"""Parquet corpora as the readers see them: row indices, nested and large text columns, the
errors a user gets for a wrong --text-field, record caps and what reading holds in memory."""

from __future__ import annotations

import io
import random
import re
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparklm.data import records
from sparklm.data.decompression import ReadLimits
from sparklm.data.records import RecordText
from sparklm.runtime import exit_codes, storage
from sparklm.runtime.errors import PipelineError

TEXT = ("text",)
DEFAULTS = ReadLimits()


def write_parquet(path, table: pa.Table, **options) -> str:
    pq.write_table(table, path, **options)
    return f"file://{path}"


def read_all(uri, path=TEXT, limits=DEFAULTS, first=0, end=None):
    if end is None:
        end = len(records.parquet_row_groups(uri, path, limits))
    return list(records.parquet_texts(uri, first, end, path, limits))


def peak_python_bytes(rows) -> tuple[object, int]:
    """The first item of ``rows`` and the most Python memory taken while reading it."""
    tracemalloc.start()
    try:
        first = next(rows)
        return first, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        rows.close()


def test_row_indices_count_from_the_start_of_the_file_whichever_row_groups_are_read(tmp_path):
    """Row indices name documents (``row-<n>``): a task reading the last row groups must give
    the same index to a row as a task reading the whole file; kept rows count their UTF-8
    bytes."""
    texts = [f"ligne {i} — été" for i in range(300)]
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"id": range(300), "text": texts}),
                        row_group_size=100)  # fmt: skip
    groups = records.parquet_row_groups(uri, TEXT, ReadLimits())
    assert [(g.index, g.first_row, g.rows) for g in groups] == [(0, 0, 100), (1, 100, 100),
                                                                (2, 200, 100)]  # fmt: skip
    tail = read_all(uri, first=1, end=3)
    kept = [(i, RecordText(texts[i], None, len(texts[i].encode()))) for i in range(100, 300)]
    assert tail == kept
    assert read_all(uri)[100:] == tail


def test_a_text_field_inside_a_struct_column_is_read_by_its_dotted_path(tmp_path):
    meta = pa.array([{"content": "first nested", "n": 1}, None, {"content": "third", "n": 3}],
                    pa.struct([("content", pa.string()), ("n", pa.int64())]))  # fmt: skip
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"title": ["a", "b", "c"], "meta": meta}))
    assert read_all(uri, ("meta", "content")) == [
        (0, RecordText("first nested", None, 12)),
        (1, RecordText(None, records.MISSING_FIELD, 0)),
        (2, RecordText("third", None, 5)),
    ]


def test_a_large_string_column_is_read_like_a_string_column(tmp_path):
    table = pa.table({"text": pa.array(["one", "two"], pa.large_string())})
    uri = write_parquet(tmp_path / "t.parquet", table)
    assert read_all(uri) == [(0, RecordText("one", None, 3)), (1, RecordText("two", None, 3))]


def test_a_dictionary_encoded_string_column_is_read_like_a_string_column(tmp_path):
    """What pandas writes for a categorical column: each row's value, an oversized one
    dropped, and the column named among the string columns when --text-field is wrong."""
    big = "x" * 2000
    texts = pa.array(["one", None, big, "été", big, "one"]).dictionary_encode()
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"text": texts}))
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "t.parquet").field("text").type)
    assert read_all(uri, limits=ReadLimits(max_record_bytes=1024)) == [
        (0, RecordText("one", None, 3)), (1, RecordText(None, records.MISSING_FIELD, 0)),
        (2, RecordText(None, records.TOO_LARGE, 2000)), (3, RecordText("été", None, 5)),
        (4, RecordText(None, records.TOO_LARGE, 2000)), (5, RecordText("one", None, 3)),
    ]  # fmt: skip
    named = r"no string column 'body' \(its string columns: text\)"
    with pytest.raises(PipelineError, match=named):
        records.parquet_row_groups(uri, ("body",), DEFAULTS)


@pytest.mark.parametrize(
    ("table", "text_field", "columns"),
    [(pa.table({"title": ["a"], "text": ["b"], "n": [1]}), ("title", "body"), "title, text"),
     (pa.table({"n": [1], "meta": [{"k": 1}]}), ("meta", "k"), "none"),
     (pa.table({"n": [1]}), TEXT, "none")],
)  # fmt: skip
def test_a_text_field_that_is_not_a_string_column_is_refused_naming_file_and_string_columns(
    tmp_path, table, text_field, columns
):
    """The user learns which file, which field and which columns could hold the text."""
    uri = write_parquet(tmp_path / "t.parquet", table)
    wanted = (f"{uri} has no string column {'.'.join(text_field)!r} (its string columns: "
              f"{columns}): set --text-field to the column holding the text")  # fmt: skip
    with pytest.raises(PipelineError, match=f"^{re.escape(wanted)}$"):
        records.parquet_row_groups(uri, text_field, ReadLimits())


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_a_truncated_or_corrupt_parquet_file_is_bad_input_naming_the_file(tmp_path, kind):
    """Refused on the driver while planning (and by a task reading it) with exit 2, the file
    and the fix, not a retried traceback."""
    path = tmp_path / "broken.parquet"
    write_parquet(path, pa.table({"text": [f"row {i}" for i in range(1000)]}))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if kind == "truncated" else b"PAR1 not parquet")
    uri = f"file://{path}"
    wanted = (rf"{re.escape(uri)} is truncated or corrupt \(.+\): download it again, or remove "
              r"it from --input")  # fmt: skip
    for read in (lambda: records.parquet_row_groups(uri, TEXT, DEFAULTS),
                 lambda: list(records.parquet_texts(uri, 0, 1, TEXT, DEFAULTS))):  # fmt: skip
        with pytest.raises(PipelineError) as exc:
            read()
        verdict = exit_codes.classify(exc.value, "lower --batch-size")
        assert verdict is not None and verdict.exit_code == exit_codes.DETERMINISTIC
        assert re.fullmatch(wanted, verdict.message)


def corrupt_pages(path) -> None:
    """Overwrite the middle of the one column chunk of ``path``, its footer intact."""
    whole = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = meta.data_page_offset
    whole[start : start + 64] = bytes(range(64))
    path.write_bytes(bytes(whole))


def test_a_parquet_file_whose_pages_do_not_decode_is_bad_input_not_retried(tmp_path):
    """Its footer reads, so planning passes; Arrow then raises a plain OSError for the page
    header (as it would for a failed read), which must still be the file's fault, exit 2."""
    path = tmp_path / "pages.parquet"
    write_parquet(path, pa.table({"text": [f"row {i}" for i in range(1000)]}))
    corrupt_pages(path)
    uri = f"file://{path}"
    assert len(records.parquet_row_groups(uri, TEXT, DEFAULTS)) == 1
    with pytest.raises(PipelineError) as exc:
        list(records.parquet_texts(uri, 0, 1, TEXT, DEFAULTS))
    verdict = exit_codes.classify(exc.value, "lower --batch-size")
    assert verdict is not None and verdict.exit_code == exit_codes.DETERMINISTIC
    assert verdict.message.startswith(f"{uri} is truncated or corrupt (")


class FailingStorage(io.BytesIO):
    """A stored file whose connection drops at any read starting before ``ok_from``."""

    def __init__(self, data: bytes, ok_from: int) -> None:
        super().__init__(data)
        self.ok_from = ok_from

    def read(self, size=-1):
        if self.tell() < self.ok_from:
            raise ConnectionError("Connection reset by peer")
        return super().read(size)


@pytest.mark.parametrize("where", ["footer", "pages"])
def test_a_storage_failure_while_reading_parquet_stays_retryable(tmp_path, monkeypatch, where):
    """ConnectionError is an OSError, as Arrow's verdict on a bad page is: reading the file
    failed, not the file, so it is raised as it is (and retried)."""
    path = tmp_path / "fine.parquet"
    write_parquet(path, pa.table({"text": [f"row {i}" for i in range(1000)]}))
    data = path.read_bytes()
    uri = f"file://{path}"
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    ok_from = len(data) if where == "footer" else footer  # "pages": the footer still reads
    monkeypatch.setattr(storage, "open_binary", lambda uri: FailingStorage(data, ok_from))
    with pytest.raises(ConnectionError, match="reset by peer"):
        if where == "footer":
            records.parquet_row_groups(uri, TEXT, DEFAULTS)
        else:
            groups = records.parquet_row_groups(uri, TEXT, DEFAULTS)
            list(records.parquet_texts(uri, 0, len(groups), TEXT, DEFAULTS))


def test_a_parquet_file_without_row_groups_yields_no_rows(tmp_path):
    """What a writer that got no rows leaves behind (an empty shard) is read, not an error."""
    path = tmp_path / "empty.parquet"
    pq.ParquetWriter(path, pa.schema([("text", pa.string())])).close()
    uri = f"file://{path}"
    assert records.parquet_row_groups(uri, TEXT, ReadLimits()) == []
    assert list(records.parquet_texts(uri, 0, 0, TEXT, ReadLimits())) == []


def test_a_value_of_exactly_max_record_bytes_is_kept_beside_an_oversized_one(tmp_path):
    texts = ["x" * 4096, "y" * 4097, "z" * 4096]
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"text": texts}))
    assert read_all(uri, limits=ReadLimits(max_record_bytes=4096)) == [
        (0, RecordText(texts[0], None, 4096)),
        (1, RecordText(None, records.TOO_LARGE, 4097)),
        (2, RecordText(texts[2], None, 4096)),
    ]


def test_a_row_group_expanding_exactly_to_the_cap_is_allowed_one_byte_more_is_not():
    limits = ReadLimits()
    cap, _ = limits.decompressed_cap(1000)  # the 16 MiB always allowed
    records.check_expansion("s3://b/t.parquet", records.RowGroup(0, 0, 1, 1000, 1000, cap), limits)
    with pytest.raises(PipelineError, match="raise --max-compression-ratio"):
        records.check_expansion("s3://b/t.parquet",
                                records.RowGroup(0, 0, 1, 1000, 1000, cap + 1), limits)  # fmt: skip


def test_a_reader_refusing_a_row_group_names_the_file_and_the_flag(tmp_path):
    """Executors check each row group they read again; their error must say which file."""
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"text": ["a" * 5000]}))
    small = ReadLimits(max_decompressed_gb=1e-6)  # 1,000 bytes
    wanted = rf"^{re.escape(uri)} row group 0: .* raise --max-decompressed-gb \(now 1e-06\)$"
    with pytest.raises(PipelineError, match=wanted):
        list(records.parquet_texts(uri, 0, 1, TEXT, small))
    with pytest.raises(PipelineError, match=wanted):
        records.parquet_row_groups(uri, TEXT, small)


def test_a_batch_is_a_whole_number_of_rows_for_any_record_cap():
    assert [records.batch_rows(n) for n in (3 << 20, 5 << 20, 100 << 20)] == [85, 51, 2]


def test_reading_a_row_holds_a_page_and_a_batch_not_its_row_group(tmp_path):
    """8 MiB of text in one row group; the first row must not cost the whole column chunk
    (read at once) nor the whole group as Python strings (one huge batch)."""
    rnd = random.Random(0)
    texts = [rnd.randbytes(8 << 10).hex() for _ in range(512)]  # 16 KiB each
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"text": texts}), compression="none",
                        use_dictionary=False, write_batch_size=8)  # fmt: skip
    del texts
    (row, first), peak = peak_python_bytes(records.parquet_texts(uri, 0, 1, TEXT, ReadLimits()))
    assert row == 0 and len(first.text) == 16 << 10
    assert peak < 3 << 20, f"{peak:,} bytes"


def test_an_oversized_value_never_becomes_a_python_string(tmp_path):
    """A value over --max-record-bytes is dropped without building it in Python."""
    texts = ["first row", "a" * (8 << 20), "last row"]
    uri = write_parquet(tmp_path / "t.parquet", pa.table({"text": texts}), compression="zstd")
    del texts
    limits = ReadLimits(max_record_bytes=1 << 20)
    tracemalloc.start()
    try:
        rows = list(records.parquet_texts(uri, 0, 1, TEXT, limits))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.drop_reason or r.text for _, r in rows] == ["first row", "record_too_large",
                                                          "last row"]  # fmt: skip
    assert peak < 4 << 20, f"{peak:,} bytes"
