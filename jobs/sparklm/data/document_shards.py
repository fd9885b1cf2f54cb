"""Parquet document shards: written from inside partitions, read by listed URI only."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from sparklm.runtime import storage
from sparklm.runtime.stages import ArtifactFile

DOC_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])


def write_doc_shard(
    stage: str, path: str, docs: Iterable[tuple[str, str, str]]
) -> ArtifactFile | None:
    """Write ``(doc_id, source, text)`` rows to ``{stage}/{path}``; None when there are none."""
    rows = list(docs)
    if not rows:
        return None
    columns = list(zip(*rows, strict=True))
    table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=DOC_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    text_bytes = sum(len(text.encode()) for _, _, text in rows)
    return ArtifactFile.write(
        stage, path, buffer.getvalue(), documents=len(rows), text_bytes=text_bytes
    )


def read_doc_texts(uri: str) -> Iterator[str]:
    """The documents' texts of one shard, in stored order."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=["text"])
    yield from table.column("text").to_pylist()
