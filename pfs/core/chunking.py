"""Content-defined chunking of byte streams (FastCDC 2020), optionally line-aligned.

Cut points depend only on the bytes near them, so an insertion in the middle
of a large file changes only the chunks around it. With the `line` delimiter
every cut moves forward to the end of the line it falls in, so no record is
split (map jobs rely on this); a line longer than `max_line` (4x the average
chunk) is cut anyway.
"""

import mmap
from collections.abc import Iterator
from typing import BinaryIO

import pyfastcdc

DEFAULT_AVG_SIZE = 1 << 20
MAX_AVG_SIZE = 4 << 20
# The largest chunk a Chunker cuts: FastCDC's maximum (4x the average), plus as much again when a cut moves to
# the end of its line. Every chunk is at most this many bytes, so readers and the server refuse larger ones
# before decompressing them.
MAX_CHUNK_SIZE = 8 * MAX_AVG_SIZE
DELIMITERS = ("line", "none")
# Bytes read into a Chunker's buffer at a time, beyond the lookahead: the unread rest of the buffer moves to its
# start before each read, so reads much larger than the lookahead keep those moves to a fraction of the bytes read.
READ_BYTES = 32 << 20


class Chunker:
    """Cuts streams into chunks of about `avg_size` bytes (min avg/4, max avg*4)."""

    def __init__(self, avg_size: int = DEFAULT_AVG_SIZE, delimiter: str = "line") -> None:
        if delimiter not in DELIMITERS:
            raise ValueError(f"unknown delimiter {delimiter!r}; use one of {', '.join(DELIMITERS)}")
        check_avg_size(avg_size)
        self._cdc = pyfastcdc.FastCDC(avg_size=avg_size)
        self.min_size, self.max_size = self._cdc.min_size, self._cdc.max_size
        self.max_line = self.max_size if delimiter == "line" else 0
        # Reused, as fresh memory is slow to fault in; anonymous memory is faulted in as it is first filled, so
        # a Chunker costs nothing up front and small files fault in only the start of it
        self._buf = mmap.mmap(-1, self.max_size + self.max_line + READ_BYTES)
        self._busy = False

    def split(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yields the chunks of STREAM in order. One split at a time per Chunker."""
        if self._busy:
            raise RuntimeError("Chunker.split is not reentrant; use one Chunker per stream in flight")
        self._busy = True
        try:
            yield from self._split(stream)
        finally:
            self._busy = False

    def _split(self, stream: BinaryIO) -> Iterator[bytes]:
        lookahead = self.max_size + self.max_line
        buf = self._buf
        view = memoryview(buf)
        pos = filled = 0
        eof = False
        while True:
            if not eof and filled - pos < lookahead:
                view[: filled - pos] = view[pos:filled]
                filled -= pos
                pos = 0
                filled, eof = _fill(stream, view, filled)
            if pos >= filled:
                return
            if eof and filled - pos <= self.min_size:  # no cut could fall in what is left: one chunk
                yield bytes(view[pos:filled])
                return
            end = pos + next(iter(self._cdc.cut_buf(view[pos : min(filled, pos + self.max_size)]))).length
            if self.max_line:
                end = _line_end(buf, end, min(filled, pos + lookahead), eof and pos + lookahead >= filled)
            yield bytes(view[pos:end])
            pos = end


def check_avg_size(avg_size: int) -> None:
    """Raises ValueError if chunks of AVG_SIZE bytes on average could be larger than MAX_CHUNK_SIZE."""
    if avg_size > MAX_AVG_SIZE:
        raise ValueError(f"an average chunk size of {avg_size} bytes is too large; use at most {MAX_AVG_SIZE}")


def _line_end(buf: mmap.mmap, cut: int, limit: int, at_end: bool) -> int:
    """Moves CUT to just after the newline that ends its line, when there is one before LIMIT."""
    newline = buf.find(b"\n", cut - 1, limit)
    if newline >= 0:
        return newline + 1
    if at_end:
        return limit  # an unterminated last line stays whole
    return cut


def _fill(stream: BinaryIO, view: memoryview, filled: int) -> tuple[int, bool]:
    """Reads into VIEW[filled:] until it is full or the stream ends; says how far, and whether it ended."""
    while filled < len(view):
        n = stream.readinto(view[filled:])
        if not n:
            return filled, True
        filled += n
    return filled, False
