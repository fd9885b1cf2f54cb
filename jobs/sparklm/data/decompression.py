"""Decompression with a ceiling, and the limits every corpus reader obeys.

A few hundred bytes of ``.gz`` or ``.bz2`` can expand to gigabytes. Every
decompressed byte is counted against a cap (an absolute one and one relative to
the compressed size), and crossing it stops the job with the flag to raise
instead of exhausting memory or disk.
"""

from __future__ import annotations

import _compression
import bz2
import gzip
import io
import lzma
import posixpath
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from sparklm import settings
from sparklm.data.lines import ByteReader
from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

# File name suffix → codec. Content is checked too (MAGIC), for files named without one.
SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
         (b"\x28\xb5\x2f\xfd", "zstd"))  # fmt: skip
GB = 10**9
MIB = 2**20
# A small file may expand further than the ratio allows (headers dominate, logs repeat):
# up to this much is always accepted.
MIN_CAP_BYTES = 16 * MIB
# What an xz or zstd decoder may allocate: a stream whose header asks for more (a bigger
# dictionary or window) is refused. xz -9 needs 65 MiB, zstd's own default limit is 128 MiB.
DECODER_MEMORY_BYTES = 256 * MIB
# How lzma and Arrow's zstd say a stream needs more than that.
DECODER_OUT_OF_MEMORY = re.compile(r"Memory usage limit|requires too much memory", re.IGNORECASE)
# What the decoders raise on bytes that are not a whole stream of their codec: EOFError when
# it is truncated, gzip.BadGzipFile or zlib.error, bz2's and Arrow's zstd OSError,
# lzma.LZMAError. A failed read of the storage stream can be an OSError too (ConnectionError
# is one): StorageReads tells the two apart.
DECODER_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


@dataclass(frozen=True)
class ReadLimits:
    """What a reader may hold or expand; each is a preprocess flag (named in its errors).

    ``max_line_bytes``: longer lines are cut into pieces (plain text) — no text is lost.
    ``max_record_bytes``: a JSON Lines record, Parquet value or wiki page larger than
    this is dropped and counted. The decompression caps stop the job (a bomb, or a file
    that needs the flag raised); 16 MiB is always allowed.
    """

    max_line_bytes: int = settings.default("max_line_bytes")
    max_record_bytes: int = settings.default("max_record_bytes")
    max_decompressed_gb: float = settings.default("max_decompressed_gb")
    max_compression_ratio: float = settings.default("max_compression_ratio")

    def decompressed_cap(self, compressed_bytes: int) -> tuple[int, str]:
        """Decompressed bytes allowed for ``compressed_bytes`` of input, and the flag setting it."""
        by_ratio = max(MIN_CAP_BYTES, int(self.max_compression_ratio * compressed_bytes))
        absolute = int(self.max_decompressed_gb * GB)
        if by_ratio <= absolute:
            return by_ratio, f"--max-compression-ratio (now {self.max_compression_ratio:g})"
        return absolute, f"--max-decompressed-gb (now {self.max_decompressed_gb:g})"


def codec_from_name(name: str) -> str | None:
    return SUFFIXES.get(posixpath.splitext(name.lower())[1])


def codec_from_magic(head: bytes) -> str | None:
    return next((codec for magic, codec in MAGIC if head.startswith(magic)), None)


def strip_codec_suffix(name: str) -> str:
    """``corpus.jsonl.zst`` → ``corpus.jsonl``: the name of what is inside."""
    stem, suffix = posixpath.splitext(name)
    return stem if suffix.lower() in SUFFIXES else name


class StorageReads(io.RawIOBase):
    """A stored file as its decoder reads it (a decompressor, or Arrow reading Parquet),
    noting whether a read or seek failed.

    The decoder calls ``read`` from inside its own, so an error surfacing from the decoder
    may be the storage layer's (S3 unreachable: retried) rather than the decoder's verdict
    on the bytes (bad input): ``failed`` says which.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw, self.failed = raw, False

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except BaseException:
            self.failed = True
            raise

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._raw.seek(offset, whence)
        except BaseException:
            self.failed = True
            raise

    def tell(self) -> int:
        return self._raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()


class CappedReader:
    """A read-only stream that fails once more than ``cap`` bytes came out of it.

    With ``storage`` (the decoder's input), a stream its decoder refuses is bad input.
    """

    def __init__(self, stream: BinaryIO | ByteReader, cap: int, describe: str,
                 source: str = "", storage: StorageReads | None = None) -> None:  # fmt: skip
        self._stream, self._cap, self._describe, self._source = stream, cap, describe, source
        self._storage = storage
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except DECODER_ERRORS as exc:
            if DECODER_OUT_OF_MEMORY.search(str(exc)):
                raise PipelineError(
                    f"{self._source or 'a compressed input'} asks for more memory to decompress "
                    f"than the readers allow ({DECODER_MEMORY_BYTES // MIB} MiB; {exc}): "
                    "recompress it with a smaller window or dictionary (xz -6, zstd without --long)"
                ) from None
            if self._storage is None or self._storage.failed:
                raise
            raise PipelineError(
                f"{self._source} is truncated or corrupt ({exc}): download it again, or remove "
                "it from --input"
            ) from None
        self.bytes_read += len(data)
        if self.bytes_read > self._cap:
            raise PipelineError(self._describe)
        return data


def bomb_message(uri: str, compressed_bytes: int, limits: ReadLimits) -> str:
    cap, flag = limits.decompressed_cap(compressed_bytes)
    return (
        f"{uri} decompresses to more than {cap:,} bytes from {compressed_bytes:,} compressed "
        f"bytes: a decompression bomb or a mislabelled file. If the file is genuine, raise {flag}"
    )


@contextmanager
def open_decompressed(uri: str, codec: str, limits: ReadLimits) -> Iterator[CappedReader]:
    """The decompressed content of ``uri``, capped by ``limits`` relative to its size."""
    compressed_bytes = storage.size(uri)
    cap, _ = limits.decompressed_cap(compressed_bytes)
    with storage.open_binary(uri) as raw:
        reads = StorageReads(raw)
        with _decompressor(reads, codec) as stream:
            yield CappedReader(stream, cap, bomb_message(uri, compressed_bytes, limits), uri, reads)


def _decompressor(raw: BinaryIO | StorageReads, codec: str):
    if codec == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if codec == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if codec == "xz":
        # LZMAFile takes no memory limit; its reader does (a header can ask for 4 GiB).
        reader = _compression.DecompressReader(raw, lzma.LZMADecompressor,
                                               trailing_error=lzma.LZMAError,
                                               memlimit=DECODER_MEMORY_BYTES)  # fmt: skip
        return io.BufferedReader(reader)
    if codec == "zstd":
        import pyarrow as pa  # Arrow's zstd codec: no extra dependency on every node

        return pa.input_stream(pa.PythonFile(raw, mode="r"), compression="zstd")
    raise ValueError(f"unknown codec {codec!r}")
