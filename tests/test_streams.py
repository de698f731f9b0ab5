"""Streaming calls cannot starve unary calls: beside 500 idle subscribers, holding no thread each, the server
answers everything else and stops in order; streams beyond the server's bound are refused in one line, and closed
streams give their capacity back. Raw gRPC against a real server, as a hostile client would use it."""

import contextlib
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from conftest import Server, put_commit, wait_for
from pfs.client import auth
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pfs_pb2_grpc
from pfs.proto import pps_pb2_grpc

STREAMS = 500
CHANNELS = 5  # streams spread over a few connections, as many clients would
MAX_THREADS = 200  # in a server serving STREAMS idle subscribers: its pool, grpc's and its controller's


@contextlib.contextmanager
def channels(server: Server, n: int) -> Iterator[list[grpc.Channel]]:
    opened = [server.channel() for _ in range(n)]
    try:
        yield opened
    finally:
        for c in opened:
            c.close()


def subscribe(chans: list[grpc.Channel], n: int, repo: str = "data") -> list:
    """N SubscribeCommit streams on REPO@master, spread over CHANS."""
    request = pb.SubscribeCommitRequest(repo=repo, branch="master")
    return [pfs_pb2_grpc.APIStub(chans[i % len(chans)]).SubscribeCommit(request) for i in range(n)]


def next_of_each(calls: list, timeout: float = 60) -> list[pb.CommitInfo]:
    """The next message of every stream, all of them within TIMEOUT seconds (a liveness bound)."""
    got = []

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # a stream cancelled by the test's cleanup
            for call in calls:
                got.append(next(call))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(got) == len(calls), f"only {len(got)} of {len(calls)} streams answered in {timeout} s"
    return got


def cancel(calls: list) -> None:
    for call in calls:
        call.cancel()


def proc_status(pid: int, field: str) -> int:
    """The number FIELD of /proc/PID/status (VmRSS in KiB, Threads)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def rss_mib(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    return proc_status(pid, "Threads")


def test_500_idle_subscribers_leave_unary_calls_their_threads(server):
    client = server.client()
    client.create_repo("data")
    first = put_commit(client, "data", {"x": b"1"})
    with channels(server, CHANNELS) as chans:
        calls = subscribe(chans, STREAMS)
        try:
            assert {c.id for c in next_of_each(calls)} == {first}  # every stream is open and served
            start = time.monotonic()
            repos = pfs_pb2_grpc.APIStub(chans[0]).ListRepo(pb.Empty(), timeout=10)
            took = time.monotonic() - start
            print(f"list-repo beside {STREAMS} idle subscribers: {took * 1000:.0f} ms; "
                  f"server RSS {rss_mib(server.proc.pid):.0f} MiB, {threads(server.proc.pid)} threads")
            assert [r.name for r in repos.repos] == ["data"]
            assert threads(server.proc.pid) < MAX_THREADS  # a waiting stream holds no thread
            assert took < 5  # a liveness bound, not a speed claim
            second = put_commit(client, "data", {"x": b"2"})
            assert {c.id for c in next_of_each(calls)} == {second}  # announced on every stream
            assert rss_mib(server.proc.pid) < 1024
            server.proc.send_signal(signal.SIGTERM)  # with every stream open, the server stops in order
            server.proc.wait(20)  # a liveness bound
            assert "exiting now" not in server.log.read_text()
            for call in calls:
                with pytest.raises(grpc.RpcError) as err:
                    next(call)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            cancel(calls)
    client.close()


@pytest.fixture
def bounded(tmp_path):
    """A server of at most 8 streams, its repo data holding a commit, and a client of the root."""
    server = Server(tmp_path / "data", args=("--max-streams", "8"))
    server.start()
    try:
        with server.client() as client:
            client.create_repo("data")
            put_commit(client, "data", {"x": b"1"})
            yield server, client
    finally:
        server.stop()


def test_a_stream_beyond_the_bound_is_refused_and_closed_streams_free_their_slots(bounded):
    server, client = bounded
    with channels(server, 2) as chans:
        calls = subscribe(chans, 8)
        try:
            next_of_each(calls)
            flush = pps_pb2_grpc.PPSStub(chans[0]).FlushCommit
            for refused in (lambda: next(subscribe(chans, 1)[0]),
                            lambda: flush(pb.CommitRef(repo="data", ref="master"))):
                with pytest.raises(grpc.RpcError) as err:
                    refused()
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "8 streaming calls" in err.value.details() and "\n" not in err.value.details()
            assert [r.name for r in client.list_repos()] == ["data"]  # unary calls still answered
        finally:
            cancel(calls)
        held = []

        def one_more() -> bool:
            call = subscribe(chans, 1)[0]
            try:
                next(call)
            except grpc.RpcError:  # refused: the cancelled streams' handlers have not all ended yet
                return False
            held.append(call)
            return len(held) == 8

        try:
            wait_for(one_more, 10)  # every slot comes back once the cancelled handlers end
        finally:
            cancel(held)


def test_a_user_holds_at_most_a_quarter_of_the_streams(bounded):
    """With --max-streams 8, a user's token runs at most 2 streaming calls at once; the root (and the jobs'
    workers) still get theirs."""
    server, client = bounded
    alice = client.create_token("alice")[0]
    client.set_role("data", "alice", "reader")
    with contextlib.closing(auth.channel(server.address, alice, ())) as hers, channels(server, 1) as roots:
        calls = subscribe([hers], 2)
        try:
            next_of_each(calls)
            with pytest.raises(grpc.RpcError) as err:
                next(subscribe([hers], 1)[0])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == ("alice already has 2 streaming calls running, the most one user may "
                                           "(a quarter of the server's 8); call again once some have ended")
            root_calls = subscribe(roots, 4)
            calls += root_calls
            next_of_each(root_calls)
        finally:
            cancel(calls)


def exhausted(call: Callable[[], object], details: str) -> bool:
    """Whether CALL is refused RESOURCE_EXHAUSTED, saying DETAILS; False if it is let in (and has ended)."""
    try:
        call()
        return False
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert err.details() == details
        return True


def sending_nothing_until(ended: threading.Event) -> Iterator:
    """A request stream that sends nothing, and ends once ENDED is set (or a minute has passed)."""
    ended.wait(60)
    yield from ()


def test_a_user_runs_at_most_a_few_uploads_at_once(tmp_path):
    """Each put-chunks call may hold a few requests of up to 64 MiB: a user's token runs at most UPLOADS of them,
    within its share of the streams (which other calls still get), and the root's uploads are not counted."""
    from pfs.proto import chunks_pb2_grpc
    from server.rpc.streams import UPLOADS

    server = Server(tmp_path / "data", args=("--max-streams", str(4 * (UPLOADS + 2))))
    server.start()
    ended = threading.Event()

    def refused(chan: grpc.Channel) -> bool:
        """Whether an upload on CHAN is refused (one let in ends at once, having sent nothing)."""
        return exhausted(lambda: chunks_pb2_grpc.ChunksStub(chan).PutChunks(iter(()), timeout=10),
                         f"alice already has {UPLOADS} uploads (put-chunks calls) running, the most one user may; "
                         "call again once some have ended")

    try:
        with server.client() as client:
            client.create_repo("data")
            put_commit(client, "data", {"x": b"1"})
            alice = client.create_token("alice")[0]
            client.set_role("data", "alice", "reader")
        with contextlib.closing(auth.channel(server.address, alice, ())) as hers, channels(server, 1) as roots:
            held = [chunks_pb2_grpc.ChunksStub(hers).PutChunks.future(sending_nothing_until(ended))
                    for _ in range(UPLOADS)]
            try:
                wait_for(lambda: refused(hers), 10)
                next_of_each(subscribe([hers], 1))  # her other streams are still let in
                assert not refused(roots[0])
            finally:
                ended.set()
            assert [f.result(timeout=10).stored for f in held] == [0] * UPLOADS
            assert not refused(hers)  # and her slots come back
    finally:
        server.stop()


def padded_list_repo(size: int) -> bytes:
    """A ListRepo request (Empty) padded with an unknown field of SIZE bytes: what a hostile client may send."""
    return pb.Empty().SerializeToString() + b"\xba\x3e" + _varint(size) + b"\0" * size  # field 999, bytes


def _varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def test_a_call_without_a_token_is_refused_before_its_request_is_read(server):
    """grpc reads a unary request whole before any handler runs: refusals of calls without a valid token take a
    request stream instead, and read nothing. 20 calls of 40 MB each took the server's memory up by 1 GB."""
    before = proc_status(server.proc.pid, "VmHWM") / 1024
    with contextlib.closing(grpc.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 << 20)])) as chan:
        calls = [chan.unary_unary("/pfs.API/ListRepo").future(padded_list_repo(40 << 20)) for _ in range(20)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call.result(timeout=60)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    grown = proc_status(server.proc.pid, "VmHWM") / 1024 - before
    print(f"the server's peak memory grew {grown:.0f} MiB")
    assert grown < 400


def test_a_user_s_calls_beyond_a_bound_are_refused_before_their_request_is_read(bounded):
    """A call of a method with a unary request takes a turn of its user's before its request is read: at most
    RUNNING read and run at once, WAITING more wait, and one more is refused at once; the root's calls and other
    users' are not counted. Calls made as streams that send nothing hold turns; sending nothing, each is refused."""
    from server.rpc.unary import RUNNING, WAITING

    server, client = bounded
    alice, bob = (client.create_token(who)[0] for who in ("alice", "bob"))
    ended = threading.Event()

    with contextlib.closing(auth.channel(server.address, alice, ())) as hers, \
            contextlib.closing(auth.channel(server.address, bob, ())) as his, channels(server, 1) as roots:
        held = [hers.stream_unary("/pfs.API/ListRepo").future(sending_nothing_until(ended))
                for _ in range(RUNNING + WAITING)]
        try:
            wait_for(lambda: exhausted(lambda: pfs_pb2_grpc.APIStub(hers).ListRepo(pb.Empty(), timeout=10),
                                       f"alice already has {RUNNING + WAITING} calls running or waiting, the most "
                                       "one user may; call again once some have ended"), 10)
            for chan in (his, roots[0]):
                assert [r.name for r in pfs_pb2_grpc.APIStub(chan).ListRepo(pb.Empty(), timeout=10).repos] in (
                    [], ["data"])
        finally:
            ended.set()
        for call in held:
            with pytest.raises(grpc.RpcError) as err:
                call.result(timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "the call carried no request message"
        assert pfs_pb2_grpc.APIStub(hers).ListRepo(pb.Empty(), timeout=10).repos == []  # her turns come back
