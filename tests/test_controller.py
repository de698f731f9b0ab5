"""The pipeline controller when things go wrong: failures it records and outlives, a missing tool, SIGTERM with
work in flight, stop-pipeline with a running job. Real servers, real workers."""

import json
import os
import pathlib
import signal
import subprocess

import pytest

from conftest import PFS, Result, Server, assert_one_line_error, needs, wait_for
from test_pipelines import flush, get, jobs_of, pipeline, put, repo_input

pytestmark = [pytest.mark.slow, needs("fusermount3", "setpriv", root=True, fuse=True)]  # real workers


def first_try_sleeps(marker: pathlib.Path) -> list[str]:
    """A command that sleeps (long) on its first try only, then copies /pfs/data/x to the output."""
    return ["sh", "-c", f"if [ ! -e {marker} ]; then touch {marker}; sleep 1000; fi; cp /pfs/data/x /pfs/out/x"]


def workers_of(job_id: str) -> list[int]:
    """The pids of job JOB_ID's worker processes: its job-shims, their commands and whatever those started."""
    pids = []
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            if job_id.encode() in (proc / "cmdline").read_bytes() or \
                    f"PFS_JOB={job_id}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


def inspect(server, name: str) -> dict:
    return json.loads(server.pfs("inspect-pipeline", name, "--raw").text)


def test_a_pipeline_that_cannot_make_a_workspace_says_why_and_recovers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "workers").write_text("in the way of the workers' workspaces")
    server = Server(data, 4096)
    server.start()
    try:
        put(server, "data", {"x": b"1\n"})
        pipeline(server, tmp_path, "p", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
        info = wait_for(lambda: (i := inspect(server, "p"))["reason"] and i, 30)
        assert "Not a directory" in info["reason"] and info["failures"] >= 1
        assert "Reason" in server.pfs("inspect-pipeline", "p").text
        assert "failing" in server.pfs("list-pipeline").text
        server.pfs("list-repo")  # the server keeps answering
        (data / "workers").unlink()  # the cause is gone
        put(server, "data", {"y": b"2\n"}, create=False)
        flush(server, "data/master")
        assert get(server, "p", "x") == b"1\n"
        wait_for(lambda: inspect(server, "p")["reason"] == "", 30)
        assert inspect(server, "p")["failures"] == 0
    finally:
        server.stop()


def test_a_pipeline_whose_input_repo_is_deleted_says_why_and_goes_on_once_it_is_back(server, tmp_path):
    put(server, "data", {"x": b"1\n"})
    pipeline(server, tmp_path, "p", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
    flush(server, "data/master")
    assert_one_line_error(server.pfs("delete-repo", "data", check=False),  # as 1.x: only by force
                          "repo 'data' is an input of pipeline p", "pfs delete-repo data --force")
    assert "data" in server.pfs("list-repo").text
    server.pfs("delete-repo", "data", "--force")
    info = wait_for(lambda: (i := inspect(server, "p"))["reason"] and i, 30)
    assert "its input repo 'data' is not there" in info["reason"], info
    assert "failing" in server.pfs("list-pipeline").text
    put(server, "data", {"x": b"2\n"})  # made again
    flush(server, "data/master")
    assert get(server, "p", "x") == b"2\n"
    wait_for(lambda: inspect(server, "p")["reason"] == "", 30)


def test_a_missing_tool_is_said_at_start_and_refused_at_create_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no setpriv
    server = Server(tmp_path / "data", 4096)
    server.start()
    try:
        server.pfs("create-repo", "data")  # storage is served
        said = [line for line in server.log.read_text().splitlines() if "setpriv" in line]
        assert len(said) == 1 and "util-linux" in said[0], said
        refused = pipeline(server, tmp_path, "p", ["true"], [repo_input("data")], check=False)
        assert_one_line_error(refused, "setpriv", "apt-get install util-linux")
    finally:
        server.stop()


def slow_job(server, tmp_path, host_dir) -> dict:
    """A pipeline "slow" over repo data whose job's first try is running (sleeping) now: that job."""
    marker = host_dir / "tried"
    put(server, "data", {"x": b"1\n"})
    pipeline(server, tmp_path, "slow", first_try_sleeps(marker), [repo_input("data", "global")])
    wait_for(marker.exists, 60)
    [job] = jobs_of(server, "slow")
    return job


def test_sigterm_stops_a_server_with_a_job_and_streams_in_flight(server, tmp_path, host_dir):
    job = slow_job(server, tmp_path, host_dir)
    env = {**os.environ, **server.env}
    subscribe = subprocess.Popen([PFS, "subscribe-commit", "data", "master"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
    flushing = subprocess.Popen([PFS, "flush-commit", "data/master"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        subscribe.stdout.readline()  # the stream is open: it has sent the commit there is
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(20)  # a liveness bound, not a speed claim
        assert "exiting now" not in server.log.read_text()  # stopped in order, not by the last resort
        assert workers_of(job["id"]) == []  # no worker left, nor the command's sleep
        for client in (subscribe, flushing):  # told, not left hanging nor cut off
            out, err = client.communicate(timeout=20)
            assert_one_line_error(Result(client.returncode, out, err.decode()))
            # the server's own word, or, if it was gone before the call ended, the client's
            assert any(said in err.decode() for said in ("the server is stopping", "cannot reach the pfs server",
                                                         "was cut off")), err
    finally:
        for client in (subscribe, flushing):
            client.kill()
            client.communicate()
    server.start()
    flush(server, "data/master")
    [job] = jobs_of(server, "slow")
    assert job["state"] == "success"  # the job cut short ran again
    assert get(server, "slow", "x") == b"1\n"


def test_start_pipeline_runs_the_commit_whose_job_stop_pipeline_stopped(server, tmp_path, host_dir):
    """The stopped job's commit was the last: once started again, the pipeline runs it once more (its worker's
    first try slept; this one copies), rather than count it processed with no output."""
    job = slow_job(server, tmp_path, host_dir)
    server.pfs("stop-pipeline", "slow")
    wait_for(lambda: workers_of(job["id"]) == [], 15)
    server.pfs("start-pipeline", "slow")
    flush(server, "data/master")
    assert get(server, "slow", "x") == b"1\n"
    assert [j["state"] for j in jobs_of(server, "slow")] == ["success", "failure"]


def test_stop_pipeline_stops_a_running_job_and_start_pipeline_catches_up(server, tmp_path, host_dir):
    job = slow_job(server, tmp_path, host_dir)
    assert workers_of(job["id"])
    server.pfs("stop-pipeline", "slow")
    wait_for(lambda: workers_of(job["id"]) == [], 15)
    [job] = jobs_of(server, "slow")
    assert job["state"] == "failure" and job["error"] == "stopped by stop-pipeline"
    assert_one_line_error(flush(server, "data/master", check=False), "stopped by stop-pipeline")
    put(server, "data", {"x": b"2\n"}, create=False)
    assert_one_line_error(flush(server, "data/master", check=False), "pipeline slow is stopped",
                          "pfs start-pipeline slow")
    server.pfs("start-pipeline", "slow")
    flush(server, "data/master")
    assert get(server, "slow", "x") == b"1\n2\n"  # the job after the stopped one sees its data too
    assert [j["state"] for j in jobs_of(server, "slow")] == ["success", "failure"]
