"""Repo and branch names, and commit ids.

Checked with fullmatch (`$` would let a final newline through) by the CLI and the server alike. A name
starts with a letter, digit or '_', so it can never pass for an option (`--help`) on a command line.
"""

import re
import uuid

from pfs.core.errors import InvalidArgument

MAX_NAME = 63  # characters of a repo's or a branch's name
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_-]{{0,{MAX_NAME - 1}}}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_RULE = f"use 1 to {MAX_NAME} letters, digits, '_' or '-', not starting with '-'"


def check_repo(name: str) -> str:
    """Returns a valid repo name, or says what a name may hold."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid repo name {name!r}: {_RULE}")
    return name


def check_branch(name: str) -> str:
    """Returns a valid branch name; one that looks like a commit id is refused."""
    if not is_branch(name):
        raise InvalidArgument(f"invalid branch name {name!r}: {_RULE} (and not a 32-hex-digit commit id)")
    return name


def is_branch(ref: str) -> bool:
    """Whether REF is written as a branch name (not an ancestor, branch^, nor a commit id)."""
    return bool(_NAME.fullmatch(ref)) and not is_commit_id(ref)


def is_commit_id(ref: str) -> bool:
    return bool(_COMMIT_ID.fullmatch(ref))


def new_commit_id() -> str:
    return uuid.uuid4().hex
