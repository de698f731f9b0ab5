"""Glob patterns over a commit's paths, as pachctl's glob-file matched them (and list-file's, from 1.10).

In a name, `*` is any characters, `?` one, `[abc]` and `[a-z]` one of a set (`[^...]` or `[!...]`: one not in it);
`**` as a whole name is any number of directories. A directory along a pattern is listed only where a name of it
holds one of these; a plain name is looked up.
"""

import fnmatch
import re
from collections.abc import Iterator

from pfs.client import Client
from pfs.core import paths
from pfs.core.errors import NotFound
from pfs.core.model import CommitRef, FileInfo

_MAGIC = re.compile(r"[*?[]")


def is_pattern(path: str) -> bool:
    return bool(_MAGIC.search(path))


def glob(client: Client, ref: CommitRef, pattern: str) -> Iterator[FileInfo]:
    """The files and directories of REF whose paths match PATTERN: depth first, each directory's in name order."""
    names = paths.components(paths.normalize(pattern))
    client.inspect_commit(ref)  # a repo or commit that is not there is said, not shown as no match
    if not names:
        yield client.inspect_file(ref, "")
        return
    yield from _below(client, ref, "", names)


def _below(client: Client, ref: CommitRef, where: str, names: list[str]) -> Iterator[FileInfo]:
    """What matches NAMES below the directory WHERE (which may not be there)."""
    name, rest = names[0], names[1:]
    if name == "**":
        if rest:
            yield from _below(client, ref, where, rest)  # no directory at all
        for e in _entries(client, ref, where):
            if not rest:
                yield e
            if e.is_dir:
                yield from _below(client, ref, e.path, names)
    elif is_pattern(name):
        matches = re.compile(fnmatch.translate(name.replace("[^", "[!"))).match
        for e in _entries(client, ref, where):
            if matches(e.path.rpartition("/")[2]):
                if not rest:
                    yield e
                elif e.is_dir:
                    yield from _below(client, ref, e.path, rest)
    elif rest:
        yield from _below(client, ref, paths.join(where, name), rest)
    else:
        try:
            yield client.inspect_file(ref, paths.join(where, name))
        except NotFound:
            pass


def _entries(client: Client, ref: CommitRef, where: str) -> list[FileInfo]:
    """The entries of the directory WHERE; none if it is not there, or is a file."""
    try:
        return [e for e in client.list_files(ref, where) if paths.parent(e.path) == where]
    except NotFound:
        return []
