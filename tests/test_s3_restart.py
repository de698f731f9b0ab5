"""The S3 server crashes and comes back during a large put-file: the upload fails in one line or completes, a retry
completes, and every commit that finished reads back byte for byte."""

import filecmp
import os
import random
import signal
import subprocess

import pytest

from conftest import PFS, Result, assert_one_line_error, s3_server, stop_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # 150 MiB up twice and down twice, on shared cores


def test_s3_killed_and_restarted_during_a_large_put_file(own_seaweed, tmp_path):
    src = tmp_path / "large.bin"
    r = random.Random(21)
    with open(src, "wb") as f:
        for i in range(150):  # 150 MiB in 1 MiB blocks, every fourth one of three seen before: some chunks recur
            f.write(random.Random(i % 3).randbytes(1 << 20) if i % 4 == 0 else r.randbytes(1 << 20))
    bucket = own_seaweed.make_bucket()
    # default 1 MiB chunks; no cache, so every read-back comes from the bucket
    server = s3_server(own_seaweed, tmp_path / "data", bucket=bucket, args=("--cache-size", "0"))
    server.start()
    put = ("put-file", "r", "master", "large.bin", "-c", "-o", "-f", str(src))  # -o: each commit holds SRC once
    upload = None
    try:
        server.pfs("create-repo", "r")
        upload = subprocess.Popen([PFS, *put], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, **server.env})

        def under_way() -> bool:  # packs of chunks (16 MiB each) are reaching the bucket (or the upload is over)
            listed = own_seaweed.client().list_objects_v2(Bucket=bucket, Prefix="pfs/packs/", MaxKeys=2)
            return upload.poll() is not None or listed["KeyCount"] >= 2

        wait_for(under_way, 120)
        assert upload.poll() is None, "put-file ended before the S3 server could be killed under it"
        own_seaweed.kill()
        own_seaweed.start()
        out, err = upload.communicate(timeout=300)
        first = Result(upload.returncode, out, err.decode())
        if first.returncode:
            assert_one_line_error(first)

        server.pfs(*put)  # the retry completes
        commits = server.client().list_commits("r")
        assert len(commits) == (1 if first.returncode else 2)  # a failed put-file -c leaves no commit
        for commit in commits:
            assert commit.is_finished
            copy = tmp_path / "copy.bin"
            server.pfs("get-file", "r", commit.id, "large.bin", "-o", str(copy))
            assert filecmp.cmp(copy, src, shallow=False), commit.id
            copy.unlink()
    finally:
        if upload:
            stop_process(upload, signal.SIGKILL, 5)
        server.stop()
