"""put-file --split: one source cut into many small files, as pachctl 1.x's `put-file --split line|json` did.

PATH becomes a directory of files named by their index (pfs/core/splits.py, the server names them as it records
them), each holding --target-file-datums datums (lines, or JSON values) or the datums that first reach
--target-file-bytes bytes (a datum is never cut), or one datum each if neither is given. Put again without -o, the
new files go on from the index after the last one there, so a split file is appended to as a file is.
"""

import codecs
import json
import json.decoder
from collections.abc import Iterator
from typing import BinaryIO

from pfs.core.errors import InvalidArgument

KINDS = ("line", "json")
READ = 1 << 20  # bytes read from the source at a time (more while one JSON value is longer)
def pieces(stream: BinaryIO, kind: str, datums: int, size: int) -> Iterator[bytes]:
    """The files STREAM is cut into: DATUMS datums each, or the datums that first reach SIZE bytes, or one each."""
    part: list[bytes] = []
    count = held = 0
    for datum in _json_values(stream) if kind == "json" else _lines(stream):
        part.append(datum)
        count, held = count + 1, held + len(datum)
        if (datums and count >= datums) or (size and held >= size) or not (datums or size):
            yield b"".join(part)
            part, count, held = [], 0, 0
    if part:
        yield b"".join(part)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """STREAM's lines, each with its newline (the last one without, if it has none)."""
    rest: list[bytes] = []
    while data := stream.read(READ):
        start = 0
        while end := data.find(b"\n", start) + 1:
            yield b"".join((*rest, data[start:end])) if rest else data[start:end]
            rest, start = [], end
        if start < len(data):
            rest.append(data[start:])
    if rest:
        yield b"".join(rest)


def _json_values(stream: BinaryIO) -> Iterator[bytes]:
    """STREAM's JSON values, one after another, each as written (the white space between them left out)."""
    decoder, text = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    buf, at, ended, want = "", 0, False, READ
    dropped = 0  # characters of the stream before BUF
    while True:
        at = json.decoder.WHITESPACE.match(buf, at).end()
        try:
            end = decoder.raw_decode(buf, at)[1] if at < len(buf) else None
        except json.JSONDecodeError as err:
            if ended:
                raise InvalidArgument(f"--split json: not JSON at character {dropped + err.pos}: {err.msg}") from None
            end = None
        except RecursionError:
            raise InvalidArgument("--split json: a value nested too deeply") from None
        if end is not None and (end < len(buf) or ended):  # a value at the end may go on (a number: 12|34)
            yield buf[at:end].encode()
            at, want = end, READ
            continue
        if ended:
            return
        data = stream.read(want)
        want *= 2  # a value longer than what is held: read twice as much before parsing it again
        ended = not data
        try:
            buf, at, dropped = buf[at:] + text.decode(data, final=ended), 0, dropped + at
        except UnicodeDecodeError:
            raise InvalidArgument("--split json: the data is not UTF-8, so not JSON") from None
