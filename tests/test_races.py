"""The races a cluster brings (issue 14, item 2), on each metadata backend through real servers: writers of one
branch taking turns, one commit finished by many at once, a repo deleted while a commit on it is being finished
and filled, one pipeline created by many at once. On PostgreSQL the callers are spread over two servers on one
database and one S3 bucket, as in a cluster; SQLite has one server (a data dir is one server's)."""

import io
import os
import random
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from conftest import PFS, Server, s3_server
from pfs.client.upload import Uploader
from pfs.core import manifest
from pfs.core.errors import AlreadyExists, FailedPrecondition, NotFound, PfsError
from pfs.core.model import CommitInfo, CommitRef

RACERS = 12  # callers let go at once
ROUNDS = 6  # repos deleted under their callers, each a new chance of a different interleaving


class Cluster:
    """The servers of one store, started; `meta_rows` asks its metadata database directly."""

    def __init__(self, servers: list[Server], meta_url: str | None) -> None:
        self.servers = servers
        self.meta_url = meta_url  # None: the SQLite meta.db in the one server's data dir

    def client(self, i: int):
        """Client I's: the servers take turns."""
        return self.servers[i % len(self.servers)].client()

    def meta_rows(self, query: str) -> list[tuple]:
        if self.meta_url is None:
            db = sqlite3.connect(f"file:{self.servers[0].data_dir / 'meta.db'}?mode=ro", uri=True)
            try:
                return db.execute(query).fetchall()
            finally:
                db.close()
        with psycopg.connect(self.meta_url) as db:
            return db.execute(query).fetchall()


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request, tmp_path):
    if request.param == "sqlite":
        servers, url = [Server(tmp_path / "data", 4096)], None
    else:
        url = request.getfixturevalue("postgres").make_database()
        weed = request.getfixturevalue("seaweed")
        bucket = weed.make_bucket()
        servers = [s3_server(weed, tmp_path / name, 4096, args=("--meta", url), bucket=bucket) for name in "ab"]
    try:
        for s in servers:
            s.start()
        yield Cluster(servers, url)
    finally:
        for s in servers:
            s.stop()


def race(calls: list[Callable]) -> list:
    """Runs CALLS on threads of their own, let go at once; what each returned, or the PfsError it raised."""
    outcomes: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = calls[i]()
        except PfsError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def assert_refused(err: object, *kinds: type[PfsError]) -> None:
    """ERR is a domain error of one of KINDS (its status on the wire), in one line."""
    assert type(err) in kinds, repr(err)
    assert str(err) and "\n" not in str(err), repr(err)


@pytest.mark.slow  # thirty CLI processes on shared cores
@pytest.mark.parametrize("flags", [("-c",), ()])
def test_writers_of_one_branch_take_turns(cluster, flags):
    """Thirty `put-file -c` at once on one branch (on PostgreSQL, half through each server): each waits its turn
    at the open commit, so each client's file is in a finished commit of its own, their parents chained in some
    order. So too without -c: a put to a branch whose head is another put's commit waits for it, not joins it
    (which finished it under the joiner's feet)."""
    cluster.servers[0].pfs("create-repo", "r")
    clients = [subprocess.Popen([PFS, "put-file", "r", "master", f"f{i}", *flags, "-f", "-"],
                                env={**os.environ, **cluster.servers[i % len(cluster.servers)].env},
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for i in range(30)]
    for i, c in enumerate(clients):  # every input given at once: the one whose turn it is reads it then
        c.stdin.write(b"%d\n" % i)
        c.stdin.close()
    errors = []
    for c in clients:
        c.wait(timeout=120)
        if c.returncode:
            errors.append(c.stderr.read().decode())
        c.stderr.close()
    assert errors == []
    client = cluster.client(1)  # on PostgreSQL the second server: it sees what both wrote
    commits = client.list_commits("r")
    assert len(commits) == 30 and all(c.is_finished for c in commits)
    assert [c.parent for c in commits] == [c.id for c in commits[1:]] + [""]  # one chain, newest first
    for newer, older in zip(commits, commits[1:]):  # each commit adds one file to its parent's
        added = {f.path for f in client.list_files(CommitRef("r", newer.id))} - \
            {f.path for f in client.list_files(CommitRef("r", older.id))}
        assert len(added) == 1
    for i in range(30):
        assert b"".join(client.read_file(CommitRef("r", "master"), f"f{i}")) == b"%d\n" % i


def test_a_commit_finished_by_many_at_once_is_finished_once(cluster):
    clients = [cluster.client(i) for i in range(RACERS)]
    clients[0].create_repo("r")
    ref = CommitRef("r", clients[0].start_commit("r").id)
    outcomes = race([lambda c=c: c.finish_commit(ref) for c in clients])
    done = [o for o in outcomes if isinstance(o, CommitInfo)]
    assert len(done) == 1, outcomes
    for err in outcomes:
        if err is not done[0]:
            assert_refused(err, FailedPrecondition)
            assert f"commit {ref.ref} in 'r' is finished" in str(err)
    assert clients[1].inspect_commit(ref).finished == done[0].finished  # the winner's finish, never redone
    assert [c.id for c in clients[1].list_commits("r")] == [ref.ref]


def test_a_repo_deleted_while_a_commit_on_it_is_finished_and_filled(cluster):
    """Each call either happens whole before the deletion or is told, in one line, that the repo is gone (or
    the commit finished); the deletion takes the repo's commits and branches with it."""
    clients = [cluster.client(i) for i in range(RACERS)]
    r = random.Random(14)
    writes = []  # files whose chunks the store holds: each PutFiles below is one short transaction
    with Uploader(clients[0], writes.extend) as up:
        for i in range(RACERS):
            up.put(f"f{i}", io.BytesIO(r.randbytes(20_000)))  # several chunks each

    def delete(repo: str, pause: float) -> None:
        time.sleep(pause)  # later each round, so the calls it races fall on both sides of it
        clients[0].delete_repo(repo)

    outcomes = []
    for n in range(ROUNDS):
        repo = f"r{n}"
        clients[0].create_repo(repo)
        ref = CommitRef(repo, clients[0].start_commit(repo).id)
        clients[0].put_files(ref, writes[:1])
        outcomes = race([lambda: delete(repo, n * 0.01), lambda: clients[1].finish_commit(ref),
                         *[lambda c=c, w=w: c.put_files(ref, [w]) for c, w in zip(clients[2:], writes[1:])]])
        assert outcomes[0] is None  # the one deletion succeeds
        for o in outcomes[1:]:
            if isinstance(o, PfsError):
                assert_refused(o, NotFound, FailedPrecondition)
        for c in clients[:2]:  # through each server
            assert repo not in {x.name for x in c.list_repos()}
            with pytest.raises(NotFound):
                c.inspect_commit(ref)
    assert cluster.meta_rows("SELECT repo FROM commits UNION ALL SELECT repo FROM branches") == []
    clients[1].create_repo("r0")  # a repo of the name again starts empty
    assert clients[0].list_commits("r0") == [] and clients[0].list_branches("r0") == []


def test_one_pipeline_created_by_many_at_once(cluster):
    clients = [cluster.client(i) for i in range(RACERS)]
    clients[0].create_repo("in")
    spec = manifest.pipeline({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                              "inputs": [{"repo": {"name": "in"}}]})
    outcomes = race([lambda c=c: c.create_pipeline(spec) for c in clients])
    made = [o for o in outcomes if not isinstance(o, PfsError)]
    assert len(made) == 1, outcomes
    for err in outcomes:
        if err is not made[0]:
            assert_refused(err, AlreadyExists)
            assert "pipeline 'p' already exists" in str(err)
    for c in clients[:2]:
        assert [p.name for p in c.list_pipelines()] == ["p"]
        assert sorted(x.name for x in c.list_repos()) == ["in", "p"]
    assert cluster.meta_rows("SELECT name FROM pipelines") == [("p",)]
