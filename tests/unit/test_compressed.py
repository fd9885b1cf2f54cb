"""Decompression caps: a bomb stops with the flag to raise; genuine files read whole."""

import bz2
import gzip
import io
import lzma
import random
import re

import pyarrow as pa
import pytest

from sparklm.data.decompression import (
    ReadLimits,
    codec_from_magic,
    codec_from_name,
    open_decompressed,
    strip_codec_suffix,
)
from sparklm.runtime import exit_codes, storage
from sparklm.runtime.errors import PipelineError

COMPRESS = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zstd": lambda data: pa.Codec("zstd").compress(data, asbytes=True)}  # fmt: skip
SUFFIX = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst"}


def read_all(path, codec, limits: ReadLimits) -> bytes:
    out = []
    with open_decompressed(f"file://{path}", codec, limits) as f:
        while chunk := f.read(1 << 16):
            out.append(chunk)
    return b"".join(out)


@pytest.mark.parametrize("codec", COMPRESS)
def test_a_bomb_stops_naming_the_ratio_flag(tmp_path, codec):
    path = tmp_path / f"bomb.txt{SUFFIX[codec]}"
    path.write_bytes(COMPRESS[codec](b"a" * (32 * 2**20)))  # a few KB, 32 MiB inside
    assert path.stat().st_size < 200_000
    flag = r"bomb\.txt.* raise --max-compression-ratio \(now 200\)"
    with pytest.raises(PipelineError, match=flag):
        read_all(path, codec, ReadLimits())


@pytest.mark.parametrize("codec", COMPRESS)
def test_genuine_text_reads_whole_and_the_absolute_cap_is_named(tmp_path, codec):
    text = b"".join(b"line %d of ordinary text\n" % i for i in range(50_000))
    path = tmp_path / f"text{SUFFIX[codec]}"
    path.write_bytes(COMPRESS[codec](text))
    assert read_all(path, codec, ReadLimits()) == text
    tight = ReadLimits(max_decompressed_gb=len(text) / 2e9)
    with pytest.raises(PipelineError, match=r"raise --max-decompressed-gb \(now 0.000"):
        read_all(path, codec, tight)


def test_codecs_are_known_by_suffix_and_by_content():
    assert codec_from_name("wiki.JSONL.ZST") == "zstd" and codec_from_name("a.txt") is None
    assert strip_codec_suffix("corpus.jsonl.gz") == "corpus.jsonl"
    assert strip_codec_suffix("corpus.jsonl") == "corpus.jsonl"
    for codec, compress in COMPRESS.items():
        assert codec_from_magic(compress(b"hello")) == codec
    assert codec_from_magic(b"hello") is None


def test_a_small_file_may_expand_past_the_ratio_up_to_16_mib(tmp_path):
    path = tmp_path / "log.txt.gz"
    text = b"GET /index.html 200\n" * 500_000  # 10 MB from ~20 KB: ratio ~500
    path.write_bytes(gzip.compress(text))
    assert read_all(path, "gzip", ReadLimits()) == text


def huge_window(codec: str, data: bytes) -> bytes:
    """``data`` compressed so that its header asks the decoder for 1.5-2 GiB of memory."""
    if codec == "xz":
        filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1536 * 2**20}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return stream.compress(data) + stream.flush()  # streamed: the header keeps the window


@pytest.mark.parametrize("codec", ["xz", "zstd"])
def test_a_stream_asking_for_too_much_decoder_memory_is_bad_input(tmp_path, codec):
    """Refused before the decoder allocates, as bad input (exit 2), naming the file and the fix
    — not a retried traceback."""
    path = tmp_path / f"wide{SUFFIX[codec]}"
    path.write_bytes(huge_window(codec, b"ordinary text\n" * 10_000))
    with pytest.raises(PipelineError, match=r"wide\..* asks for more memory ") as exc:
        read_all(path, codec, ReadLimits())
    message = str(exc.value)
    assert "than the readers allow (256 MiB; " in message
    assert message.endswith(
        ": recompress it with a smaller window or dictionary (xz -6, zstd without --long)"
    )


@pytest.mark.parametrize("codec", COMPRESS)
def test_a_file_exactly_at_the_cap_reads_whole_and_one_byte_more_stops(tmp_path, codec):
    """The cap is the most bytes allowed, not one fewer."""
    text = b"0123456789abcdef\n" * 12_500  # 212,500 bytes
    limits = ReadLimits(max_decompressed_gb=len(text) / 1e9)
    path = tmp_path / f"edge{SUFFIX[codec]}"
    path.write_bytes(COMPRESS[codec](text))
    assert read_all(path, codec, limits) == text
    path.write_bytes(COMPRESS[codec](text + b"x"))
    with pytest.raises(PipelineError, match=r"more than 212,500 bytes"):
        read_all(path, codec, limits)


def test_xz_reads_like_pythons_lzma_module(tmp_path):
    """Concatenated streams read whole, and bytes after the last stream that are not xz
    (an appended signature, say) are ignored, as ``lzma.open`` does."""
    data = lzma.compress(b"first stream\n") + lzma.compress(b"second stream\n")
    for tail in (b"", b"not xz at all"):
        path = tmp_path / "multi.txt.xz"
        path.write_bytes(data + tail)
        with lzma.open(path) as f:
            expected = f.read()
        assert read_all(path, "xz", ReadLimits()) == expected == b"first stream\nsecond stream\n"


def test_an_unknown_codec_is_refused_by_name(tmp_path):
    path = tmp_path / "data.lz4"
    path.write_bytes(b"\x04\x22\x4d\x18")
    with pytest.raises(ValueError, match=r"unknown codec 'lz4'"):
        read_all(path, "lz4", ReadLimits())


def corrupt(codec: str, kind: str) -> bytes:
    """A file of ``codec`` cut in half (``truncated``), or bytes that are not ``codec``."""
    if kind == "garbage":
        return COMPRESS[codec](b"")[:4] + b"not a compressed stream at all " * 100
    whole = COMPRESS[codec](b"".join(b"line %d of ordinary text\n" % i for i in range(20_000)))
    return whole[: len(whole) // 2]


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
@pytest.mark.parametrize("codec", COMPRESS)
def test_a_truncated_or_corrupt_file_is_bad_input_naming_the_file(tmp_path, codec, kind):
    """Exit 2 with the file and the fix, not a retried traceback."""
    path = tmp_path / f"broken.txt{SUFFIX[codec]}"
    path.write_bytes(corrupt(codec, kind))
    with pytest.raises(PipelineError) as exc:
        read_all(path, codec, ReadLimits())
    verdict = exit_codes.classify(exc.value, "lower --batch-size")
    assert verdict is not None and verdict.exit_code == exit_codes.DETERMINISTIC
    assert re.fullmatch(
        rf"file://{re.escape(str(path))} is truncated or corrupt \(.+\): download it again, "
        r"or remove it from --input",
        verdict.message,
    )


class FailingStorage(io.BytesIO):
    """A storage stream whose reads fail after the first: the network dropped mid-file."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionError("Connection reset by peer")
        return super().read(1024 if size is None or size < 0 else min(size, 1024))


@pytest.mark.parametrize("codec", COMPRESS)
def test_a_storage_failure_while_decompressing_is_not_taken_for_corrupt_input(
    tmp_path, monkeypatch, codec
):
    """ConnectionError is an OSError, as some decoders' verdicts are: it must stay retryable."""
    path = tmp_path / f"fine.txt{SUFFIX[codec]}"
    path.write_bytes(COMPRESS[codec](bytes(random.Random(0).randbytes(200_000))))
    monkeypatch.setattr(storage, "open_binary", lambda uri: FailingStorage(path.read_bytes()))
    with pytest.raises(ConnectionError, match="reset by peer"):
        read_all(path, codec, ReadLimits())
