"""Bounded line reading: no line, however long, is ever held whole in memory.

Real corpora can be one giant line (text8 is 100 MB of Wikipedia on a single line)
and hostile ones can be a decompression bomb of one endless line. Records here are
lines, except that a line longer than ``max_line_bytes`` is cut into pieces of fewer
than ``max_line_bytes`` bytes, each of which flows on as its own record, so memory
stays proportional to the limit whatever the input.

Where a long line is cut depends only on the bytes near fixed positions of the file
(multiples of ``grid``), never on where reading started: byte-range splits of any size
therefore agree on every cut, and every byte belongs to exactly one record (the one in
whose range its first byte lies). Cuts:

* lines of at most ``max_line_bytes`` bytes are never cut;
* in a longer line ``[s, e)`` every grid point ``g`` with ``s + window <= g < e`` cuts
  it: right after the last whitespace byte in ``[g - window, g)``, or, in text without
  spaces, at the character boundary at or just before ``g`` (UTF-8 sequences stay whole).

``window`` is 1/16 of the limit and ``grid = max_line_bytes - window``, which bounds
every piece below ``max_line_bytes``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

READ_CHUNK_BYTES = 1 << 20
LOOKBACK_BYTES = 1 << 16
NEWLINE = b"\n"
# ASCII whitespace a cut may follow (a newline always ends a line instead).
CUT_AFTER = (b" ", b"\t", b"\r")
# The longest UTF-8 sequence: a hard cut never moves back further than this.
MAX_CHAR_BYTES = 4


@dataclass(frozen=True)
class LineCutter:
    """Where lines longer than ``max_line_bytes`` are cut (see the module docstring)."""

    max_line_bytes: int

    def __post_init__(self) -> None:
        if self.max_line_bytes < 2:
            raise ValueError("max_line_bytes must be at least 2")

    @property
    def window(self) -> int:
        return max(1, self.max_line_bytes // 16)

    @property
    def grid(self) -> int:
        return self.max_line_bytes - self.window

    def first_grid_point(self, line_start: int) -> int:
        """The smallest grid point at which a long line starting at ``line_start`` is cut."""
        return -(-(line_start + self.window) // self.grid) * self.grid

    def cut(self, buf: bytes, base: int, g: int) -> int:
        """The cut for grid point ``g``; ``buf`` holds the file from offset ``base`` through ``g``.

        After the last whitespace byte in ``[g - window, g)``; failing that, at the last
        byte in ``(g - 4, g]`` that starts a UTF-8 character; failing that, at ``g``.
        """
        lo, hi = g - self.window - base, g - base
        after_space = max(buf.rfind(ws, lo, hi) for ws in CUT_AFTER)
        if after_space >= 0:
            return base + after_space + 1
        for p in range(hi, max(lo, hi - MAX_CHAR_BYTES), -1):
            if buf[p] & 0xC0 != 0x80:  # not a UTF-8 continuation byte
                return base + p
        return g


class ByteReader(Protocol):
    """What the readers need of a byte stream: a file, a decompressor, a capped reader."""

    def read(self, size: int = -1, /) -> bytes: ...


def iter_records(
    f: BinaryIO | ByteReader, max_line_bytes: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(offset, record, whole)`` for every record whose first byte lies in
    ``[start, end)``; ``whole`` is False for the pieces of a cut line.

    ``f`` must be seekable when ``start > 0``; a stream (e.g. a decompressor) is read
    from its current position, which counts as offset 0. Records exclude the newline.
    """
    for offset, record, whole in _scan_from(f, start, LineCutter(max_line_bytes)):
        if end is not None and offset >= end:
            return
        if offset >= start:
            yield offset, record, whole


def iter_lines(
    f: BinaryIO | ByteReader, max_line_bytes: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(offset, line, size)`` for every line whose first byte lies in ``[start, end)``;
    ``line`` is None for a line longer than ``max_line_bytes``, which is only measured, piece
    by piece: a JSON Lines record too large to parse is one record, counted once.

    A long line is measured to its end, past ``end`` if it goes on there; one that began
    before ``start`` belongs to an earlier range. ``f`` as for ``iter_records``.
    """
    long_start, long_end = -1, -1  # the long line being measured: [long_start, long_end)
    for offset, record, whole in _scan_from(f, start, LineCutter(max_line_bytes)):
        if offset == long_end:  # the next piece of the long line
            long_end += len(record)
            continue
        if long_start >= start:
            yield long_start, None, long_end - long_start
        long_start, long_end = -1, -1
        if end is not None and offset >= end:
            return
        if not whole:
            long_start, long_end = offset, offset + len(record)
        elif offset >= start:
            yield offset, record, len(record)
    if long_start >= start:
        yield long_start, None, long_end - long_start


def _scan_from(
    f: BinaryIO | ByteReader, start: int, cutter: LineCutter
) -> Iterator[tuple[int, bytes, bool]]:
    """Records from where the record at or after ``start`` can be found (``_scan_origin``)."""
    origin = 0
    if start > 0:
        seekable = cast(BinaryIO, f)  # documented: seekable when start > 0
        origin = _scan_origin(seekable, start, cutter)
        seekable.seek(origin)
    return _scan(f, origin, cutter)


def _scan_origin(f: BinaryIO, start: int, cutter: LineCutter) -> int:
    """Where to scan from to find the records at and after ``start``: the start of the line
    holding ``start - 1``, looked for within ``max_line_bytes + 1`` bytes back.

    Without a newline in that window the line is long and began earlier; scanning from
    the window's start finds the same cuts after it, since cuts depend only on the grid.
    """
    back_from = max(0, start - cutter.max_line_bytes - 1)
    end = start
    while end > back_from:  # backwards in blocks: the newline is usually a few bytes back
        begin = max(back_from, end - LOOKBACK_BYTES)
        f.seek(begin)
        newline = f.read(end - begin).rfind(NEWLINE)
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return back_from


def _scan(
    f: BinaryIO | ByteReader, origin: int, cutter: LineCutter
) -> Iterator[tuple[int, bytes, bool]]:
    """Records from ``origin`` (where a line starts, or ``max_line_bytes`` into a long
    line) to the end of ``f``.

    ``buf`` always begins at the current record start ``base``; it never holds more
    than ``max_line_bytes`` plus one read chunk.
    """
    buf, base = b"", origin
    line_start, next_g, long_line = origin, cutter.first_grid_point(origin), False
    while True:
        chunk = f.read(READ_CHUNK_BYTES)
        if not chunk:
            if not buf:
                return
            chunk = NEWLINE  # the last line has no newline: end it here
        buf += chunk
        pos = 0
        while (newline := buf.find(NEWLINE, pos)) >= 0:
            line_end = base + newline
            if long_line or line_end - line_start > cutter.max_line_bytes:
                while next_g < line_end:
                    cut = cutter.cut(buf, base, next_g)
                    yield base + pos, buf[pos : cut - base], False
                    pos, next_g = cut - base, next_g + cutter.grid
                    long_line = True
            yield base + pos, buf[pos:newline], not long_line
            pos = newline + 1
            line_start, long_line = base + pos, False
            next_g = cutter.first_grid_point(line_start)
        read_end = base + len(buf)
        if long_line or read_end - line_start > cutter.max_line_bytes:
            long_line = True  # cut at every grid point already read: none is the newline
            while next_g < read_end:
                cut = cutter.cut(buf, base, next_g)
                yield base + pos, buf[pos : cut - base], False
                pos, next_g = cut - base, next_g + cutter.grid
        buf, base = buf[pos:], base + pos


def cut_text(text: str, max_bytes: int) -> list[tuple[int, str]]:
    """``(byte offset, piece)`` of one line of text cut like a file's line (no newlines in it)."""
    data = text.encode()
    if len(data) <= max_bytes:
        return [(0, text)]
    return [(o, r.decode()) for o, r, _ in iter_records(io.BytesIO(data), max_bytes)]
