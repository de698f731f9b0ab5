"""A full disk is a clean, recoverable condition: one line naming the data dir, nothing half done left
behind, finished commits untouched, and the same server works again once there is room.

The data dir is a tmpfs of a few MB (so this needs root), with a filler file beside it to free later.
"""

import contextlib
import os
import pathlib
import subprocess

import pytest

from conftest import Server, assert_one_line_error, needs
from pfs.client.upload import into_commit
from pfs.core.errors import ResourceExhausted
from pfs.core.model import CommitRef

pytestmark = needs("mount", "umount", root=True)

SIZE = 12 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of SIZE bytes, unmounted at the end."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def full_server(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(os.urandom(3 << 20))
    s = Server(small_disk / "data")
    s.start()
    try:
        yield s, filler
    finally:
        s.stop()


def commits(server: Server) -> list[tuple[str, float]]:
    with server.client() as client:
        return [(c.id, c.finished) for c in client.list_commits("r")]


def test_a_full_disk_fails_cleanly_and_recovers(full_server, tmp_path):
    server, filler = full_server
    data_dir = server.data_dir.resolve()
    server.pfs("create-repo", "r")
    kept = os.urandom(300 << 10)
    server.pfs("put-file", "r", "master", "kept", "-c", "-f", "-", input=kept)
    before = commits(server)

    big = tmp_path / "big"
    big.write_bytes(os.urandom(SIZE))
    result = server.pfs("put-file", "r", "master", "big", "-c", "-f", str(big), check=False)
    assert_one_line_error(result, "no space left", str(data_dir))
    assert commits(server) == before  # the commit -c started is gone; the branch is as it was
    assert not list((data_dir / "tmp").iterdir())  # no partial chunk left behind
    assert server.pfs("get-file", "r", "master", "kept").stdout == kept

    with server.client() as client:  # the status is RESOURCE_EXHAUSTED: the client's ResourceExhausted
        ref = CommitRef("r", client.start_commit("r").id)
        with pytest.raises(ResourceExhausted, match=str(data_dir)):
            with into_commit(client, ref) as up, open(big, "rb") as f:
                up.put("big", f)
        client.delete_commit(ref)
    assert not list((data_dir / "tmp").iterdir())

    filler.unlink()  # room again, on the same running server
    more = os.urandom(2 << 20)
    server.pfs("put-file", "r", "master", "more", "-c", "-f", "-", input=more)
    assert server.pfs("get-file", "r", "master", "more").stdout == more
    assert server.pfs("get-file", "r", "master", "kept").stdout == kept
    assert server.pfs("get-file", "r", "master^", "kept").stdout == kept


def fill(path: pathlib.Path) -> None:
    """Takes every byte left on PATH's file system."""
    with open(path, "wb", buffering=0) as f:
        for size in (64 << 10, 512):
            with contextlib.suppress(OSError):
                while f.write(bytes(size)):
                    pass
    assert os.statvfs(path.parent).f_bavail == 0


def test_a_disk_with_no_byte_free_can_still_be_emptied_through_pfs(full_server):
    """SQLite needs room in its log to delete anything: the data dir's reserve lets delete-commit, delete-repo and
    garbage-collect run on a disk with not a byte free (where else the data dir's own disk could not be emptied
    but by hand), and a server stopped there start again; once they are done the reserve is kept again."""
    server, filler = full_server
    filler.unlink()  # room for the commits; then none at all
    for repo in ("r", "old"):
        server.pfs("create-repo", repo)
    kept = os.urandom(300 << 10)
    server.pfs("put-file", "r", "master", "kept", "-c", "-f", "-", input=kept)
    for name in ("a", "b"):
        server.pfs("put-file", "old", "master", name, "-c", "-f", "-", input=os.urandom(512 << 10))
    fill(filler.parent / "rest")
    server.stop()  # and started again on a disk with no byte free: the reserve gives its start room too
    fill(filler.parent / "rest-after-stop")  # what the server's log had held
    server.start()
    server.pfs("delete-commit", "old", "master")
    (filler.parent / "rest-after-stop").unlink()  # as it was before the stop
    server.pfs("delete-repo", "old")
    with server.client() as client:
        [*_, freed] = client.garbage_collect(grace=0)
    assert freed.bytes >= 1 << 20, freed
    reserve = server.data_dir / "reserve"
    assert reserve.stat().st_size == SIZE // 8  # an eighth of the disk: kept again from the room freed
    server.pfs("put-file", "r", "master", "more", "-c", "-f", "-", input=os.urandom(1 << 20))
    assert server.pfs("get-file", "r", "master", "kept").stdout == kept
