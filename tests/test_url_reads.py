"""Direct reads through URLs (DirectRead kind "url"): mounts and workers of a server whose chunks are in S3 fetch
them from the bucket with presigned URLs, packed small chunks coalesced into few GETs, and any chunk a URL does
not give right is read through the server. Real SeaweedFS, real servers, real mounts; the counts that prove who
read what are the server's own (its S3 requests, logged at shutdown) and SeaweedFS's (its metrics)."""

import json
import os
import random
import re
import socket

import grpc
import pytest

from conftest import Server, needs, s3_server, wait_for
from pfs.core import compression
from pfs.core.errors import FailedPrecondition
from pfs.core.hashing import address
from pfs.core.model import MAX_LOCATE, ChunkLocation, ChunkRef, CommitRef
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.vfs.url_chunks import MAX_GAP, MAX_RANGE, UrlChunks, coalesce
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


# -- coalescing: which chunks one GET fetches


def located(*places: tuple[str, int, int]) -> list[tuple[ChunkRef, ChunkLocation]]:
    return [(ChunkRef(bytes([i]) * 32, 1), ChunkLocation(url, offset, length))
            for i, (url, offset, length) in enumerate(places)]


def spans(runs) -> list[tuple[str, int, int, int]]:
    return [(r.url, r.start, r.end, len(r.chunks)) for r in runs]


def test_chunks_of_one_object_close_together_share_a_get():
    assert spans(coalesce(located(("a", 100, 50), ("a", 0, 100), ("a", 150 + MAX_GAP, 10)))) == [
        ("a", 0, 160 + MAX_GAP, 3)]  # in any order; a gap of MAX_GAP is read through


def test_a_wider_gap_another_object_or_a_long_range_starts_another_get():
    assert spans(coalesce(located(("a", 0, 100), ("a", 101 + MAX_GAP, 10)))) == [
        ("a", 0, 100, 1), ("a", 101 + MAX_GAP, 111 + MAX_GAP, 1)]
    assert spans(coalesce(located(("b", 0, 100), ("a", 100, 100)))) == [("a", 100, 200, 1), ("b", 0, 100, 1)]
    half = MAX_RANGE // 2
    assert spans(coalesce(located(("a", 0, half), ("a", half, half), ("a", 2 * half, 1)))) == [
        ("a", 0, 2 * half, 2), ("a", 2 * half, 2 * half + 1, 1)]
    assert spans(coalesce(located(("a", 0, 2 * MAX_RANGE)))) == [("a", 0, 2 * MAX_RANGE, 1)]  # a large chunk alone


# -- the reader against real SeaweedFS, with URLs presigned here (a store's locate() makes the same)


@pytest.fixture
def bucket(seaweed):
    name = seaweed.make_bucket()
    yield name


def frame_of(plain: bytes) -> tuple[ChunkRef, bytes]:
    return ChunkRef(address(plain), len(plain)), compression.compress(plain)


class Pack:
    """Twenty small chunks in one object of BUCKET, and a locate() that says where each is (as a store's would:
    one presigned URL for the object); `places` may be changed, and `calls` holds what each call asked."""

    def __init__(self, seaweed, bucket: str, key: str = "pack") -> None:
        self.s3, self.bucket = seaweed.client(), bucket
        chunks = [frame_of(os.urandom(3000) + b"%d" % i) for i in range(20)]
        self.data = b"".join(f for _, f in chunks)
        self.refs = [ref for ref, _ in chunks]
        self.plains = [compression.decompress(f, 1 << 20) for _, f in chunks]
        self.places: dict[bytes, ChunkLocation] = {}
        self.calls: list[list[bytes]] = []
        self.put(key)

    def put(self, key: str) -> None:
        """The pack (again) at KEY; the places point there."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=self.data)
        self.url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=300)
        offset = 0
        for ref, plain in zip(self.refs, self.plains):
            length = len(compression.compress(plain))
            self.places[ref.address] = ChunkLocation(self.url, offset, length)
            offset += length

    def locate(self, addresses: list[bytes]) -> list[ChunkLocation | None]:
        self.calls.append(addresses)
        return [self.places.get(a) for a in addresses]


@pytest.fixture
def pack(seaweed, bucket):
    return Pack(seaweed, bucket)


def test_the_reader_fetches_a_pack_in_one_get_locating_each_chunk_once(seaweed, bucket, pack):
    reader = UrlChunks(pack.locate, f"s3://{bucket}")
    try:
        before = gets(seaweed, bucket)
        assert reader.read_many(pack.refs[::-1]) == pack.plains[::-1]  # in any order, a pack's chunks in one GET
        assert reader.read_many(pack.refs[:3]) == pack.plains[:3]  # located already
        wait_for(lambda: gets(seaweed, bucket) - before >= 2)
        assert gets(seaweed, bucket) - before == 2
        assert [len(c) for c in pack.calls] == [20]
    finally:
        reader.close()


def test_chunks_expected_are_located_with_the_next_ones_asked_for(bucket, pack):
    reader = UrlChunks(pack.locate, f"s3://{bucket}")
    try:
        reader.expect(pack.refs[1:])
        assert reader.read_many(pack.refs[:1]) == pack.plains[:1]
        assert reader.read_many(pack.refs[1:]) == pack.plains[1:]
        assert [len(c) for c in pack.calls] == [20]
    finally:
        reader.close()


def test_a_location_that_fails_is_asked_for_again(seaweed, bucket, pack):
    """An object gone from where a location said (or a URL expired): those chunks come from the server this time,
    and are located afresh the next."""
    reader = UrlChunks(pack.locate, f"s3://{bucket}")
    try:
        assert reader.read_many(pack.refs[:2]) == pack.plains[:2]
        pack.s3.delete_object(Bucket=bucket, Key="pack")
        pack.put("moved")
        assert reader.read_many(pack.refs[:2]) == [None, None]
        assert reader.read_many(pack.refs[:2]) == pack.plains[:2]
        assert [len(c) for c in pack.calls] == [2, 2]
    finally:
        reader.close()


def test_the_reader_refuses_what_is_not_right(bucket, pack):
    reader = UrlChunks(pack.locate, f"s3://{bucket}")
    refs, places, url = pack.refs, pack.places, pack.url
    a, b, c, d, e, f = refs[:6]
    places[a.address] = ChunkLocation(url.replace("Signature=", "Signature=0"), 0, places[a.address].length)  # 403
    places[b.address] = ChunkLocation(url, places[b.address].offset + 1, places[b.address].length)  # wrong bytes
    places[c.address] = ChunkLocation(url, len(pack.data) - 10, 100)  # past the object's end
    del places[d.address]  # the store lacks it
    places[e.address] = ChunkLocation(url.replace("/pack?", "/pa ck?"), 0, 10)  # http.client refuses it
    places[f.address] = ChunkLocation(url.replace("http:", "ftp:"), 0, 10)
    stranger = frame_of(b"never stored")[0]
    try:
        assert reader.read_many([a, b, c, d, e, f, refs[7], stranger]) == [None] * 6 + [pack.plains[7], None]
        assert reader.read_many([ChunkRef(refs[9].address, 5)]) == [None]  # not the size its file lists
    finally:
        reader.close()


def test_a_store_that_cannot_be_reached_is_left_alone_for_a_while(seaweed, bucket):
    """A dead endpoint: the batch comes back None at once (refused), and later batches are not even located."""
    calls = []

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    def locate(addresses):
        calls.append(len(addresses))
        return [ChunkLocation(f"http://127.0.0.1:{port}/pack", 0, 10) for _ in addresses]

    ref = frame_of(b"x")[0]
    reader = UrlChunks(locate, f"s3://{bucket}")
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
def test_corrupt_objects_in_the_bucket_are_read_through_the_server(seaweed, tmp_path):
    """The server's cache holds what it wrote; the bucket's objects are then spoilt: each chunk fails its check
    from the URL and comes from the server instead, right."""
    files = {"big.bin": random.Random(3).randbytes(2 << 20), **small_files(10)}
    server = serving(seaweed, tmp_path, files)
    try:
        s3 = seaweed.client()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_of(server))["Contents"]]
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
