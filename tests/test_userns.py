"""A server run by an ordinary user runs its pipelines with the local runner, its workers as that user.

A second local user, made for the test, starts `pfs server`; its workers
enter a user namespace whose uid 0 is that user on the host, so what the
command makes belongs to the user and a root-owned path stays out of reach.
"""

import fcntl
import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, HOST_DIRS, PFS, Result, Server, assert_one_line_error, needs, skip_unless_runnable_by
from pfs.core import userns

pytestmark = [pytest.mark.slow, needs("useradd", "userdel", "setpriv", "fusermount3", root=True, fuse=True),
              pytest.mark.skipif(os.geteuid() == 0 and userns.unavailable() is not None,
                                 reason=f"needs user namespaces: {userns.unavailable()}")]


class User:
    """A system user made for one test (userdel -r at the end), and a directory of its own it can reach."""

    def __init__(self) -> None:
        self.name = f"pfs-test-{secrets.token_hex(4)}"
        HOST_DIRS.mkdir(mode=0o755, exist_ok=True)  # not under pytest's tmp: that is root's alone, and not in /tmp,
        self.dir = Path(tempfile.mkdtemp(prefix="pfs-userns-", dir=HOST_DIRS))  # which a command has of its own
        self.dir.chmod(0o755)
        subprocess.run(["useradd", "--system", "--create-home", "--home-dir", str(self.dir / "home"), self.name],
                       check=True, capture_output=True)
        self.uid, self.gid = int(self._id("-u")), int(self._id("-g"))
        self.env = {**os.environ, "HOME": str(self.dir / "home")}

    def _id(self, flag: str) -> str:
        return subprocess.run(["id", flag, self.name], check=True, capture_output=True, text=True).stdout

    def prefix(self) -> tuple[str, ...]:
        return "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"

    def own_dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir()
        os.chown(path, self.uid, self.gid)
        return path

    def server(self) -> Server:
        return Server(self.own_dir("data") / "data", prefix=self.prefix(), process_env=self.env)

    def pfs(self, server: Server, *args: str, input: bytes | None = None, check: bool = True) -> Result:
        """The pfs CLI, run as this user."""
        p = subprocess.run([*self.prefix(), PFS, *args], input=input, capture_output=True, timeout=120,
                           env={**self.env, **server.env})
        result = Result(p.returncode, p.stdout, p.stderr.decode())
        assert not check or p.returncode == 0, result
        return result

    def remove(self) -> None:
        subprocess.run(["userdel", "-r", self.name], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def user():
    u = User()
    try:
        skip_unless_runnable_by(u.prefix())
        yield u
    finally:
        u.remove()


def dev_fuse_mode(mode: int):
    """/dev/fuse with MODE for the test (0666 is its usual mode; some containers make it 0600), then as it was. The
    mode is the machine's: the tests that set it run one at a time, whichever pytest-xdist workers run them."""
    with open(Path(tempfile.gettempdir()) / "pfs-test-dev-fuse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was = stat.S_IMODE(os.stat(userns.FUSE).st_mode)
        os.chmod(userns.FUSE, mode)
        try:
            yield
        finally:
            os.chmod(userns.FUSE, was)


@pytest.fixture
def dev_fuse_open():
    yield from dev_fuse_mode(0o666)


@pytest.fixture
def dev_fuse_root_only():
    yield from dev_fuse_mode(0o600)


def create_pipeline(user: User, server: Server, cmd: list[str], env: dict[str, str], check: bool = True) -> Result:
    manifest = {"pipeline": {"name": "who"}, "transform": {"cmd": cmd, "env": env},
                "inputs": [{"repo": {"name": "in"}, "method": "global"}]}
    path = user.dir / "who.json"
    path.write_text(json.dumps(manifest))
    return user.pfs(server, "create-pipeline", "-f", str(path), check=check)


def test_workers_of_an_ordinary_users_server_run_as_that_user(user, dev_fuse_open):
    shared = user.own_dir("shared")  # where the command leaves a file, to be seen from the host
    forbidden = Path("/etc") / user.name
    cmd = ["sh", "-c", 'id -u > /pfs/out/uid; cp /pfs/in/greeting /pfs/out/copy; touch "$SHARED/made"; '
                       f'if touch {forbidden}; then echo wrote > /pfs/out/etc; else echo refused > /pfs/out/etc; fi']
    server = user.server()
    server.start()
    try:
        user.pfs(server, "create-repo", "in")
        user.pfs(server, "put-file", "in", "master", "greeting", "-c", "-f", "-", input=b"hello\n")
        create_pipeline(user, server, cmd, {"SHARED": str(shared)})
        table = user.pfs(server, "flush-commit", "in/master").text
        assert "success" in table, (table, server.log.read_text())
        got = {p: user.pfs(server, "get-file", "who", "master", p).text for p in ("uid", "copy", "etc")}
    finally:
        server.stop()
    assert got == {"uid": "0\n", "copy": "hello\n", "etc": "refused\n"}  # uid 0 of its namespace only
    assert (shared / "made").stat().st_uid == user.uid  # on the host: the user's, not root's
    assert not forbidden.exists()


def test_an_ordinary_users_server_says_when_its_workers_cannot_mount(user, dev_fuse_root_only):
    server = user.server()
    server.start()
    try:
        refused = create_pipeline(user, server, ["true"], {}, check=False)
    finally:
        server.stop()
    assert_one_line_error(refused, "/dev/fuse", "--runner container")
    assert "pipelines cannot run here" in server.log.read_text() and "/dev/fuse" in server.log.read_text()


def test_a_worker_of_an_ordinary_user_gets_a_root_of_its_own_where_its_root_dir_is_missing(user, dev_fuse_open):
    root = Path("/") / user.name  # only root could make it on the host
    manifest = {"transform": {"cmd": ["sh", "-c", f"cp {root}/data/f {root}/out/f; id -u > {root}/out/uid"]},
                "inputs": [{"repo": {"name": "data"}, "commit": "master", "method": "global"}], "output_repo": "out"}
    (user.dir / "job.json").write_text(json.dumps(manifest))
    server = user.server()
    server.start()
    try:
        user.pfs(server, "create-repo", "data")
        user.pfs(server, "put-file", "data", "master", "f", "-c", "-f", "-", input=b"kept\n")
        job = user.pfs(server, "create-job", "-f", str(user.dir / "job.json")).text.strip()
        shim = subprocess.run([*user.prefix(), str(BIN / "job-shim"), "--address", server.address, "--job", job,
                               "--shard", "0", "--workspace", str(user.own_dir("ws")), "--root", str(root)],
                              capture_output=True, env={**user.env, **server.env}, timeout=120)
        assert shim.returncode == 0, shim.stderr.decode()
        got = {p: user.pfs(server, "get-file", "out", "master", p).text for p in ("f", "uid")}
    finally:
        server.stop()
    assert got == {"f": "kept\n", "uid": "0\n"}
    assert not root.exists()
