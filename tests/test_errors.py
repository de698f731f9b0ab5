"""Every misuse gives one clear line and a non-zero exit, and leaves stored data intact."""

import http.server
import itertools
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import PFS, Result, assert_one_line_error, run_pfs
from pfs.core.errors import Unavailable
from pfs.core.model import CommitInfo, CommitRef


def _put_keep(server) -> None:
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "keep", "-c", "-f", "-", input=b"precious\n")


def _kept(server) -> bool:
    """Whatever a test did wrong, the data is still there."""
    return server.pfs("get-file", "r", "master", "keep").stdout == b"precious\n"


@pytest.fixture
def repo(server):
    _put_keep(server)
    yield server
    assert _kept(server)


@pytest.fixture(scope="module")
def _shared_repo(shared_server):
    _put_keep(shared_server)
    return shared_server


@pytest.fixture
def shared_repo(_shared_repo):
    """Repo r of the module's shared server, checked unchanged after each test."""
    yield _shared_repo
    assert _kept(_shared_repo)


@pytest.mark.parametrize(
    "args,fragments",
    [
        (("inspect-repo", "nope"), ("repo 'nope' not found", "create-repo")),
        (("list-commit", "nope"), ("repo 'nope' not found",)),
        (("put-file", "nope", "master", "f", "-c", "-f", "-"), ("repo 'nope' not found",)),
        (("create-repo", "r"), ("already exists",)),
        (("create-repo", "bad name!"), ("invalid repo name",)),
        (("inspect-commit", "r", "0123456789abcdef0123456789abcdef"), ("no commit or branch",)),
        (("inspect-commit", "r", "nobranch"), ("no commit or branch 'nobranch'",)),
        (("get-file", "r", "master", "missing"), ("file 'missing' not found",)),
        (("put-file", "r", "master^", "x", "-f", "-"), ("past the first commit",)),
        (("put-file", "r", "0123456789abcdef0123456789abcdef", "x"), ("no commit or branch",)),
        (("put-file", "r", "bad~branch", "x"), ("invalid commit reference",)),
        (("put-file", "nope", "master", "x"), ("repo 'nope' not found", "create-repo")),
        (("put-file", "r", "master", "../escape", "-c", "-f", "-"), ("'..'",)),
        (("put-file", "r", "master", "a/../../b", "-c", "-f", "-"), ("'..'",)),
        (("put-file", "r", "master", "-c", "-f", "/definitely/not/here"), ("no such file",)),
        (("put-file", "r", "master", "x", "-c", "-f", "http://127.0.0.1:1/x"), ("cannot fetch",)),
        (("put-file", "r", "master", "x", "-c", "-f", "-", "--delimiter", "json"), ("invalid choice",)),
        (("start-commit", "r", "0123456789abcdef0123456789abcdef"), ("invalid branch name",)),
        (("set-branch", "r", "nope", "b"), ("no commit or branch",)),
        (("list-file", "r", "master~5"), ("past the first commit",)),
        (("delete-repo", "nope"), ("not found",)),
        (("delete-file", "r", "master", ""), ("no PATH given", "name / itself")),
        (("delete-file", "r", "master", "."), ("'.' is the whole commit", "name / itself")),
        (("delete-file", "r", "master", "./"), ("'./' is the whole commit", "name / itself")),
        (("delete-file", "r", "master", "nosuch"), ("file 'nosuch' not found in r@master",)),  # not the commit dropped
        (("list-job", "-p", "nope"), ("pipeline 'nope' not found", "list-pipeline")),
        (("get-logs", "--pipeline", "nope"), ("pipeline 'nope' not found",)),
        (("put-file", "r", "feature/x", "f"), ("invalid branch name 'feature/x'",)),
        (("inspect-repo", "r@master"), ("invalid repo name 'r@master'",)),
        (("get-file", "r@master:"), ("'/' is a directory",)),
        (("put-file", "r", "master", "f", "-p", "4"), ("pfs put-file: error: unrecognized arguments: -p 4",)),
    ],
)
def test_misuse(shared_repo, args, fragments):
    result = shared_repo.pfs(*args, input=b"data\n", check=False)
    if any("invalid choice" in f or ": error: " in f for f in fragments):  # argparse's: exit 2, usage + error line
        assert result.returncode == 2 and all(f in result.stderr for f in fragments), result.stderr
        return
    assert_one_line_error(result, *fragments)
    assert result.returncode == 1


def test_nul_byte_in_path_is_refused(repo):
    from pfs.core.errors import InvalidArgument
    from pfs.core.model import CommitRef, FileWrite

    client = repo.client()
    c = client.start_commit("r")
    with pytest.raises(InvalidArgument, match="NUL"):
        client.put_files(CommitRef("r", c.id), [FileWrite("a\x00b", ())])
    client.finish_commit(CommitRef("r", c.id))


def test_a_local_name_that_is_not_utf8_is_refused_in_one_line(repo, tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "ok").write_bytes(b"1\n")
    (tmp_path / os.fsdecode(b"tree/caf\xe9")).write_bytes(b"2\n")
    for args in (("-r", "-f", str(tmp_path / "tree")), (os.fsdecode(b"caf\xe9"), "-f", "-")):
        result = repo.pfs("put-file", "r", "master", *args, "-c", input=b"3\n", check=False)
        assert_one_line_error(result, "caf\\xe9' is not UTF-8")


def test_unknown_chunks_are_refused(repo):
    """A client cannot record a file whose chunks it never uploaded."""
    from pfs.core.errors import FailedPrecondition
    from pfs.core.model import ChunkRef, CommitRef, FileWrite

    client = repo.client()
    c = client.start_commit("r")
    with pytest.raises(FailedPrecondition, match="never uploaded"):
        client.put_files(CommitRef("r", c.id), [FileWrite("f", (ChunkRef(b"\x01" * 32, 5),))])


def test_corrupt_chunk_is_refused(repo):
    from pfs.core.compression import compress
    from pfs.core.errors import DataLoss

    client = repo.client()
    call = client.put_chunks_async(iter([[(b"\x02" * 32, compress(b"not what the address says"))]]))
    with pytest.raises(DataLoss, match="does not match its address"):
        try:
            call.result()
        except Exception as err:  # the future raises grpc's error; translate it as the uploader does
            raise client.translate(err) from None
    assert client.missing_chunks([b"\x02" * 32]) == [b"\x02" * 32]


def test_unreachable_server():
    result = run_pfs("list-repo", check=False, env={"PFS_ADDRESS": "127.0.0.1:1"})
    assert_one_line_error(result, "cannot reach the pfs server at 127.0.0.1:1")
    result = run_pfs("--address", "127.0.0.1:2", "list-repo", check=False)
    assert_one_line_error(result, "127.0.0.1:2")


def test_a_call_cut_off_by_the_server_s_end_says_so(server):
    """A server killed during a call: its caller is told the call was cut off, and may or may not have been done,
    not to start a server (one was there) nor anything of TLS."""
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"x\n")
    subscriber = subprocess.Popen([PFS, "subscribe-commit", "r", "master"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env={**os.environ, **server.env})
    subscriber.stdout.readline()  # the commit there: the call is under way
    server.kill()
    out, err = subscriber.communicate(timeout=60)
    result = Result(subscriber.returncode, out, err.decode())
    assert_one_line_error(result, f"the connection to the pfs server at {server.address} was cut off",
                          "may or may not have been done")
    assert "TLS" not in result.stderr and "start one" not in result.stderr


def test_a_stopped_server_fails_a_call_under_way_instead_of_hanging_it(server, monkeypatch):
    """A server that stops answering (SIGSTOP: its connection stays open and says nothing, which neither TCP nor
    gRPC notices) fails a call that changes something, which no deadline bounds, once a ping goes unanswered:
    within PFS_READ_TIMEOUT, not never. A long wait on a server that answers is pinged all along, and kept."""
    monkeypatch.setenv("PFS_READ_TIMEOUT", "2")
    server.pfs("create-repo", "r")
    with server.client() as waiting, server.client() as writer:
        got: list[CommitInfo] = []
        subscriber = threading.Thread(
            target=lambda: got.extend(itertools.islice(waiting.subscribe_commits("r", "master", new_only=True), 1)))
        subscriber.start()
        time.sleep(4)  # a few pings' time
        commit = writer.start_commit("r", "master")
        writer.finish_commit(CommitRef("r", commit.id))
        subscriber.join(30)
        assert [c.id for c in got] == [commit.id]
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(Unavailable, match="sent nothing for 2 s"):
                writer.create_repo("q")
            assert time.monotonic() - start < 20
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert "r" in [r.name for r in writer.list_repos()]  # answered again, on a connection made anew


def test_a_put_file_c_cut_off_by_a_stopped_server_says_what_it_left(server, monkeypatch):
    """put-file -c drops its commit when the put fails; when the server that failed it cannot drop it either, the
    one line says so, and how to: the commit is left open, unfinished, for the user to delete (not to finish)."""
    monkeypatch.setenv("PFS_READ_TIMEOUT", "2")
    server.pfs("create-repo", "r")
    put = subprocess.Popen([PFS, "put-file", "r", "master", "f", "-c", "-f", "-"], stdin=subprocess.PIPE,
                           stderr=subprocess.PIPE, env={**os.environ, **server.env})
    with server.client() as client:
        deadline = time.monotonic() + 30
        while not client.list_commits("r") and time.monotonic() < deadline:  # started, reading stdin
            time.sleep(0.05)
        [commit] = client.list_commits("r")
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            _, stderr = put.communicate(b"some data\n", timeout=60)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
            if put.poll() is None:  # it hung: not left behind
                put.kill()
                put.wait()
    result = Result(put.returncode, b"", stderr.decode())
    assert_one_line_error(result, "sent nothing for 2 s", f"commit {commit.id} of r is left open, not finished",
                          f"pfs delete-commit r {commit.id}) once the server answers")
    with server.client() as client:
        assert not client.inspect_commit(CommitRef("r", commit.id)).is_finished
    server.pfs("delete-commit", "r", commit.id)
    assert server.pfs("list-commit", "r").text.count("\n") == 1  # its header alone: the branch as it was


def test_url_errors_and_success(repo, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "page.txt").write_bytes(b"from the web\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "www"), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        repo.pfs("put-file", "r", "master", "-c", "-f", f"{base}/page.txt")
        assert repo.pfs("get-file", "r", "master", "page.txt").stdout == b"from the web\n"
        result = repo.pfs("put-file", "r", "master", "x", "-c", "-f", f"{base}/absent.txt", check=False)
        assert_one_line_error(result, "HTTP 404")
    finally:
        httpd.shutdown()
        httpd.server_close()
    # a failed -c put leaves no commit behind: the branch is as it was
    heads = repo.client().list_commits("r", "master")
    assert [c.is_finished for c in heads] == [True, True]


def test_server_refuses_a_busy_data_dir_and_port(server):
    from conftest import Server

    other = Server(server.data_dir)
    with pytest.raises(RuntimeError, match="in use by another pfs server"):
        other.start()
    third = Server(server.data_dir.parent / "other")
    third.port = server.port
    with pytest.raises(RuntimeError, match="cannot listen on"):
        third.start()


def test_a_server_says_in_one_line_why_it_cannot_use_its_data_dir(tmp_path):
    """A data dir under a file, on a read-only file system, or too full for its metadata: one line, no traceback."""
    (tmp_path / "file").write_text("x")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    cases = [(tmp_path / "file" / "data", "Not a directory")]
    if os.geteuid() == 0:  # file systems of their own
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
        (full / "filler").write_bytes(bytes(60 << 10))
        cases += [(ro / "data", "Read-only file system"), (full / "data", "pfs server: ")]
    try:
        for data_dir, said in cases:
            started = run_pfs("server", "--data-dir", str(data_dir), "--port", "0", check=False)
            assert started.returncode != 0 and len(started.stderr.strip().splitlines()) == 1, started
            assert started.stderr.startswith("pfs server: ") and said in started.stderr, started
    finally:
        for mounted in (ro, full):
            subprocess.run(["umount", str(mounted)], check=False, capture_output=True)


@pytest.mark.parametrize("damaged, said", [("server-id", "{}/server-id holds no server id (b'\\x9c"),
                                           ("chunks.db", "the small chunks' database {}/chunks.db: file is not a")])
def test_a_damaged_file_of_the_data_dir_is_one_line_naming_it(tmp_path, damaged, said):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / damaged).write_bytes(b"\x9c\xff\x00garbage\n" * 100)  # a bad sector's, or a stray editor's
    started = run_pfs("server", "--data-dir", str(data_dir), "--port", "0", check=False)
    assert started.returncode != 0 and started.stderr.count("\n") == 1, started
    assert started.stderr.startswith("pfs server: " + said.format(data_dir)), started


def test_a_download_that_cannot_be_written_says_so_of_what_the_user_named(repo, tmp_path):
    with open("/dev/full", "wb") as full:
        p = subprocess.run([PFS, "get-file", "r", "master", "keep"], stdout=full, stderr=subprocess.PIPE,
                           env={**os.environ, **repo.env}, timeout=60)
    assert_one_line_error(Result(p.returncode, b"", p.stderr.decode()), "pfs: No space left on device")
    into = tmp_path / "no" / "such" / "copy"
    assert_one_line_error(repo.pfs("get-file", "r", "master", "keep", "-o", str(into), check=False),
                          f"pfs: {into}: No such file or directory")
