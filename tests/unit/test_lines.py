"""Bounded line reading: every byte in exactly one record, no record over the limit, short
lines untouched, cuts at whitespace, the same cuts whatever the byte ranges."""

import io
import itertools
import random

import pytest

from sparklm.data.lines import LineCutter, cut_text, iter_lines, iter_records


def records_by_ranges(data: bytes, limit: int, range_bytes: int) -> list[tuple[int, bytes, bool]]:
    out = []
    for start in range(0, max(len(data), 1), range_bytes):
        end = min(start + range_bytes, len(data))
        out += list(iter_records(io.BytesIO(data), limit, start, end))
    return out


def random_corpus(rng: random.Random, limit: int) -> bytes:
    alphabets = [b"ab ", b"abc", "é€😀 x".encode(), b"word ", b" ", b"\xff\xfe"]
    lines = []
    for _ in range(rng.randint(0, 25)):
        n = rng.choice([0, 1, 2, limit - 1, limit, limit + 1, 2 * limit, 7 * limit + 3])
        alphabet = rng.choice(alphabets)
        lines.append(bytes(rng.choice(alphabet) for _ in range(max(n, 0))))
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")


@pytest.mark.parametrize("seed", range(300))
def test_records_partition_the_bytes_identically_for_any_ranges(seed):
    rng = random.Random(seed)
    limit = rng.choice([2, 3, 8, 16, 17, 64])
    data = random_corpus(rng, limit)
    whole = list(iter_records(io.BytesIO(data), limit))
    end = 0
    for offset, record, _ in whole:
        assert data[end:offset] in (b"", b"\n")  # records are separated by newlines or nothing
        assert data[offset : offset + len(record)] == record
        assert b"\n" not in record and len(record) <= limit
        end = offset + len(record)
    assert data[end:] in (b"", b"\n")
    lines = data.split(b"\n")[: -1 if data.endswith(b"\n") or not data else None]
    if all(len(line) <= limit for line in lines):
        assert [(r, w) for _, r, w in whole] == [(line, True) for line in lines]
    for range_bytes in (1, 2, 3, 7, limit, limit + 1, 2 * limit + 3, len(data) + 1):
        assert records_by_ranges(data, limit, range_bytes) == whole, range_bytes


@pytest.mark.parametrize("seed", range(300))
def test_lines_are_each_yielded_once_whole_or_measured_for_any_ranges(seed):
    """A line over the limit is one ``(offset, None, size)``, yielded by the range holding its
    first byte, however many ranges its pieces cross."""
    rng = random.Random(seed)
    limit = rng.choice([2, 3, 8, 16, 17, 64])
    data = random_corpus(rng, limit)
    lines = data.split(b"\n")[: -1 if data.endswith(b"\n") or not data else None]
    offsets = itertools.accumulate((len(line) + 1 for line in lines), initial=0)
    expected = [(offset, line if len(line) <= limit else None, len(line))
                for offset, line in zip(offsets, lines, strict=False)]  # fmt: skip
    assert list(iter_lines(io.BytesIO(data), limit)) == expected
    for range_bytes in (1, 2, 3, 7, limit, limit + 1, 2 * limit + 3, len(data) + 1):
        by_ranges = []
        for start in range(0, max(len(data), 1), range_bytes):
            end = min(start + range_bytes, len(data))
            by_ranges += list(iter_lines(io.BytesIO(data), limit, start, end))
        assert by_ranges == expected, range_bytes


def test_a_giant_line_is_cut_after_whitespace_near_the_limit():
    line = b" ".join(b"word%d" % i for i in range(200_000))  # ~1.3 MB, one line
    pieces = list(iter_records(io.BytesIO(line + b"\nshort line\n"), 64 * 1024))
    assert pieces[-1] == (len(line) + 1, b"short line", True)
    cut = pieces[:-1]
    assert b"".join(r for _, r, _ in cut) == line
    assert all(not whole for _, _, whole in cut)
    assert all(r.endswith(b" ") for _, r, _ in cut[:-1])  # never inside a word
    assert all(60 * 1024 - 4096 < len(r) <= 64 * 1024 for _, r, _ in cut[1:-1])


@pytest.mark.parametrize("limit", [65, 100, 4096, 4097])
def test_text_without_spaces_is_cut_between_characters(limit):
    """Grid points fall inside 2-, 3- and 4-byte characters alike; no piece splits one."""
    text = "日本語のテキストéß😀x" * 5_000  # no whitespace
    pieces = [r for _, r, _ in iter_records(io.BytesIO(text.encode()), limit)]
    assert len(pieces) > 1 and all(len(p) <= limit for p in pieces)
    assert "".join(p.decode() for p in pieces) == text  # every piece is valid UTF-8


def test_a_line_of_words_is_cut_after_the_last_space_before_each_grid_point():
    """Pieces are as long as the limit allows: with a limit of 64 the grid is 60 bytes
    (64 - 64 // 16), and a space sits just before every grid point here."""
    pieces = cut_text("x " * 100, 64)
    assert [(o, len(p)) for o, p in pieces] == [(0, 60), (60, 60), (120, 60), (180, 20)]


def test_a_long_line_starting_with_a_space_is_cut_alike_in_every_split():
    """The line starts 4 bytes (one window) before a grid point, with its only space
    first: a split starting inside it must still cut right after that space."""
    data = b"a" * 55 + b"\n" + b" " + b"x" * 200 + b"\nend\n"
    whole = list(iter_records(io.BytesIO(data), 64))
    assert whole[1] == (56, b" ", False)
    for range_bytes in (1, 2, 57, 58, 60):
        assert records_by_ranges(data, 64, range_bytes) == whole, range_bytes


class ShortReads:
    """A stream whose reads return fewer bytes than asked, as decompressors and sockets do."""

    def __init__(self, data: bytes, rng: random.Random, most: int):
        self._data, self._rng, self._most, self._pos = data, rng, most, 0

    def read(self, size: int = -1, /) -> bytes:
        n = self._rng.randint(1, self._most)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("seed", range(100))
def test_records_do_not_depend_on_how_much_each_read_returns(seed):
    """Same records, offsets and ``whole`` flags (a cut line's last piece is not whole)."""
    rng = random.Random(seed)
    limit = rng.choice([2, 3, 8, 16, 17, 64])
    data = random_corpus(rng, limit)
    whole = list(iter_records(io.BytesIO(data), limit))
    assert list(iter_records(ShortReads(data, rng, 3 * limit), limit)) == whole


def test_a_stream_needs_no_seek_and_counts_decompressed_offsets():
    class Stream(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

        def seekable(self):
            return False

    data = b"alpha\nbeta\n\ngamma"
    got = list(iter_records(io.BufferedReader(Stream(data)), 16))
    assert got == [(0, b"alpha", True), (6, b"beta", True), (11, b"", True), (12, b"gamma", True)]


def test_memory_stays_flat_on_a_100mb_line():
    import tracemalloc

    class OneLine(io.RawIOBase):
        """100 MB of text on one line, made on the fly."""

        unit = b"anarchism originated as a term of abuse first used against "

        def __init__(self):
            self.left = 100_000_000

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = (self.unit * (n // len(self.unit) + 1))[:n]
            self.left -= n
            return n

    tracemalloc.start()
    count = sum(1 for _ in iter_records(io.BufferedReader(OneLine()), 2**20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count >= 95
    assert peak < 16 * 2**20  # a few buffers of 1 MiB, not the 100 MB line


def test_cut_text_keeps_short_text_and_cuts_long_text_like_a_file():
    assert cut_text("short", 16) == [(0, "short")]
    text = "lorem ipsum dolor sit amet " * 100
    pieces = cut_text(text, 64)
    assert "".join(p for _, p in pieces) == text
    assert all(len(p.encode()) <= 64 for _, p in pieces)
    starts = itertools.accumulate([0] + [len(p.encode()) for _, p in pieces[:-1]])
    assert [o for o, _ in pieces] == list(starts)


def test_the_cutter_refuses_a_limit_it_cannot_honour():
    with pytest.raises(ValueError, match=r"^max_line_bytes must be at least 2$"):
        LineCutter(1)
