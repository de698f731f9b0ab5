"""The conformance suite every chunk store backend passes."""

import os

import pytest

from pfs.core.compression import compress
from pfs.core.frames import unpack
from pfs.core.errors import DataLoss
from pfs.core.hashing import address
from pfs.core.model import ChunkRef, DirectRead
from pfs.vfs.direct import direct_reader
from server.storage.local import LocalChunkStore

BACKENDS = {"local": lambda tmp: LocalChunkStore(tmp / "store")}
SMALL_BATCHES = {LocalChunkStore: {"BATCH_CHUNKS": 3}}  # each backend's batch bounds, shrunk: a put spans several


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path):
    s = BACKENDS[request.param](tmp_path)
    yield s
    s.close()


def frames(n: int) -> list[tuple[bytes, bytes]]:
    """Small chunks and large ones (a store may keep them differently)."""
    out = []
    for i in range(n):
        plain = (b"chunk %d " % i) + (os.urandom(200_000) if i % 2 else b"")
        out.append((address(plain), compress(plain)))
    return out


def test_a_direct_read_a_store_offers_reads_what_it_holds(store):
    """A client's reader of the store's offer (where it makes one) finds every chunk, small and large."""
    offer = store.describe()
    if offer is None:
        pytest.skip("this store offers no direct reads")
    chunks = frames(6)
    store.put(chunks)
    reader = direct_reader(offer, store.locate)
    try:
        plains = [unpack(a, f) for a, f in chunks]
        assert reader.read_many([ChunkRef(a, len(p)) for (a, _), p in zip(chunks, plains)]) == plains
    finally:
        reader.close()


def test_no_offer_or_an_unknown_kind_means_no_direct_reads(tmp_path):
    store = LocalChunkStore(tmp_path)
    reader = direct_reader(DirectRead("local-dir", str(tmp_path)), store.locate)
    assert reader is not None
    reader.close()
    assert direct_reader(DirectRead("s3", str(tmp_path)), store.locate) is None
    assert direct_reader(None, store.locate) is None
    store.close()


def test_put_get_missing(store):
    chunks = frames(10)
    addrs = [a for a, _ in chunks]
    assert store.missing(addrs) == addrs
    assert store.put(chunks[:4]) == 4
    assert store.missing(addrs) == addrs[4:]
    assert store.put(chunks + chunks[:2]) == 6  # again, and twice in one call: harmless, and not counted
    assert store.missing(addrs) == []
    assert store.put(chunks) == 0
    for a, f in chunks:
        assert store.get(a) == f


def test_heads_are_the_first_bytes_of_the_chunks_held(store):
    chunks = frames(4)
    store.put(chunks[:3])
    absent = chunks[3][0]
    heads = store.heads([a for a, _ in chunks], 18)
    assert heads == {a: f[:18] for a, f in chunks[:3]}
    assert store.heads([absent], 18) == {}
    assert store.heads([chunks[0][0]], 10_000_000) == {chunks[0][0]: chunks[0][1]}


def test_get_absent_is_data_loss(store):
    with pytest.raises(DataLoss):
        store.get(b"\0" * 32)


def test_a_failed_put_keeps_whole_chunks_only(store, monkeypatch):
    """A put that fails after several batches keeps the chunks it made durable, whole, and no trace of the rest."""
    for name, value in SMALL_BATCHES.get(type(store), {}).items():
        monkeypatch.setattr(f"{type(store).__module__}.{name}", value)
    chunks = frames(12)
    sent = chunks[:10] + chunks[11:]  # the last one sent is large, so its batch has a temp file when put fails

    def failing():
        yield from sent
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.put(failing())
    addrs = [a for a, _ in chunks]
    missing = store.missing(addrs)
    assert addrs[10] in missing and addrs[11] in missing  # never sent; sent but never made durable
    assert len(missing) < len(addrs) - 1  # earlier batches were made durable
    if isinstance(store, LocalChunkStore):
        assert list(store.tmp.iterdir()) == []  # no temp file left
    for a, f in chunks:
        if a not in missing:
            assert store.get(a) == f
    assert store.put(chunks) == len(missing)  # a retry stores just the rest
    assert store.missing(addrs) == []


def test_chunks_survive_reopening(tmp_path):
    chunks = frames(6)
    s = BACKENDS["local"](tmp_path)
    s.put(chunks)
    s.close()
    s = BACKENDS["local"](tmp_path)
    assert [s.get(a) for a, _ in chunks] == [f for _, f in chunks]
    s.close()


def test_local_store_drops_crash_leftovers(tmp_path):
    LocalChunkStore(tmp_path).close()
    (tmp_path / "tmp" / "half-written").write_bytes(b"garbage")
    LocalChunkStore(tmp_path).close()
    assert list((tmp_path / "tmp").iterdir()) == []
