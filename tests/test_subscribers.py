"""500 subscribers idle on a pipeline's output repo while its next job runs (raw gRPC streams, and one
`pfs subscribe-commit` process): the job finishes, each subscriber gets its output commit, and the server holds
no thread per subscriber. How long the job takes beside them, against alone, is bench/subscribers.py's to
measure: tests assert no times."""

import os
import queue
import subprocess
import threading

import pytest

from conftest import PFS, needs
from pfs.core.model import CommitRef
from test_pipelines import flush, get, pipeline, put, repo_input
from test_streams import CHANNELS, MAX_THREADS, STREAMS, cancel, channels, next_of_each, subscribe, threads

pytestmark = [pytest.mark.slow, needs("fusermount3", "setpriv", root=True, fuse=True)]

COPY = ["sh", "-c", "cp /pfs/in/* /pfs/out/"]
LINE_TIMEOUT = 60  # seconds: a liveness bound


def lines(proc: subprocess.Popen) -> queue.Queue:
    """PROC's output lines as they come, read by a thread of their own (which closes the pipe at its end)."""
    got: queue.Queue = queue.Queue()

    def read() -> None:
        with proc.stdout:
            for line in proc.stdout:
                got.put(line.decode().strip())

    threading.Thread(target=read, daemon=True).start()
    return got


def test_500_subscribers_each_get_the_output_of_a_job_that_runs_beside_them(server, tmp_path):
    put(server, "in", {"x": b"1\n"})
    pipeline(server, tmp_path, "copy", COPY, [repo_input("in")])
    flush(server, "in/master")  # its first job, alone
    with server.client() as client:
        first = client.inspect_commit(CommitRef("copy", "master")).id
        cli = subprocess.Popen([PFS, "subscribe-commit", "copy", "master"], stdout=subprocess.PIPE,
                               env={**os.environ, **server.env})
        try:
            said = lines(cli)
            with channels(server, CHANNELS) as chans:
                calls = subscribe(chans, STREAMS, repo="copy")
                try:
                    assert {c.id for c in next_of_each(calls)} == {first}  # every stream is open, and now idle
                    assert said.get(timeout=LINE_TIMEOUT) == first
                    assert threads(server.proc.pid) < MAX_THREADS
                    put(server, "in", {"y": b"2\n"}, create=False)
                    assert "success" in flush(server, "in/master").text  # the job ran beside them
                    assert threads(server.proc.pid) < MAX_THREADS
                    output = client.inspect_commit(CommitRef("copy", "master")).id
                    assert output != first and get(server, "copy", "y") == b"2\n"
                    assert {c.id for c in next_of_each(calls)} == {output}  # announced on every stream
                    assert said.get(timeout=LINE_TIMEOUT) == output
                finally:
                    cancel(calls)
        finally:
            cli.kill()
            cli.wait()
