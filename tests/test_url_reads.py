"""Direct reads through URLs (DirectRead kind "url"): mounts and workers of a server whose chunks are in S3 fetch
them from the bucket with presigned URLs, each signed for the range of a run of chunks asked for together and
nothing else (a pack holds chunks of many repos), a run in one GET however many readers want it, and any chunk a
URL does not give right is read through the server. Real SeaweedFS, real stores and servers, real mounts; the
counts that prove who read what are the server's own (its S3 requests, logged at shutdown) and SeaweedFS's (its
metrics)."""

import dataclasses
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import pytest

from conftest import Server, needs, s3_server, wait_for
from pfs.core import compression
from pfs.core.errors import FailedPrecondition
from pfs.core.hashing import address
from pfs.core.model import MAX_LOCATE, ChunkLocation, ChunkRef, CommitRef, FileWrite
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.vfs.url_chunks import MAX_FRAME, UrlChunks, runs
from server.storage import s3 as s3_store
from test_chunk_store import S3
from test_mount import mounted

MOUNTS = needs("fusermount3", fuse=True)
NO_CACHE = ("--cache-size", "0")  # every chunk the server reads is then a GET of its own, counted


def gets(seaweed, bucket: str) -> int:
    """The GETs SeaweedFS has answered for BUCKET (its count may lag a response by a moment: never more)."""
    return seaweed.requests(bucket).get("GET", 0)


def bucket_of(server: Server) -> str:
    return server.args[server.args.index("--storage") + 1].removeprefix("s3://").partition("/")[0]


def server_gets(server: Server) -> int:
    """The GETs a stopped S3-backed server made of its bucket, from the count it logs at shutdown."""
    log = server.log.read_text()
    counts = re.search(r"S3 requests: \d+ \((.*)\)", log)
    assert counts, log
    return int(m[1]) if (m := re.search(r"GetObject (\d+)", counts[1])) else 0


def write_tree(root, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def serving(weed, tmp_path, files: dict[str, bytes], args: tuple[str, ...] = ()) -> Server:
    """A server on a fresh bucket of WEED, with ARGS, started, FILES put as the first commit of repo r (the
    server killed again if that fails)."""
    write_tree(tmp_path / "src", files)
    server = s3_server(weed, tmp_path / "data", args=args)
    server.start()
    try:
        server.pfs("create-repo", "r")
        server.pfs("put-file", "r", "master", "", "-r", "-c", "-f", str(tmp_path / "src"))
    except BaseException:
        server.kill()
        raise
    return server


def read_tree(root, names) -> dict[str, bytes]:
    return {n: (root / n).read_bytes() for n in names}


def small_files(count: int, seed: int = 1) -> dict[str, bytes]:
    """COUNT text files of 1-4 KiB in one directory."""
    r = random.Random(seed)
    return {f"small/f{i:04d}.txt": r.randbytes(r.randint(512, 2048)).hex().encode() for i in range(count)}


def frame_of(plain: bytes) -> tuple[ChunkRef, bytes]:
    return ChunkRef(address(plain), len(plain)), compression.compress(plain)


def fetch(url: str, byte_range: str | None) -> tuple[int, bytes]:
    """A GET of URL with the header Range: BYTE_RANGE (None: none), as anyone holding the URL may send it: the
    status and the body."""
    request = urllib.request.Request(url, headers={"Range": byte_range} if byte_range else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def spans(locations) -> dict[tuple[str, int, int], list[ChunkLocation]]:
    """LOCATIONS by the URL and range each is signed for, each span's in order."""
    found: dict[tuple[str, int, int], list[ChunkLocation]] = {}
    for loc in sorted(locations, key=lambda loc: loc.offset):
        found.setdefault((loc.url, loc.range_start, loc.range_end), []).append(loc)
    return found


def assert_gives_only(url: str, start: int, end: int, pack: bytes, others: list[tuple[int, int]]) -> None:
    """URL gives bytes START to END of PACK and nothing else: not the whole pack, nor a range wider, narrower or
    shifted, nor any of OTHERS (offset, length), nor anything without a Range."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert "range" in query["X-Amz-SignedHeaders"][0].split(";"), query
    assert fetch(url, f"bytes={start}-{end - 1}") == (206, pack[start:end])
    refused = [None, f"bytes=0-{len(pack) - 1}", "bytes=0-", f"bytes={start - 1}-{end - 1}", f"bytes={start}-{end}",
               f"bytes={start + 1}-{end - 1}", f"bytes={start}-{end - 2}", f"bytes={start}-{end - 1},0-{len(pack) - 1}",
               *(f"bytes={offset}-{offset + length - 1}" for offset, length in others)]
    for byte_range in refused:
        status, body = fetch(url, byte_range)
        assert status == 403 and b"SignatureDoesNotMatch" in body, (byte_range, status, body[:200])


# -- which chunks a URL gives: the store's locate() against real SeaweedFS


def test_a_url_gives_exactly_the_chunks_it_was_located_for(tmp_path, request):
    """Chunks of two readers in one pack, ours side by side in places: locating ours gives a URL per run of ours,
    signed for that run's range, and SeaweedFS serves that range and refuses every other (theirs among them)."""
    store = S3(tmp_path, request).open()
    try:
        ours = [frame_of(os.urandom(3000)) for _ in range(5)]
        theirs = [frame_of(os.urandom(3000)) for _ in range(3)]
        layout = [ours[0], theirs[0], ours[1], ours[2], ours[3], theirs[1], ours[4], theirs[2]]
        store.put([(ref.address, frame) for ref, frame in layout])
        s3 = request.getfixturevalue("seaweed").client()
        (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=store.bucket)["Contents"]]  # one pack holds all
        pack = s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        where = {ref.address: (pack.index(frame), len(frame)) for ref, frame in layout}

        located = store.locate([ref.address for ref, _ in ours[::-1]] + [address(b"never stored")])
        assert located[-1] is None
        assert [(loc.offset, loc.length) for loc in located[:-1]] == [where[ref.address] for ref, _ in ours[::-1]]
        runs_of_ours = [[ours[0]], ours[1:4], [ours[4]]]
        assert [[(loc.offset, loc.length) for loc in run] for run in spans(located[:-1]).values()] == [
            [where[ref.address] for ref, _ in run] for run in runs_of_ours]
        for (url, start, end), run in spans(located[:-1]).items():
            assert (start, end) == (run[0].offset, run[-1].offset + run[-1].length)
            assert_gives_only(url, start, end, pack, [where[ref.address] for ref, _ in theirs])

        (alone,) = store.locate([ours[2][0].address])  # asked for alone, in the middle of a run: its bytes only
        assert (alone.range_start, alone.range_end) == (alone.offset, alone.offset + alone.length)
        assert_gives_only(alone.url, alone.range_start, alone.range_end, pack, [where[ours[1][0].address]])
    finally:
        store.close()


def test_a_run_a_url_gives_is_url_range_bytes_at_most(tmp_path, request, monkeypatch):
    """Chunks asked for together in a row come in URLs of URL_RANGE bytes at most (a larger chunk alone), so a
    large read is several GETs at once."""
    monkeypatch.setattr(s3_store, "URL_RANGE", 10_000)
    store = S3(tmp_path, request).open()
    try:
        chunks = [frame_of(os.urandom(n)) for n in (3000,) * 7 + (20_000, 3000)]
        store.put([(ref.address, frame) for ref, frame in chunks])
        located = store.locate([ref.address for ref, _ in chunks])
        assert [len(run) for run in spans(located).values()] == [3, 3, 1, 1, 1]
        assert all(e - s <= 10_000 for _, s, e in spans(located) if e - s != len(chunks[7][1]))
    finally:
        store.close()


def test_signed_urls_are_reused_by_object_and_range_up_to_max_urls(tmp_path, request, monkeypatch):
    """The same range located again gets the URL signed before (signing costs CPU), until MAX_URLS newer ones
    push it out. (A second apart, URLs signed anew differ: X-Amz-Date is in seconds.)"""
    monkeypatch.setattr(s3_store, "MAX_URLS", 2)
    store = S3(tmp_path, request).open()
    try:
        a, b, c = (frame_of(os.urandom(3000)) for _ in range(3))
        store.put([(ref.address, frame) for ref, frame in (a, b, c)])
        (first,) = store.locate([a[0].address])
        time.sleep(1.1)
        assert store.locate([a[0].address]) == [first]
        store.locate([b[0].address])
        store.locate([c[0].address])
        (again,) = store.locate([a[0].address])
        assert again.url != first.url and again.range_start == first.range_start
    finally:
        store.close()


# -- the reader: UrlChunks against real SeaweedFS and a real store's locate()


def test_located_chunks_are_fetched_by_their_signed_range():
    loc = [ChunkLocation(url, offset, 1, start, end)
           for url, offset, start, end in (("a", 5, 0, 10), ("b", 0, 0, 10), ("a", 0, 0, 10), ("a", 20, 20, 30))]
    located = [(ChunkRef(bytes([i]) * 32, 1), loc) for i, loc in enumerate(loc)]
    assert [(r.span, [ref.address[0] for ref, _ in r.chunks]) for r in runs(located)] == [
        (("a", 0, 10), [0, 2]), (("b", 0, 10), [1]), (("a", 20, 30), [3])]


class Stored:
    """Twenty small chunks put in a real S3 chunk store (one pack, in a bucket of SeaweedFS), and a locate() that is
    the store's, recording in `calls` what each call asked; `changed` replaces the location of a chunk."""

    def __init__(self, tmp_path, request) -> None:
        self.weed = request.getfixturevalue("seaweed")
        self.store = S3(tmp_path, request).open()
        self.bucket = self.store.bucket
        chunks = [frame_of(os.urandom(3000) + b"%d" % i) for i in range(20)]
        self.store.put([(ref.address, frame) for ref, frame in chunks])
        self.refs = [ref for ref, _ in chunks]
        self.plains = [compression.decompress(f, 1 << 20) for _, f in chunks]
        self.calls: list[list[bytes]] = []
        self.changed: dict[bytes, ChunkLocation | None] = {}
        self.before = gets(self.weed, self.bucket)  # the store's own requests at its start

    def locate(self, addresses: list[bytes]) -> list[ChunkLocation | None]:
        self.calls.append(addresses)
        return [self.changed.get(a, loc) for a, loc in zip(addresses, self.store.locate(addresses))]

    def gets(self, at_least: int) -> int:
        """The GETs of the bucket since the chunks were put, once there are AT_LEAST (SeaweedFS's count may lag)."""
        wait_for(lambda: gets(self.weed, self.bucket) - self.before >= at_least)
        return gets(self.weed, self.bucket) - self.before


@pytest.fixture
def stored(tmp_path, request):
    s = Stored(tmp_path, request)
    yield s
    s.store.close()


@pytest.fixture
def reader(stored):
    r = UrlChunks(stored.locate, f"s3://{stored.bucket}")
    yield r
    r.close()


def test_the_reader_fetches_a_run_in_one_get_locating_each_chunk_once(stored, reader):
    assert reader.read_many(stored.refs[::-1]) == stored.plains[::-1]  # in any order, one run: one GET
    assert stored.gets(1) == 1
    assert reader.read_many(stored.refs[:3]) == stored.plains[:3]  # located already; the run's GET again
    assert stored.gets(2) == 2
    assert [len(c) for c in stored.calls] == [20]


def test_chunks_expected_come_with_the_run_of_those_asked_for(stored, reader):
    """Located with the first chunk asked for, the rest of the pack is one run: its GET brings them all, kept
    until each is read, and let go once all are."""
    reader.expect(stored.refs[1:])
    assert reader.read_many(stored.refs[:1]) == stored.plains[:1]
    assert reader.read_many(stored.refs[1:10]) == stored.plains[1:10]
    assert reader.read_many(stored.refs[10:]) == stored.plains[10:]
    assert [len(c) for c in stored.calls] == [20]
    assert stored.gets(1) == 1
    assert reader.read_many(stored.refs[:1]) == stored.plains[:1]  # every chunk of the run taken: it was let go
    assert stored.gets(2) == 2


def test_readers_of_one_run_at_once_share_its_location_and_its_get(stored, reader):
    """Eight readers, each of one chunk of a run, at once (as a mount's read-ahead threads ask): one call locates
    them all (the others wait for it), and one GET brings them all (the others wait for it)."""
    reader.expect(stored.refs)
    start = threading.Barrier(8)
    got: dict[int, list] = {}

    def read(i: int) -> None:
        start.wait()
        got[i] = reader.read_many([stored.refs[i]])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {i: [stored.plains[i]] for i in range(8)}
    assert [len(c) for c in stored.calls] == [20]
    assert stored.gets(1) == 1


def test_a_location_that_fails_is_asked_for_again(stored, reader):
    """The object gone from where a location said (or a URL expired): those chunks come from the server this time,
    and are located afresh the next."""
    s3 = stored.weed.client()
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=stored.bucket)["Contents"]]
    pack = s3.get_object(Bucket=stored.bucket, Key=key)["Body"].read()
    assert reader.read_many(stored.refs[:2]) == stored.plains[:2]
    s3.delete_object(Bucket=stored.bucket, Key=key)
    assert reader.read_many(stored.refs[:2]) == [None, None]
    s3.put_object(Bucket=stored.bucket, Key=key, Body=pack)
    assert reader.read_many(stored.refs[:2]) == stored.plains[:2]
    assert [len(c) for c in stored.calls] == [2, 2]


def test_the_reader_refuses_what_is_not_right(stored, reader, caplog):
    refs = stored.refs
    places = dict(zip([r.address for r in refs], stored.store.locate([r.address for r in refs])))  # one run
    a, b, c, d, e, f, g, h, i = (r.address for r in refs[:9])
    url = places[a].url
    s3 = stored.weed.client()
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=stored.bucket)["Contents"]]
    end = sum(loc.length for loc in places.values())
    past_end = s3.generate_presigned_url(  # signed for a range past the object's end
        "get_object", Params={"Bucket": stored.bucket, "Key": key, "Range": f"bytes={end - 10}-{end + 89}"})
    stored.changed.update({
        a: dataclasses.replace(places[a], url=url.replace("Signature=", "Signature=0")),  # 403
        b: dataclasses.replace(places[b], offset=places[b].offset + 1),  # wrong bytes, in the range signed
        c: ChunkLocation(past_end, end - 10, 100, end - 10, end + 90),  # a short body
        d: None,  # the store lacks it
        e: dataclasses.replace(places[e], url=url.replace("/pfs/", "/p fs/")),  # http.client refuses it
        f: dataclasses.replace(places[f], url=url.replace("http:", "ftp:")),
        g: dataclasses.replace(places[g], range_start=0, range_end=0),  # an older server's: no signed range
        h: dataclasses.replace(places[h], range_end=places[h].offset + places[h].length - 1),  # not in its range
        i: dataclasses.replace(places[i], range_start=0, range_end=MAX_FRAME + 1),  # more than a GET may bring
    })
    stranger = frame_of(b"never stored")[0]
    refused = stored.weed.requests("").get("GET", 0)  # SeaweedFS counts a GET it refuses under no bucket
    with caplog.at_level(logging.WARNING, logger="pfs.vfs.url_chunks"):
        assert reader.read_many([*refs[:9], refs[12], stranger]) == [None] * 9 + [stored.plains[12], None]
    assert "name no signed range" in caplog.text
    assert stored.gets(3) == 3  # b's (its run of twenty), refs[12]'s (a run of its own in this call) and c's...
    wait_for(lambda: stored.weed.requests("").get("GET", 0) > refused)
    assert stored.weed.requests("").get("GET", 0) == refused + 1  # ...and a's: no GET of a range not signed (g, h, i)
    assert reader.read_many([ChunkRef(refs[15].address, 5)]) == [None]  # not the size its file lists


def test_a_store_that_cannot_be_reached_is_left_alone_for_a_while(seaweed):
    """A dead endpoint: the batch comes back None at once (refused), and later batches are not even located."""
    calls = []

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    def locate(addresses):
        calls.append(len(addresses))
        return [ChunkLocation(f"http://127.0.0.1:{port}/pack", 0, 10, 0, 10) for _ in addresses]

    ref = frame_of(b"x")[0]
    reader = UrlChunks(locate, "s3://bucket")
    try:
        assert reader.read_many([ref]) == [None]
        assert reader.read_many([ref]) == [None]
        assert calls == [1]
    finally:
        reader.close()


# -- LocateChunks on the wire


def test_locate_chunks_on_a_local_store_is_failed_precondition(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"data\n")
    with server.client() as client:
        refs = client.inspect_file(CommitRef("r", "master"), "f").chunks
        with pytest.raises(FailedPrecondition, match="gives no chunk locations"):
            client.locate_chunks(refs)
    with server.channel() as channel:
        stub = chunks_pb2_grpc.ChunksStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.LocateChunks(cpb.ChunkAddresses(addresses=[refs[0].address]))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        for addresses in ([b"short"], [bytes(32)] * (MAX_LOCATE + 1)):  # checked before the store is asked
            with pytest.raises(grpc.RpcError) as err:
                stub.LocateChunks(cpb.ChunkAddresses(addresses=addresses))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


def test_locate_chunks_on_an_s3_store_names_each_chunk_or_none(seaweed, tmp_path):
    server = s3_server(seaweed, tmp_path / "data")
    server.start()
    try:
        server.pfs("create-repo", "r")
        server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"data\n" * 1000)
        with server.client() as client:
            assert client.direct_read.kind == "url" and client.direct_read.root == f"s3://{bucket_of(server)}/pfs"
            refs = client.inspect_file(CommitRef("r", "master"), "f").chunks
            absent = [address(b"%d" % i) for i in range(MAX_LOCATE)]  # asked in two calls
            found = client.locate_chunks([*refs, *absent])
        assert found[len(refs):] == [None] * MAX_LOCATE
        reader = UrlChunks(lambda addresses: found[: len(addresses)], "")
        try:
            assert b"".join(reader.read_many(refs)) == b"data\n" * 1000  # each location fetches its chunk
        finally:
            reader.close()
    finally:
        server.stop()


def test_a_reader_of_one_repo_cannot_read_another_repos_chunks_in_the_same_pack(seaweed, tmp_path):
    """Two repos' files, their chunks put in one stream and so in one pack, interleaved: the locations a server gives
    for one repo's file read that file back, and with them SeaweedFS refuses the other's bytes and the pack."""
    ours = [frame_of(os.urandom(5000)) for _ in range(6)]
    theirs = [frame_of(b"secret %d " % i + os.urandom(5000)) for i in range(3)]
    layout = [ours[0], theirs[0], ours[1], ours[2], theirs[1], ours[3], ours[4], ours[5], theirs[2]]
    server = s3_server(seaweed, tmp_path / "data")
    server.start()
    try:
        with server.client() as client:
            assert client.put_chunks_async(iter([[(ref.address, f) for ref, f in layout]])).result().stored == 9
            for repo, chunks in (("ours", ours), ("theirs", theirs)):
                client.create_repo(repo)
                commit = client.start_commit(repo, "master")
                client.put_files(CommitRef(repo, commit.id), [FileWrite("f", tuple(ref for ref, _ in chunks))])
                client.finish_commit(CommitRef(repo, commit.id))
            refs = client.inspect_file(CommitRef("ours", "master"), "f").chunks
            located = client.locate_chunks(refs)
        s3 = seaweed.client()
        (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_of(server), Prefix="pfs/packs/")["Contents"]]
        pack = s3.get_object(Bucket=bucket_of(server), Key=key)["Body"].read()
        secrets = [(pack.index(frame), len(frame)) for _, frame in theirs]
        assert len(spans(located)) == 3  # ours[0]; ours[1:3]; ours[3:6]
        for (url, start, end), run in spans(located).items():
            assert not any(start < offset + length and offset < end for offset, length in secrets)
            assert_gives_only(url, start, end, pack, secrets)
        reader = UrlChunks(lambda addresses: located[: len(addresses)], "")
        try:
            assert reader.read_many(refs) == [compression.decompress(f, 1 << 20) for _, f in ours]
        finally:
            reader.close()
    finally:
        server.stop()


# -- mounts and workers of an S3-backed server


@pytest.mark.slow
@MOUNTS
def test_a_mount_reads_chunks_from_the_bucket_not_through_the_server(seaweed, tmp_path):
    files = {"big.bin": random.Random(2).randbytes(3 << 20), **small_files(30)}
    server = serving(seaweed, tmp_path, files, NO_CACHE)
    try:
        with mounted(server, tmp_path / "mnt"):
            assert read_tree(tmp_path / "mnt" / "r" / "master", files) == files
        said = (tmp_path / "mount-mnt.log").read_text()
        assert f"chunks read from s3://{bucket_of(server)}/pfs" in said and "WARNING" not in said, said
    finally:
        server.stop()
    assert server_gets(server) == 0  # ...and with no cache, the server could not have sent a chunk without one

    server.start()  # the same store read through the server: the count that could have been
    try:
        with mounted(server, tmp_path / "through", "--no-direct"):
            assert read_tree(tmp_path / "through" / "r" / "master", files) == files
    finally:
        server.stop()
    assert server_gets(server) > 0


@pytest.mark.slow
@MOUNTS
def test_a_directory_of_small_files_is_read_with_few_gets(seaweed, tmp_path):
    files = small_files(400)
    server = serving(seaweed, tmp_path, files, NO_CACHE)
    try:
        before = gets(seaweed, bucket_of(server))
        with mounted(server, tmp_path / "mnt"):
            assert read_tree(tmp_path / "mnt" / "r" / "master", sorted(files)) == files  # one by one, in order
        mount_gets = gets(seaweed, bucket_of(server)) - before
    finally:
        server.stop()
    assert server_gets(server) == 0  # every GET was the mount's
    assert 0 < mount_gets <= len(files) // 10, mount_gets  # 13 here: a GET per batch of the files read next


@pytest.mark.slow
@MOUNTS
def test_a_large_file_is_read_in_few_gets(seaweed, tmp_path):
    """A reader of a large file locates its next chunks a thousand at a time, from its first read on: they come in
    runs of up to URL_RANGE bytes, each one GET however many of the kernel's reads and the mount's read-ahead want
    its chunks at once."""
    data = random.Random(4).randbytes(12 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    server = s3_server(seaweed, tmp_path / "data", chunk_size=64 << 10, args=NO_CACHE)
    server.start()
    try:
        server.pfs("create-repo", "r")
        server.pfs("put-file", "r", "master", "big.bin", "-c", "-f", str(tmp_path / "big.bin"))
        with server.client() as client:
            chunks = len(client.inspect_file(CommitRef("r", "master"), "big.bin").chunks)
        before = gets(seaweed, bucket_of(server))
        with mounted(server, tmp_path / "mnt"):
            assert (tmp_path / "mnt" / "r" / "master" / "big.bin").read_bytes() == data
        mount_gets = gets(seaweed, bucket_of(server)) - before
    finally:
        server.stop()
    assert server_gets(server) == 0
    # runs of URL_RANGE (4 MiB) less a chunk at most: a GET a chunk would be a hundred and more
    assert chunks > 100 and 0 < mount_gets <= len(data) // (2 << 20), (chunks, mount_gets)


@pytest.mark.slow
@MOUNTS
def test_corrupt_objects_in_the_bucket_are_read_through_the_server(seaweed, tmp_path):
    """The server's cache holds what it wrote; the bucket's objects are then spoilt: each chunk fails its check
    from the URL and comes from the server instead, right."""
    files = {"big.bin": random.Random(3).randbytes(2 << 20), **small_files(10)}
    server = serving(seaweed, tmp_path, files)
    try:
        s3 = seaweed.client()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_of(server), Prefix="pfs/packs/")["Contents"]]
        for key in keys:
            body = s3.get_object(Bucket=bucket_of(server), Key=key)["Body"].read()
            s3.put_object(Bucket=bucket_of(server), Key=key, Body=bytes(x ^ 0xFF for x in body))
        with mounted(server, tmp_path / "mnt"):
            assert read_tree(tmp_path / "mnt" / "r" / "master", files) == files
        said = (tmp_path / "mount-mnt.log").read_text()
        assert "corrupt" in said and "reading it through the server" in said, said
    finally:
        server.stop()


@pytest.mark.slow
@MOUNTS
def test_a_bucket_out_of_reach_is_read_through_the_server(own_seaweed, tmp_path):
    """SeaweedFS stopped after the upload: the URLs lead nowhere, the server's cache still has every chunk."""
    files = small_files(20)
    server = serving(own_seaweed, tmp_path, files)
    try:
        own_seaweed.kill()
        with mounted(server, tmp_path / "mnt"):
            assert read_tree(tmp_path / "mnt" / "r" / "master", files) == files
        said = (tmp_path / "mount-mnt.log").read_text()
        assert f"cannot reach 127.0.0.1:{own_seaweed.ports['s3']}" in said, said
    finally:
        server.kill()  # its bucket is gone: no clean shutdown to wait for


@pytest.mark.slow
@needs("fusermount3", "setpriv", root=True, fuse=True)
def test_workers_read_their_inputs_from_the_bucket(seaweed, tmp_path):
    """The shim's mounts are `pfs mount`s: a map pipeline at parallelism 2 reads its input with no GET by the server."""
    files = {f"{i}.txt": b"%d\n" % i * 1000 for i in range(8)}
    server = s3_server(seaweed, tmp_path / "data", args=NO_CACHE)
    server.start()
    try:
        server.pfs("create-repo", "nums")
        for path, data in files.items():
            server.pfs("put-file", "nums", "master", path, "-c", "-f", "-", input=data)
        count = "find /pfs/nums -type f -exec cat {} + | wc -l > /pfs/out/lines-$PFS_SHARD"
        manifest = {"pipeline": {"name": "count"}, "parallelism": 2, "transform": {"cmd": ["sh", "-c", count]},
                    "inputs": [{"repo": {"name": "nums"}, "method": "reduce"}]}
        (tmp_path / "count.json").write_text(json.dumps(manifest))
        server.pfs("create-pipeline", "-f", str(tmp_path / "count.json"))
        assert "success" in server.pfs("flush-commit", "nums/master").text
    finally:
        server.stop()
    assert server_gets(server) == 0  # the workers' mounts fetched every input chunk themselves

    server.start()
    try:
        with server.client() as client:
            outputs = [f.path for f in client.list_files(CommitRef("count", "master"))]
            lines = sum(int(b"".join(client.read_file(CommitRef("count", "master"), p))) for p in outputs)
        assert lines == 8000
    finally:
        server.stop()
