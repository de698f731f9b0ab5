"""The metadata database restarted under load (issue 14, item 4): concurrent put-file clients keep writing while
PostgreSQL restarts, once at once (calls wait for it) and once after an outage long enough that calls are told
UNAVAILABLE; every commit a client was told is finished reads back byte for byte from the same server process,
which never restarts."""

import io
import random
import threading

import pytest

from conftest import Server, wait_for
from pfs.client.upload import into_commit
from pfs.core.errors import Unavailable
from pfs.core.model import CommitRef
from postgres import PostgreSQL

CLIENTS = 4
ROUNDS = 3  # commits each client finishes before the restart, and again after it


class Writer(threading.Thread):
    """A client looping put-file -c on a branch of its own: start a commit, put a file, finish it. What the outage
    cuts short (Unavailable) it tries again, first dropping the open commit a cut round may have left on its
    branch (the branch is its alone, so an open head is its own), as the CLI does when it can reach the server."""

    def __init__(self, server: Server, n: int, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{n}")
        self.client = server.client()
        self.branch = f"b{n}"
        self.random = random.Random(n)
        self.stop = stop
        self.told: list[tuple[CommitRef, str, bytes]] = []  # commits finish_commit returned, with their file
        self.outages: list[str] = []  # what each round cut short by Unavailable was told
        self.error: BaseException | None = None  # anything else ends the writer, and fails the test

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._drop_open_head()
                    self._round()
                except Unavailable as err:
                    self.outages.append(str(err))
                    self.stop.wait(0.2)
        except BaseException as err:
            self.error = err

    def _round(self) -> None:
        path = f"{self.branch}/{len(self.told)}"
        data = self.random.randbytes(self.random.randrange(1, 40_000))  # none to a few chunks
        ref = CommitRef("r", self.client.start_commit("r", self.branch).id)
        with into_commit(self.client, ref) as up:
            up.put(path, io.BytesIO(data))
        self.client.finish_commit(ref)
        self.told.append((ref, path, data))

    def _drop_open_head(self) -> None:
        if self.branch in {b.name for b in self.client.list_branches("r")}:
            head = self.client.inspect_commit(CommitRef("r", self.branch))
            if not head.is_finished:
                self.client.delete_commit(CommitRef("r", head.id))


@pytest.mark.slow  # rounds on both sides of a database restart
def test_commits_told_finished_survive_a_database_restart_under_load(tmp_path):
    with PostgreSQL() as pg:  # its own: the session's must not go down under other tests
        server = Server(tmp_path / "data", 4096, args=("--meta", pg.make_database()))
        server.start()
        pid, stop = server.proc.pid, threading.Event()
        writers = [Writer(server, n, stop) for n in range(CLIENTS)]
        try:
            server.pfs("create-repo", "r")
            for w in writers:
                w.start()

            def rounds(least: list[int]) -> bool:
                assert [w.error for w in writers] == [None] * CLIENTS
                return all(len(w.told) >= n for w, n in zip(writers, least))

            wait_for(lambda: rounds([ROUNDS] * CLIENTS), 120)
            # a restart at once: calls wait for the database (up to postgres.WAIT) and go on
            before = pg.proc.pid
            pg.stop()  # fast shutdown: the transactions in flight are rolled back, the connections cut
            pg.start()
            assert pg.proc.pid != before
            after = [len(w.told) + ROUNDS for w in writers]
            wait_for(lambda: rounds(after), 120)
            # down until every client is told: rounds cut short, perhaps with a commit left open (the first call
            # to find it away waits postgres.WAIT; those queued behind it are told at once)
            pg.stop()
            wait_for(lambda: all(w.outages for w in writers), 60)
            pg.start()
            after = [len(w.told) + ROUNDS for w in writers]
            wait_for(lambda: rounds(after), 60)  # the next call after the database is back makes a connection
        finally:
            stop.set()
            if pg.proc.poll() is not None:  # a failure while it was down: the writers' calls end sooner with it up
                pg.start()
            for w in writers:
                w.join()
        assert [w.error for w in writers] == [None] * CLIENTS
        try:
            assert server.proc.poll() is None and server.proc.pid == pid  # the server rode it out
            with server.client() as c:
                for w in writers:
                    for ref, path, data in w.told:
                        assert c.inspect_commit(ref).is_finished
                        assert b"".join(c.read_file(ref, path)) == data
                    head = CommitRef("r", w.branch)  # and the last holds every file of its branch
                    assert {path for _, path, _ in w.told} <= {f.path for f in c.list_files(head, recursive=True)
                                                              if not f.is_dir}
            for told in (t for w in writers for t in w.outages):  # one line naming the store
                assert told.startswith("the metadata store postgresql://") and "\n" not in told, told
            print(f"rounds cut short: {[len(w.outages) for w in writers]}")
        finally:
            server.stop()
