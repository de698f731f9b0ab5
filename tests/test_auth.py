"""Only the server's owner may use it: every call carries the token in DATA_DIR/token (mode 0600, in a data
dir of mode 0700), or is refused UNAUTHENTICATED in one line; a second local user is refused; --no-token lets
anyone in. Raw gRPC as well as the CLI."""

import json
import os
import pathlib
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid

import grpc
import pytest

from conftest import PFS, Server, assert_one_line_error, needs, processes, run_pfs, skip_unless_runnable_by
from pfs.client import auth
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pfs_pb2_grpc

WRONG = "0" * 64


def refused_in_one_line(err: grpc.RpcError, server: Server, why: str) -> None:
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    details = err.details()
    assert "\n" not in details and "Traceback" not in details, details
    assert why in details and server.token_file in details and "PFS_TOKEN" in details, details


def test_the_cli_without_the_token_or_with_a_wrong_one_is_refused_in_one_line(server, tmp_path):
    missing = run_pfs("list-repo", check=False, env={"PFS_ADDRESS": server.address})
    assert_one_line_error(missing, "no token was given", server.token_file, "PFS_TOKEN_FILE")
    wrong = run_pfs("list-repo", check=False, env={"PFS_ADDRESS": server.address, "PFS_TOKEN": WRONG})
    assert_one_line_error(wrong, "the token given is not one of this cluster's", server.token_file)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text(WRONG + "\n")
    by_flag = run_pfs("--token-file", str(wrong_file), "list-repo", check=False, env=server.env)  # the flag wins
    assert_one_line_error(by_flag, "the token given is not one of this cluster's")
    unreadable = run_pfs("--token-file", str(tmp_path / "none"), "list-repo", check=False, env=server.env)
    assert_one_line_error(unreadable, f"cannot read the token file {tmp_path / 'none'}")
    server.pfs("create-repo", "r")
    assert run_pfs("--token-file", server.token_file, "list-repo",
                   env={"PFS_ADDRESS": server.address}).text.startswith("NAME")
    assert run_pfs("list-repo", env={"PFS_ADDRESS": server.address, "PFS_TOKEN": server.token}).text.count("\n") == 2


def test_raw_grpc_without_the_token_or_with_a_wrong_one_is_unauthenticated(server):
    server.pfs("create-repo", "r")
    for channel, why in ((grpc.insecure_channel(server.address), "no token was given"),
                         (auth.channel(server.address, WRONG), "not one of this cluster's")):
        with channel:
            api = pfs_pb2_grpc.APIStub(channel)
            for call in (lambda: api.ListRepo(pb.Empty(), timeout=10),  # unary
                         lambda: next(api.SubscribeCommit(pb.SubscribeCommitRequest(repo="r"), timeout=10)),
                         lambda: chunks_pb2_grpc.ChunksStub(channel).PutChunks(iter([cpb.ChunkBatch()]), timeout=10)):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                refused_in_one_line(err.value, server, why)
    with server.channel() as channel:
        assert [r.name for r in pfs_pb2_grpc.APIStub(channel).ListRepo(pb.Empty(), timeout=10).repos] == ["r"]
    said = [line for line in server.log.read_text().splitlines() if "without a valid token" in line]
    assert len(said) == 1, said  # six refused calls from one host: one log line


def test_the_token_file_and_the_data_dir_are_owner_only_and_kept_across_restarts(server):
    token_file = server.data_dir / "token"
    assert server.token_file == str(token_file)
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = server.token
    assert len(token) == 64 and int(token, 16) >= 0  # 32 random bytes as hex
    server.stop()
    server.data_dir.chmod(0o755)
    token_file.chmod(0o644)
    server.start()
    assert server.token == token  # clients and workers keep working across a restart
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert not [p.name for p in server.data_dir.iterdir() if "token" in p.name and p.name != "token"]  # no temp


@pytest.fixture
def other_user():
    """A second local user for the test's length: (name, uid, gid)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to add a second local user")
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("setpriv")):
        pytest.skip("needs useradd, userdel and setpriv")
    name = f"pfs-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        skip_unless_runnable_by(("setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"))
        yield name, entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.fixture
def shared_dir():
    """A directory every user may pass through (pytest's own are root's alone), for a server's data dir."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="pfs-test-auth-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_user(user, *cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    _, uid, gid = user
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **env})


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_second_local_user_cannot_use_the_server(other_user, shared_dir):
    server = Server(shared_dir / "data")
    server.start()
    try:
        server.pfs("create-repo", "mine")
        refused = one_line(as_user(other_user, PFS, "list-repo", env={"PFS_ADDRESS": server.address}))
        assert refused.startswith("pfs: no token was given") and server.token_file in refused, refused
        assert "mine" not in refused
        cannot_read = as_user(other_user, "cat", server.token_file, env={})
        assert cannot_read.returncode != 0 and "Permission denied" in cannot_read.stderr
        named = one_line(as_user(other_user, PFS, "list-repo",
                                 env={"PFS_ADDRESS": server.address, "PFS_TOKEN_FILE": server.token_file}))
        assert named.startswith(f"pfs: cannot read the token file {server.token_file}: Permission denied"), named
    finally:
        server.stop()


def test_no_token_serves_anyone_and_says_so(other_user, shared_dir):
    server = Server(shared_dir / "data", args=("--no-token",))
    server.start()
    try:
        assert server.token_file is None and not (server.data_dir / "token").exists()
        assert "--no-token: serving anyone" in server.log.read_text()
        server.pfs("create-repo", "open")
        listed = as_user(other_user, PFS, "list-repo", env={"PFS_ADDRESS": server.address})
        assert listed.returncode == 0 and "open" in listed.stdout, listed.stderr
    finally:
        server.stop()


@needs("fusermount3", "setpriv", root=True, fuse=True)  # the local runner's workers
def test_workers_get_the_token_in_their_environment_and_their_command_does_not(server, tmp_path):
    """The shim and its mounts call the server with the token; it is on no command line, and the user's
    command, whose output and logs are kept, does not see it."""
    server.pfs("create-repo", "data")
    server.pfs("put-file", "data", "master", "f", "-c", "-f", "-", input=b"x\n")
    script = ('tr "\\0" " " < /proc/$PPID/cmdline > /pfs/out/shim-cmdline; cp /pfs/data/f /pfs/out/f; '
              'echo "${PFS_TOKEN:-none} ${PFS_TOKEN_FILE:-none}" > /pfs/out/token')
    manifest = tmp_path / "p.json"
    manifest.write_text(json.dumps({"pipeline": {"name": "p"}, "transform": {"cmd": ["sh", "-c", script]},
                                    "inputs": [{"repo": {"name": "data"}, "method": "map"}]}))
    server.pfs("create-pipeline", "-f", str(manifest))
    assert "success" in server.pfs("flush-commit", "data/master").text
    get = lambda path: server.pfs("get-file", "p", "master", path).text  # noqa: E731
    assert get("f") == "x\n"  # its mount read the input with the token
    # its parent is its PID namespace's init (shim/pidns.py), the worker's child; no process has the token in its
    # command line
    assert "shim/pidns.py" in get("shim-cmdline") and server.token not in get("shim-cmdline")
    assert not [args for _, args in processes() if server.token.encode() in b" ".join(args)]
    assert get("token") == "none none\n"


@needs("setpriv", root=True)
def test_a_user_without_a_home_is_served_and_told_what_to_set(server, tmp_path):
    """A uid with no home (HOME unset, no entry in the password database: a container's, say) has no default
    data dir: its client finds no default token and uses the one it is given; its server says what to set."""
    homeless = ("setpriv", "--reuid=54321", "--regid=54321", "--clear-groups")
    skip_unless_runnable_by(homeless)
    env = {"PATH": os.environ["PATH"], "PFS_ADDRESS": server.address}
    server.pfs("create-repo", "here")
    listed = subprocess.run([*homeless, PFS, "list-repo"], capture_output=True, text=True, cwd="/", timeout=60,
                            env={**env, "PFS_TOKEN": server.token})
    assert listed.returncode == 0 and "here" in listed.stdout, listed.stderr
    refused = subprocess.run([*homeless, PFS, "list-repo"], capture_output=True, text=True, cwd="/", timeout=60,
                             env=env)
    assert one_line(refused).startswith("pfs: no token was given")
    started = subprocess.run([*homeless, PFS, "server", "--port", "0"], capture_output=True, text=True, cwd="/",
                             timeout=60, env=env)
    assert started.returncode != 0 and started.stderr.strip() == (
        "pfs server: this user has no home directory for the default data dir ~/.pfs/data: set PFS_DATA_DIR "
        "(or give --data-dir)"), started.stderr
