"""The upload pipeline (pfs.client.upload), shrunk so a few files take its many-segment paths: files are recorded
in segments as the streams that carried their chunks end, in the order they were put; a failure in any stage
surfaces in the caller and leaves no stage running. (A server killed mid-upload: test_crash.py.)"""

import io
import random
import threading

import pytest

from conftest import wait_for
from pfs.client import upload
from pfs.core.errors import FailedPrecondition
from pfs.core.model import CommitRef


@pytest.fixture(autouse=True)
def small_stages(monkeypatch):
    monkeypatch.setattr(upload, "MIN_SEGMENT_FILES", 3)
    monkeypatch.setattr(upload, "SEGMENT_FILES", 3)
    monkeypatch.setattr(upload, "BATCH_CHUNKS", 2)


def stages_running() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("pfs-send", "pfs-record"))]


def read(client, ref: CommitRef, path: str) -> bytes:
    return b"".join(client.read_file(ref, path))


def test_files_are_recorded_in_segments_in_the_order_they_were_put(server):
    client = server.client()
    client.create_repo("r")
    ref = CommitRef("r", client.start_commit("r").id)
    calls = []

    def record(writes):
        calls.append([w.path for w in writes])
        client.put_files(ref, writes)

    r = random.Random(1)
    files = {f"f{i:02d}": r.randbytes(r.randrange(0, 20_000)) for i in range(20)}
    lines = []
    with upload.Uploader(client, record) as up:
        for i, (path, data) in enumerate(files.items()):
            up.put(path, io.BytesIO(data))
            lines.append(b"line %d\n" % i)
            up.put("log", io.BytesIO(lines[-1]))  # appended to, in segment after segment
        up.put("big", io.BytesIO(big := r.randbytes(300_000)))
    client.finish_commit(ref)
    assert len(calls) == 14 and all(len(c) <= 3 for c in calls)
    put_order = [p for f in files for p in (f, "log")] + ["big"]
    assert [p for c in calls for p in c] == put_order
    for path, data in files.items():
        assert read(client, ref, path) == data
    assert read(client, ref, "log") == b"".join(lines)
    assert read(client, ref, "big") == big
    assert not stages_running()


def test_segments_grow_with_the_directories_they_add_to(server, monkeypatch):
    """Files all put into one directory: each segment at least as large as what came before, since the server
    rewrites that directory whole for each; files spread over directories: segments of the least size."""
    monkeypatch.setattr(upload, "MIN_SEGMENT_FILES", 2)
    monkeypatch.setattr(upload, "SEGMENT_FILES", 1000)
    client = server.client()
    client.create_repo("r")
    ref = CommitRef("r", client.start_commit("r").id)
    sizes = []

    def record(writes):
        sizes.append(len(writes))
        client.put_files(ref, writes)

    with upload.Uploader(client, record) as up:
        for i in range(30):
            up.put(f"flat/f{i:02d}", io.BytesIO(b"%d\n" % i))
    assert sizes == [2, 2, 4, 8, 14]
    sizes.clear()
    with upload.Uploader(client, record) as up:
        for i in range(9):
            up.put(f"d{i}/f", io.BytesIO(b"%d\n" % i))
    assert sizes == [2, 2, 2, 2, 1]
    client.finish_commit(ref)
    assert len(list(client.list_files(ref, "flat"))) == 30


def test_a_refused_segment_surfaces_in_the_caller_and_stops_every_stage(server):
    client = server.client()
    client.create_repo("r")
    ref = CommitRef("r", client.start_commit("r").id)
    with pytest.raises(FailedPrecondition, match="finished"):
        with upload.into_commit(client, ref) as up:
            up.put("a", io.BytesIO(b"a\n"))
            client.finish_commit(ref)  # under the upload: the files it records from now on are refused
            for i in range(30):
                up.put(f"b{i}", io.BytesIO(b"b%d\n" % i))
    wait_for(lambda: not stages_running())
    assert [f.path for f in client.list_files(ref)] in ([], ["a"])


def test_an_error_of_the_caller_abandons_the_upload(server):
    """What was recorded before the error is whole; nothing more is recorded, and no stage waits on."""
    client = server.client()
    client.create_repo("r")
    ref = CommitRef("r", client.start_commit("r").id)
    r = random.Random(2)
    files = {f"f{i:02d}": r.randbytes(30_000) for i in range(12)}
    with pytest.raises(ZeroDivisionError):
        with upload.into_commit(client, ref) as up:
            for path, data in files.items():
                up.put(path, io.BytesIO(data))
            1 / 0
    wait_for(lambda: not stages_running())
    recorded = [f.path for f in client.list_files(ref)]
    assert recorded == sorted(files)[: len(recorded)]
    for path in recorded:
        assert read(client, ref, path) == files[path]
    client.finish_commit(ref)
