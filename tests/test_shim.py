"""The job-shim against a real server: real workers (each in its own mount namespace), real FUSE inputs."""

import io
import itertools
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, PFS, assert_one_line_error, needs, processes, stop_process, wait_for
from test_pipelines import put
from pfs.cli.output import size
from pfs.core.chunking import Chunker
from pfs.core.errors import FailedPrecondition
from pfs.core.hashing import address
from pfs.core.model import MAX_LOG_TEXT, CommitRef
from pfs.core.mount_inputs import MountInput
from shim.command import LINE_BYTES
from shim.mounts import Mounts

pytestmark = [pytest.mark.slow,  # real workers, each mounting in a namespace of its own
              needs("fusermount3", "setpriv", root=True, fuse=True)]

SHIM = str(BIN / "job-shim")
COPY = ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"]


def create_job(server, tmp_path, cmd, parallelism=1, method="map", **transform) -> str:
    manifest = {"transform": {"cmd": cmd, **transform}, "parallelism": parallelism,
                "inputs": [{"repo": {"name": "data"}, "commit": "master", "method": method}], "output_repo": "out"}
    path = tmp_path / f"job-{random.getrandbits(32)}.json"
    path.write_text(json.dumps(manifest))
    return server.pfs("create-job", "-f", str(path)).text.strip()


def start_shim(server, tmp_path, job: str, shard: int, *extra: str,
               cwd: pathlib.Path | None = None) -> subprocess.Popen:
    workspace = tmp_path / f"ws-{job[:8]}-{shard}"
    return subprocess.Popen([SHIM, "--address", server.address, "--job", job, "--shard", str(shard),
                             "--workspace", str(workspace), *extra], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **server.env})


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def run_shims(server, tmp_path, job: str, n: int) -> list[tuple[int, str, str]]:
    """Runs the N workers of a job at once; their exit codes, stdouts and stderrs. No mount outlives its worker."""
    done = [finish(p) for p in [start_shim(server, tmp_path, job, i) for i in range(n)]]
    assert not mount_processes(server)
    return done


def mount_processes(server) -> list[str]:
    """The command lines of the `pfs mount` processes that use SERVER."""
    return [b" ".join(args).decode(errors="replace") for _, args in processes()
            if b"mount" in args and server.address.encode() in args]


def job_info(server, job: str) -> dict:
    return json.loads(server.pfs("inspect-job", job, "--raw").text)


def read_tree(server, repo: str, ref: str = "master") -> dict[str, bytes]:
    with server.client() as c:
        out = {}
        todo = [""]
        while todo:
            for f in c.list_files(CommitRef(repo, ref), todo.pop(), with_chunks=True):
                if f.is_dir:
                    todo.append(f.path)
                else:
                    out[f.path.lstrip("/")] = b"".join(c.read_chunks(f.chunks)) if f.chunks else b""
        return out


@pytest.fixture
def data(server):
    rng = random.Random(7)
    files = {
        "sales.csv": b"".join(f"{i},{rng.randrange(10**6)},{'x' * rng.randrange(80)}\n".encode()
                              for i in range(3000)),  # many 4 KiB chunks
        "small.txt": b"one line\n",
        "dir/a.txt": b"a\n" * 500,
        "dir/b.txt": b"".join(f"b{i}\n".encode() for i in range(2000)),
        "zz.txt": b"last\n",
    }
    put(server, "data", files)
    return files


@pytest.mark.parametrize("method", ["map", "reduce", "global"])
def test_the_shards_of_each_method_together_give_the_right_output(server, tmp_path, data, method):
    for n in range(1, 5):
        job = create_job(server, tmp_path, COPY, parallelism=n, method=method)
        shards = len(job_info(server, job)["shards"])
        assert shards == (1 if method == "global" else n)  # a global input is not cut: one worker does it all
        results = run_shims(server, tmp_path, job, shards)
        assert [r[0] for r in results] == [0] * shards, results
        info = job_info(server, job)
        assert info["state"] == "success"
        out = read_tree(server, "out", info["output_commit"])
        assert sorted(out) == sorted(data), (method, n)
        for path, expected in data.items():
            if method == "map":  # every line-aligned block once, shards appended in order
                assert sorted(out[path].splitlines()) == sorted(expected.splitlines()), (n, path)
                assert len(out[path]) == len(expected)
            elif method == "reduce":  # whole files, each from one shard
                assert out[path] == expected, (n, path)
            else:
                assert out[path] == expected, (n, path)
        commit = server.client().inspect_commit(CommitRef("out", info["output_commit"]))
        assert commit.is_finished
        assert [(p.repo, p.ref) for p in commit.provenance] == [("data", info["inputs"][0]["commit"])]


def test_create_job_says_its_workers_are_started_by_hand(server, tmp_path, data):
    """A 1.x user expects the cluster to run a job: create-job says (on stderr; its id alone on stdout) how."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"transform": {"cmd": COPY}, "parallelism": 2, "output_repo": "out",
                                "inputs": [{"repo": {"name": "data"}, "commit": "master", "method": "map"}]}))
    made = server.pfs("create-job", "-f", str(path))
    job = made.text.strip()
    assert made.stderr == (f"its workers are started by hand, not by the server (a pipeline's jobs are): job-shim "
                           f"--job {job} --shard 0 to 1\n")


def test_a_worker_started_in_the_machine_s_tmp_runs_its_command_in_its_own(server, tmp_path, data):
    """The command's /tmp is its own: a worker whose directory is in the machine's (a CI's clone, say) starts its
    command in the command's /tmp, not in a directory it cannot reach (pyenv's python3 failed there)."""
    job = create_job(server, tmp_path, ["sh", "-c", "pwd > /pfs/out/pwd; ls -A > /pfs/out/ls"])
    code, _, stderr = finish(start_shim(server, tmp_path, job, 0, cwd=tmp_path))
    assert code == 0, stderr
    assert read_tree(server, "out") == {"pwd": b"/tmp\n", "ls": b""}


def test_1x_habits_get_logs_job_and_list_commit_repo_slash_branch(server, tmp_path, data):
    """pachctl's `get-logs JOB` and a REPO/BRANCH (as flush-commit takes it) for list-commit."""
    job = create_job(server, tmp_path, ["sh", "-c", "echo said-by-the-command; cp -r /pfs/data/. /pfs/out/"])
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    logs = server.pfs("get-logs", job).text
    assert "said-by-the-command" in logs and logs == server.pfs("get-logs", "--job", job).text
    assert_one_line_error(server.pfs("get-logs", job, "--job", job, check=False), "takes the job once")
    assert_one_line_error(server.pfs("get-logs", "--pipeline", "p", "--job", job, check=False),
                          f"job {job} is not of pipeline p but made by create-job")
    def commits(*args: str) -> list[str]:  # the ids: a row says too how long ago each started, which moves on
        return [row.split()[2] for row in server.pfs("list-commit", *args).text.splitlines()[1:]]

    assert len(commits("out", "master")) == 1
    assert commits("out/master") == commits("out", "master") == commits("out@master")


def test_logs_f_prints_each_line_as_it_comes_until_the_job_ends_and_tail_the_last_ones(server, tmp_path, data,
                                                                                      host_dir):
    """pachctl's logs -f (--follow) and --tail N."""
    marker = host_dir / "go-on"
    job = create_job(server, tmp_path, ["sh", "-c", f"echo first-line; while [ ! -e {marker} ]; do sleep 0.05; done; "
                                                    "echo second-line"])
    follower = subprocess.Popen([PFS, "logs", "-f", job], stdout=subprocess.PIPE, env={**os.environ, **server.env})
    worker = start_shim(server, tmp_path, job, 0)
    try:
        lines = iter(follower.stdout.readline, b"")
        assert b"first-line\n" in lines, "the follower ended before the command's first line"  # read up to it
        marker.touch()  # the job goes on only now that the follower has printed its first line
        rest = b"".join(lines)  # to the end: the follower ends with the job
        assert follower.wait(30) == 0
    finally:
        stop_process(follower, signal.SIGKILL, 5)
        follower.stdout.close()
        finish(worker)
    assert b"second-line\n" in rest
    whole = server.pfs("logs", job).text
    assert whole.endswith(rest.decode())
    assert server.pfs("logs", job, "--tail", "2").text.splitlines() == whole.splitlines()[-2:]
    assert server.pfs("logs", "--job", job, "--tail", "100000", "-f").text == whole  # an ended job's, at once


def test_a_nul_the_command_prints_is_logged_as_u_fffd(server, tmp_path, data):
    """As an undecodable byte is: a NUL, which PostgreSQL's text cannot hold, never fails the worker's logs."""
    job = create_job(server, tmp_path, ["printf", "a\\0b\\n"])
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    assert "a\ufffdb\n" in server.pfs("logs", job).text


def test_stdin_env_and_commit_variables(server, tmp_path, data):
    stdin = ['echo "$GREETING from $PACH_DATA_COMMIT_ID $PFS_DATA_COMMIT_ID" > /pfs/out/env.txt',
             "wc -l < /pfs/data/small.txt > /pfs/out/count.txt"]
    job = create_job(server, tmp_path, ["sh"], stdin=stdin, env={"GREETING": "hello"})
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    commit = job_info(server, job)["inputs"][0]["commit"]
    out = read_tree(server, "out")
    assert out == {"env.txt": f"hello from {commit} {commit}\n".encode(), "count.txt": b"1\n"}


@needs("choom")
def test_the_command_is_the_oom_killers_first_choice(server, tmp_path, data):
    """Past its container's memory limit, the command is killed and reported, not the worker that would report it."""
    job = create_job(server, tmp_path, ["cat", "/proc/self/oom_score_adj"])
    code, stdout, _ = run_shims(server, tmp_path, job, 1)[0]
    assert code == 0 and "1000" in stdout.splitlines(), stdout


def test_a_command_is_execd_not_run_by_a_shell(server, tmp_path, data):
    job = create_job(server, tmp_path, ["echo", "$HOME", "a;b"])
    code, stdout, _ = run_shims(server, tmp_path, job, 1)[0]
    assert code == 0
    assert "$HOME a;b" in stdout
    logs = server.pfs("get-logs", "--job", job).text
    assert "$HOME a;b" in logs


def test_accept_return_code(server, tmp_path, data):
    cmd = ["sh", "-c", "echo partial > /pfs/out/r.txt; exit 3"]
    accepted = create_job(server, tmp_path, cmd, accept_return_code=[3])
    assert run_shims(server, tmp_path, accepted, 1)[0][0] == 0
    assert job_info(server, accepted)["state"] == "success"
    assert read_tree(server, "out") == {"r.txt": b"partial\n"}

    refused = create_job(server, tmp_path, cmd, accept_return_code=[4])
    assert run_shims(server, tmp_path, refused, 1)[0][0] == 1
    assert job_info(server, refused)["state"] == "failure"


def test_a_failing_command_commits_nothing_and_keeps_its_logs(server, tmp_path, data):
    cmd = ["sh", "-c", "echo made > /pfs/out/x; echo working; echo something broke >&2; exit 5"]
    job = create_job(server, tmp_path, cmd, parallelism=2)
    results = run_shims(server, tmp_path, job, 2)
    assert {r[0] for r in results} == {1}
    info = job_info(server, job)
    assert info["state"] == "failure"
    assert info["output_commit"] == ""
    assert "exited with code 5" in info["error"] and "something broke" in info["error"]
    assert server.pfs("list-commit", "out").text.count("\n") <= 1  # the header only: no output commit
    logs = server.pfs("get-logs", "--job", job).text
    assert "working" in logs and "something broke" in logs
    raw = [json.loads(line) for line in server.pfs("get-logs", "--job", job, "--raw").text.splitlines()]
    assert {x["shard"] for x in raw if x["text"] == "working"} == {0, 1}
    assert {x["stream"] for x in raw if x["text"] == "something broke"} == {"stderr"}


def test_the_same_output_again_sends_almost_nothing(server, tmp_path):
    rng = random.Random(1)
    rows = b"".join(f"{i},{rng.randrange(10**9)},{rng.randrange(10**9)}\n".encode() for i in range(150_000))
    put(server, "data", {"big.csv": rows})
    sent = []
    for _ in range(2):
        job = create_job(server, tmp_path, ["sh", "-c", "tr , ';' < /pfs/data/big.csv > /pfs/out/out.csv"])
        assert run_shims(server, tmp_path, job, 1)[0][0] == 0
        info = job_info(server, job)
        sent.append(info["shards"][0]["bytes_sent"])
        assert info["shards"][0]["bytes_out"] == len(rows)
    assert read_tree(server, "out")["out.csv"] == rows.replace(b",", b";")
    assert sent[0] > len(rows) / 10  # new bytes, compressed
    assert sent[1] < sent[0] / 100, sent


def test_a_shard_reports_when_its_inputs_were_mounted_and_its_output_uploaded(server, tmp_path, data):
    job = create_job(server, tmp_path, ["sh", "-c", "sleep 0.5; cp -r /pfs/data/. /pfs/out/"])
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    shard = job_info(server, job)["shards"][0]
    assert shard["started"] <= shard["mounted"] <= shard["uploaded"] - 0.5 <= shard["finished"] - 0.5, shard


def test_a_mount_that_fails_is_reported_with_its_reason(server, tmp_path, data, monkeypatch):
    monkeypatch.setenv("PFS_TOKEN_FILE", server.token_file)  # the mount's environment, as a worker's is
    target = str(tmp_path / "in" / "data")
    with Mounts(server.address, str(tmp_path / "in")) as mounts:
        with pytest.raises(FailedPrecondition, match=f"cannot mount data@nosuch at {target}: pfs: no commit or "
                                                     "branch 'nosuch' in repo 'data'"):
            mounts.mount({target: MountInput("data", CommitRef("data", "nosuch"))}, None)
    assert os.listdir(tmp_path / "in") == []  # its mount point gone too


def test_output_stays_invisible_until_every_shard_succeeds(server, tmp_path, data):
    job = create_job(server, tmp_path, COPY, parallelism=2, method="reduce")
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0  # shard 0 only
    assert job_info(server, job)["state"] == "running"
    assert server.pfs("list-commit", "out").text.count("\n") <= 1
    assert finish(start_shim(server, tmp_path, job, 1))[0] == 0
    assert read_tree(server, "out") == data


def test_a_worker_killed_during_its_upload_leaves_nothing_and_can_run_again(server, tmp_path, host_dir):
    rng = random.Random(2)
    put(server, "data", {"seed": b"x\n"})
    big = host_dir / "big.bin"
    big.write_bytes(rng.randbytes(40 << 20))
    cmd = ["sh", "-c", f"cp {big} /pfs/out/big.bin && echo copied"]
    job = create_job(server, tmp_path, cmd, method="global")
    proc = start_shim(server, tmp_path, job, 0)
    for line in proc.stdout:  # the upload starts right after the command ends
        if b"copied" in line:
            proc.send_signal(signal.SIGKILL)
            break
    assert finish(proc)[0] == -signal.SIGKILL
    assert server.pfs("list-commit", "out").text.count("\n") <= 1
    assert job_info(server, job)["state"] == "running"
    assert finish(start_shim(server, tmp_path, job, 0))[0] == 0
    info = job_info(server, job)
    assert info["state"] == "success" and info["shards"][0]["attempts"] == 2
    assert read_tree(server, "out")["big.bin"] == big.read_bytes()


def test_shim_errors_are_one_line(server, tmp_path, data):
    def shim(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SHIM, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **server.env})

    unknown = shim("--job", "nope", "--shard", "0", "--workspace", str(tmp_path / "w0"))
    assert unknown.returncode == 2 and "job 'nope' not found" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1

    job = create_job(server, tmp_path, COPY, parallelism=2)
    bad_shard = shim("--job", job, "--shard", "2", "--workspace", str(tmp_path / "w1"))
    assert bad_shard.returncode == 2 and "shards 0..1, not 2" in bad_shard.stderr

    no_job = shim("--shard", "0")
    assert no_job.returncode == 2 and "no job given" in no_job.stderr

    unreachable = subprocess.run([SHIM, "--address", "127.0.0.1:1", "--job", job, "--shard", "0", "--wait", "0"],
                                 capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 2 and "127.0.0.1:1" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1

    assert run_shims(server, tmp_path, job, 2) and job_info(server, job)["state"] == "success"
    again = shim("--job", job, "--shard", "0", "--workspace", str(tmp_path / "w2"))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_a_worker_waits_for_a_server_that_comes_late_before_taking_its_try(server, tmp_path, data):
    """A worker started while its server is down (restarting, or not routed to yet) says so, waits, and takes try 1
    once the server is back: no try is spent on the wait. One that waits in vain fails, saying how long it waited."""
    job = create_job(server, tmp_path, COPY)
    server.stop()
    worker = start_shim(server, tmp_path, job, 0, "--wait", "300")
    said = f"job-shim: cannot reach the pfs server at {server.address}"
    first = worker.stderr.readline().decode()  # it has looked for the server, in vain
    assert first.startswith(said) and "looking again in " in first, first
    server.start()
    code, _, err = finish(worker)
    assert code == 0, first + err
    info = job_info(server, job)
    assert info["state"] == "success" and info["shards"][0]["attempts"] == 1, info
    assert read_tree(server, "out") == data

    with socket.socket() as nobody:  # bound, not listening: refused, every time
        nobody.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{nobody.getsockname()[1]}"
        vain = subprocess.run([SHIM, "--address", address, "--job", job, "--shard", "0", "--wait", "1.5"],
                              capture_output=True, text=True, timeout=60)
    lines = vain.stderr.strip().splitlines()
    assert vain.returncode == 2 and len(lines) >= 2, vain.stderr
    assert all(line.startswith(f"job-shim: cannot reach the pfs server at {address}") for line in lines), lines
    assert lines[-1].endswith("; waited 1.5 s for it"), lines


@pytest.mark.parametrize("manifest, fragments", [
    ({"transform": {"cmd": ["sh"]}, "inputs": [{"repo": "data", "method": "mapp"}]},
     ["inputs[0].method", "unknown method 'mapp'"]),
    ({"transform": {"cmd": ["sh"], "cmdd": 1}, "inputs": [{"repo": "data"}]}, ["transform.cmdd", "unknown field"]),
    ({"transform": {"cmd": "sh"}, "inputs": [{"repo": "data"}]}, ["transform.cmd", "expected a list"]),
    ({"inputs": [{"repo": "data"}]}, ["transform", "missing"]),
    ({"transform": {"cmd": ["sh"]}, "inputs": [{"repo": "nope"}]}, ["repo 'nope' not found"]),
    ({"transform": {"cmd": ["sh"]}, "inputs": [{"repo": "data"}], "parallelism": 0}, ["parallelism", "at least 1"]),
    ({"transform": {"cmd": ["sh"]}, "inputs": [{"repo": "data"}], "output_repo": "data"},
     ["both an input and the output"]),
    ({"transform": {"cmd": ["sh"]}, "input": {"atom": {"repo": "data", "glob": "/"}}},
     ["field input", "1.4 and later", '"inputs": [{"repo": {"name": "data"}, "method": "reduce"}]']),
])
def test_bad_job_manifests_are_refused_naming_the_field(server, tmp_path, data, manifest, fragments):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(manifest))
    assert_one_line_error(server.pfs("create-job", "-f", str(path), check=False), *fragments)


def test_a_job_over_an_open_commit_is_refused(server, tmp_path, data):
    server.pfs("start-commit", "data")
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"transform": {"cmd": ["true"]}, "inputs": [{"repo": "data"}]}))
    assert_one_line_error(server.pfs("create-job", "-f", str(path), check=False), "still open")
    path.write_text("{not json")
    assert_one_line_error(server.pfs("create-job", "-f", str(path), check=False), "not valid JSON")


def test_two_inputs_are_cut_as_a_cross_product(server, tmp_path):
    put(server, "data", {"a.txt": b"".join(f"a{i:03d}{'.' * 45}\n".encode() for i in range(300))})  # 4 KiB blocks
    put(server, "other", {f"b{i}": f"b{i}\n".encode() for i in range(4)})
    manifest = {"transform": {"cmd": ["sh", "-c", 'cat /pfs/other/* > /tmp/b.$$; while read a; do '
                                                  'while read b; do echo "${a%%.*} $b"; done < /tmp/b.$$; '
                                                  'done < /pfs/data/a.txt > /pfs/out/pairs; rm /tmp/b.$$']},
                "parallelism": 4, "output_repo": "out",
                "inputs": [{"repo": "data", "method": "map"}, {"repo": "other", "method": "reduce"}]}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(manifest))
    job = server.pfs("create-job", "-f", str(path)).text.strip()
    info = job_info(server, job)
    assert [i["shards"] for i in info["inputs"]] == [2, 2] and len(info["shards"]) == 4
    assert [r[0] for r in run_shims(server, tmp_path, job, 4)] == [0] * 4
    pairs = read_tree(server, "out")["pairs"].decode().splitlines()
    assert sorted(pairs) == sorted(f"a{i:03d} b{j}" for i in range(300) for j in range(4))


def test_the_output_is_sent_while_the_command_is_still_running(server, tmp_path, host_dir):
    """A file the command has written and closed is in the store before the command ends."""
    raw = random.Random(7).randbytes(300_000)
    put(server, "data", {"x": raw})
    marker = host_dir / "go-on"
    shift = r"tr '\000-\377' '\001-\377\000' < /pfs/data/x > /pfs/out/y"
    job = create_job(server, tmp_path, ["sh", "-c", f"{shift}; while [ ! -e {marker} ]; do sleep 0.05; done"])
    shifted = bytes((b + 1) % 256 for b in raw)
    worker = start_shim(server, tmp_path, job, 0)
    try:
        with server.client() as c:
            chunks = [address(d) for d in Chunker(c.chunk_avg_size, "line").split(io.BytesIO(shifted))]
            wait_for(lambda: not c.missing_chunks(chunks), 60)  # all of them are there, while the command waits
        assert worker.poll() is None
        marker.touch()
        assert finish(worker)[0] == 0
    finally:
        stop_process(worker, signal.SIGKILL, 10)  # its command and mounts die with it
    assert read_tree(server, "out") == {"y": shifted}


def test_a_file_still_open_is_sent_as_it_grows(server, tmp_path, data, host_dir):
    """A file the command has not closed yet is read and sent as it grows (no event says it grew: the reader,
    at the end of the first part, looks again), and staged whole once the command ends."""
    marker = host_dir / "go-on"
    script = ("import os, random, time\n"
              "f = open('/pfs/out/y', 'wb')\n"
              "data = random.Random(8).randbytes(40 << 20)\n"
              "f.write(data[: 8 << 20]); f.flush(); time.sleep(0.5)\n"
              "f.write(data[8 << 20 :]); f.flush()\n"
              f"while not os.path.exists({str(marker)!r}): time.sleep(0.05)\n"
              "f.write(b'the end\\n'); f.close()\n")
    written = random.Random(8).randbytes(40 << 20) + b"the end\n"
    job = create_job(server, tmp_path, ["python3", "-c", script])  # the machine's: the venv may be in /tmp
    worker = start_shim(server, tmp_path, job, 0)
    try:
        with server.client() as c:
            chunks = list(Chunker(c.chunk_avg_size, "line").split(io.BytesIO(written)))
            ends = itertools.accumulate(len(d) for d in chunks)
            head = [address(d) for d, end in zip(chunks, ends) if end <= 12 << 20]  # in the first batch sent
            wait_for(lambda: not c.missing_chunks(head), 60)  # sent while the file is open and the command waits
        assert worker.poll() is None
        marker.touch()
        assert finish(worker)[0] == 0
    finally:
        stop_process(worker, signal.SIGKILL, 10)
    assert read_tree(server, "out") == {"y": written}


def test_what_is_staged_is_what_the_output_holds_when_the_command_ends(server, tmp_path, data):
    """Files changed after they were read early: rewritten in place, appended, truncated, renamed, written
    through mmap (which inotify does not see), removed; each is staged as it is at the end. A fifo is no output
    (nor does it hold up the reader)."""
    mmap = ("import mmap; f = open('/pfs/out/mapped', 'r+b'); m = mmap.mmap(f.fileno(), 0); m[:4] = b'MMAP'; "
            "m.flush()")
    script = f"""
        cd /pfs/out
        printf aaaa > rewritten; echo one > appended; echo long-long-long > shrunk; echo 0123456789 > mapped
        echo tmp > tmp; echo gone > gone; mkdir -p d/e; echo deep > d/e/f; mkfifo pipe
        sleep 0.5
        printf bb | dd of=rewritten conv=notrunc status=none
        echo two >> appended; echo s > shrunk; mv tmp renamed; rm gone
        python3 -c "{mmap}"
    """
    job = create_job(server, tmp_path, ["sh", "-c", script])
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    assert read_tree(server, "out") == {"rewritten": b"bbaa", "appended": b"one\ntwo\n", "shrunk": b"s\n",
                                        "mapped": b"MMAP456789\n", "renamed": b"tmp\n", "d/e/f": b"deep\n"}


def test_an_output_name_a_commit_cannot_hold_fails_the_shard_in_one_line(server, tmp_path, data):
    """A name that is not UTF-8 (Latin-1's e acute), read early or at the end: the shard fails naming it."""
    for script in ("printf y > /pfs/out/caf$(printf '\\351')", "mkdir /pfs/out/caf$(printf '\\351')"):
        job = create_job(server, tmp_path, ["sh", "-c", script])
        [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
        assert code == 2 and "Traceback" not in stderr, stderr
        [shard] = job_info(server, job)["shards"]
        assert "path b'caf\\xe9' is not UTF-8" in shard["error"], shard


def test_a_command_that_does_not_leave_pfs_out_a_directory_fails_its_shard(server, tmp_path, data):
    for script, left in (("rm -r /pfs/out", "removed"), ("rm -r /pfs/out; echo x > /pfs/out", "not a directory"),
                         ("mv /pfs/out /pfs/o; ln -s /pfs/o /pfs/out", "a symbolic link")):
        job = create_job(server, tmp_path, ["sh", "-c", script])
        [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
        assert code == 2 and "Traceback" not in stderr, stderr
        [shard] = job_info(server, job)["shards"]
        assert f"the command left /pfs/out {left}" in shard["error"], shard


def test_links_to_the_inputs_are_output_as_what_they_name(server, tmp_path, data):
    """1.x's way to move an input's files without copying them: a link in /pfs/out to an input's file, or to one
    of its directories, is output as what it names (nothing sent again: the server has its chunks)."""
    script = ("cd /pfs/out; ln -s /pfs/data/sales.csv sales; ln -s ../data/dir d; mkdir sub; "
              "ln -s ../../data/small.txt sub/small; ln -s /pfs/data all")
    job = create_job(server, tmp_path, ["sh", "-c", script], method="global")
    [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
    assert code == 0, stderr
    inputs = {f"all/{name}": content for name, content in data.items()}
    assert read_tree(server, "out") == {"sales": data["sales.csv"], "d/a.txt": data["dir/a.txt"],
                                        "d/b.txt": data["dir/b.txt"], "sub/small": data["small.txt"], **inputs}
    [shard] = job_info(server, job)["shards"]
    assert shard["bytes_sent"] == 0, shard
    logs = server.pfs("get-logs", "--job", job).text  # each named as stored, none read
    assert f"output all/dir/b.txt ({size(len(data['dir/b.txt']))}, as its input stores it)" in logs, logs
    assert logs.count(", as its input stores it)") == len(inputs) + 4


def test_a_link_to_a_file_a_worker_sees_part_of_outputs_that_part(server, tmp_path, data):
    """A map worker sees some of a file's chunks: a link to it outputs what the command saw through it."""
    job = create_job(server, tmp_path, ["sh", "-c", "ln -s /pfs/data/sales.csv /pfs/out/part"], parallelism=2)
    assert [code for code, _, _ in run_shims(server, tmp_path, job, 2)] == [0, 0]
    assert all(0 < s["bytes_out"] < len(data["sales.csv"]) for s in job_info(server, job)["shards"])
    [both] = read_tree(server, "out").values()  # the two parts, appended in shard order: every line once
    assert sorted(both.splitlines()) == sorted(data["sales.csv"].splitlines())
    assert "as its input stores it" not in server.pfs("get-logs", "--job", job).text


def test_a_link_in_pfs_out_to_nothing_the_command_sees_fails_the_shard(server, tmp_path, data):
    """Left out, such a link was output lost without a word: a link to a file outside this shard of the input, to
    nothing, or to a directory that is not an input's (/, a loop into /pfs/out) fails the shard, naming it."""
    for script, said in (("ln -s /pfs/data/nothing /pfs/out/x", "/pfs/out/x is a link to /pfs/data/nothing, which "
                                                                "the command cannot see: No such file or directory"),
                         ("ln -s x /pfs/out/x", "/pfs/out/x is a link to x, which the command cannot see: Too many "
                                                "levels of symbolic links"),
                         ("ln -s / /pfs/out/root", "/pfs/out/root is a link to the directory /: only links to files,"),
                         ("mkdir /pfs/out/d; ln -s .. /pfs/out/d/up", "/pfs/out/d/up is a link to the directory ")):
        job = create_job(server, tmp_path, ["sh", "-c", script])
        [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
        assert code == 2 and "Traceback" not in stderr, stderr
        [shard] = job_info(server, job)["shards"]
        assert said in shard["error"], shard


def test_what_the_command_leaves_running_ends_with_it(server, tmp_path, data):
    """A process the command started and left behind (a `sleep &`, a daemon of its own session) is killed when
    the command ends: it would hold the command's output pipes, and so the worker, open, write to /pfs/out while
    it is read, and run on beside the next try."""
    marker = tmp_path / "late"
    script = f"sleep 31.25 & setsid sh -c 'sleep 2; echo late > {marker}' & echo x > /pfs/out/x"
    job = create_job(server, tmp_path, ["sh", "-c", script])
    started = time.monotonic()
    [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
    assert code == 0, stderr
    assert time.monotonic() - started < 20  # not held open by the sleep
    assert not sleeping("31.25")
    time.sleep(3)
    assert not marker.exists()


def test_what_the_command_started_ends_with_a_killed_worker(server, tmp_path, data):
    """The worker killed (kill -9, the OOM killer, the server's end taking it along): its command and every
    process the command started end too, not only those the worker could reap; its try is left to the next."""
    marker = tmp_path / "late"
    script = f"sleep 32.25 & sh -c 'sleep 2; echo late > {marker}; sleep 33.25' & echo started; wait"
    proc = start_shim(server, tmp_path, create_job(server, tmp_path, ["sh", "-c", script]), 0)
    for line in proc.stdout:
        if b"started" in line:
            break
    wait_for(lambda: sleeping("32.25"))
    proc.kill()
    assert finish(proc)[0] == -signal.SIGKILL
    wait_for(lambda: not sleeping("32.25") and not mount_processes(server), timeout=10)
    time.sleep(2.5)
    assert not marker.exists()


def test_the_command_sees_its_own_pids_in_proc(server, tmp_path, data):
    """The command's processes are in a PID namespace of their own, with its /proc, so /proc/$$ is the shell's;
    the pids start where the kernel says, so two workers' /tmp/x.$$ are not one file."""
    job = create_job(server, tmp_path, ["sh", "-c", "cat /proc/$$/cmdline | tr '\\0' ' ' > /pfs/out/cmd-$$"],
                     parallelism=2)
    assert [r[0] for r in run_shims(server, tmp_path, job, 2)] == [0, 0]
    out = read_tree(server, "out")
    assert len(out) == 2 and all(v.startswith(b"sh -c cat /proc/$$/cmdline") for v in out.values()), out


def test_the_processes_around_the_command_get_none_of_its_environment(server, tmp_path, data):
    """The command's init (shim/pidns.py, run as the worker, root here) runs in an empty environment: what the
    manifest sets (LD_PRELOAD, say) is the command's alone, and never runs with the worker's privilege."""
    script = "sleep 4.25; echo \"$GREETING\" > /pfs/out/g"
    job = create_job(server, tmp_path, ["sh", "-c", script], env={"GREETING": "hello", "LD_LIBRARY_PATH": "/nowhere"})
    proc = start_shim(server, tmp_path, job, 0)
    wait_for(lambda: sleeping("4.25"))
    inits = [pid for pid, args in processes()
             if any(a.endswith(b"shim/pidns.py") for a in args) and script.encode() in args]
    environs = [pathlib.Path(f"/proc/{pid}/environ").read_bytes() for pid in inits]
    assert finish(proc)[0] == 0
    assert len(inits) == 2 and environs == [b"", b""]  # this process and the namespace's first
    assert read_tree(server, "out")["g"] == b"hello\n"


@pytest.mark.parametrize("script", [
    'trap "" TERM; sleep 35.25 & kill 0; echo x > /pfs/out/x',  # a process group of its own: not the worker's
    'trap "" INT; kill -INT 1; echo x > /pfs/out/x',  # its namespace's first process passes the signal on
])
def test_what_a_command_signals_stays_within_it(server, tmp_path, data, script):
    job = create_job(server, tmp_path, ["sh", "-c", script])
    [(code, _, stderr)] = run_shims(server, tmp_path, job, 1)
    assert code == 0 and "Traceback" not in server.pfs("get-logs", "--job", job).text, stderr
    assert read_tree(server, "out") == {"x": b"x\n"} and not sleeping("35.25")


def test_a_command_killed_by_a_signal_is_said_so(server, tmp_path, data):
    job = create_job(server, tmp_path, ["sh", "-c", "kill -SEGV $$"])
    [(code, _, _)] = run_shims(server, tmp_path, job, 1)
    [shard] = job_info(server, job)["shards"]
    assert code == 1 and shard["error"].startswith("sh was killed by SIGSEGV (code -11)"), shard


def test_a_path_in_the_manifest_s_env_is_the_command_s_alone(server, tmp_path, data):
    """The helpers before the command (choom) are found where the worker finds them, not on the command's PATH."""
    job = create_job(server, tmp_path, ["/bin/sh", "-c", "echo $PATH > /pfs/out/path"], env={"PATH": "/opt/none"})
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    assert read_tree(server, "out") == {"path": b"/opt/none\n"}


def test_a_line_of_output_without_an_end_is_logged_in_pieces(server, tmp_path, data):
    """A command printing megabytes with no newline (a binary, minified JSON): the worker reads it a piece at a
    time, each logged as a line (as much of it as a line keeps), not the whole held in memory."""
    job = create_job(server, tmp_path, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo > /pfs/out/x"])
    assert run_shims(server, tmp_path, job, 1)[0][0] == 0
    lines = [line for line in server.pfs("get-logs", "--job", job).text.splitlines() if line.strip("x") == ""]
    assert len(lines) == -(-3_000_000 // LINE_BYTES) and all(0 < len(line) <= MAX_LOG_TEXT for line in lines)


def sleeping(seconds: str) -> bool:
    """Whether a `sleep SECONDS` runs on this machine (a length no other test sleeps)."""
    return any(args[:2] == [b"sleep", seconds.encode()] for _, args in processes())


def test_a_file_of_several_chunks_changed_after_they_were_sent_is_staged_as_the_command_left_it(
        server, tmp_path, data, host_dir):
    """Every chunk of a file is sent while the command waits; then one of its last is changed through mmap, which
    no event tells of: the check at the end, which reads and hashes the chunks of such a file at once, finds that
    one changed, and what is staged is the file as the command left it."""
    marker = host_dir / "go-on"
    written = random.Random(9).randbytes(6 << 20)
    at = 5 << 20
    script = ("import mmap, os, random, time\n"
              "with open('/pfs/out/big', 'wb') as f: f.write(random.Random(9).randbytes(6 << 20))\n"
              f"while not os.path.exists({str(marker)!r}): time.sleep(0.05)\n"
              "with open('/pfs/out/big', 'r+b') as f:\n"
              f"    m = mmap.mmap(f.fileno(), 0); m[{at} : {at + 7}] = b'CHANGED'; m.flush(); m.close()\n")
    job = create_job(server, tmp_path, ["python3", "-c", script])  # the machine's: the venv may be in /tmp
    worker = start_shim(server, tmp_path, job, 0)
    try:
        with server.client() as c:
            chunks = [address(d) for d in Chunker(c.chunk_avg_size, "line").split(io.BytesIO(written))]
            assert len(chunks) > 2
            wait_for(lambda: not c.missing_chunks(chunks), 60)  # all sent, while the command waits
        assert worker.poll() is None
        marker.touch()
        assert finish(worker)[0] == 0
    finally:
        stop_process(worker, signal.SIGKILL, 10)
    assert read_tree(server, "out") == {"big": written[:at] + b"CHANGED" + written[at + 7 :]}


def test_a_spare_worker_runs_the_shard_it_is_given(server, tmp_path, data):
    """`job-shim --standby`: starts, mount and all, then takes its job, shard, try and token on standard input."""
    job = create_job(server, tmp_path, COPY)
    token = server.token
    env = {k: v for k, v in {**os.environ, **server.env}.items() if k not in ("PFS_TOKEN", "PFS_TOKEN_FILE")}
    spare = subprocess.Popen([SHIM, "--address", server.address, "--standby", "--workspace", str(tmp_path / "ws")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    wait_for(lambda: mount_processes(server), 30)  # its mount started before it knew its shard
    out, err = spare.communicate(json.dumps({"job": job, "shard": 0, "attempt": 0, "token": token}).encode() + b"\n",
                                 timeout=120)
    assert spare.returncode == 0, err
    assert read_tree(server, "out") == data
    assert not mount_processes(server)


@pytest.mark.parametrize("line, said", [
    (b"", "JSONDecodeError"),
    (b'{"job": "j", "shard": 0, "attempt": 0}\n', "KeyError: 'token'"),
    (b'{"job": "j", "shard": "0", "attempt": 0, "token": null}\n', "a field of the wrong type"),
])
def test_a_spare_worker_given_no_shard_says_so_in_one_line(server, tmp_path, line, said):
    spare = subprocess.run([SHIM, "--address", server.address, "--standby", "--workspace", str(tmp_path / "ws")],
                           input=line, capture_output=True, timeout=60, env={**os.environ, **server.env})
    assert spare.returncode == 2 and said in spare.stderr.decode(), spare.stderr
    assert len(spare.stderr.decode().strip().splitlines()) == 1
    assert not mount_processes(server) and os.listdir(tmp_path / "ws") == []
