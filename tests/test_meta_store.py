"""The conformance suite every metadata store backend passes."""

import dataclasses
import functools

import pytest

from pfs.core.model import CommitInfo, CommitRef, FileWrite, RepoInfo
from server import reach
from server.meta import StoredChunk, StoredCommit, walk_ancestry
from server.meta.postgres import PostgresMetaStore
from server.meta.sql import SqlTx
from server.meta.sqlite import SqliteMetaStore
from server.storage.local import LocalChunkStore
from server.store import Store

# Each backend: where a fresh store is for one test, and what opens the store there.
BACKENDS = {
    "sqlite": (lambda request, tmp: tmp / "meta.db", SqliteMetaStore),
    "postgres": (lambda request, tmp: request.getfixturevalue("postgres").make_database(), PostgresMetaStore),
}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request, tmp_path):
    """Opens the test's store (again, after close(): a server's restart)."""
    where, store = BACKENDS[request.param]
    return functools.partial(store, where(request, tmp_path))


@pytest.fixture
def meta(open_store):
    m = open_store()
    yield m
    m.close()


def commit(repo, id_, parent="", size=0, prov=()):
    return StoredCommit(CommitInfo(repo, id_, parent, "master", 1.0, 0.0, size, prov), None)


def test_repos_commits_branches(meta):
    with meta.transaction() as tx:
        tx.insert_repo(RepoInfo("r", "d", 1.0, 0))
        tx.insert_commit(commit("r", "c1", size=5))
        tx.insert_commit(commit("r", "c2", "c1", 7, (CommitRef("x", "y"),)))
        tx.set_branch("r", "master", "c2")
        tx.set_branch("r", "dev", "c1")
    with meta.transaction() as tx:
        assert tx.get_repo("r").branches == ("dev", "master")
        assert tx.get_repo("r").size_bytes == 12
        assert [c.info.id for c in tx.list_commits("r")] == ["c2", "c1"]
        assert [c.info.id for c in walk_ancestry(tx, "r", "c2")] == ["c2", "c1"]
        assert tx.get_commit("r", "c2").info.provenance == (CommitRef("x", "y"),)
        assert tx.children("r", "c1") == ["c2"]
        assert tx.get_branch("r", "nope") is None
        tx.delete_repo("r")
    with meta.transaction() as tx:
        assert tx.get_repo("r") is None and tx.list_commits("r") == [] and tx.list_branches("r") == []


def test_failed_transaction_rolls_back(meta):
    with pytest.raises(RuntimeError):
        with meta.transaction() as tx:
            tx.insert_repo(RepoInfo("r", "", 1.0, 0))
            raise RuntimeError("boom")
    with meta.transaction() as tx:
        assert tx.get_repo("r") is None


def test_objects_are_immutable(meta):
    with meta.transaction() as tx:
        tx.put_object(b"a", b"first")
        tx.put_object(b"a", b"second")
        assert tx.get_object(b"a") == b"first"
    with meta.transaction() as tx:
        assert type(tx.get_object(b"a")) is bytes and tx.get_object(b"a") == b"first"  # not a memoryview
        assert tx.get_object(b"b") is None


def test_the_walk_over_objects_reads_a_bounded_batch_at_a_time(meta, tmp_path, monkeypatch):
    """reach.walk reads objects BATCH_BYTES at a time at most (one larger alone), and still reaches each once:
    garbage collection and check read every version of every tree, and a tree of 100,000 files is 10 MB."""
    store = Store(LocalChunkStore(tmp_path / "chunks"), meta, 4096, 3600)
    store.create_repo("r")
    ref = CommitRef("r", store.start_commit("r").id)
    store.put_files(ref, [FileWrite(f"d{d:02d}/{'f' * 40}{d:02d}{i:03d}", ()) for d in range(20) for i in range(50)])
    with meta.transaction() as tx:
        [(_, _, root)] = tx.commit_roots()
        sizes = tx.object_sizes([root, b"absent"])
        assert list(sizes) == [root] and sizes[root] == len(tx.get_object(root))
    reads, get_objects = [], SqlTx.get_objects

    def recorded(self, addresses):
        found = get_objects(self, addresses)
        reads.append([len(data) for data in found.values()])
        return found

    monkeypatch.setattr(SqlTx, "get_objects", recorded)
    monkeypatch.setattr(reach, "BATCH_BYTES", 20_000)  # 3 directories of 6 KB
    seen: set[bytes] = set()
    reached = list(reach.walk(meta, [root], seen))
    assert len(reached) == len(seen) == 22  # the root, 20 directories, and the one object of every empty file
    assert all(sum(read) <= 20_000 or len(read) == 1 for read in reads), reads
    assert len(reads) > 3 and max(len(read) for read in reads) > 1, reads


def test_a_shard_s_log_keeps_its_last_lines_within_its_bound(meta):
    """Past its bound a shard's log loses its first lines (down to three quarters of it), and a line of the shim's
    stands where they were, counting them over every trim; another shard's log is untouched."""
    from pfs.core.model import LogLine
    from server.meta.sql import LOG_LINE_COST

    keep = 100 * (10 + LOG_LINE_COST)  # a hundred lines of 10 characters

    def lines(job, shard):
        with meta.transaction() as tx:
            return [x.text for _, x in tx.logs(job, "", 0, 1000) if x.shard == shard]

    with meta.transaction() as tx:
        tx.add_logs([LogLine("j", 1, 1.0, "stdout", "other line")], keep)
        for batch in range(3):
            tx.add_logs([LogLine("j", 0, 1.0, "stdout", f"line {i:05}") for i in range(batch * 60, batch * 60 + 60)],
                        keep)
    kept = lines("j", 0)
    first = int(kept[1].split()[1])
    assert kept[0] == f"job-shim: {first} earlier lines of this shard's log were dropped, to keep it within its bound"
    assert kept[1:] == [f"line {i:05}" for i in range(first, 180)]
    assert len(kept) <= 100 and first >= 80  # twice trimmed: 120 lines, then 60 more
    assert lines("j", 1) == ["other line"]


def test_jobs_staged_files_and_logs(meta):
    from pfs.core.model import (
        ChunkRef, FileWrite, JobInfo, JobInput, JobState, LogLine, ShardInfo, ShardState, Transform,
    )

    job = JobInfo("j1", Transform(("sh", "-c", "x"), ("in",), (("A", "b"),), (3,), "img", True),
                  (JobInput("r", "c1", "map", 2),), 2, "out", pipeline="p", started=1.0,
                  shards=(ShardInfo(0), ShardInfo(1, ShardState.RUNNING, 1)))
    write = FileWrite("a/b", (ChunkRef(b"\x01" * 32, 5),), True)
    with meta.transaction() as tx:
        tx.put_job(job)
        tx.put_job(JobInfo("j2", job.transform, job.inputs, 1, "out", started=2.0))
        tx.stage_files("j1", 1, [write])
        tx.stage_files("j1", 1, [FileWrite("c", ())])
        tx.stage_files("j1", 0, [FileWrite("d", ())])
        tx.add_logs([LogLine("j1", 1, 5.0, "stdout", "hello"), LogLine("j2", 0, 6.0, "stderr", "oops")], 1 << 20)
    with meta.transaction() as tx:
        assert tx.get_job("j1") == job
        assert tx.get_job("nope") is None
        assert tx.list_jobs() == [tx.get_job("j2"), job]
        assert tx.list_jobs("p") == [job]
        done = ShardInfo(1, ShardState.SUCCESS, 1, finished=4.0, server="s")
        tx.put_shard("j1", done)  # one shard, alone
        assert tx.get_job("j1").shards == (ShardInfo(0), done) and tx.list_jobs("p")[0].shards == (ShardInfo(0), done)
        assert tx.staged_files("j1", 1) == [write, FileWrite("c", ())]
        tx.clear_staged("j1", 1)
        assert tx.staged_files("j1", 1) == [] and tx.staged_files("j1", 0) == [FileWrite("d", ())]
        [(seq, line)] = tx.logs("j1", "", 0, 10)
        assert line == LogLine("j1", 1, 5.0, "stdout", "hello") and tx.logs("j1", "", seq, 10) == []
        assert tx.logs("", "p", 0, 10) == [(seq, line)]
        tx.put_job(JobInfo("j1", job.transform, job.inputs, 2, "out", pipeline="p", state=JobState.SUCCESS,
                           shards=(ShardInfo(0, ShardState.SUCCESS), done)))
        assert tx.get_job("j1").state is JobState.SUCCESS
        assert tx.get_job("j1").shards == (ShardInfo(0, ShardState.SUCCESS), done)


def test_stored_chunks_keep_their_first_place(meta):
    """Where an object store keeps chunks: recorded once (a second writer's place is ignored), found in any
    number, the unknown ones left out."""
    first = [StoredChunk(i.to_bytes(32, "big"), "pack1" if i % 2 else "", 10 * i, 10, b"head%d" % i, b"%08d" % i)
             for i in range(1200)]  # more than one statement's worth of addresses
    with meta.transaction() as tx:
        assert tx.put_stored_chunks(first[:700]) == 700
    again = [dataclasses.replace(c, pack="pack2") for c in first]
    with meta.transaction() as tx:
        assert tx.put_stored_chunks(again) == 500
    with meta.transaction() as tx:
        found = tx.stored_chunks([c.address for c in first] + [b"\xff" * 32])
    assert found == {c.address: c for c in first[:700]} | {c.address: c for c in again[700:]}
    assert all(type(c.head) is bytes and type(c.checksum) is bytes for c in found.values())


def test_a_store_opened_again_keeps_what_it_holds(open_store):
    """A restart: opening a store that has its schema and has had its upgrade steps loses nothing of it."""
    for _ in range(2):
        meta = open_store()
        with meta.transaction() as tx:
            if tx.get_repo("r") is None:
                tx.insert_repo(RepoInfo("r", "d", 1.0, 0))
                tx.insert_commit(commit("r", "c1", size=3, prov=(CommitRef("x", "y"),)))
                tx.set_branch("r", "master", "c1")
                tx.put_object(b"a", b"tree")
        meta.close()
    meta = open_store()
    with meta.transaction() as tx:
        assert tx.get_repo("r") == RepoInfo("r", "d", 1.0, 3, ("master",))
        assert tx.get_commit("r", "c1") == commit("r", "c1", size=3, prov=(CommitRef("x", "y"),))
        assert tx.get_object(b"a") == b"tree"
    meta.close()


def test_servers_and_leases(meta):
    with meta.transaction() as tx:
        tx.beat("a", "host-a:1", 60)
        tx.beat("gone", "host-g:1", -1)  # its last beat expired already
        assert tx.live_servers() == {"a": "host-a:1"}
        assert tx.claim_lease("p", "a", 60)
        assert not tx.claim_lease("q", "gone", -1)  # expired as soon as taken
        assert not tx.claim_lease("p", "b", 60)  # a's, live: not b's to take
        assert tx.claim_lease("p", "a", 60)  # a renews it
        assert tx.claim_lease("q", "b", 60)  # expired: b takes it
        assert tx.leases() == {"p": "a", "q": "b"}
        tx.drop_server("a")
        assert tx.live_servers() == {} and tx.leases() == {"q": "b"}



def test_tokens_are_kept_by_hash_and_revoked_by_subject_or_hash(meta):
    from server.meta import StoredToken

    with meta.transaction() as tx:
        for n, subject in enumerate(("alice", "alice", "bob")):
            tx.put_token(StoredToken(bytes([n]) * 32, subject, 1.0, 0.0 if n else 99.0))
        tx.put_token(StoredToken(b"\0" * 32, "mallory", 2.0))  # a hash recorded already keeps its record
        assert tx.revoke_tokens("alice", b"", 5.0) == 2
        assert tx.revoke_tokens("", b"\2" * 32, 6.0) == 1
        assert tx.revoke_tokens("alice", b"", 7.0) == 0  # revoked already
        assert sorted(tx.tokens(), key=lambda t: t.hash) == [
            StoredToken(b"\0" * 32, "alice", 1.0, 99.0, 5.0), StoredToken(b"\1" * 32, "alice", 1.0, 0.0, 5.0),
            StoredToken(b"\2" * 32, "bob", 1.0, 0.0, 6.0)]
        for n in (7, 8, 9):  # server s's own tokens, one after another
            tx.put_token(StoredToken(bytes([n]) * 32, "root", 1.0, server="s"))
        assert tx.retire_server_tokens("s", b"\x09" * 32, 10.0) == 2
        assert {t.hash[0]: t.revoked for t in tx.tokens() if t.server == "s"} == {7: 10.0, 8: 10.0, 9: 0.0}


def test_tokens_revoked_or_expired_long_enough_ago_are_forgotten(meta):
    from server.meta import StoredToken

    with meta.transaction() as tx:
        for n, (expires, revoked) in enumerate(((0.0, 0.0), (50.0, 0.0), (500.0, 0.0), (0.0, 50.0), (0.0, 500.0))):
            tx.put_token(StoredToken(bytes([n]) * 32, f"s{n}", 1.0, expires, revoked))
        assert tx.forget_tokens(100.0) == 2
        assert sorted(t.subject for t in tx.tokens()) == ["s0", "s2", "s4"]


def test_making_a_token_forgets_those_revoked_a_day_before(tmp_path):
    """Every job makes a token and revokes it when it ends, and every server reads them all every second: the
    records of those revoked (or expired) a day before go."""
    import time

    from server.meta import StoredToken
    from server.tokens import FORGET_AFTER, Tokens

    meta = SqliteMetaStore(tmp_path / "meta.db")
    tokens = Tokens(meta, "root-token", "s")
    try:
        now = time.time()
        with meta.transaction() as tx:
            tx.put_token(StoredToken(b"\1" * 32, "job:old", now - FORGET_AFTER - 60, revoked=now - FORGET_AFTER - 1))
            tx.put_token(StoredToken(b"\2" * 32, "job:new", now - 60, revoked=now - 1))
        tokens.create("alice", 0)
        with meta.transaction() as tx:
            assert sorted(t.subject for t in tx.tokens()) == ["alice", "job:new", "root"]
    finally:
        tokens.close()
        meta.close()


def test_a_commit_keeps_its_description(meta):
    info = CommitInfo("r", "c1", "", "master", 1.0, 0.0, 0, description="monday's sales")
    with meta.transaction() as tx:
        tx.insert_repo(RepoInfo("r", "", 1.0, 0))
        tx.insert_commit(StoredCommit(info, None))
    with meta.transaction() as tx:
        assert tx.get_commit("r", "c1").info == info
        tx.update_commit(StoredCommit(dataclasses.replace(info, finished=2.0, description="tuesday's"), None))
    with meta.transaction() as tx:
        assert tx.list_commits("r")[0].info == dataclasses.replace(info, finished=2.0, description="tuesday's")


def test_the_last_lines_of_a_log_are_read_after_the_one_before_them(meta):
    from pfs.core.model import LogLine

    with meta.transaction() as tx:
        tx.add_logs([LogLine("j", 0, 1.0, "stdout", str(i)) for i in range(5)], 1 << 20)
    with meta.transaction() as tx:
        numbers = [n for n, _ in tx.logs("j", "", 0, 10)]
        assert tx.logs_before_last("j", "", 2) == numbers[2]
        assert [x.text for _, x in tx.logs("j", "", numbers[2], 10)] == ["3", "4"]
        assert tx.logs_before_last("j", "", 5) == tx.logs_before_last("j", "", 50) == 0
        assert tx.logs_before_last("k", "", 1) == 0
