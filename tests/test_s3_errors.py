"""A chunk store on S3 that cannot be used: one line naming endpoint and bucket at server start; mid-call, one line
from the CLI (UNAVAILABLE, never a traceback or a hang), and the same calls work once S3 is back."""

import os
import random
import socket

import pytest

from conftest import Server, assert_one_line_error, s3_server


def refused(server: Server) -> str:
    """What SERVER, which must refuse to start, said: its only line of output."""
    with pytest.raises(RuntimeError, match="server did not start"):  # the ready pipe closed: it exited
        server.start()
    assert server.proc.returncode != 0
    output = server.log.read_text()
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def cannot_use(line: str, bucket: str, endpoint: str, *reason: str) -> None:
    """LINE is the server's refusal naming BUCKET and ENDPOINT, for the REASON its fragments say."""
    assert line.startswith(f"pfs server: cannot use s3://{bucket}/pfs at {endpoint}: "), line
    for fragment in reason:
        assert fragment in line.split(": ", 2)[2], (fragment, line)


@pytest.mark.parametrize("keys", [
    {"AWS_ACCESS_KEY_ID": "NOSUCHKEY"},  # a user S3 does not know
    {"AWS_SECRET_ACCESS_KEY": "wrong"},  # a known user, a wrong secret: every signature fails
])
def test_wrong_keys(seaweed, tmp_path, keys):
    bucket = seaweed.make_bucket()
    server = s3_server(seaweed, tmp_path / "data", bucket=bucket)
    server.process_env.update(keys)
    cannot_use(refused(server), bucket, seaweed.endpoint, "keys are refused", "AWS_SECRET_ACCESS_KEY")


def test_a_missing_bucket(seaweed, tmp_path):
    server = s3_server(seaweed, tmp_path / "data", bucket="no-such-bucket")
    cannot_use(refused(server), "no-such-bucket", seaweed.endpoint, "does not exist")
    assert "no-such-bucket" not in {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}  # not made


def test_a_dead_endpoint(seaweed, tmp_path):
    with socket.socket() as hole:  # bound, never listening: connections to it are refused while the test runs
        hole.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
        server = s3_server(seaweed, tmp_path / "data", bucket="bucket", endpoint=endpoint)
        cannot_use(refused(server), "bucket", endpoint, "no answer")


@pytest.mark.slow  # SeaweedFS stopped and started again
def test_calls_while_s3_is_down_fail_in_one_line_and_work_once_it_is_back(own_seaweed, tmp_path):
    # no cache: every read of a chunk goes to the bucket
    bucket = own_seaweed.make_bucket()
    server = s3_server(own_seaweed, tmp_path / "data", bucket=bucket, args=("--cache-size", "0"))
    server.start()
    try:
        r = random.Random(13)
        stored, new = r.randbytes(3 << 20), r.randbytes(3 << 20)  # a few default-size chunks each
        server.pfs("create-repo", "r")
        server.pfs("put-file", "r", "master", "stored", "-c", "-f", "-", input=stored)
        own_seaweed.stop()
        down = (f"s3://{bucket}/pfs", own_seaweed.endpoint, "does not answer")  # what is down: not the pfs server
        assert_one_line_error(server.pfs("get-file", "r", "master", "stored", check=False), *down)
        assert_one_line_error(server.pfs("put-file", "r", "master", "new", "-c", "-f", "-", input=new, check=False),
                              *down)
        assert server.proc.poll() is None  # the server stays up through the outage
        own_seaweed.start()
        assert server.pfs("get-file", "r", "master", "stored").stdout == stored
        server.pfs("put-file", "r", "master", "new", "-c", "-f", "-", input=new)
        assert server.pfs("get-file", "r", "master", "new").stdout == new
        assert len(server.client().list_commits("r")) == 2  # the failed put-file left no commit behind
    finally:
        server.stop()


def test_the_endpoint_may_come_from_the_environment(seaweed, tmp_path):
    """AWS_ENDPOINT_URL, the standard variable, names the S3-compatible server when --s3-endpoint does not."""
    bucket = seaweed.make_bucket()
    server = Server(tmp_path / "data", args=("--storage", f"s3://{bucket}/pfs"),
                    process_env={**os.environ, **seaweed.env, "AWS_ENDPOINT_URL": seaweed.endpoint})
    server.start()
    try:
        server.pfs("create-repo", "r")
        server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"by the environment's endpoint\n")
        assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix="pfs/packs/")["KeyCount"] == 1  # the pack
    finally:
        server.stop()


def test_an_endpoint_that_is_not_a_url_is_refused_in_one_line(tmp_path):
    for endpoint in ("127.0.0.1:8333", "http://[::1:8333"):  # no scheme; a bracket left open
        server = Server(tmp_path / "data", args=("--storage", "s3://b/pfs", "--s3-endpoint", endpoint))
        assert refused(server) == (f"pfs server: the S3 endpoint {endpoint!r} (--s3-endpoint, or $AWS_ENDPOINT_URL) "
                                   "is not a URL: give http://HOST:PORT or https://HOST")
