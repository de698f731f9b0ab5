"""Every RPC checks what it is sent, whoever sends it: bad values over raw gRPC (the generated stubs, not the
client or the CLI, which check first) get a one-line refusal, never INTERNAL, and leave no traceback.

And a file's size is that of its chunks as stored, never what a client says they hold.
"""

import grpc
import pytest

from conftest import put_commit
from pfs.core.compression import compress
from pfs.core.hashing import address
from pfs.core.model import CommitRef
from pfs.core.paths import MAX_DEPTH
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc, pfs_pb2_grpc, pps_pb2_grpc
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pps_pb2 as ppb
from test_fuzz import assert_no_traceback

INVALID = {grpc.StatusCode.INVALID_ARGUMENT}
LOOKUP = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}  # a name that cannot exist is not found
PLAIN = b"a hundred bytes, " * 6 + b"end!"[:4]
FRAME, ADDR = compress(PLAIN), address(PLAIN)
MAX_MESSAGE = 1000  # characters of a status message: a refusal names the value, but not all 5,000 digits of it


def ref(r: str, repo: str = "data") -> pb.CommitRef:
    return pb.CommitRef(repo=repo, ref=r)


def chunk(addr: bytes = ADDR, size: int = len(PLAIN)) -> cpb.ChunkRef:
    return cpb.ChunkRef(address=addr, size=size)


def write(path: str = "f", *chunks: cpb.ChunkRef) -> pb.FileWrite:
    return pb.FileWrite(path=path, chunks=list(chunks) or [chunk()])


def log(**fields) -> ppb.LogLine:
    return ppb.LogLine(**{"job": "0" * 32, "shard": 0, "time": 1.0, "stream": "stdout", "text": "hi"} | fields)


BAD_REFS = ["", "master~" + "9" * 5000, "master~-1", "~1", "master^~", "master" + "^" * 10_000, "a\0b"]
DEEP = "/".join(["d"] * 1000) + "/f"
BAD_PATHS = [DEEP, "x" * 5000, "a/" + "n" * 300, "a/../b", "a\0b"]

# (service, method, request, the codes that are an honest answer)
TABLE = [
    ("api", "CreateRepo", pb.CreateRepoRequest(name=""), INVALID),
    ("api", "CreateRepo", pb.CreateRepoRequest(name="a/b"), INVALID),
    ("api", "CreateRepo", pb.CreateRepoRequest(name="x" * 100_000), INVALID),
    ("api", "CreateRepo", pb.CreateRepoRequest(name="ok", description="d" * 200_000), INVALID),
    ("api", "InspectRepo", pb.RepoRequest(name="x" * 100_000), LOOKUP),
    ("api", "DeleteRepo", pb.RepoRequest(name=""), LOOKUP),
    ("api", "ListBranch", pb.RepoRequest(name="\0"), LOOKUP),
    ("api", "StartCommit", pb.StartCommitRequest(repo="data", branch="a b"), INVALID),
    ("api", "StartCommit", pb.StartCommitRequest(repo="data", branch="x" * 100), INVALID),
    *[("api", "StartCommit", pb.StartCommitRequest(repo="data", parent=r), LOOKUP) for r in BAD_REFS[1:]],
    *[("api", "StartCommit", pb.StartCommitRequest(repo="data", provenance=[ref(r)]), LOOKUP) for r in BAD_REFS],
    *[("api", m, ref(r), LOOKUP) for m in ("FinishCommit", "InspectCommit", "DeleteCommit") for r in BAD_REFS],
    ("api", "InspectCommit", ref("master", repo=""), LOOKUP),
    ("api", "ListCommit", pb.ListCommitRequest(repo="data", limit=-1), INVALID),
    ("api", "SubscribeCommit", pb.SubscribeCommitRequest(repo="data", branch="no such/branch"), INVALID),
    ("api", "SetBranch", pb.SetBranchRequest(commit=ref("master"), branch=""), INVALID),
    ("api", "SetBranch", pb.SetBranchRequest(commit=ref("master~" + "9" * 5000), branch="b"), LOOKUP),
    *[("api", "PutFiles", pb.PutFilesRequest(commit=ref("master"), files=[write(p)]), INVALID)
      for p in BAD_PATHS + [""]],
    *[("api", "PutFiles", pb.PutFilesRequest(commit=ref("master"), files=[write("f", c)]), INVALID) for c in [
        chunk(addr=b""), chunk(addr=ADDR[:31]), chunk(addr=ADDR + b"x"), chunk(size=-1), chunk(size=2**62),
        chunk(size=12_345), chunk(size=len(PLAIN) - 1)]],
    *[("api", m, pb.FileRequest(commit=ref("master"), path=p), LOOKUP)
      for m in ("InspectFile", "ListFile", "DeleteFile") for p in BAD_PATHS],
    *[("api", m, pb.FileRequest(commit=ref(r), path="f"), LOOKUP)
      for m in ("InspectFile", "ListFile") for r in BAD_REFS],
    ("api", "ListFile", pb.FileRequest(commit=ref("master"), limit=2**64 - 1), INVALID),
    ("api", "ListFile", pb.FileRequest(commit=ref("master"), incremental="bogus"), INVALID),
    ("api", "ListFile", pb.FileRequest(commit=ref("master"), since="master~" + "9" * 5000), LOOKUP),
    *[("chunks", "MissingChunks", cpb.ChunkAddresses(addresses=[a]), INVALID) for a in (b"", ADDR[:5], ADDR * 2)],
    *[("chunks", "GetChunks", cpb.ChunkAddresses(addresses=[a]), INVALID) for a in (b"", ADDR[:31], ADDR * 2)],
    ("chunks", "PutChunks", cpb.ChunkBatch(chunks=[cpb.ChunkData(address=b"", compressed=FRAME)]), INVALID),
    ("chunks", "PutChunks", cpb.ChunkBatch(chunks=[cpb.ChunkData(address=ADDR[:8], compressed=FRAME)]), INVALID),
    ("pps", "CreatePipeline", ppb.CreatePipelineRequest(spec=ppb.PipelineSpec(
        name="p", transform=ppb.Transform(cmd=["sh"]), inputs=[ppb.InputSpec(repo="data", ref="master",
                                                                            method="bogus")])), INVALID),
    ("pps", "CreateJob", ppb.CreateJobRequest(transform=ppb.Transform(cmd=[]), inputs=[
        ppb.InputSpec(repo="data", ref="master", method="map")]), INVALID),
    ("pps", "InspectPipeline", ppb.PipelineRequest(name="x" * 100_000), LOOKUP),
    ("pps", "FlushCommit", ref("master~" + "9" * 5000), LOOKUP),
    ("pps", "InspectJob", ppb.JobRequest(id=""), LOOKUP),
    ("pps", "StartShard", ppb.ShardRequest(job="0" * 32, shard=-1), LOOKUP),
    ("pps", "PutShardFiles", ppb.ShardFiles(job="0" * 32, shard=-1, attempt=1, files=[write()]), LOOKUP),
    ("pps", "PutShardFiles", ppb.ShardFiles(job="0" * 32, shard=0, attempt=-1, files=[write()]), LOOKUP),
    *[("pps", "PutShardFiles", ppb.ShardFiles(job="0" * 32, shard=0, attempt=1, files=[write(p)]), INVALID)
      for p in BAD_PATHS],
    *[("pps", "PutShardFiles", ppb.ShardFiles(job="0" * 32, shard=0, attempt=1, files=[write("f", c)]), INVALID)
      for c in (chunk(addr=b""), chunk(size=-1), chunk(size=12_345))],
    *[("pps", "FinishShard", ppb.ShardResult(job="0" * 32, shard=0, attempt=1, **bad), INVALID) for bad in (
        {"bytes_in": -1}, {"bytes_out": -1}, {"bytes_sent": -5}, {"mounted": float("nan")},
        {"uploaded": float("inf")}, {"error": "e" * 200_000})],
    ("pps", "FinishShard", ppb.ShardResult(job="0" * 32, shard=-1, attempt=1), LOOKUP),
    *[("pps", "PutLogs", ppb.LogLines(lines=[log(**bad)]), INVALID) for bad in (
        {"time": float("nan")}, {"time": float("inf")}, {"time": float("-inf")}, {"stream": "bogus"},
        {"stream": ""}, {"text": "t" * 200_000}, {"shard": -1}, {"text": "a\0b"})],
    ("pps", "GetLogs", ppb.LogRequest(job="x" * 100_000), LOOKUP),
    ("pps", "GetLogs", ppb.LogRequest(job="x" * 100_000, follow=True), LOOKUP),
    ("pps", "GetLogs", ppb.LogRequest(pipeline="p", tail=-1), INVALID),
    ("api", "StartCommit", pb.StartCommitRequest(repo="data", description="d" * 200_000), INVALID),
    ("api", "StartCommit", pb.StartCommitRequest(repo="data", description="a\0b"), INVALID),
    ("api", "CreateRepo", pb.CreateRepoRequest(name="ok", description="a\0b"), INVALID),
    ("api", "FinishCommit", pb.FinishCommitRequest(repo="data", ref="master", description="d" * 200_000), INVALID),
]


@pytest.fixture
def stubs(server):
    with server.client() as client:
        client.create_repo("data")
        put_commit(client, "data", {"f": b"hello\n"})
        client.put_chunks_async(iter([[(ADDR, FRAME)]])).result()
    with server.channel() as channel:
        yield {"api": pfs_pb2_grpc.APIStub(channel), "chunks": chunks_pb2_grpc.ChunksStub(channel),
               "pps": pps_pb2_grpc.PPSStub(channel)}


def call(stub, method: str, request) -> grpc.RpcError | None:
    """Sends REQUEST to METHOD (as the one message of a request stream, or reading every answer of a response
    stream); the error it ends with, or None."""
    rpc = getattr(stub, method)
    try:
        if method == "PutChunks":
            rpc(iter([request]), timeout=10)
        elif method in ("SubscribeCommit", "ListFile", "GetChunks", "GetLogs"):
            list(rpc(request, timeout=10))
        else:
            rpc(request, timeout=10)
    except grpc.RpcError as err:
        return err
    return None


def test_each_rpc_refuses_bad_values_in_one_line(server, stubs):
    wrong = []
    for service, method, request, codes in TABLE:
        err = call(stubs[service], method, request)
        code, details = (err.code(), err.details() or "") if err else (grpc.StatusCode.OK, "")
        if code not in codes or "\n" in details or not details or len(details) > MAX_MESSAGE:
            wrong.append(f"{method}({str(request)[:120]!r}): {code.name} {details[:300]!r}")
    assert not wrong, "\n".join(wrong)
    assert server.proc.poll() is None
    assert_no_traceback(server)


def test_values_at_the_bounds_are_taken(server, stubs):
    """A path MAX_DEPTH deep and a long ancestor step: what the checks allow works; one level more does not."""
    api = stubs["api"]
    deep = "/".join(["d"] * (MAX_DEPTH - 1)) + "/f"
    commit = api.StartCommit(pb.StartCommitRequest(repo="data"))
    err = call(api, "PutFiles", pb.PutFilesRequest(commit=ref(commit.id), files=[write("d/" + deep)]))
    assert err and err.code() == grpc.StatusCode.INVALID_ARGUMENT and "deep" in err.details(), err
    api.PutFiles(pb.PutFilesRequest(commit=ref(commit.id), files=[write(deep)]))
    api.FinishCommit(ref(commit.id))
    assert api.InspectFile(pb.FileRequest(commit=ref("master"), path=deep)).size_bytes == len(PLAIN)
    assert api.InspectCommit(ref("master~1")).id == commit.parent
    err = call(api, "InspectCommit", ref("master~999999"))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err
    assert_no_traceback(server)


def test_a_file_is_as_large_as_its_chunks_hold(server, stubs):
    """A chunk declared larger (or smaller) than it is is refused; the true size is taken and reported."""
    api = stubs["api"]
    commit = api.StartCommit(pb.StartCommitRequest(repo="data"))
    for size in (12_345, len(PLAIN) + 1, 0):
        err = call(api, "PutFiles", pb.PutFilesRequest(commit=ref(commit.id), files=[write("big", chunk(size=size))]))
        assert err and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert f"{len(PLAIN)}" in err.details() and "\n" not in err.details(), err.details()
    api.PutFiles(pb.PutFilesRequest(commit=ref(commit.id), files=[write("big", chunk())]))
    api.FinishCommit(ref(commit.id))
    assert f"{len(PLAIN)} B" in server.pfs("inspect-file", "data", "master", "big").text
    with server.client() as client:
        assert client.inspect_file(CommitRef("data", "master"), "big").size_bytes == len(PLAIN)
        assert b"".join(client.read_file(CommitRef("data", "master"), "big")) == PLAIN
    assert_no_traceback(server)
