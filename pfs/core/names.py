"""Repo and branch names, and commit ids."""

import re
import uuid

from pfs.core.errors import InvalidArgument

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_COMMIT_ID = re.compile(r"^[0-9a-f]{32}$")


def check_repo(name: str) -> str:
    """Returns a valid repo name, or says what a name may hold."""
    if not _NAME.match(name):
        raise InvalidArgument(
            f"invalid repo name {name!r}: use 1 to 63 letters, digits, '_' or '-'"
        )
    return name


def check_branch(name: str) -> str:
    """Returns a valid branch name; one that looks like a commit id is refused."""
    if not _NAME.match(name) or is_commit_id(name):
        raise InvalidArgument(
            f"invalid branch name {name!r}: use 1 to 63 letters, digits, '_' or '-' "
            "(and not a 32-hex-digit commit id)"
        )
    return name


def is_commit_id(ref: str) -> bool:
    return bool(_COMMIT_ID.match(ref))


def new_commit_id() -> str:
    return uuid.uuid4().hex
