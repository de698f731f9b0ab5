"""The conformance suite every chunk store backend passes: the local directory, and an S3 bucket on a real
SeaweedFS."""

import os
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pfs import chunk_dir
from pfs.core.compression import compress, content_size
from pfs.core.errors import DataLoss
from pfs.core.frames import unpack
from pfs.core.hashing import address
from pfs.core.model import ChunkRef, DirectRead
from pfs.vfs.direct import direct_reader
from server.grace import DEFAULT_GRACE
from server.meta.sqlite import SqliteMetaStore
from server.storage.cache import DiskCache
from server.storage.local import LocalChunkStore
from server.storage.s3 import S3ChunkStore


class Local:
    """A local chunk directory, opened as often as a test likes."""

    batch_bounds = {"BATCH_CHUNKS": 3}  # shrunk: a put spans several batches

    def __init__(self, tmp_path, request) -> None:
        self.root = tmp_path / "store"

    def open(self, grace: float = DEFAULT_GRACE) -> LocalChunkStore:
        return LocalChunkStore(self.root, grace)

    def corrupt(self, store: LocalChunkStore, addr: bytes) -> None:
        """Flips a byte in the middle of the chunk where the store keeps it."""
        path = store.path(addr)
        if os.path.exists(path):
            with open(path, "r+b") as f:
                f.seek(os.path.getsize(path) // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))
            return
        db = sqlite3.connect(chunk_dir.small_db(self.root))
        data = bytearray(db.execute("SELECT data FROM small WHERE address = ?", (addr,)).fetchone()[0])
        data[len(data) // 2] ^= 0xFF
        with db:
            db.execute("UPDATE small SET data = ? WHERE address = ?", (bytes(data), addr))
        db.close()


class S3:
    """A bucket of its own on the session's SeaweedFS, its record of chunks in a metadata store of its own."""

    batch_bounds = {"LOOKUP_BATCH": 3, "PACK_SIZE": 1}  # shrunk: a put spans several batches and packs

    def __init__(self, tmp_path, request, cache: bool = False) -> None:
        self.weed = request.getfixturevalue("seaweed")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in self.weed.env.items():
            monkeypatch.setenv(name, value)
        self.url = f"s3://{self.weed.make_bucket()}/pfs"
        self.tmp = tmp_path
        self.cache = cache

    def open(self, grace: float = DEFAULT_GRACE) -> S3ChunkStore:
        meta = SqliteMetaStore(self.tmp / "meta.db", grace)
        cache = DiskCache(self.tmp / "cache", 1 << 30) if self.cache else None
        store = S3ChunkStore(self.url, meta, cache, self.weed.endpoint, grace=grace)
        close = store.close

        def closing_meta() -> None:
            close()
            meta.close()
        store.close = closing_meta
        return store

    def corrupt(self, store: S3ChunkStore, addr: bytes) -> None:
        """Flips a byte of the chunk in the object holding it (a pack, or its own)."""
        where = store._lookup([addr])[addr]
        key = store._key(where.pack)
        s3 = self.weed.client()
        data = bytearray(s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
        data[where.offset + where.length // 2] ^= 0xFF
        s3.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))


BACKENDS = {"local": Local, "s3": S3}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    return BACKENDS[request.param](tmp_path, request)


@pytest.fixture
def store(backend):
    s = backend.open()
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
    """A client's reader of the store's offer (where it makes one) finds every chunk, small and large, and a large
    one that compresses small; one the store lacks is None (asked of the server instead)."""
    offer = store.describe()
    if offer is None:
        pytest.skip("this store offers no direct reads")
    squeezed = b"a line of text\n" * 20_000
    chunks = frames(6) + [(address(squeezed), compress(squeezed))]
    store.put(chunks)
    lacking = b"not stored"
    reader = direct_reader(offer, store.locate)  # the store's locate() stands for the server's LocateChunks
    try:
        plains = [unpack(ChunkRef(a, content_size(f)), f) for a, f in chunks]
        refs = [ChunkRef(a, len(p)) for (a, _), p in zip(chunks, plains)] + [ChunkRef(address(lacking), 10)]
        assert list(reader.read_many(refs)) == plains + [None]
    finally:
        reader.close()


def test_a_collection_frees_only_dead_chunks_untouched_since_its_cutoff(backend):
    """Touches (heads() for PutFiles, missing() for MissingChunks) keep a dead chunk; a dry run frees nothing."""
    store = backend.open(grace=2.0)
    try:
        chunks = frames(6)  # small and large by turns
        store.put(chunks)
        live = {a for a, _ in chunks[:2]}

        def collect(cutoff: float, dry_run: bool = False):
            counts = store.collect(live.__contains__, cutoff, dry_run)
            while True:
                try:
                    next(counts)
                except StopIteration as end:
                    return end.value

        assert collect(time.time() - 60).chunks == 0  # all written since
        time.sleep(0.6)  # every chunk's time is older than a quarter of the grace: the next touch writes
        cutoff = time.time()
        time.sleep(0.05)  # a file's mtime is the kernel's coarse clock: a touch now could read as before CUTOFF
        assert chunks[2][0] in store.heads([chunks[2][0]], 4) and store.missing([chunks[3][0]]) == []
        assert collect(cutoff, dry_run=True).chunks == 2
        assert set(store.stored()) == {a for a, _ in chunks}
        assert collect(cutoff).chunks == 2
        assert set(store.stored()) == {a for a, _ in chunks[:4]}
        assert [store.get(a) for a, _ in chunks[:4]] == [f for _, f in chunks[:4]]
        assert collect(cutoff).chunks == 0
    finally:
        store.close()


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


def test_a_chunk_set_aside_is_missing_until_it_is_put_again(store):
    chunks = frames(4) + [(address(b"small"), compress(b"small"))]  # a small chunk, in chunks.db here
    store.put(chunks)
    aside = [chunks[1][0], chunks[4][0], b"\1" * 32]  # and one the store never held: nothing to do
    store.set_aside(aside)
    assert store.missing([a for a, _ in chunks]) == aside[:2]
    assert store.put(chunks) == 2
    assert store.missing([a for a, _ in chunks]) == [] and [store.get(a) for a, _ in chunks] == [f for _, f in chunks]


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


def test_a_failed_put_keeps_whole_chunks_only(backend, store, monkeypatch):
    """A put that fails after several batches keeps the chunks it made durable, whole, and no trace of the rest."""
    for name, value in backend.batch_bounds.items():
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


def test_chunks_survive_reopening(backend):
    chunks = frames(6)
    s = backend.open()
    s.put(chunks)
    s.close()
    s = backend.open()
    assert [s.get(a) for a, _ in chunks] == [f for _, f in chunks]
    s.close()


def test_sixteen_writers_of_the_same_chunks(store):
    """Concurrent puts of the same chunks (a small one and a large one) never corrupt them, and each is counted
    new by at least one writer."""
    chunks = frames(2)
    with ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(lambda _: store.put(chunks), range(16)))
    assert 2 <= sum(counts) <= 32
    assert store.missing([a for a, _ in chunks]) == []
    for a, f in chunks:
        assert store.get(a) == f


def test_many_chunks_read_together_in_any_order(store):
    """get_many() of small chunks (packed together where the store packs them, or looked up in batches) and large
    ones, shuffled and repeated, brings each chunk's bytes in the order asked."""
    chunks = frames(60)
    store.put(chunks)
    wanted = [a for a, _ in chunks] * 10  # more than a batch
    random.Random(1).shuffle(wanted)
    frames_of = dict(chunks)
    assert list(store.get_many(wanted)) == [frames_of[a] for a in wanted]
    assert list(store.get_many([])) == []


def test_a_corrupt_chunk_is_an_error_never_bytes(backend, store):
    """A chunk whose stored bytes changed is DataLoss where it is read back: the store's get() or the unpack()
    every reader does."""
    chunks = frames(4)  # small and large
    store.put(chunks)
    for a, f in chunks:
        backend.corrupt(store, a)
        with pytest.raises(DataLoss):
            unpack(ChunkRef(a, content_size(f)), store.get(a))


def test_s3_packs_chunks_and_reads_a_run_of_them_with_one_get(tmp_path, request):
    """Ten thousand small chunks cost one PUT; reading a run of them back (without a cache), one ranged GET."""
    s3 = S3(tmp_path, request)
    store = s3.open()
    try:
        chunks = [(address(b"%d" % i), compress(b"%d" % i)) for i in range(10_000)]
        assert store.put(chunks) == 10_000
        assert store.requests() == {"PutObject": 1}
        assert list(store.get_many([a for a, _ in chunks[:500]])) == [f for _, f in chunks[:500]]
        assert store.requests()["GetObject"] == 1
    finally:
        store.close()


def test_s3_cache_serves_repeated_reads_and_drops_a_torn_entry(tmp_path, request):
    """Packs written or read stay whole in the server's disk cache: reading their chunks again costs no GET. A
    cached pack whose bytes are torn is dropped and fetched again."""
    s3 = S3(tmp_path, request, cache=True)
    store = s3.open()
    try:
        chunks = frames(6)
        store.put(chunks)
        assert [store.get(a) for a, _ in chunks] == [f for _, f in chunks]
        assert "GetObject" not in store.requests()
        (entry,) = (tmp_path / "cache").glob("??/*")
        entry.write_bytes(entry.read_bytes()[:-1])
        assert store.get(chunks[-1][0]) == chunks[-1][1]
        assert store.requests()["GetObject"] == 1
        assert [store.get(a) for a, _ in chunks] == [f for _, f in chunks]  # cached whole again
        assert store.requests()["GetObject"] == 1
    finally:
        store.close()


def test_cache_keeps_to_its_bound_least_recently_used_first(tmp_path):
    cache = DiskCache(tmp_path, 3000)  # three objects of 1000 bytes
    for i in range(3):
        cache.put(f"{i}" * 32, b"%d" % i * 1000)
    assert cache.read("0" * 32, [(10, 5)]) == [b"00000"]  # now the most recently used
    cache.put("3" * 32, b"3" * 1000)
    assert cache.read("1" * 32, [(0, 1)]) is None
    assert [cache.read(f"{i}" * 32, [(0, 2), (998, 2)]) for i in (0, 2, 3)] == [[b"00", b"00"], [b"22", b"22"],
                                                                                [b"33", b"33"]]
    assert cache.read("3" * 32, [(999, 2)]) is None  # past its end: not what was cached, so dropped
    assert DiskCache(tmp_path, 3000).read("2" * 32, [(0, 3)]) == [b"222"]  # kept across a restart


def test_local_store_drops_crash_leftovers(tmp_path):
    LocalChunkStore(tmp_path).close()
    (tmp_path / "tmp" / "half-written").write_bytes(b"garbage")
    LocalChunkStore(tmp_path).close()
    assert list((tmp_path / "tmp").iterdir()) == []
