"""Running out of space in the data dir, said the same way by every part of the server that writes there.

A full disk is not a bug: the call fails with ResourceExhausted naming the data dir, what it wrote is
undone, and the same server works again once there is room.
"""

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from pfs.core.errors import ResourceExhausted

_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def space(data_dir: str | os.PathLike) -> Iterator[None]:
    """Turns running out of space (ENOSPC, EDQUOT, SQLite's "database or disk is full") into ResourceExhausted."""
    try:
        yield
    except (OSError, sqlite3.Error) as err:
        if not _full(err):
            raise
        raise ResourceExhausted(f"no space left for the data dir {data_dir}: free some space there, "
                                "then try again") from None


def _full(err: OSError | sqlite3.Error) -> bool:
    if isinstance(err, OSError):
        return err.errno in _FULL
    return getattr(err, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
