"""Garbage collection and the store's check, on a real server: local chunks with SQLite, and S3 (SeaweedFS) with
PostgreSQL. A grace of 0 (the request's field) frees at once what nothing reaches, where nothing is uploading."""

import io
import json
import os
import pathlib
import random
import sqlite3
import threading

import pytest

from conftest import Server, assert_one_line_error, needs, put_commit, run_pfs, s3_server
from pfs.client.upload import into_commit
from pfs.core.errors import Conflict, DataLoss, InvalidArgument, PfsError, Unavailable
from pfs.core.model import CommitRef, GarbageCollected, Progress
from pfs.vfs.local_chunks import LocalChunks
from server.gc import LEASE, Collector
from server.meta.sqlite import SqliteMetaStore
from server.storage.local import LocalChunkStore

BACKENDS = ("local-sqlite", "s3-postgres")


def started(kind: str, request, data_dir: pathlib.Path, chunk_size: int | None = None, args: tuple[str, ...] = ()):
    """A started server on KIND's backends, and how many bytes its store holds (a callable)."""
    if kind == "local-sqlite":
        s = Server(data_dir, chunk_size, args=args)

        def size() -> int:  # with the server stopped: its SQLite logs go then
            s.stop()
            try:
                return disk_bytes(data_dir)
            finally:
                s.start()
    else:
        weed, pg = request.getfixturevalue("seaweed"), request.getfixturevalue("postgres")
        bucket = weed.make_bucket()
        s = s3_server(weed, data_dir, chunk_size, args=("--meta", pg.make_database(), *args), bucket=bucket)

        def size() -> int:
            return bucket_bytes(weed, bucket)
    s.start()
    return s, size


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """A started server with 1 MiB chunks on each of BACKENDS, and how many bytes its store holds (a callable)."""
    s, size = started(request.param, request, tmp_path / "data")
    try:
        yield s, size
    finally:
        s.stop()


def disk_bytes(data_dir: pathlib.Path) -> int:
    """What the store takes on disk (as du counts it), without the workers' scratch space."""
    total = 0
    for top, dirs, files in os.walk(data_dir):
        dirs[:] = [d for d in dirs if d != "workers"]
        for name in [*files, *dirs]:
            total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def bucket_bytes(weed, bucket: str) -> int:
    pages = weed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def collect(server: Server, grace: float | None = 0.0, dry_run: bool = False) -> GarbageCollected:
    with server.client() as c:
        return list(c.garbage_collect(dry_run, grace))[-1]


def files(seed: int, large: int, small: int) -> dict[str, bytes]:
    """LARGE files of a few MiB and SMALL ones of a few KiB, of random bytes (none shared with another seed)."""
    r = random.Random(seed)
    out = {f"big/{i}.bin": r.randbytes(r.randrange(1 << 20, 3 << 20)) for i in range(large)}
    out |= {f"small/{i}.txt": r.randbytes(r.randrange(100, 8000)) for i in range(small)}
    return out


def reads_back(server: Server, repo: str, commit: str, expected: dict[str, bytes]) -> None:
    with server.client() as c:
        for path, data in expected.items():
            assert b"".join(c.read_file(CommitRef(repo, commit), path)) == data, path


@pytest.mark.slow
def test_gc_after_delete_repo_gives_the_store_its_size_back(backend):
    server, size = backend
    with server.client() as c:
        c.create_repo("keep")
        kept = files(1, 6, 300)
        keep = put_commit(c, "keep", kept)
    collect(server)
    before = size()
    with server.client() as c:
        c.create_repo("gone")
        put_commit(c, "gone", files(2, 6, 300))
        put_commit(c, "gone", files(3, 2, 100))
    assert size() > before * 1.5
    dry = collect(server, dry_run=True)
    server.pfs("delete-repo", "gone")
    assert collect(server, dry_run=True).chunks > dry.chunks == 0  # a dry run frees nothing
    freed = collect(server)
    assert freed.objects > 0 and freed.chunks > 0 and freed.bytes > 0
    after = size()
    assert abs(after - before) <= before / 100, (after, before)
    reads_back(server, "keep", keep, kept)
    assert "no problems" in server.pfs("check", "--read-data").text
    again = collect(server)
    assert (again.objects, again.chunks, again.packs) == (0, 0, 0)


def test_the_cli_says_what_it_freed_and_a_dry_run_frees_nothing(server):
    """delete-commit --gc runs with the server's grace (an hour): what was just written is kept."""
    with server.client() as c:
        c.create_repo("r")
        put_commit(c, "r", {"a": b"kept" * 1000})
        gone = put_commit(c, "r", {"b": b"gone" * 1000})
    out = server.pfs("delete-commit", "r", gone, "--gc").text
    assert out.startswith("freed 0 objects (0 B), 0 chunks") and "took" in out
    assert "less than the server's grace ago, --gc-grace, 1 h by default, is kept for a later collection" in out
    assert server.pfs("garbage-collect", "--dry-run").text.startswith("would free 0 objects")
    dry = collect(server, dry_run=True)
    assert dry.objects > 0 and dry.chunks > 0
    assert (collect(server, dry_run=True).objects, collect(server, dry_run=True).chunks) == (dry.objects, dry.chunks)
    freed = collect(server)
    assert (freed.objects, freed.chunks, freed.dry_run) == (dry.objects, dry.chunks, False)
    assert collect(server, dry_run=True).chunks == 0
    with server.client() as c:
        assert b"".join(c.read_file(CommitRef("r", "master"), "a")) == b"kept" * 1000


def test_another_chunk_s_file_copied_over_a_chunk_is_refused_where_read(big_server):
    """A sound frame under the wrong address (a file copied over another, a restore gone wrong) carries its own
    checksum; its size, not its file's, gives it away to every reader, through the server and on this disk."""
    r = random.Random(8)
    data_a, data_b = r.randbytes(300_000), r.randbytes(200_000)
    with big_server.client() as c:
        c.create_repo("r")
        put_commit(c, "r", {"a": data_a, "b": data_b})
        [a] = c.inspect_file(CommitRef("r", "master"), "a").chunks
        [b] = c.inspect_file(CommitRef("r", "master"), "b").chunks
    chunks = big_server.data_dir / "chunks"
    (chunks / a.address.hex()[:2] / a.address.hex()).write_bytes((chunks / b.address.hex()[:2] / b.address.hex())
                                                                  .read_bytes())
    said = f"chunk {a.address.hex()} holds 200000 bytes, not the 300000 its file lists"
    with big_server.client() as c:  # through the server, and straight from the chunk dir as a mount reads
        with pytest.raises(DataLoss, match=said):
            list(c.read_chunks([a]))
    local = LocalChunks(str(big_server.data_dir))
    try:
        assert list(local.read_many([a, b])) == [None, data_b]  # None: asked of the server, which refuses it
    finally:
        local.close()


def test_files_in_the_chunk_dir_that_are_no_chunks_are_left_alone(big_server):
    """An editor's file, NFS's .nfsXXXX of a chunk freed while read, a file beside the fan-out directories: GC
    and check pass them by, and GC frees no chunk a commit holds."""
    with big_server.client() as c:
        c.create_repo("r")
        put_commit(c, "r", {"a": random.Random(3).randbytes(300_000)})
        [chunk] = c.inspect_file(CommitRef("r", "master"), "a").chunks
    chunks = big_server.data_dir / "chunks"
    strays = [chunks / chunk.address.hex()[:2] / ".nfs000123", chunks / ".DS_Store", chunks / "zz"]
    for stray in strays:
        stray.write_bytes(b"not a chunk")
    assert collect(big_server, grace=0.0).chunks == 0
    assert big_server.pfs("check", "--read-data").text.rstrip().endswith("no problems")
    assert all(stray.exists() for stray in strays)
    assert big_server.pfs("get-file", "r", "master", "a").stdout == random.Random(3).randbytes(300_000)


def test_only_the_root_may_collect_or_check(server):
    with server.client() as c:
        token, _ = c.create_token("alice")
    env = {"PFS_ADDRESS": server.address, "PFS_TOKEN": token}
    for verb in (["garbage-collect"], ["check"], ["garbage-collect", "--dry-run"]):
        assert_one_line_error(run_pfs(*verb, env=env, check=False), "only the cluster's root", "alice")


def test_a_negative_grace_is_refused(server):
    with pytest.raises(InvalidArgument, match="grace"):
        collect(server, grace=-1.0)


def test_check_names_a_deleted_chunk_file_and_a_flipped_byte_and_sets_the_corrupt_aside(big_server):
    """check names every commit and path a missing or corrupt chunk breaks; with the data read, a corrupt chunk
    (a flipped byte, a file cut to nothing) is set aside (DATA_DIR/corrupt), so that a put of the same data stores
    it anew and heals every commit that holds it, where it would have found the corrupt one there (or failed)."""
    r = random.Random(7)
    data = {"a/one.bin": r.randbytes(300_000), "b/two.bin": r.randbytes(300_000), "c.txt": b"fine\n",
            "e/three.bin": r.randbytes(300_000)}
    with big_server.client() as c:
        c.create_repo("r")
        first = put_commit(c, "r", data)
        second = put_commit(c, "r", {"d.txt": b"more\n"})
        [one], [two], [three] = (c.inspect_file(CommitRef("r", first), p).chunks
                                 for p in ("a/one.bin", "b/two.bin", "e/three.bin"))
    ok = big_server.pfs("check", "--read-data")
    assert ok.text.startswith("checked 2 commits") and ok.text.rstrip().endswith("no problems")
    chunks = big_server.data_dir / "chunks"
    (chunks / one.address.hex()[:2] / one.address.hex()).unlink()
    flipped = chunks / two.address.hex()[:2] / two.address.hex()
    body = bytearray(flipped.read_bytes())
    body[len(body) // 2] ^= 0x01
    flipped.write_bytes(bytes(body))
    (chunks / three.address.hex()[:2] / three.address.hex()).write_bytes(b"")
    put_again = ("put-file", "r", "master", "again/three.bin", "-c", "-f", "-")
    assert_one_line_error(big_server.pfs(*put_again, input=data["e/three.bin"], check=False), "is corrupt")

    quick = big_server.pfs("check", check=False)
    assert quick.returncode == 1
    assert sorted(quick.text.splitlines()) == sorted(
        f"r {c} a/one.bin: chunk {one.address.hex()} is missing" for c in (first, second))
    full = big_server.pfs("check", "--read-data", check=False)
    assert full.returncode == 1
    aside = "does not match its address (set aside: put its data again, and every commit that holds it is whole)"
    assert sorted(full.text.splitlines()) == sorted(
        [f"r {c} a/one.bin: chunk {one.address.hex()} is missing" for c in (first, second)]
        + [f"r {c} {path}: chunk {ref.address.hex()} {aside}" for c in (first, second)
           for path, ref in (("b/two.bin", two), ("e/three.bin", three))])
    assert "6 problems" in full.stderr
    assert sorted(p.name for p in (big_server.data_dir / "corrupt").iterdir()) == sorted(
        ref.address.hex() for ref in (two, three))
    read = big_server.pfs("get-file", "r", first, "a/one.bin", check=False)  # said to a reader, not where it was
    assert_one_line_error(read, f"chunk {one.address.hex()} is missing from the store")
    big_server.pfs(*put_again, input=data["e/three.bin"])
    big_server.pfs("put-file", "r", "master", "again/two.bin", "-c", "-f", "-", input=data["b/two.bin"])
    for path in ("b/two.bin", "e/three.bin"):  # the first commit's files, whole again
        assert big_server.pfs("get-file", "r", first, path).stdout == data[path]
    left = big_server.pfs("check", "--read-data", check=False).text.splitlines()  # of every commit since, too
    assert left and all(line.endswith(f" a/one.bin: chunk {one.address.hex()} is missing") for line in left), left


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_check_names_a_missing_or_changed_object_and_gc_refuses_to_guess(server, damage):
    """An object gone from the metadata, or whose bytes changed there (SQLite keeps no checksums: a flipped bit
    renames a file): check names the commit and path that reach it, GC refuses, and a reader is told so."""
    with server.client() as c:
        c.create_repo("r")
        commit = put_commit(c, "r", {"a/b.txt": b"b\n", "c.txt": b"c\n"})
    server.stop()  # and with it, what it had cached of the objects
    db = sqlite3.connect(server.data_dir / "meta.db")
    try:
        [root] = db.execute("SELECT tree FROM commits WHERE id = ?", (commit,)).fetchone()
        [tree] = db.execute("SELECT data FROM objects WHERE address = ?", (root,)).fetchone()
        [sub] = [bytes.fromhex(a) for name, _, a, _ in json.loads(tree) if name == "a"]
        with db:
            if damage == "missing":
                db.execute("DELETE FROM objects WHERE address = ?", (sub,))
            else:
                [data] = db.execute("SELECT data FROM objects WHERE address = ?", (sub,)).fetchone()
                db.execute("UPDATE objects SET data = ? WHERE address = ?", (data.replace(b"b.txt", b"j.txt"), sub))
    finally:
        db.close()
    server.start()
    said = "is missing" if damage == "missing" else "does not match its address"
    result = server.pfs("check", check=False)
    assert result.returncode == 1 and result.text == f"r {commit} a: tree object {sub.hex()} {said}\n"
    assert_one_line_error(server.pfs("garbage-collect", check=False), f"object {sub.hex()} {said}", "pfs check")
    assert_one_line_error(server.pfs("list-file", "r", "master", "a", check=False), f"object {sub.hex()} {said}")
    assert server.pfs("get-file", "r", "master", "c.txt").stdout == b"c\n"


def test_a_mostly_dead_pack_is_rewritten_and_its_live_chunks_kept(tmp_path, seaweed):
    server = s3_server(seaweed, tmp_path / "data", 4096)
    server.start()
    try:
        r = random.Random(3)
        live = {"live.bin": r.randbytes(20_000)}
        with server.client() as c:
            c.create_repo("r")
            commit = c.start_commit("r")
            with into_commit(c, CommitRef("r", commit.id)) as up:  # one put: one pack
                up.put("live.bin", io.BytesIO(live["live.bin"]))
                up.put("dead.bin", io.BytesIO(r.randbytes(200_000)))
            c.delete_file(CommitRef("r", commit.id), "dead.bin")
            c.finish_commit(CommitRef("r", commit.id))
        freed = collect(server)
        assert freed.packs_rewritten == 1 and freed.chunks > 0 and freed.packs == 0
        reads_back(server, "r", commit.id, live)
        assert collect(server).packs_rewritten == 0  # the old pack waits for its URLs to expire, then goes
        server.stop()
        server.start()
        assert "no problems" in server.pfs("check", "--read-data").text
        reads_back(server, "r", commit.id, live)
    finally:
        server.stop()


POOL = [random.Random(i).randbytes(random.Random(-i).randrange(2_000, 30_000)) for i in range(48)]
GRACE = 2.0  # seconds: the racing server's --gc-grace


def uploader(server: Server, repo: str, seed: int, rounds: int, finished: dict, failures: list) -> None:
    """ROUNDS commits of files made of POOL's blocks (shared with the other uploaders) and bytes of their own;
    about half deleted again, and some left open and deleted: garbage. FINISHED gets each commit the server said
    was finished and that stays, with its files."""
    r = random.Random(seed)
    with server.client() as c:
        c.create_repo(repo)
        for n in range(rounds):
            files = {f"f{k}.bin": b"".join(r.sample(POOL, 3)) + r.randbytes(r.randrange(1, 5000))
                     for k in range(r.randrange(2, 6))}
            try:
                commit = c.start_commit(repo).id
                with into_commit(c, CommitRef(repo, commit)) as up:
                    for path, data in files.items():
                        up.put(path, io.BytesIO(data), overwrite=True)
                c.finish_commit(CommitRef(repo, commit))
            except PfsError as err:  # an upload slower than the grace fails, cleanly
                failures.append(str(err))
                continue
            if r.random() < 0.5:
                c.delete_commit(CommitRef(repo, commit))
            else:
                finished[(repo, commit)] = files
            if n % 4 == 3:
                open_ = CommitRef(repo, c.start_commit(repo).id)
                try:
                    with into_commit(c, open_) as up:
                        up.put("abandoned.bin", io.BytesIO(r.randbytes(20_000)))
                except PfsError as err:  # as above: it is deleted anyway
                    failures.append(str(err))
                c.delete_commit(open_)


def put_again(c, repo: str, files: dict[str, bytes]) -> str:
    """put_commit, put again while the server refuses it as it does an upload slower than half the grace (its
    chunks could be taken for a crash's leftovers; a loaded machine is that slow): what a client does then."""
    for _ in range(4):
        try:
            return put_commit(c, repo, files)
        except Unavailable:
            head = c.inspect_commit(CommitRef(repo, "master"))
            if not head.is_finished:
                c.delete_commit(CommitRef(repo, head.id))
    return put_commit(c, repo, files)


@pytest.mark.slow
@needs("fusermount3", "setpriv", root=True, fuse=True)  # the pipeline's local workers
@pytest.mark.parametrize("kind", BACKENDS)
def test_gc_racing_uploaders_and_a_pipeline_loses_nothing(kind, request, tmp_path):
    server, _ = started(kind, request, tmp_path / "data", 4096, ("--gc-grace", str(GRACE)))
    try:
        server.pfs("create-repo", "in")
        manifest = tmp_path / "copy.json"
        manifest.write_text(json.dumps({"pipeline": {"name": "copy"}, "inputs": [{"repo": {"name": "in"}}],
                                        "transform": {"cmd": ["sh", "-c", "cp -r /pfs/in/. /pfs/out/"]}}))
        server.pfs("create-pipeline", "-f", str(manifest))
        finished: dict = {}
        failures: list = []
        threads = [threading.Thread(target=uploader, args=(server, f"u{i}", i, 16, finished, failures))
                   for i in range(8)]
        for t in threads:
            t.start()
        freed, runs = [], 0
        parts = {f"part{i}.bin": b"".join(random.Random(i).sample(POOL, 4)) for i in range(6)}
        with server.client() as c:
            while any(t.is_alive() for t in threads) or runs < len(parts):
                if runs < len(parts):  # the pipeline's input changes, its jobs run, while collections do
                    name = f"part{runs}.bin"
                    put_again(c, "in", {name: parts[name]} | ({} if runs else {"same.txt": b"same\n"}))
                freed.append(list(c.garbage_collect())[-1])
                runs += 1
        for t in threads:
            t.join()
        assert sum(f.chunks + f.objects for f in freed) > 0  # the race had garbage old enough to go
        assert len(finished) >= 8 * 16 // 4, failures
        server.pfs("flush-commit", "in/master")
        collect(server)
        result = server.pfs("check", "--read-data")
        assert result.returncode == 0 and "no problems" in result.text
        for (repo, commit), files in finished.items():
            reads_back(server, repo, commit, files)
        with server.client() as c:
            out = {f.path: b"".join(c.read_file(CommitRef("copy", "master"), f.path))
                   for f in c.list_files(CommitRef("copy", "master"))}
        assert out == parts | {"same.txt": b"same\n"}
    finally:
        server.stop()


@pytest.mark.slow
def test_gc_killed_midway_loses_nothing_and_a_rerun_finishes(tmp_path):
    server = Server(tmp_path / "data", 4096)
    server.start()
    try:
        r = random.Random(5)
        kept = {f"k{i}": r.randbytes(3000) for i in range(50)}
        with server.client() as c:
            c.create_repo("keep")
            keep = put_commit(c, "keep", kept)
            c.create_repo("junk")
            put_commit(c, "junk", {f"d{i // 1000}/{i}": r.randbytes(200) for i in range(25_000)})
            c.delete_repo("junk")
            for update in c.garbage_collect(grace=0.0):
                if isinstance(update, Progress) and update.phase == "objects":
                    server.kill()  # mid-sweep: some objects deleted, no chunk yet
                    break
        server.start()
        assert "no problems" in server.pfs("check", "--read-data").text
        left = collect(server, dry_run=True)
        assert left.chunks > 0  # the chunks were not reached before the kill
        rerun = collect(server)
        assert (rerun.objects, rerun.chunks) == (left.objects, left.chunks)
        assert collect(server, dry_run=True).chunks == 0
        reads_back(server, "keep", keep, kept)
        assert "no problems" in server.pfs("check", "--read-data").text
    finally:
        server.stop()


def test_one_collection_at_a_time_across_the_servers_of_a_store(tmp_path):
    meta, chunks = SqliteMetaStore(tmp_path / "meta.db"), LocalChunkStore(tmp_path)
    try:
        with meta.transaction() as tx:
            assert tx.claim_lease(LEASE, "other-server", 60)
        with pytest.raises(Conflict, match="other-server"):
            list(Collector(meta, chunks, "this-server", 3600).collect())
        with meta.transaction() as tx:
            tx.release_lease(LEASE, "other-server")  # it finished
        assert list(Collector(meta, chunks, "this-server", 3600).collect())[-1].objects == 0
        with meta.transaction() as tx:
            assert LEASE not in tx.leases()  # given up when done
    finally:
        chunks.close()
        meta.close()


def test_files_are_recorded_within_half_a_grace_of_their_check_or_not_at_all(tmp_path):
    """A PutFiles whose chunks were checked (touched) and that then waits for the store longer than the grace
    allows could record chunks a collection began meanwhile and freed: it is refused, recording nothing, and a
    collection after it keeps nothing it lost."""
    from pfs.core import compression
    from pfs.core.errors import FailedPrecondition
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef, FileWrite
    from server.store import Store

    meta, chunks = SqliteMetaStore(tmp_path / "meta.db", 0.4), LocalChunkStore(tmp_path, 0.4)
    store = Store(chunks, meta, 1 << 20, grace=0.4)
    try:
        data = b"x" * 1000
        store.put_chunks([[(address(data), compression.compress(data))]])
        store.create_repo("r")
        ref = CommitRef("r", store.start_commit("r").id)
        write = FileWrite("f", (ChunkRef(address(data), len(data)),))
        store.put_files(ref, [write])  # in time
        holding = threading.Event()

        def busy() -> None:  # another call's long transaction
            with meta.transaction():
                holding.set()
                threading.Event().wait(0.5)

        other = threading.Thread(target=busy)
        other.start()
        holding.wait(5)
        with pytest.raises(FailedPrecondition, match="more than half the garbage collection grace"):
            store.put_files(ref, [FileWrite("g", write.chunks)])
        other.join()
        assert [f.path for f in store.list_files(ref, "")] == ["f"]
    finally:
        chunks.close()
        meta.close()


def test_a_collection_held_by_a_server_that_is_gone_says_so(tmp_path, postgres):
    """A server killed mid-collection holds the store until its lease runs out: the others say that it is gone,
    not that it runs."""
    from server.meta.postgres import PostgresMetaStore

    meta, chunks = PostgresMetaStore(postgres.make_database()), LocalChunkStore(tmp_path)
    try:
        with meta.transaction() as tx:
            tx.beat("live-server", "127.0.0.1:1", 60)
            assert tx.claim_lease(LEASE, "live-server", 60)
        with pytest.raises(Conflict, match="running on server 'live-server'; wait for it to finish"):
            list(Collector(meta, chunks, "this-server", 3600).collect())
        with meta.transaction() as tx:
            tx.drop_server("live-server")  # its row and lease gone; a lease of a server killed stays
            assert tx.claim_lease(LEASE, "killed-server", 60)
        with pytest.raises(Conflict, match="server 'killed-server' holds the store, but that server is gone"):
            list(Collector(meta, chunks, "this-server", 3600).collect())
    finally:
        chunks.close()
        meta.close()
