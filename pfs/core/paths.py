"""File paths inside a commit: one normal form, and refusal of anything that escapes the repo.

The server normalizes every path it is sent, whatever client sent it.
"""

from pfs.core.errors import InvalidArgument

MAX_PATH = 4096


def normalize(path: str) -> str:
    """Returns PATH as 'a/b/c' (no leading or trailing slash; '' is the root).

    Refuses NUL bytes, '..' components and over-long paths.
    """
    if "\x00" in path:
        raise InvalidArgument(f"path {path!r} contains a NUL byte")
    if len(path.encode()) > MAX_PATH:
        raise InvalidArgument(f"path is longer than {MAX_PATH} bytes")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {path!r} contains '..'; paths are relative to the repo root")
    return "/".join(parts)


def components(path: str) -> list[str]:
    """The names along a normalized path ([] for the root)."""
    return path.split("/") if path else []


def join(parent: str, name: str) -> str:
    """Joins a normalized directory path and an entry name."""
    return f"{parent}/{name}" if parent else name


def parent(path: str) -> str:
    """The directory holding a normalized path ('' for a top-level name)."""
    return path.rpartition("/")[0]
