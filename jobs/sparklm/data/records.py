"""Structured corpora: JSON Lines records and Parquet rows with a text field.

This is how datasets are published (Dolma, RedPajama and ``datasets`` exports as
JSON Lines; FineWeb and the Hugging Face Hub as Parquet). Each record is one
document. Records without the text field, or whose value is not a string, are
counted and dropped; they do not fail the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sparklm.data.decompression import ReadLimits, StorageReads
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

MISSING_FIELD = "missing_text_field"
NOT_A_STRING = "non_string_text_field"
INVALID_JSON = "invalid_json"
TOO_LARGE = "record_too_large"
PARQUET_BATCH_ROWS = 256
# The accepted text one Parquet batch may hold: rows per batch follow --max-record-bytes, so
# rows as large as allowed (or one value repeated through a dictionary) cannot add up.
PARQUET_BATCH_BYTES = 256 << 20
PARQUET_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class RecordText:
    """The text of one record, or why it has none; ``raw_bytes`` is what the record held."""

    text: str | None
    drop_reason: str | None
    raw_bytes: int


def field_path(text_field: str) -> tuple[str, ...]:
    """``"meta.content"`` → ``("meta", "content")``: a dotted path into nested records."""
    path = tuple(text_field.split("."))
    if not all(path):
        raise ValueError(f"--text-field {text_field!r} has an empty path component")
    return path


def jsonl_text(line: bytes, path: tuple[str, ...]) -> RecordText:
    """The text at ``path`` in one JSON Lines record."""
    try:
        value = json.loads(line)
    except ValueError:
        return RecordText(None, INVALID_JSON, len(line))
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return RecordText(None, MISSING_FIELD, len(line))
        value = value[key]
    if value is None:
        return RecordText(None, MISSING_FIELD, len(line))
    if not isinstance(value, str):
        return RecordText(None, NOT_A_STRING, len(line))
    return RecordText(value, None, len(line))


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: its first row's index in the file, rows, compressed bytes (all
    columns), and its text column's bytes compressed and decompressed (before decoding)."""

    index: int
    first_row: int
    rows: int
    compressed_bytes: int
    text_compressed_bytes: int
    text_decompressed_bytes: int


def parquet_row_groups(uri: str, path: tuple[str, ...], limits: ReadLimits) -> list[RowGroup]:
    """The row groups of ``uri`` (from its footer only), after checking the text column and
    how far it decompresses.

    Raises PipelineError naming the string columns when ``path`` is not one of them, or
    naming the flag to raise when a row group's text expands past ``limits``.
    """
    with storage.open_binary(uri) as raw:
        parquet = open_parquet(uri, StorageReads(raw))
        check_text_column(uri, parquet.schema_arrow, path)
        return _row_groups(uri, parquet.metadata, ".".join(path), limits)


def open_parquet(uri: str, f: StorageReads, **options):
    """``f`` (the file at ``uri``) read as Parquet; a file that is not one is bad input."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f, **options)
    except Exception as exc:
        raise parquet_error(uri, f, exc) from None


def parquet_error(uri: str, f: StorageReads, exc: Exception) -> Exception:
    """What to raise for ``exc``, met reading ``f`` (the file at ``uri``) as Parquet.

    Arrow's errors (ArrowInvalid: no magic, no footer; OSError: a page header or page that does
    not decode) are its verdict on the bytes, bad input, unless reading ``f`` failed underneath
    (S3 unreachable): that error is raised as it is, and retried.
    """
    import pyarrow as pa

    if f.failed or not isinstance(exc, (pa.ArrowException, OSError)):
        return exc
    return PipelineError(
        f"{uri} is truncated or corrupt ({str(exc).strip()}): download it again, or remove it "
        "from --input"
    )


def _checked_batches(uri: str, f: StorageReads, batches: Iterator) -> Iterator:
    """``batches`` (Arrow reading ``f``), with a corrupt page raised as bad input."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise parquet_error(uri, f, exc) from None
        yield batch


def _row_groups(uri: str, meta, column: str, limits: ReadLimits) -> list[RowGroup]:
    groups, first = [], 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        chunks = [group.column(c) for c in range(group.num_columns)]
        [text] = [chunk for chunk in chunks if chunk.path_in_schema == column]
        found = RowGroup(i, first, group.num_rows, sum(c.total_compressed_size for c in chunks),
                         text.total_compressed_size, text.total_uncompressed_size)  # fmt: skip
        check_expansion(uri, found, limits)
        groups.append(found)
        first += group.num_rows
    return groups


def check_expansion(uri: str, group: RowGroup, limits: ReadLimits) -> None:
    """The rule of every compressed input (``--max-compression-ratio``, 16 MiB always
    allowed, ``--max-decompressed-gb``), applied to a row group's text column as its footer
    declares it; Arrow checks each page decompresses to its declared size."""
    cap, flag = limits.decompressed_cap(group.text_compressed_bytes)
    if group.text_decompressed_bytes > cap:
        raise PipelineError(
            f"{uri} row group {group.index}: its text column decompresses to "
            f"{group.text_decompressed_bytes:,} bytes from {group.text_compressed_bytes:,} "
            f"compressed bytes, more than {cap:,}: a decompression bomb or a mislabelled file. "
            f"If the file is genuine, raise {flag}"
        )


def batch_rows(max_record_bytes: int) -> int:
    """Rows per Parquet batch: at most ``PARQUET_BATCH_BYTES`` of accepted text."""
    return max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_BYTES // max_record_bytes))


def is_text_type(field_type) -> bool:
    """A string column, or a dictionary of strings (what pandas writes for a categorical):
    both read as strings."""
    import pyarrow as pa

    if pa.types.is_dictionary(field_type):
        field_type = field_type.value_type
    return pa.types.is_string(field_type) or pa.types.is_large_string(field_type)


def check_text_column(uri: str, schema, path: tuple[str, ...]) -> None:
    import pyarrow as pa

    field_type = schema
    for key in path:
        struct = field_type if isinstance(field_type, pa.Schema) else None
        if struct is None and pa.types.is_struct(field_type):
            struct = field_type
        index = struct.get_field_index(key) if struct is not None else -1
        if struct is None or index < 0:
            field_type = None
            break
        field_type = struct.field(index).type
    if field_type is None or not is_text_type(field_type):
        strings = [f.name for f in schema if is_text_type(f.type)]
        raise PipelineError(
            f"{uri} has no string column {'.'.join(path)!r} (its string columns: "
            f"{', '.join(strings) or 'none'}): set --text-field to the column holding the text"
        )


def parquet_texts(
    uri: str, first_group: int, end_group: int, path: tuple[str, ...], limits: ReadLimits
) -> Iterator[tuple[int, RecordText]]:
    """``(row index in the file, text)`` of row groups ``[first_group, end_group)``.

    Read one row group at a time in batches of rows (``batch_rows``), only the text column,
    each group's expansion checked first: memory follows a batch and a page, never the file.
    An oversized value is still decoded once (Arrow cannot skip a value unread): it costs
    a few times its size, within the expansion its group was allowed.
    """
    import pyarrow.compute as pc

    max_record_bytes = limits.max_record_bytes
    with storage.open_binary(uri) as raw:
        f = StorageReads(raw)
        # Buffered reads: a column chunk is read page by page, not whole, so one huge value
        # costs its page, not its row group's column. Pre-buffering (pyarrow's default) would
        # read each column chunk whole and ignore buffer_size.
        parquet = open_parquet(uri, f, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
        groups = _row_groups(uri, parquet.metadata, ".".join(path), limits)
        row = groups[first_group].first_row if first_group < len(groups) else 0
        batches = _checked_batches(uri, f, parquet.iter_batches(
            batch_size=batch_rows(max_record_bytes), row_groups=range(first_group, end_group),
            columns=[path[0]],
        ))  # fmt: skip
        for batch in batches:
            column = batch.column(0)
            for key in path[1:]:
                column = pc.struct_field(column, key)
            sizes = value_sizes(column)
            # Past an oversized value, values become Python strings one by one, the oversized
            # one never; otherwise the whole batch at once.
            if any(size is not None and size > max_record_bytes for size in sizes):
                texts = [None if size is None or size > max_record_bytes else column[i].as_py()
                         for i, size in enumerate(sizes)]  # fmt: skip
            else:
                texts = column.to_pylist()
            for size, text in zip(sizes, texts, strict=True):
                if size is None:
                    yield row, RecordText(None, MISSING_FIELD, 0)
                elif size > max_record_bytes:
                    yield row, RecordText(None, TOO_LARGE, size)
                else:
                    yield row, RecordText(text, None, size)
                row += 1


def value_sizes(column) -> list[int | None]:
    """The UTF-8 bytes of each value of a string column (None for a null).

    A dictionary column's are measured in its dictionary, never decoded: a value many rows
    repeat is not copied once per row, and an oversized one not at all.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        return pc.binary_length(column.dictionary).take(column.indices).to_pylist()
    return pc.binary_length(column).to_pylist()
