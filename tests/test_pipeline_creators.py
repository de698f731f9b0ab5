"""Pipelines of users who are not the cluster's root: made only from inputs they may read, into an output repo
they own, their command run as a user that is not root, and making no job once their creator can no longer read
an input. A real server run by root (local runner), real tokens, real workers."""

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pfs.core import run_as
from pfs.core.errors import InvalidArgument
from pfs.core.model import JobState, ShardInfo, ShardState

from server.pps.runners import WORKERS_PER_CORE

from conftest import Server, assert_one_line_error, needs, run_pfs, wait_for
from test_pipelines import get, jobs_of, put, repo_input

pytestmark = needs("fusermount3", "setpriv", root=True, fuse=True)

# what the command tells of itself: its uid and gid, its input, and whether it could read the server's token
SPY = ["sh", "-c", "id -u > /pfs/out/uid; id -g > /pfs/out/gid; cat /pfs/data/x > /pfs/out/x; "
                   "if cat \"$TOKEN_FILE\" > /dev/null 2>&1; then echo read; else echo refused; fi > /pfs/out/token"]


@pytest.fixture
def as_user(server):
    """Runs pfs as a user (made on first use, with a token of their own)."""
    tokens: dict[str, str] = {}

    def run(who: str, *args: str, **kw):
        if who not in tokens:
            with server.client() as root:
                tokens[who] = root.create_token(who)[0]
        return run_pfs(*args, env={"PFS_ADDRESS": server.address, "PFS_TOKEN": tokens[who]}, **kw)
    return run


def manifest(tmp_path, name: str, inputs: list[str], cmd=SPY, **transform) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"pipeline": {"name": name}, "inputs": [repo_input(r, "global") for r in inputs],
                                "transform": {"cmd": cmd, **transform}}))
    return str(path)


@pytest.mark.slow
def test_a_user_s_pipeline_runs_as_a_user_that_is_not_root_and_its_output_is_theirs(server, tmp_path, as_user,
                                                                                     host_dir):
    put(server, "data", {"x": b"1\n"})
    server.pfs("auth", "set-role", "data", "alice", "reader")
    secret = host_dir / "token"  # as the server's token is: root's alone (the token itself is in /tmp, here)
    secret.write_text("secret\n")
    secret.chmod(0o600)
    spy = [*SPY[:2], f"TOKEN_FILE={secret}; {SPY[2]}"]
    as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "mine", ["data"], spy))
    server.pfs("create-pipeline", "-f", manifest(tmp_path, "roots", ["data"], spy))
    as_user("alice", "flush-commit", "data/master")
    assert [get(server, "mine", f) for f in ("uid", "gid", "x", "token")] == [b"65534\n", b"65534\n", b"1\n",
                                                                              b"refused\n"]
    assert [get(server, "roots", f) for f in ("uid", "token")] == [b"0\n", b"read\n"]  # the root's own, as before
    assert as_user("alice", "auth", "get-roles", "mine").text.split()[2:] == ["alice", "owner"]
    assert "mine" in as_user("alice", "list-pipeline").text
    for verb in ("inspect-pipeline", "stop-pipeline", "delete-pipeline"):  # the root's pipeline is not hers
        assert_one_line_error(as_user("alice", verb, "roots", check=False), "alice may not", "repo 'roots'")
    [job] = jobs_of(server, "roots")
    assert_one_line_error(as_user("alice", "inspect-job", job["id"], check=False), "may not read repo 'roots'")
    assert "roots" not in as_user("alice", "list-pipeline").text
    for name in ("roots", "no-such-pipeline"):  # refused alike: no telling which there is
        assert_one_line_error(as_user("alice", "list-job", "-p", name, check=False), f"may not read repo '{name}'")
    assert_one_line_error(as_user("bob", "stop-pipeline", "mine", check=False), "takes owner")
    as_user("alice", "stop-pipeline", "mine")
    as_user("alice", "start-pipeline", "mine")
    as_user("alice", "auth", "set-role", "mine", "bob", "reader")  # her output is hers to share
    assert as_user("bob", "get-file", "mine", "master", "x").stdout == b"1\n"


def test_a_user_may_make_pipelines_only_of_what_they_may_read_and_never_run_as_root(server, tmp_path, as_user):
    put(server, "data", {"x": b"1\n"})
    put(server, "secret", {"x": b"s\n"})
    server.pfs("auth", "set-role", "data", "alice", "reader")
    refused = as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "p", ["data", "secret"]), check=False)
    assert_one_line_error(refused, "alice may not read repo 'secret'")
    free = free_id()
    for user, said in (("root", "given as names"), ("nobody", "given as names"), ("0", "uid 0 is root's"),
                       ("0:0", "uid 0 is root's"), (f"{free}:0", "gid 0 is group root's"),
                       ("65534:42", "gid 42 is group"), (f"{free}:42", "gid 42 is group")):  # shadow: /etc/shadow
        refused = as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "p", ["data"], user=user), check=False)
        assert_one_line_error(refused, "transform.user", "no account or group of this machine has", said)
    for user in ("4294967295", "1000:4294967295"):  # (uid_t) -1: setuid and setgid would leave the worker's root
        for refused in (as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "p", ["data"], user=user),
                                check=False),
                        server.pfs("create-pipeline", "-f", manifest(tmp_path, "p", ["data"], user=user), check=False)):
            assert_one_line_error(refused, "transform.user", "at most 4294967294")
    assert_one_line_error(as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "secret", ["data"]),
                                  check=False), "alice may not make a pipeline writing repo 'secret'", "takes owner")
    assert "p" not in server.pfs("list-repo").text.split()  # nothing was made of the refused ones
    assert server.pfs("list-pipeline").text.splitlines()[1:] == []
    assert_one_line_error(server.pfs("create-pipeline", "-f", manifest(tmp_path, "p", ["data"], user="x y"),
                                     check=False), "transform.user", "1000:1000")


@pytest.mark.slow
def test_a_user_s_command_has_a_tmp_and_dev_shm_of_its_own(server, tmp_path, as_user):
    """Commands of users who are not the root run as nobody (or ids of their choosing, which others may choose
    too): each gets its own /tmp, /var/tmp and /dev/shm, as a container's command does, so no user's command reads
    another's temporary files, and none is left on the machine once the command ends."""
    put(server, "data", {"x": b"1\n"})
    server.pfs("auth", "set-role", "data", "alice", "reader")
    host = Path(tempfile.mkdtemp(prefix="host-", dir="/tmp"))  # the machine's /tmp, readable by all
    (host / "theirs").write_bytes(b"not for alice\n")
    host.chmod(0o755)
    marker = f"pfs-own-tmp-{os.getpid()}"
    (Path("/tmp") / marker).write_bytes(b"the machine's\n")  # what a link to the command's own would not name
    script = (f"ls /tmp > /pfs/out/tmp; ls /var/tmp > /pfs/out/var-tmp; ls /dev/shm > /pfs/out/shm; "
              f"echo left > /tmp/{marker}; echo shm > /dev/shm/{marker}; echo left > /var/tmp/{marker}; "
              f"ln -s /tmp/{marker} /pfs/out/linked-tmp; ln -s /dev/shm/{marker} /pfs/out/linked-shm")
    try:
        as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "mine", ["data"], ["sh", "-c", script]))
        server.pfs("flush-commit", "data/master", check=False)
        [job] = jobs_of(server, "mine")  # a link into its own /tmp is not followed (to the machine's)
        assert job["state"] is JobState.FAILURE and "is not output through a link" in job["error"], job
        assert server.pfs("list-commit", "mine").text.splitlines()[1:] == []
        assert (Path("/tmp") / marker).read_bytes() == b"the machine's\n"
        assert not [d for d in ("/var/tmp", "/dev/shm") if os.path.exists(f"{d}/{marker}")]
        as_user("alice", "update-pipeline", "-f", manifest(tmp_path, "mine", ["data"], ["sh", "-c", script.split(
            "; ln -s")[0]]))
        put(server, "data", {"x": b"2\n"}, create=False)
        server.pfs("flush-commit", "data/master")
        assert [get(server, "mine", f) for f in ("tmp", "var-tmp", "shm")] == [b""] * 3
    finally:
        shutil.rmtree(host)
        (Path("/tmp") / marker).unlink()


@pytest.mark.slow
def test_a_command_run_here_gets_none_of_the_server_s_secrets(tmp_path):
    """The local runner gives its workers, and so their commands, only the usual variables of a session from the
    server's environment: a user's command reads no S3 key or database password of the server's."""
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3-key-of-the-server", "PGPASSWORD": "password-of-the-server"}
    server = Server(tmp_path / "data", process_env={**os.environ, **secrets, "LANG": "C.UTF-8"})
    server.start()
    try:
        put(server, "data", {"x": b"1\n"})
        server.pfs("create-pipeline", "-f", manifest(tmp_path, "env", ["data"], ["sh", "-c", "env > /pfs/out/env"]))
        server.pfs("flush-commit", "data/master")
        env = dict(line.split("=", 1) for line in get(server, "env", "env").decode().splitlines())
    finally:
        server.stop()
    assert not set(secrets) & set(env) and not any(v in secrets.values() for v in env.values()), env
    assert env["LANG"] == "C.UTF-8" and env["PATH"] and "PFS_TOKEN" not in env, env


@pytest.mark.slow
def test_a_user_is_told_only_of_the_jobs_whose_output_they_may_read(server, tmp_path, as_user):
    """flush-commit waits for the jobs downstream of a commit whose output a user may read, and tells of those; a
    repo made in a deleted output repo's name is another: its readers see none of the old jobs, their manifests
    or their logs, which went with the old repo."""
    put(server, "shared", {"x": b"1\n"})
    for who in ("alice", "bob"):
        server.pfs("auth", "set-role", "shared", who, "reader")
    cmd = ["sh", "-c", "echo said-by-bob; cp /pfs/shared/x /pfs/out/x"]
    as_user("bob", "create-pipeline", "-f", manifest(tmp_path, "bobs", ["shared"], cmd, env={"KEY": "bobs-key"}))
    assert "bobs" in as_user("bob", "flush-commit", "shared/master").text
    assert "bobs" not in as_user("alice", "flush-commit", "shared/master").text
    as_user("bob", "stop-pipeline", "bobs")  # a pipeline alice may not see neither holds her up nor is named to her
    put(server, "shared", {"x": b"2\n"}, create=False)
    assert "bobs" not in as_user("alice", "flush-commit", "shared/master").text
    assert_one_line_error(as_user("bob", "flush-commit", "shared/master", check=False), "pipeline bobs is stopped")
    [job] = jobs_of(server, "bobs")
    as_user("bob", "delete-pipeline", "bobs")
    as_user("bob", "delete-repo", "bobs")
    as_user("alice", "create-repo", "bobs")
    for args in (("list-job", "-p", "bobs"), ("get-logs", "--pipeline", "bobs")):
        assert_one_line_error(as_user("alice", *args, check=False), "nor any job of one of that name")
    assert_one_line_error(as_user("alice", "inspect-job", job["id"], check=False), "not found")
    assert "said-by-bob" not in server.pfs("get-logs", "--job", job["id"], check=False).text  # nor the root


def free_id(start: int = 54321) -> int:
    """A number from START up that is no account's uid and no group's gid on this machine."""
    def taken(look_up, number: int) -> bool:
        try:
            return bool(look_up(number))
        except KeyError:
            return False
    return next(i for i in range(start, 60000) if not (taken(pwd.getpwuid, i) or taken(grp.getgrgid, i)))


@pytest.mark.slow
def test_a_pipeline_makes_no_job_while_its_creator_may_not_read_an_input(server, tmp_path, as_user):
    put(server, "data", {"x": b"1\n"})
    server.pfs("auth", "set-role", "data", "alice", "reader")
    free = free_id()  # a user may name ids no account or group here has
    as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "mine", ["data"], user=f"{free}:{free}"))
    server.pfs("flush-commit", "data/master")
    assert get(server, "mine", "uid") == f"{free}\n".encode()
    server.pfs("auth", "set-role", "data", "alice", "none")
    put(server, "data", {"x": b"2\n"}, create=False)
    wait_for(lambda: "alice may not read repo 'data'" in server.pfs("inspect-pipeline", "mine").text, 30)
    assert_one_line_error(server.pfs("flush-commit", "data/master", check=False),  # said, not waited on for ever
                          "pipeline mine failed 3 times in a row to make its next job",
                          "alice may not read repo 'data'")
    assert len(jobs_of(server, "mine")) == 1
    server.pfs("auth", "set-role", "data", "alice", "reader")
    server.pfs("flush-commit", "data/master")  # it goes on, at its next try
    assert len(jobs_of(server, "mine")) == 2 and get(server, "mine", "x").endswith(b"2\n")


@pytest.mark.slow
def test_a_command_run_as_another_user_has_at_most_max_processes_of_its_uid(tmp_path):
    """A command run as another user may have at most --max-processes processes of its uid on the machine
    (RLIMIT_NPROC): a fork bomb is refused more there, and the machine, the server and the other commands go on. A
    command whose uid has more already is refused at its start, saying why."""
    few, bomb = free_id(), free_id(free_id() + 1)
    server = Server(tmp_path / "data", args=("--max-processes", "8"))
    server.start()
    held: list[subprocess.Popen] = []
    try:
        put(server, "data", {"x": b"1\n"})
        forks = "for i in $(seq 1 {}); do sleep 2 & done; wait; echo done > /pfs/out/x"
        for name, uid, n in (("few", few, 4), ("bomb", bomb, 30)):
            server.pfs("create-pipeline", "-f", manifest(tmp_path, name, ["data"], ["sh", "-c", forks.format(n)],
                                                         user=f"{uid}:{uid}"))
        server.pfs("flush-commit", "data/master", check=False)
        assert get(server, "few", "x") == b"done\n"
        [job] = jobs_of(server, "bomb")
        assert job["state"] is JobState.FAILURE and "Cannot fork" in job["error"], job
        held = [subprocess.Popen(["sleep", "60"], user=bomb, group=bomb) for _ in range(9)]  # more than its bound
        server.pfs("create-pipeline", "-f", manifest(tmp_path, "late", ["data"], ["true"], user=f"{bomb}:{bomb}"))
        server.pfs("flush-commit", "data/master", check=False)
        [job] = jobs_of(server, "late")
        assert job["state"] is JobState.FAILURE, job
        assert f"uid {bomb} already has as many processes on this machine as a command may (8:" in job["error"], job
        refused = run_pfs("server", "--data-dir", str(tmp_path / "kube"), "--runner", "kubernetes",
                          "--max-processes", "8", check=False)
        assert refused.returncode != 0 and refused.stderr.startswith(
            "pfs server: --max-processes is for the local and container runners"), refused
    finally:
        for proc in held:
            proc.kill()
            proc.wait()
        server.stop()


@pytest.mark.slow
def test_a_user_s_long_job_takes_only_the_workers_others_leave(server, tmp_path, as_user):
    """The local runner runs a few workers a core at once, and a job of more shards has the rest wait. As workers
    end, their room goes first to the user with the fewest running: bob's shard starts once one of alice's ends,
    not once all of hers have started, though her pipeline comes first."""
    slots = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if slots > 16:
        pytest.skip("alice's job takes three times the local runner's workers: too many on this machine")
    put(server, "a-in", {f"{n:03}": b"x\n" for n in range(3 * slots)})
    put(server, "b-in", {"x": b"1\n"})
    for who, name, repo, parallelism in (("alice", "a-long", "a-in", 3 * slots), ("bob", "b-short", "b-in", 1)):
        server.pfs("auth", "set-role", repo, who, "reader")
        spec = tmp_path / f"{name}.json"
        spec.write_text(json.dumps({"pipeline": {"name": name}, "inputs": [repo_input(repo)], "parallelism":
                                    parallelism, "transform": {"cmd": ["sleep", "2"]}}))
        as_user(who, "create-pipeline", "-f", str(spec))
        if who == "alice":  # her shards take every worker, and the rest of hers wait
            wait_for(lambda: sum(s.state is ShardState.RUNNING for s in shards(server, "a-long")) == slots, 30)
    server.pfs("flush-commit", "b-in/master")
    server.pfs("flush-commit", "a-in/master")
    [bobs] = shards(server, "b-short")
    hers = sorted(s.started for s in shards(server, "a-long"))
    assert hers[slots - 1] < bobs.started < hers[2 * slots], (bobs.started, hers)


def shards(server, pipeline: str) -> list[ShardInfo]:
    with server.client() as c:
        [job] = c.list_jobs(pipeline)
        return list(job.shards)


def test_a_worker_refuses_the_uid_and_gid_that_would_leave_it_root():
    """(uid_t) -1 tells setuid and setgid to change nothing: a worker given it by a server of an older version, or
    a manifest from elsewhere, refuses it rather than run the command as itself."""
    for user in ("4294967295", "1000:4294967295", "99999999999"):
        with pytest.raises(InvalidArgument, match="transform.user"):
            run_as.resolve(user)
    assert run_as.resolve("4294967294:1000") == (4294967294, 1000)


@pytest.mark.slow
def test_a_user_s_pipeline_outputs_only_what_its_command_may_read(server, tmp_path, as_user):
    """The worker (root) reads /pfs/out as the command's user: a link there to the server's token, or to a file only
    root's group may read, fails the job (naming the link), as reading it would fail the command; a link to a file
    of its own is followed, as before."""
    put(server, "data", {"x": b"1\n"})
    server.pfs("auth", "set-role", "data", "alice", "reader")
    shared = Path(tempfile.mkdtemp(prefix="pfs-secret-", dir="/"))  # the machine's, not /tmp: the command has its own
    try:
        shared.chmod(0o755)
        secret = shared / "secret"
        secret.write_bytes(b"s\n")
        secret.chmod(0o640)  # root:root, so not hers: the worker's supplementary groups must not count
        for name, target in {"tok": server.token_file, "grp": secret}.items():
            as_user("alice", "create-pipeline", "-f", manifest(tmp_path, name, ["data"], ["ln", "-s", str(target),
                                                                                        "/pfs/out/f"]))
        links = "echo 2 > /pfs/out/own; ln -s /pfs/out/own /pfs/out/mine"
        as_user("alice", "create-pipeline", "-f", manifest(tmp_path, "links", ["data"], ["sh", "-c", links]))
        server.pfs("flush-commit", "data/master", check=False)
        for name, said in (("tok", "is not output through a link"), ("grp", "Permission denied")):
            [job] = jobs_of(server, name)  # the token: in /tmp here, which is not the command's
            assert job["state"] is JobState.FAILURE and "/pfs/out/f" in job["error"], job
            assert said in job["error"], job
            assert server.pfs("list-commit", name).text.splitlines()[1:] == []
        assert [get(server, "links", f) for f in ("own", "mine")] == [b"2\n", b"2\n"]
    finally:
        shutil.rmtree(shared)
