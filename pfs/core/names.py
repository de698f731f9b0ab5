"""Repo and branch names, and commit ids.

Checked with fullmatch (`$` would let a final newline through) by the CLI and the server alike. A name
starts with a letter, digit or '_', so it can never pass for an option (`--help`) on a command line.
"""

import re
import uuid

from pfs.core.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_RULE = "use 1 to 63 letters, digits, '_' or '-', not starting with '-'"


def check_repo(name: str) -> str:
    """Returns a valid repo name, or says what a name may hold."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid repo name {name!r}: {_RULE}")
    return name


def check_branch(name: str) -> str:
    """Returns a valid branch name; one that looks like a commit id is refused."""
    if not _NAME.fullmatch(name) or is_commit_id(name):
        raise InvalidArgument(f"invalid branch name {name!r}: {_RULE} (and not a 32-hex-digit commit id)")
    return name


def is_commit_id(ref: str) -> bool:
    return bool(_COMMIT_ID.fullmatch(ref))


def new_commit_id() -> str:
    return uuid.uuid4().hex
