"""Planning on the driver: how input files are cut into splits, what each split weighs, how
splits are packed into tasks, and which plain-text ranges continue an earlier document."""

import bz2
import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.corpora import READ_OPTIONS, article_pages, multistream_dump, source_file, write_text
from sparklm.data import records
from sparklm.data.sources import (
    OPEN_COST_BYTES,
    InputSplit,
    continued_documents,
    group_splits,
    plan_splits,
    read_split,
)


def test_a_split_size_that_is_not_positive_is_refused_by_name(tmp_path):
    path = write_text(tmp_path / "a.txt", "some text\n")
    with pytest.raises(ValueError, match=r"^split_bytes must be positive$"):
        plan_splits([source_file(path)], 0, READ_OPTIONS)


@pytest.mark.parametrize("kind", ["text ranges", "compressed file", "multistream dump"])
def test_a_files_splits_weigh_its_bytes_plus_one_open_cost_each(tmp_path, kind):
    """Weights are what tasks are balanced on: opening a file costs as much as reading
    OPEN_COST_BYTES, so many tiny files do not all land in one task."""
    if kind == "text ranges":
        path = write_text(tmp_path / "a.txt", "a line of text\n" * 70)  # 1050 bytes
    elif kind == "compressed file":
        path = write_text(tmp_path / "a.txt.gz", gzip.compress(b"a line of text\n" * 70))
    else:
        path, _ = multistream_dump(tmp_path, article_pages(40), pages_per_stream=3)
    splits = plan_splits([source_file(path)], 300, READ_OPTIONS)
    assert len(splits) == 1 if kind == "compressed file" else len(splits) > 3
    assert sum(s.weight for s in splits) == path.stat().st_size + len(splits) * OPEN_COST_BYTES


def test_parquet_row_groups_are_gathered_into_splits_of_split_bytes(tmp_path):
    """A split closes once its row groups hold ``split_bytes`` compressed bytes; it weighs
    those bytes plus the cost of opening the file."""
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["the same row of text"] * 1000}), path, row_group_size=100)
    groups = records.parquet_row_groups(f"file://{path}", ("text",), READ_OPTIONS.limits)
    size = groups[0].compressed_bytes
    assert len(groups) == 10 and {g.compressed_bytes for g in groups} == {size}
    splits = plan_splits([source_file(path)], 2 * size, READ_OPTIONS)
    assert [(s.start, s.end) for s in splits] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [s.weight for s in splits] == [2 * size + OPEN_COST_BYTES] * 5


def test_tasks_take_splits_in_order_up_to_the_target_weight():
    splits = [InputSplit(f"file:///f{i}", f"f{i}", "text", weight=100) for i in range(10)]
    tasks = group_splits(splits, 300)
    assert [len(task) for task in tasks] == [3, 3, 3, 1]
    assert [s for task in tasks for s in task] == splits
    assert [len(task) for task in group_splits(splits[:1], 50)] == [1]  # a heavy split alone


def test_no_splits_make_no_tasks():
    assert group_splits([], 300) == []


def test_only_plain_text_ranges_after_a_files_first_continue_a_document(tmp_path):
    """The job broadcasts this table to the tasks: one row per range whose opening lines
    may belong to a document begun earlier, none for JSON Lines or whole files. Where no
    range saw a title, every range continues the document that opens the file."""
    text = write_text(tmp_path / "a.txt", "a line of text\n" * 70)
    jsonl = write_text(tmp_path / "b.jsonl", '{"text": "a record"}\n' * 50)
    packed = write_text(tmp_path / "c.txt.bz2", bz2.compress(b"a line of text\n" * 70))
    splits = plan_splits([source_file(p) for p in (text, jsonl, packed)], 300, READ_OPTIONS)
    continued = continued_documents(splits, {})
    assert set(continued) == {(source_file(text).source, start) for start in (300, 600, 900)}
    opening = next(read_split(splits[0], READ_OPTIONS))
    assert set(continued.values()) == {(opening.doc_id, 0)}
