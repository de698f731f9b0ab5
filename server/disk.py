"""Running out of space in the data dir, said the same way by every part of the server that writes there.

A full disk is not a bug: the call fails with ResourceExhausted naming the data dir, what it wrote is
undone, and the same server works again once there is room. Making room is pfs's work too: SQLite needs room
in its log to delete anything, so a data dir keeps a little free (Reserve), given up to the calls that delete
data (delete-repo, delete-commit, garbage-collect) when the disk is full, and taken back once there is room.
"""

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pfs.core.errors import ResourceExhausted

RESERVE = 16 << 20  # bytes a data dir keeps for the writes that free space
RESERVE_SHARE = 8  # and at most an eighth of its file system (SQLite writes pages of 64 KiB: a delete takes a few)

_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def space(data_dir: str | os.PathLike) -> Iterator[None]:
    """Turns running out of space (ENOSPC, EDQUOT, SQLite's "database or disk is full") into ResourceExhausted."""
    try:
        yield
    except (OSError, sqlite3.Error) as err:
        if not _full(err):
            raise
        raise ResourceExhausted(f"no space left for the data dir {data_dir}: free some space there (pfs "
                                "delete-commit, delete-repo and garbage-collect still can), then try again") from None


def _full(err: OSError | sqlite3.Error) -> bool:
    if isinstance(err, OSError):
        return err.errno in _FULL
    return getattr(err, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


class Reserve:
    """Room kept in DATA_DIR (the file `reserve`, allocated) for the calls that delete data on a full disk."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "reserve"
        fs = os.statvfs(data_dir)
        self.size = min(RESERVE, fs.f_blocks * fs.f_frsize // RESERVE_SHARE)
        self.keep()

    def keep(self) -> None:
        """Allocates the reserve, as far as there is room."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as err:
            if not _full(err):
                raise

    @contextmanager
    def given_up(self) -> Iterator[None]:
        """Frees the reserve for what runs inside where the disk has less room than it holds, and allocates it
        again after, as far as there is room then."""
        fs = os.statvfs(self.path.parent)
        if fs.f_bavail * fs.f_frsize < self.size:
            self.path.unlink(missing_ok=True)
        try:
            yield
        finally:
            self.keep()
