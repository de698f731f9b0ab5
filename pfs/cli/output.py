"""How the CLI shows things: aligned tables, human sizes and times, as pachctl did."""

import json
import sys
import time
from collections.abc import Iterable, Sequence

from pfs.core import codec


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Prints rows under a header, each column padded to its widest cell."""
    rows = [list(map(cell, r)) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in [list(header), *rows]:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def first_line(text: str, most: int = 60) -> str:
    """The first line of TEXT (a description) as a table shows it: at most MOST characters, ... where cut."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= most and line == text.strip() else line[:most - 3].rstrip() + "..."


def cell(value: object) -> str:
    """VALUE as one table cell: quoted with its control characters escaped (as repr does) where it has any,
    so a name or path holding a newline or an escape sequence can neither split a row nor forge one."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """Prints `Name: value` lines, for inspect-* commands: a value of several lines (a description, an error) goes
    on below, indented, and each line is shown as a table's cell is, so no value can forge a field or drive the
    terminal."""
    for name, value in pairs:
        first, *rest = str(value).split("\n")
        print(f"{name}: {cell(first)}" + "".join(f"\n  {cell(line)}" for line in rest))


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.4g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ago(t: float, now: float | None = None) -> str:
    """'3 minutes ago' style, as pachctl prints times."""
    delta = max(0.0, (now or time.time()) - t)
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    for unit, length in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    raise AssertionError("unreachable")


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def error(message: str) -> None:
    print(f"pfs: {message}", file=sys.stderr)


def raw(obj) -> None:
    """Prints a model object as JSON (--raw), in the model's one encoding (pfs.core.codec: bytes as hex)."""
    print(json.dumps(codec.encode(obj), indent=2))


def raw_each(objs: Iterable) -> None:
    """Prints each model object as raw() does, one document after another: a listing's --raw, as pachctl's."""
    for obj in objs:
        raw(obj)
