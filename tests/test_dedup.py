"""The same bytes are stored once; a small change stores only the chunks around it."""

import io
import os
import random

import pytest

from conftest import stored_chunks
from pfs.core.model import CommitRef


def store_bytes(server) -> int:
    return sum(p.stat().st_size for p in server.data_dir.rglob("*") if p.is_file())


def chunk_files(server) -> set[str]:
    return set(stored_chunks(server.data_dir))


@pytest.mark.slow
def test_same_100_mib_twice_grows_the_store_by_under_1_percent(big_server, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(100 << 20))
    big_server.pfs("create-repo", "r")
    big_server.pfs("put-file", "r", "master", "a", "-c", "-f", str(src))
    before = store_bytes(big_server)
    big_server.pfs("put-file", "r", "master", "b", "-c", "-f", str(src))
    growth = store_bytes(big_server) - before
    assert 0 <= growth < 0.01 * (100 << 20), growth
    client = big_server.client()
    assert client.inspect_file(CommitRef("r", "master"), "a").chunks == client.inspect_file(
        CommitRef("r", "master"), "b"
    ).chunks


def test_insertion_in_the_middle_stores_only_a_few_chunks(big_server, tmp_path):
    r = random.Random(3)
    text = b"".join(b"%d,%f,%s\n" % (i, r.random(), b"x" * r.randint(0, 40)) for i in range(1_500_000))
    assert len(text) > 40 << 20
    src = tmp_path / "text.csv"
    src.write_bytes(text)
    big_server.pfs("create-repo", "r")
    big_server.pfs("put-file", "r", "master", "t", "-c", "-f", str(src))
    before = chunk_files(big_server)
    middle = text.index(b"\n", len(text) // 2) + 1
    src.write_bytes(text[:middle] + b"a new line in the middle\n" + text[middle:])
    big_server.pfs("put-file", "r", "master", "t", "-o", "-c", "-f", str(src))
    new = chunk_files(big_server) - before
    assert 1 <= len(new) <= 3, len(new)
    assert len(before) >= 20
    assert big_server.pfs("get-file", "r", "master", "t").stdout == src.read_bytes()


def test_a_second_upload_of_the_same_data_sends_nothing(server):
    from pfs.client.upload import into_commit

    data = os.urandom(300_000)
    client = server.client()
    client.create_repo("r")
    sent = []
    for name in ("a", "b"):
        c = client.start_commit("r")
        with into_commit(client, CommitRef("r", c.id)) as up:
            up.put(name, io.BytesIO(data))
        client.finish_commit(CommitRef("r", c.id))
        sent.append(up.bytes_sent)
    assert sent[0] > len(data) * 0.9  # random bytes do not compress
    assert sent[1] == 0
    assert b"".join(client.read_file(CommitRef("r", "master"), "b")) == data
