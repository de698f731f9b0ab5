"""The metadata store in SQLite (WAL): one file, one writer at a time, crash-safe. Its SQL is sql.py's; here is
only the connection, its pragmas, and the lock that serializes transactions (BEGIN IMMEDIATE, and a thread lock
around the one connection)."""

import contextlib
import os
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from server import disk
from server.grace import DEFAULT_GRACE
from server.meta import MetaStore, Tx
from server.meta.sql import Dialect, SqlTx, schema, upgrade

DIALECT = Dialect(placeholder="?", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT", keyed=" WITHOUT ROWID",
                  now="((julianday('now') - 2440587.5) * 86400.0)")
SCHEMA = ";\n".join(schema(DIALECT)) + ";"  # one script, for executescript


class SqliteMetaStore(MetaStore):
    def __init__(self, path: pathlib.Path, grace: float = DEFAULT_GRACE) -> None:
        self._grace = grace
        self._dir = path.parent
        self._lock = threading.Lock()
        self._reserve = disk.Reserve(self._dir)
        with self._reserve.given_up(), disk.space(self._dir):  # a server stopped on a full disk starts on its room
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Objects run to megabytes (a directory of 100,000 files): large pages, and a rowid
            # table, since WITHOUT ROWID tables with large rows take milliseconds per lookup.
            self._db.execute("PRAGMA page_size=65536")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            with self.transaction():
                cur = self._db.cursor()
                # the schema's version is PRAGMA user_version
                version = upgrade(cur, DIALECT, cur.execute("PRAGMA user_version").fetchone()[0])
                cur.execute(f"PRAGMA user_version = {version}")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log starts empty: its pages are the disk's

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock, disk.space(self._dir):
            self._db.execute("BEGIN IMMEDIATE")
            tx = SqlTx(self._db.cursor(), DIALECT, self._grace)
            try:
                yield tx
                tx.flush()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a COMMIT that failed (a full disk) may have ended it already
                    self._db.execute("ROLLBACK")
                raise

    def reclaim(self) -> None:
        with self._lock, disk.space(self._dir):
            vacuum(self._db)

    @contextmanager
    def making_room(self) -> Iterator[None]:
        """The reserve given up, where the disk is full; after, the log is emptied (each transaction adds to it until
        a checkpoint, which SQLite makes only once it holds 1,000 pages), so that its room is the reserve's again."""
        with self._reserve.given_up():
            try:
                yield
            finally:
                with self._lock, contextlib.suppress(sqlite3.OperationalError):  # a reader in the log: it stays
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def vacuum(db: sqlite3.Connection) -> None:
    """Rewrites DB without its free pages once they are a sixteenth of it (a rewrite costs the whole file, and as
    much room again while it runs: there must be that much), and empties its log."""
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    fs = os.statvfs(db.execute("PRAGMA database_list").fetchone()[2])
    if free * 16 > pages and fs.f_bavail * fs.f_frsize > 2 * pages * db.execute("PRAGMA page_size").fetchone()[0]:
        db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
