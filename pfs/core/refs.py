"""Commit references: a commit id or a branch, then ^ (the parent) and ~N (the Nth ancestor) steps.

One parser for the server, which resolves them (server/store.py), and anyone who checks one first.
"""

import re

from pfs.core.errors import InvalidArgument

MAX_REF = 256  # characters: a branch or an id, and steps
MAX_ANCESTORS = 1_000_000  # steps back in all, more than any history holds
_ANCESTRY = re.compile(r"(?P<base>[^~^]+)(?P<suffix>(?:\^+|~\d{1,7})*)")
_STEP = re.compile(r"\^|~(\d+)")


def parse(ref: str) -> tuple[str, int]:
    """The commit id or branch REF starts with, and how many steps back it goes from there."""
    m = _ANCESTRY.fullmatch(ref) if len(ref) <= MAX_REF else None
    if m is None:
        raise InvalidArgument(f"invalid commit reference {ref[:80]!r}{'...' if len(ref) > 80 else ''}: use a commit "
                              f"id or a branch name, then ^ or ~N for ancestors ({MAX_REF} characters at most)")
    back = sum(int(step[1]) if step[1] else 1 for step in _STEP.finditer(m["suffix"]))
    if back > MAX_ANCESTORS:
        raise InvalidArgument(f"commit reference {ref!r} goes {back} commits back, more than {MAX_ANCESTORS}")
    return m["base"], back
