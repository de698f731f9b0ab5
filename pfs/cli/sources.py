"""What put-file reads: local files, directory trees (-r), http(s) URLs, or stdin (-); several at once, as
pachctl's put-file took several -f, or a list of them (-i)."""

import os
import pathlib
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from pfs.core import paths
from pfs.core.errors import InvalidArgument, NotFound, Unavailable

URL_TIMEOUT = 60


@dataclass(frozen=True)
class Source:
    """One file to put: where it goes in the commit, how to open it, and its size if known; or, with DIRECTORY,
    a directory of a tree (-r) to make there, so that one left empty is kept too."""

    dest: str
    origin: str
    size: int | None
    directory: bool = False

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.origin == "-":
            yield sys.stdin.buffer
        elif is_url(self.origin):
            with _open_url(self.origin) as stream:
                yield stream
        else:
            with open(self.origin, "rb", buffering=0) as f:  # read into the chunker's buffer: no buffer of its own
                yield f


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def all_sources(origins: list[str], dest: str | None, recursive: bool, sized: bool = True) -> list[Source]:
    """The files that `put-file -f ORIGIN [-f ORIGIN ...] [-r] [PATH]` puts, in order: one ORIGIN at PATH (as
    sources), several each named as it is given (data/x.csv; an absolute path or a URL by its base name), below
    PATH where one is given, as pachctl did. Two sources for one path are refused."""
    if len(origins) == 1:
        return sources(origins[0], dest, recursive, sized)
    if "-" in origins:
        raise InvalidArgument("put-file: stdin (-) cannot be named among several sources; put it on its own, "
                              "with a PATH")
    found = [s for origin in origins for s in sources(origin, _named(origin, dest), recursive, sized)]
    seen: set[str] = set()
    for s in found:
        if s.dest in seen and not s.directory:
            raise InvalidArgument(f"put-file: two of the sources would be put at {s.dest}; put them apart")
        seen.add(s.dest)
    return found


def _named(origin: str, dest: str | None) -> str | None:
    """Where ORIGIN, one of several sources, goes: below DEST as it is named, or (no DEST) as sources names it."""
    if not dest:
        return None
    if is_url(origin):  # by its base name, as a URL put alone
        name = pathlib.PurePosixPath(urllib.parse.urlparse(origin).path).name
    else:
        local = pathlib.Path(origin)
        name = _default_dest(local) if local.name else ""
    if not name:
        raise InvalidArgument(f"cannot name a file after {origin}; put it on its own, with a PATH")
    return paths.join(paths.normalize(dest), paths.normalize(name))


def listed_sources(origin: str) -> list[str]:
    """The sources a list names, one a line (pachctl's put-file -i): the list at ORIGIN, a path, - (stdin) or an
    http(s) URL; empty lines left out."""
    text = _text(origin, "-i reads a list of files or URLs, one a line")
    listed = [line for line in text.splitlines() if line.strip()]
    if not listed:
        raise InvalidArgument(f"{origin} lists no file or URL; -i reads them one a line")
    if origin == "-" and "-" in listed:
        raise InvalidArgument("put-file -i -: the list is read from stdin, so it cannot name stdin (-) too")
    return listed


def sources(origin: str, dest: str | None, recursive: bool, sized: bool = True) -> list[Source]:
    """The files that `put-file -f ORIGIN [-r] [PATH]` puts, in a stable order; unless SIZED, a tree's files with
    their sizes not known (a stat each: a quarter of the time a tree of small files takes to list)."""
    if dest:
        paths.normalize(dest)  # refused before anything is read: a name that is not UTF-8 could not even be sent
    if origin == "-":
        if not dest:
            raise InvalidArgument("put-file needs a PATH to put stdin (-f -, the default) at; or give -f FILE")
        return [Source(dest, origin, None)]
    if is_url(origin):
        name = pathlib.PurePosixPath(urllib.parse.urlparse(origin).path).name
        if not (dest or name):
            raise InvalidArgument(f"cannot name a file after {origin}; give a PATH")
        return [Source(dest or name, origin, None)]
    local = pathlib.Path(origin)
    if not local.exists():
        raise NotFound(f"no such file or directory: {origin}")
    if local.is_dir():
        if not recursive:
            raise InvalidArgument(f"{origin} is a directory; use -r to put a directory tree")
        return list(_tree(origin, dest if dest is not None else local.name, sized))
    return [Source(dest or _default_dest(local), origin, local.stat().st_size)]


def _default_dest(local: pathlib.Path) -> str:
    """A relative path names the file as given (data/x.csv); others by their base name."""
    if local.is_absolute() or ".." in local.parts:
        return local.name
    return paths.normalize(str(local))


def _tree(directory: str, dest: str, sized: bool) -> Iterator[Source]:
    """DIRECTORY and the directories and regular files under it, and those its symlinks name, at DEST/their path
    below it: a directory, its files by name, then its directories by name. Every directory is made, so those
    that hold no files are kept. A symlink to a directory is not followed (as os.walk does not), and what is no
    file (a dangling link, a pipe, a socket, a device) is left out; each one left out is said on stderr. At most one
    stat per file (none unless SIZED), since there may be millions."""
    if paths.normalize(dest):  # the repo's root is always there
        yield Source(paths.normalize(dest), directory, 0, directory=True)
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs = []
    for e in entries:
        if e.is_dir() and not e.is_symlink():
            subdirs.append(e)
        elif e.is_file():
            yield Source(paths.normalize(f"{dest}/{e.name}"), e.path, e.stat().st_size if sized else None)
        else:
            why = "a link to a directory" if e.is_dir() else "a dangling link" if e.is_symlink() else "not a file"
            print(f"pfs: left out {e.path}: {why}", file=sys.stderr)
    for e in subdirs:
        yield from _tree(e.path, f"{dest}/{e.name}", sized)


def _open_url(url: str) -> BinaryIO:
    import urllib.error  # here, not at the top: only URL puts pay for importing it
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=URL_TIMEOUT)
    except urllib.error.HTTPError as err:
        raise NotFound(f"cannot fetch {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise Unavailable(f"cannot fetch {url}: {reason}") from None


def _text(origin: str, expected: str) -> str:
    """The text at ORIGIN: a path, - (stdin) or an http(s) URL; refused, saying what is EXPECTED, if it is not."""
    try:
        if origin == "-":
            return sys.stdin.read()
        if is_url(origin):
            with _open_url(origin) as stream:
                return stream.read().decode()
        return pathlib.Path(origin).read_text()
    except FileNotFoundError:
        raise NotFound(f"no such file: {origin}") from None
    except UnicodeDecodeError:
        raise InvalidArgument(f"{origin} is not text; {expected}") from None


def read_manifests(origin: str) -> list[object]:
    """The JSON documents at ORIGIN, one after another (1.x's create-pipeline -f took a file of several): a path, -
    (stdin) or an http(s) URL."""
    import json
    import json.decoder

    text = _text(origin, "a manifest is JSON")
    decoder, documents, at = json.JSONDecoder(), [], 0
    try:
        while (at := json.decoder.WHITESPACE.match(text, at).end()) < len(text) or not documents:
            document, at = decoder.raw_decode(text, at)
            documents.append(document)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"{origin} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise InvalidArgument(f"{origin}: JSON nested too deeply; a manifest is a few levels deep") from None
    except ValueError:  # the one other refusal of json.loads: an integer of more digits than Python converts
        raise InvalidArgument(f"{origin} is not valid JSON: a number too long to read") from None
    return documents
