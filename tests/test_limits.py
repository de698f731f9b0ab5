"""A chunk is at most MAX_CHUNK_SIZE bytes: frames that say more (or nothing) are refused before they are
decompressed, over raw gRPC as a hostile client would send them, and the server's memory stays small."""

import io
import struct

import blake3
import grpc
import pytest
import zstandard

from pfs.core import compression, frames
from pfs.core.chunking import MAX_CHUNK_SIZE, Chunker
from pfs.core.errors import DataLoss, InvalidArgument
from pfs.core.hashing import address
from pfs.core.model import MAX_WRITE_LEVELS, MAX_WRITES, ChunkRef, CommitRef, FileWrite, write_calls
from pfs.core.model import levels as model_levels
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pfs_pb2_grpc

MAX_SERVER_RSS = 400 << 20


def zeros_frame(size: int) -> tuple[bytes, bytes]:
    """A real frame of SIZE zero bytes, with its size in its header, and the address of those bytes."""
    out = io.BytesIO()
    hasher = blake3.blake3()
    piece = bytes(1 << 20)
    with zstandard.ZstdCompressor(level=1).stream_writer(out, size=size, closefd=False) as w:
        for _ in range(size // len(piece)):
            w.write(piece)
            hasher.update(piece)
    return hasher.digest(), out.getvalue()


def forged_frame(declared: int, data: bytes) -> bytes:
    """A frame holding DATA in one raw block whose header says DECLARED bytes."""
    header = struct.pack("<IB", 0xFD2FB528, 0b11_1_0_0_0_00) + struct.pack("<Q", declared)  # 8-byte size, one segment
    block = struct.pack("<I", (len(data) << 3) | 1)[:3] + data  # the last block, raw
    return header + block


def unsized_frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=False).compress(data)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        kib = next(line for line in f if line.startswith("VmRSS:")).split()[1]
    return int(kib) << 10


@pytest.fixture
def stubs(server):
    channel = server.channel(options=(("grpc.max_send_message_length", 256 << 20),))
    yield chunks_pb2_grpc.ChunksStub(channel), pfs_pb2_grpc.APIStub(channel)
    channel.close()


def put_chunk(chunks: chunks_pb2_grpc.ChunksStub, addr: bytes, frame: bytes) -> grpc.RpcError:
    batch = cpb.ChunkBatch(chunks=[cpb.ChunkData(address=addr, compressed=frame)])
    with pytest.raises(grpc.RpcError) as err:
        chunks.PutChunks(iter([batch]))
    return err.value


def assert_refused(err: grpc.RpcError, *fragments: str) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "\n" not in err.details() and "Traceback" not in err.details()
    for f in fragments:
        assert f in err.details(), (f, err.details())


def test_every_chunk_our_chunker_cuts_fits():
    chunker = Chunker(4 << 20)
    assert chunker.max_size + chunker.max_line <= MAX_CHUNK_SIZE
    with pytest.raises(ValueError, match="too large"):
        Chunker(MAX_CHUNK_SIZE)


def test_server_refuses_an_oversized_frame_without_growing(server, stubs):
    chunks, _ = stubs
    addr, frame = zeros_frame(2 << 30)  # 2 GiB of zeros, its true address, in about 65 KB
    assert len(frame) < 1 << 20
    assert_refused(put_chunk(chunks, addr, frame), addr.hex(), str(2 << 30), str(MAX_CHUNK_SIZE))
    forged = forged_frame(1 << 40, b"x" * 100)
    assert_refused(put_chunk(chunks, address(b"x" * 100), forged), str(1 << 40))
    assert_refused(put_chunk(chunks, address(b"y"), unsized_frame(b"y")), "does not say its size")
    assert rss(server.proc.pid) < MAX_SERVER_RSS
    stored = chunks.MissingChunks(cpb.ChunkAddresses(addresses=[addr, address(b"x" * 100), address(b"y")]))
    assert len(stored.addresses) == 3  # none of them was kept


def test_server_takes_a_chunk_of_the_bound(server, stubs):
    chunks, _ = stubs
    addr, frame = zeros_frame(MAX_CHUNK_SIZE)
    batch = cpb.ChunkBatch(chunks=[cpb.ChunkData(address=addr, compressed=frame)])
    assert chunks.PutChunks(iter([batch])).stored == 1


def test_server_refuses_a_file_of_an_oversized_chunk(server, stubs):
    _, api = stubs
    server.pfs("create-repo", "r")
    commit = server.pfs("start-commit", "r").text.strip()
    data = b"hello\n"
    server.pfs("put-file", "r", commit, "real", "-f", "-", input=data)
    (ref,) = server.client().inspect_file(CommitRef("r", commit), "real").chunks
    write = pb.FileWrite(path="huge", chunks=[cpb.ChunkRef(address=ref.address, size=MAX_CHUNK_SIZE + 1)])
    with pytest.raises(grpc.RpcError) as err:
        api.PutFiles(pb.PutFilesRequest(commit=pb.CommitRef(repo="r", ref=commit), files=[write]))
    assert_refused(err.value, ref.address.hex(), str(MAX_CHUNK_SIZE + 1))


def test_server_refuses_calls_larger_than_any_client_sends_before_it_reads_them(server, stubs):
    chunks, api = stubs
    server.pfs("create-repo", "r")
    commit = pb.CommitRef(repo="r", ref=server.pfs("start-commit", "r").text.strip())
    too_many = [pb.FileWrite(path=f"f{i}", directory=True) for i in range(MAX_WRITES + 1)]
    with pytest.raises(grpc.RpcError) as err:
        api.PutFiles(pb.PutFilesRequest(commit=commit, files=too_many))
    assert_refused(err.value, f"{MAX_WRITES + 1} files in one call", f"at most {MAX_WRITES}")
    api.PutFiles(pb.PutFilesRequest(commit=commit, files=too_many[:MAX_WRITES]))  # as many as a client sends
    data = b"y" * 1000
    padded = cpb.ChunkData(address=address(data), compressed=compression.compress(data) + bytes(100 << 20))
    with pytest.raises(grpc.RpcError) as err:  # too large to be read at all, whatever it holds
        chunks.PutChunks(iter([cpb.ChunkBatch(chunks=[padded])]))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
    assert rss(server.proc.pid) < MAX_SERVER_RSS
    assert len(server.pfs("list-file", "r", commit.ref).text.splitlines()) == MAX_WRITES + 1  # and a header


def test_a_call_records_files_of_so_many_levels_at_most_and_a_deep_tree_is_put_in_more_calls(server, stubs,
                                                                                               tmp_path):
    """Each level of a path is a directory a call may make: 10,000 files 256 levels deep, each in directories of
    its own, held the metadata (and every other caller) for 52 s. A call of more levels is refused before it is
    read; put-file -r sends a deep tree in as many calls as that takes."""
    _, api = stubs
    server.pfs("create-repo", "r")
    commit = pb.CommitRef(repo="r", ref=server.pfs("start-commit", "r").text.strip())
    deep = "/".join(["d"] * 200)
    too_deep = [pb.FileWrite(path=f"{i}/{deep}", directory=True) for i in range(MAX_WRITE_LEVELS // 201 + 1)]
    with pytest.raises(grpc.RpcError) as err:
        api.PutFiles(pb.PutFilesRequest(commit=commit, files=too_deep))
    levels = len(too_deep) * 201
    assert_refused(err.value, f"{levels} levels together", f"at most {MAX_WRITE_LEVELS}")
    server.pfs("finish-commit", "r", commit.ref)
    tree = tmp_path.joinpath(*["d"] * 240)
    tree.mkdir(parents=True)
    for i in range(700):  # 700 x 241 levels: more than a call records
        (tree / f"f{i}").write_bytes(b"%d\n" % i)
    server.pfs("put-file", "r", "master", "-r", "-c", "-f", str(tmp_path / "d"), "d")
    assert server.pfs("get-file", "r", "master", "/".join(["d"] * 240) + "/f699").stdout == b"699\n"
    assert len(server.pfs("list-file", "r", "master", "/".join(["d"] * 240)).text.splitlines()) == 701


def test_write_calls_hold_so_many_files_and_levels_at_most():
    writes = [FileWrite(f"f{i}", ()) for i in range(2 * MAX_WRITES + 1)] + [FileWrite("/".join(["d"] * 200), ())] * 1000
    runs = list(write_calls(writes))
    assert [w for run in runs for w in run] == writes
    assert all(len(run) <= MAX_WRITES and sum(map(model_levels, (w.path for w in run))) <= MAX_WRITE_LEVELS
               for run in runs)
    assert [len(run) for run in runs] == [MAX_WRITES, MAX_WRITES, 1 + 799, 201]


def test_readers_refuse_oversized_frames_and_refs(server):
    forged = forged_frame(1 << 40, b"x" * 100)
    with pytest.raises(DataLoss, match=str(1 << 40)):
        frames.unpack(ChunkRef(address(b"x" * 100), 100), forged)
    with pytest.raises(DataLoss, match="does not say its size"):
        frames.unpack(ChunkRef(address(b"y"), 1), unsized_frame(b"y"))
    with pytest.raises(InvalidArgument):
        frames.check(address(b"x" * 100), forged)
    with pytest.raises(compression.TooLarge):
        compression.decompress(compression.compress(b"z" * 101), 100)
    with server.client() as client, pytest.raises(DataLoss, match="more than"):
        list(client.read_chunks([ChunkRef(address(b"x"), MAX_CHUNK_SIZE + 1)]))


@pytest.mark.slow
def test_the_server_s_cache_of_directories_is_bounded_by_their_entries(server):
    """Each commit that changes a file of a large directory makes a new version of it, which the server decodes
    and caches: bounded by versions, 400 of a directory of 3,000 files took the server up 330 MB."""
    from pfs.client.upload import into_commit
    from test_streams import proc_status

    with server.client() as client:
        client.create_repo("r")
        commit = client.start_commit("r", "master").id
        with into_commit(client, CommitRef("r", commit)) as up:
            for i in range(3000):
                up.put(f"d/f{i:04}", io.BytesIO(b"x\n"))
        client.finish_commit(CommitRef("r", commit))
        before = proc_status(server.proc.pid, "VmRSS") / 1024
        for i in range(400):
            commit = client.start_commit("r", "master").id
            with into_commit(client, CommitRef("r", commit)) as up:
                up.put(f"d/f{i:04}", io.BytesIO(f"{i}\n".encode()), overwrite=True)
            client.finish_commit(CommitRef("r", commit))
    grown = proc_status(server.proc.pid, "VmRSS") / 1024 - before
    print(f"the server's memory grew {grown:.0f} MiB")
    assert grown < 200
