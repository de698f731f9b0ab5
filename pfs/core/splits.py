"""The files of a split file (put-file --split): a directory of files named by their index in 16 hex digits
(0000000000000000, ...), as pachctl 1.x named them; a write to it adds the file after the last one there."""

import re

from pfs.core.errors import FailedPrecondition

NAME_DIGITS = 16
_NAME = re.compile(f"[0-9a-f]{{{NAME_DIGITS}}}")


def name(index: int) -> str:
    return f"{index:0{NAME_DIGITS}x}"


def next_index(names: list[str], path: str) -> int:
    """The index after the last of NAMES, the files of the split file PATH (0 for none)."""
    odd = next((n for n in names if not _NAME.fullmatch(n)), None)
    if odd is not None:
        raise FailedPrecondition(f"{path!r} holds {odd!r}, which no split put there: --split appends only to a "
                                 f"directory of files named by their index ({name(0)}, ...); give -o to replace it, "
                                 "or another PATH")
    return max((int(n, 16) for n in names), default=-1) + 1
