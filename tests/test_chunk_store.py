"""The conformance suite every chunk store backend passes."""

import pytest

from pfs.core.compression import compress
from pfs.core.errors import DataLoss
from pfs.core.hashing import address
from server.storage.local import LocalChunkStore

BACKENDS = {"local": lambda tmp: LocalChunkStore(tmp / "store")}


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path):
    return BACKENDS[request.param](tmp_path)


def frames(n: int) -> list[tuple[bytes, bytes]]:
    return [(address(b"chunk %d" % i), compress(b"chunk %d" % i)) for i in range(n)]


def test_put_get_missing(store):
    chunks = frames(10)
    addrs = [a for a, _ in chunks]
    assert store.missing(addrs) == addrs
    store.put(chunks[:4])
    assert store.missing(addrs) == addrs[4:]
    store.put(chunks + chunks[:2])  # again, and twice in one call: harmless
    assert store.missing(addrs) == []
    for a, f in chunks:
        assert store.get(a) == f


def test_get_absent_is_data_loss(store):
    with pytest.raises(DataLoss):
        store.get(b"\0" * 32)


def test_failed_put_leaves_nothing_behind(store):
    chunks = frames(5)

    def failing():
        yield from chunks[:3]
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.put(failing())
    assert store.missing([a for a, _ in chunks]) == [a for a, _ in chunks]


def test_local_store_drops_crash_leftovers(tmp_path):
    LocalChunkStore(tmp_path)
    (tmp_path / "tmp" / "half-written").write_bytes(b"garbage")
    LocalChunkStore(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
