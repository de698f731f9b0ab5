"""Real parts only: a real `pfs server` on a free loopback port, the real `pfs` CLI, real files."""

import io
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from pfs.client import Client, auth
from pfs.client.upload import into_commit
from pfs.core.model import CommitRef
from pfs.core.ready import spawn, wait_ready
from postgres import PostgreSQL
from seaweed import SeaweedFS

BIN = pathlib.Path(sys.executable).parent
PFS = str(BIN / "pfs")


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode()


class Server:
    """A pfs server process on 127.0.0.1 with its own data dir; restartable, killable."""

    def __init__(self, data_dir: pathlib.Path, chunk_size: int | None = None, args: tuple[str, ...] = (),
                 prefix: tuple[str, ...] = (), process_env: dict | None = None) -> None:
        self.data_dir = data_dir
        self.chunk_size = chunk_size
        self.args = args  # more `pfs server` options
        self.prefix = prefix  # what runs the server (setpriv as another user, say), with PROCESS_ENV
        self.process_env = process_env
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.port = 0
        self.token_file: str | None = None  # None: started with --no-token

    def start(self) -> None:
        args = [*self.prefix, PFS, "server", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.chunk_size:
            args += ["--chunk-size", str(self.chunk_size)]
        args += self.args
        self.log = self.data_dir.parent / f"server-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.proc, ready_pipe = spawn(args, stdout=log, stderr=log, env=self.process_env)
        try:
            ready = wait_ready(ready_pipe, 30)
        except TimeoutError:
            self.kill()
            raise
        if ready is None:
            self.proc.wait()
            raise RuntimeError(f"server did not start: {self.log.read_text()}")
        self.address = ready["address"]
        self.token_file = ready["token_file"]
        self.port = int(self.address.rsplit(":", 1)[1])  # a restart comes back on the same port

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, signal.SIGTERM, 10)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        self.proc.kill()
        self.proc.wait()

    @property
    def token(self) -> str | None:
        return None if self.token_file is None else pathlib.Path(self.token_file).read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to use this server: its address and token file."""
        return {"PFS_ADDRESS": self.address, **({"PFS_TOKEN_FILE": self.token_file} if self.token_file else {})}

    def client(self) -> Client:
        return Client(self.address, token=self.token)

    def channel(self, options: tuple = ()) -> grpc.Channel:
        """A raw gRPC channel to this server whose calls carry its token."""
        return auth.channel(self.address, self.token, options)

    def pfs(self, *args: str, input: bytes | None = None, check: bool = True) -> Result:
        """Runs the pfs CLI against this server."""
        return run_pfs(*args, input=input, check=check, env=self.env)


def stop_process(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Asks PROC to stop with SIG; kills it if it is still there after TIMEOUT seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_pfs(*args: str, input: bytes | None = None, check: bool = True, env: dict | None = None) -> Result:
    p = subprocess.run([PFS, *args], input=input, capture_output=True, env={**os.environ, **(env or {})},
                       timeout=120)
    result = Result(p.returncode, p.stdout, p.stderr.decode())
    if check and p.returncode != 0:
        raise AssertionError(f"pfs {' '.join(args)} failed ({p.returncode}): {result.stderr}")
    return result


def documents(text: str) -> list:
    """The JSON documents of TEXT, one after another (a listing's --raw)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        document, at = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        found.append(document)
    return found


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A failed command: non-zero exit, one line on stderr naming what went wrong, no traceback."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("pfs: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def needs(*tools: str, root: bool = False, fuse: bool = False) -> pytest.MarkDecorator:
    """Skips a test (or a module, as its pytestmark) where root, /dev/fuse or a tool it needs is missing, naming it."""
    missing = [what for what, lacking in (("root", root and os.geteuid() != 0),
                                          ("/dev/fuse", fuse and not os.path.exists("/dev/fuse"))) if lacking]
    missing += [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {' and '.join(missing)}")


def skip_unless_runnable_by(prefix: tuple[str, ...]) -> None:
    """Skips the test where the user PREFIX runs commands as (setpriv --reuid ...) cannot run this venv's Python:
    one whose interpreter or checkout is under /root, say."""
    # by sh: setpriv itself may still reach through root's directories while it execs
    if subprocess.run([*prefix, "sh", "-c", '"$0" -c ""', sys.executable], capture_output=True).returncode:
        pytest.skip(f"another user cannot run {sys.executable} (under /root, say): make the venv of a Python "
                    "that every user can run, in a directory they can reach (the Makefile uses /usr/bin/python3)")


@pytest.fixture(scope="session")
def containers_conf(tmp_path_factory):
    """podman's settings for these tests in a file of their own (CONTAINERS_CONF, which .ci/podman-setup writes),
    so the host's /etc/containers/containers.conf stays as it was."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTAINERS_CONF", str(tmp_path_factory.mktemp("containers") / "containers.conf"))
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's home or a server from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PFS_ADDRESS", raising=False)
    monkeypatch.delenv("PACHD_ADDRESS", raising=False)
    monkeypatch.delenv("PFS_DATA_DIR", raising=False)
    monkeypatch.delenv("PFS_TOKEN", raising=False)
    monkeypatch.delenv("PFS_TOKEN_FILE", raising=False)


def _seaweed(dir: pathlib.Path):
    weed = SeaweedFS(dir)
    weed.start()
    try:
        yield weed
    finally:
        weed.kill()  # its data is thrown away, and SIGTERM takes seconds


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS per test process (per xdist worker), started by the first test that needs it; each test takes
    a bucket of its own (make_bucket) and leaves the server running."""
    yield from _seaweed(tmp_path_factory.mktemp("seaweed"))


HOST_DIRS = pathlib.Path("/var/lib/pfs-tests")


@pytest.fixture
def host_dir() -> Iterator[pathlib.Path]:
    """A directory of this machine that workers' commands see too, as the test does: a command's /tmp and /var/tmp
    are its own, as in a container, so a test's tmp_path (in /tmp) is not theirs to read or write."""
    HOST_DIRS.mkdir(mode=0o755, exist_ok=True)
    path = pathlib.Path(tempfile.mkdtemp(prefix="test-", dir=HOST_DIRS))
    path.chmod(0o755)  # for commands run as nobody too
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_seaweed(tmp_path):
    """A SeaweedFS for one test that stops, kills or restarts it, so no other test sees the outage."""
    yield from _seaweed(tmp_path / "seaweed")


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL per test process (per xdist worker), started by the first test that needs it; each test takes
    a database of its own (make_database) and leaves the server running."""
    pg = PostgreSQL()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


def s3_server(weed: SeaweedFS, data_dir: pathlib.Path, chunk_size: int | None = None, args: tuple[str, ...] = (),
              bucket: str | None = None, endpoint: str | None = None) -> Server:
    """A server (not started) whose chunks go to BUCKET (default: a fresh one) at WEED's endpoint (or ENDPOINT),
    with WEED's keys and ARGS more `pfs server` options."""
    bucket = bucket or weed.make_bucket()
    # spawn() hands PROCESS_ENV to Popen as the whole environment
    return Server(data_dir, chunk_size,
                  args=("--storage", f"s3://{bucket}/pfs", "--s3-endpoint", endpoint or weed.endpoint, *args),
                  process_env={**os.environ, **weed.env})


STORAGES = ("local", "s3")
# Runs a test once per chunk store, through the fixtures `server` and `big_server` (which ask for `storage`).
on_every_storage = pytest.mark.parametrize("storage", STORAGES)


@pytest.fixture
def storage() -> str:
    """Where `server` and `big_server` keep chunks: "local" (the data dir) unless the test is @on_every_storage."""
    return "local"


def _server(request: pytest.FixtureRequest, storage: str, data_dir: pathlib.Path, chunk_size: int | None):
    if storage == "s3":
        s = s3_server(request.getfixturevalue("seaweed"), data_dir, chunk_size)
    else:
        s = Server(data_dir, chunk_size)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server(request, storage, tmp_path):
    """A server with small chunks (4 KiB on average), so small inputs take the many-chunk paths."""
    yield from _server(request, storage, tmp_path / "data", 4096)


@pytest.fixture(scope="module")
def shared_server(request, tmp_path_factory):
    """One server for a module's table of refusals, which change nothing: a server start per row is most of
    such a test's time. Its tests must leave it as they found it."""
    yield from _server(request, "local", tmp_path_factory.mktemp("shared") / "data", 4096)


@pytest.fixture
def big_server(request, storage, tmp_path):
    """A server with the default 1 MiB chunks."""
    yield from _server(request, storage, tmp_path / "data", None)


def stored_chunks(data_dir: pathlib.Path) -> dict[str, bytes]:
    """Every chunk a local store holds, by hex address: its files and its small-chunk table."""
    chunks = {p.name: p.read_bytes() for p in (data_dir / "chunks").rglob("*") if p.is_file()}
    db = sqlite3.connect(f"file:{data_dir / 'chunks.db'}?mode=ro", uri=True)
    try:
        chunks.update((a.hex(), d) for a, d in db.execute("SELECT address, data FROM small"))
    finally:
        db.close()
    return chunks


def put_commit(client: Client, repo: str, files: dict[str, bytes]) -> str:
    """Puts FILES (path: contents) into a new commit of REPO and finishes it; returns its id."""
    c = client.start_commit(repo)
    with into_commit(client, CommitRef(repo, c.id)) as up:
        for path, data in files.items():
            up.put(path, io.BytesIO(data))
    client.finish_commit(CommitRef(repo, c.id))
    return c.id


def processes() -> list[tuple[int, list[bytes]]]:
    """(pid, command line) of each process of this machine."""
    found = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append((int(cmdline.parent.name), cmdline.read_bytes().split(b"\0")))
        except OSError:  # gone meanwhile
            pass
    return found


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
