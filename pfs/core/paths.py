"""File paths inside a commit: one normal form, and refusal of anything that escapes the repo.

The server normalizes every path it is sent, whatever client sent it.
"""

from pfs.core.errors import InvalidArgument

MAX_PATH = 4096  # bytes, as Linux's PATH_MAX
MAX_NAME = 255  # bytes of one name along a path, as Linux's NAME_MAX
MAX_DEPTH = 256  # names along a path: trees are walked a level at a time


def normalize(path: str) -> str:
    """Returns PATH as 'a/b/c' (no leading or trailing slash; '' is the root).

    Refuses names that are not UTF-8, NUL bytes, '..' components, over-long paths and names, and paths nested
    too deep.
    """
    try:
        size = len(path.encode())
    except UnicodeEncodeError:  # a local name of bytes that are not UTF-8 (os.fsdecode's surrogates)
        raise InvalidArgument(f"path {path.encode(errors='surrogateescape')!r} is not UTF-8, as every path in a "
                              "commit is: rename it") from None
    if (size <= MAX_NAME and path and path[0] != "/" and path[-1] != "/" and "//" not in path and "\x00" not in path
            and "/." not in "/" + path):  # normal already: no name longer than the path, nor more levels than half
        return path
    if size > MAX_PATH:
        raise InvalidArgument(f"path {path[:60]!r}... is longer than {MAX_PATH} bytes")
    if "\x00" in path:
        raise InvalidArgument(f"path {path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {path!r} contains '..'; paths are relative to the repo root")
    if len(parts) > MAX_DEPTH:
        raise InvalidArgument(f"path {path[:60]!r}... is {len(parts)} levels deep; at most {MAX_DEPTH} are allowed")
    for p in parts:
        if len(p.encode()) > MAX_NAME:
            raise InvalidArgument(f"name {p[:60]!r}... in a path is longer than {MAX_NAME} bytes")
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
