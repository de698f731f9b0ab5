"""The metadata store in PostgreSQL (`pfs server --meta postgresql://USER@HOST:PORT/DB`), so that the metadata
outlives any one machine. Its SQL is sql.py's; here is only the connection pool, the schema's version table and
the lock that serializes transactions.

Transactions run one at a time, as SQLite's BEGIN IMMEDIATE makes them, which server/store.py's rules rely on
(read a branch, then move it, with nothing in between): in this process under a lock, across processes (several
servers on one database) under one advisory lock each takes first (pg_advisory_xact_lock(LOCK), released when it
ends). They run at READ COMMITTED, so each statement after the lock sees every transaction that held it before.
Servers tell each other of news through LISTEN/NOTIFY on CHANNEL.

The connection comes from psycopg_pool, which checks it before each transaction and replaces it once the
database drops it (a restart); the password, if any, from the URL, PGPASSWORD or ~/.pgpass, as libpq finds
it. A database that cannot be used at start is a PfsError naming it (never its password); one that fails
mid-call is Unavailable, and the pool replaces the broken connection for the next call.
"""

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from pfs.core.errors import Unavailable
from server.grace import DEFAULT_GRACE
from server.meta import MetaStore, Tx
from server.meta.sql import Dialect, SqlTx, schema, upgrade

log = logging.getLogger(__name__)

DIALECT = Dialect(placeholder="%s", blob="BYTEA", serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                  keyed="", now="CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
LOCK = 0x706673  # "pfs": the advisory lock every transaction holds (its key space is the database's alone)
CHANNEL = "pfs"  # where servers NOTIFY each other of news
LISTEN_CHECK = 5.0  # seconds between the listener's looks at whether the store is closing
# A session idle inside a transaction this long is ended by the database, and its LOCK freed: a server stopped
# (SIGSTOP) or cut off mid-transaction must not hold every other server of the cluster up.
IDLE_IN_TRANSACTION = "10s"
CONNECT_TIMEOUT = 10  # seconds to reach the database at start
WAIT = 3.0  # seconds a transaction waits for the connection, one the database dropped being made again meanwhile
RETRY = 1.0  # seconds after a transaction found the database away during which others are told so at once
# the version of the schema (sql.STEPS run); SQLite keeps it as PRAGMA user_version
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


class PostgresMetaStore(MetaStore):
    shared = True

    def __init__(self, url: str, grace: float = DEFAULT_GRACE) -> None:
        self._grace = grace
        self.name = redacted(url)
        self._url = url
        self._closed = threading.Event()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                _configure(conn)
                with conn.transaction():  # under LOCK: two servers starting at once create the schema once
                    cur = conn.cursor()
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                    for statement in [*schema(DIALECT), VERSION_TABLE]:
                        cur.execute(statement)
                    row = cur.execute("SELECT version FROM schema_version").fetchone()
                    version = upgrade(cur, DIALECT, row[0] if row else 0)
                    cur.execute("DELETE FROM schema_version")
                    cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        except psycopg.Error as err:
            reason = _reason(err)
            secret = urllib.parse.urlsplit(url).password
            for shown in {secret, urllib.parse.unquote(secret or "")} - {None, ""}:  # libpq may quote it
                reason = reason.replace(shown, "***")
            raise Unavailable(f"cannot use the metadata store {self.name}: {reason}") from None
        # One connection: transactions take turns for it (self._lock) with no timeout, as under SQLite. check: one
        # the database dropped (a restart) is replaced before a transaction gets it. The pool stops trying to make
        # one after WAIT and tries again when the next transaction asks, so a database back after a long outage
        # is found by the next call, not at the next step of a backoff grown to minutes.
        self._lock = threading.Lock()
        self._away: tuple[float, str] | None = None  # when a transaction last found the database away, and why
        self._pool = ConnectionPool(url, min_size=1, max_size=1, open=True, timeout=WAIT, reconnect_timeout=WAIT,
                                    kwargs={"autocommit": True, "connect_timeout": WAIT},
                                    configure=_configure, check=ConnectionPool.check_connection, name="pfs-meta")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A transaction; Unavailable if the database is away: after WAIT for the first call to find it so, at
        once for those within RETRY after it (calls queued behind one another are not told a WAIT each)."""
        with self._lock:
            if self._away is not None and time.monotonic() < self._away[0] + RETRY:
                raise Unavailable(f"the metadata store {self.name} failed: {self._away[1]}")
            try:
                with self._pool.connection() as conn, conn.transaction():  # rolled back if the block raises
                    cur = conn.cursor()
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                    tx = SqlTx(cur, DIALECT, self._grace)
                    yield tx
                    tx.flush()
            except psycopg.OperationalError as err:  # the database went away, or did not come back in time
                self._away = (time.monotonic(), _reason(err))
                raise Unavailable(f"the metadata store {self.name} failed: {self._away[1]}") from None
            self._away = None

    def notify(self) -> None:
        with self._lock:
            if self._away is not None:  # the others find the news when they look again
                return
            try:
                with self._pool.connection() as conn:
                    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            except psycopg.Error as err:
                log.debug("cannot notify the other servers: %s", _reason(err))

    def listen(self, news: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._listen, args=(news,), name="meta-listen", daemon=True)
        thread.start()

    def _listen(self, news: Callable[[], None]) -> None:
        """LISTENs on a connection of its own, calling NEWS for each notification, until close(); a connection
        lost is made again (each second while the database is away), and NEWS called then too, since what was
        notified meanwhile is lost."""
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    news()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=LISTEN_CHECK):
                            news()
            except psycopg.Error as err:
                log.debug("listening for the other servers' news: %s", _reason(err))
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._pool.close()


def _configure(conn: psycopg.Connection) -> None:
    """READ COMMITTED whatever the database's default: at REPEATABLE READ or SERIALIZABLE a transaction's snapshot
    would date from its first statement, the wait for LOCK, and miss what the transaction before it wrote. And
    IDLE_IN_TRANSACTION."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'")


def redacted(url: str) -> str:
    """URL as it may be shown: scheme://USER@HOST:PORT/DB, without the password or the query (which may hold one)."""
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    return f"{parts.scheme}://{user.split(':', 1)[0]}{at}{host}{parts.path}"


def _reason(err: psycopg.Error) -> str:
    """libpq's message, on one line."""
    return " ".join(str(err).split()) or type(err).__name__
