"""A pfs server whose metadata is in PostgreSQL (--meta): the same files and commits as on SQLite, kept across a
restart; two servers' transactions on one database taking turns; and a database that cannot be used said in one
line, at start or mid-call, never with its password. (tests/test_meta_store.py runs the store's own suite.)"""

import random
import socket
import threading

import psycopg
import pytest

from conftest import Server, assert_one_line_error, wait_for
from pfs.core.model import RepoInfo
from postgres import PostgreSQL
from server.meta.postgres import PostgresMetaStore
from server.meta.sql import STEPS
from test_s3_errors import refused


def test_files_and_commits_live_in_the_database_across_a_restart(postgres, tmp_path):
    url = postgres.make_database()
    server = Server(tmp_path / "data", 4096, args=("--meta", url))
    r = random.Random(14)
    files = {"big": r.randbytes(300_000), "dir/small": b"small\n"}  # many chunks, and one
    server.start()
    try:
        server.pfs("create-repo", "r")
        for path, data in files.items():
            server.pfs("put-file", "r", "master", path, "-c", "-f", "-", input=data)
        server.stop()
        server.start()
        for path, data in files.items():
            assert server.pfs("get-file", "r", "master", path).stdout == data
        commits = server.client().list_commits("r")
        assert len(commits) == 2 and commits[0].parent == commits[1].id and all(c.finished for c in commits)
    finally:
        server.stop()
    assert not (tmp_path / "data" / "meta.db").exists()  # nothing in SQLite
    with psycopg.connect(url) as db:
        assert db.execute("SELECT id FROM commits ORDER BY seq DESC").fetchall() == [(c.id,) for c in commits]
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(STEPS),)]  # one row, up to date


def test_transactions_of_two_stores_on_one_database_take_turns(postgres):
    """Two servers' stores: a transaction waits for the other's to end, then sees what it wrote, even where the
    database's default isolation (SERIALIZABLE here) would have given it a snapshot from before its wait."""
    url = postgres.make_database()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_isolation = 'serializable'")
    first, second = PostgresMetaStore(url), PostgresMetaStore(url)
    seen = []

    def read() -> None:
        with second.transaction() as tx:
            seen.append(tx.get_repo("r"))

    try:
        with first.transaction() as tx:
            reader = threading.Thread(target=read)
            reader.start()
            with psycopg.connect(url) as db:  # the reader waits for the lock this transaction holds
                wait_for(lambda: db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                            "AND NOT granted").fetchone()[0] == 1)
            tx.insert_repo(RepoInfo("r", "made while the reader waited", 1.0, 0))
        reader.join()
        assert seen == [RepoInfo("r", "made while the reader waited", 1.0, 0)]
    finally:
        first.close()
        second.close()


def test_a_database_that_cannot_be_used_at_start(postgres, tmp_path):
    with socket.socket() as hole:  # bound, never listening: connections to it are refused while the test runs
        hole.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{hole.getsockname()[1]}"
        for url, shown, reason in [
            (f"postgresql://pfs:hunter2@{dead}/pfs", f"postgresql://pfs@{dead}/pfs", "refused"),
            (f"postgresql://pfs@127.0.0.1:{postgres.port}/nosuchdb?password=hunter2",
             f"postgresql://pfs@127.0.0.1:{postgres.port}/nosuchdb", 'database "nosuchdb" does not exist'),
            # libpq quotes a password it cannot decode in its reason
            (f"postgresql://pfs:hunter2%@{dead}/pfs", f"postgresql://pfs@{dead}/pfs", "percent-encoded"),
        ]:
            line = refused(Server(tmp_path / "data", args=("--meta", url)))
            assert line.startswith(f"pfs server: cannot use the metadata store {shown}: "), line
            assert reason in line and "hunter2" not in line, line
    assert not (tmp_path / "data" / "meta.db").exists()
    for url in ("postgresql://pfs@[::1/pfs", "postgresql://pfs@host:port/pfs"):  # no traceback from the URL's parse
        assert refused(Server(tmp_path / "data", args=("--meta", url))).startswith("pfs server: --meta: give ")


@pytest.mark.slow  # a call waits for the database to come back before it gives up
def test_calls_while_the_database_is_down_fail_in_one_line_and_work_once_it_is_back(tmp_path):
    with PostgreSQL() as pg:  # its own: the session's must not go down under other tests
        url = pg.make_database()
        server = Server(tmp_path / "data", args=("--meta", url))
        server.start()
        try:
            server.pfs("create-repo", "r")
            server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"before\n")
            pg.stop()
            assert_one_line_error(server.pfs("get-file", "r", "master", "f", check=False),
                                  f"the metadata store {url} failed")
            assert server.proc.poll() is None  # the server stays up through the outage
            pg.start()
            wait_for(lambda: server.pfs("list-repo", check=False).returncode == 0, 60)  # the pool reconnects
            assert server.pfs("get-file", "r", "master", "f").stdout == b"before\n"
        finally:
            server.stop()
