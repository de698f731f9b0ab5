"""A server killed during a put-file loses no committed data and leaves no half-written chunk."""

import os
import subprocess

import pytest

from conftest import PFS, stored_chunks, wait_for
from pfs.core import frames
from pfs.core.model import CommitRef


@pytest.mark.slow  # 400 MiB
def test_kill_during_upload(big_server, tmp_path):
    server = big_server
    server.pfs("create-repo", "r")
    kept = os.urandom(300_000)
    server.pfs("put-file", "r", "master", "kept", "-c", "-f", "-", input=kept)
    open_commit = server.pfs("start-commit", "r").text.strip()

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(400 << 20))
    upload = subprocess.Popen(
        [PFS, "put-file", "r", open_commit, "big", "-f", str(big)],
        env={**os.environ, **server.env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    chunks = server.data_dir / "chunks"
    wait_for(lambda: sum(1 for p in chunks.rglob("*") if p.is_file()) > 40, 60)  # mid-upload
    server.kill()
    _, err = upload.communicate(timeout=60)
    assert upload.returncode == 1
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err

    server.start()
    assert not list((server.data_dir / "tmp").iterdir())  # leftovers of the crash are gone
    for name, frame in stored_chunks(server.data_dir).items():  # every stored chunk is whole and right
        frames.check(bytes.fromhex(name), frame)
    assert server.pfs("get-file", "r", "master^", "kept").stdout == kept
    client = server.client()
    assert client.inspect_commit(CommitRef("r", "master")).id == open_commit
    assert [f.path for f in client.list_files(CommitRef("r", open_commit))] == ["kept"]
    # the upload can simply be done again
    server.pfs("put-file", "r", open_commit, "big", "-f", str(big))
    server.pfs("finish-commit", "r", open_commit)
    assert client.inspect_file(CommitRef("r", "master"), "big").size_bytes == 400 << 20
