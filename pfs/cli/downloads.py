"""What get-file writes: a file, to stdout or a path, or a directory tree (-r) into a local directory.

A file reaches its path only whole (a temp file beside it, renamed onto it once every chunk has been written,
each checked as it was read), so a corrupt chunk or an interrupted read leaves no partial file and one that was
there as it was. A tree is read in batches of files, one chunk stream each, since it may hold many small files.
"""

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pfs.client import Client
from pfs.core.errors import DataLoss, FailedPrecondition, InvalidArgument
from pfs.core.memory import write_all
from pfs.core.model import CommitRef, FileInfo

BATCH_CHUNKS = 1000  # chunks asked for in one call while fetching a tree (a larger file alone takes one call)


def get_file(client: Client, info: FileInfo, path: str | None, advance: Callable[[int], None]) -> None:
    """Writes the file INFO to PATH (None: stdout), made safe on disk before it takes PATH's place."""
    with output_file(path, sync=True) as out:
        for data in client.read_chunks(info.chunks):
            write_all(out, data)
            advance(len(data))


def get_tree(client: Client, ref: CommitRef, info: FileInfo, dest: str | None, advance: Callable[[int], None]) -> None:
    """Writes the directory INFO of REF into the directory DEST (made if missing, with its parents, as 1.x's
    `get-file -r` did): each directory below it, empty ones too, and each file, replacing one of the same name.
    As with cp -r, the files are not synced to disk one by one (that would cost more than the rest)."""
    if not dest:
        raise InvalidArgument(f"{info.path or '/'!r} is a directory; get-file -r needs -o DIR to write its tree to")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise FailedPrecondition(f"{dest} exists and is not a directory; give -o a directory, or a path not there")
    os.makedirs(dest, exist_ok=True)
    below = len(info.path) + 1 if info.path else 0
    batch: list[tuple[str, FileInfo]] = []
    chunks = 0  # in the batch
    for f in client.list_files(ref, info.path, with_chunks=True, recursive=True):  # each directory before its files
        target = os.path.join(dest, *f.path[below:].split("/"))
        if os.path.islink(target):  # replaced, not followed (as tar does): the tree goes into DEST, nowhere else
            os.unlink(target)
        if f.is_dir:
            os.makedirs(target, exist_ok=True)
            continue
        batch.append((target, f))
        chunks += len(f.chunks)
        if chunks >= BATCH_CHUNKS:
            _write_batch(client, batch, advance)
            batch, chunks = [], 0
    _write_batch(client, batch, advance)


def _write_batch(client: Client, batch: list[tuple[str, FileInfo]], advance: Callable[[int], None]) -> None:
    """Writes each file of BATCH (target path, file) from one stream of all their chunks, in order."""
    wanted = [c for _, f in batch for c in f.chunks]
    chunks = client.read_chunks(wanted)
    for target, f in batch:
        with output_file(target, sync=False) as out:
            for _ in f.chunks:
                data = next(chunks, None)
                if data is None:
                    raise DataLoss(f"the server sent fewer chunks than the {len(wanted)} asked for")
                write_all(out, data)
                advance(len(data))


@contextlib.contextmanager
def output_file(path: str | None, sync: bool) -> Iterator[BinaryIO]:
    """Where a file is written: stdout (PATH None or -); or a temp file beside PATH, renamed onto it once written
    whole (after an fsync, with SYNC). A PATH that exists and is no regular file (/dev/null, a pipe) is written in
    place."""
    if not path or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.islink(path):
        path = os.path.realpath(path)  # written through, as open() writes (a directory on the way is anyway)
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "wb") as out:
            yield out
        return
    directory, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(directory, f".{name}.pfs-{os.urandom(4).hex()}")
    try:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as err:  # said of PATH, which the user named, not of the temp file beside it
            raise OSError(err.errno, err.strerror, path) from None
        with open(fd, "wb") as out:
            yield out
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(temp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
