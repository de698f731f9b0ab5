"""The mount's chunk cache: one fetch per chunk however many readers ask, a bound on its bytes."""

import threading
import time

import pytest

from pfs.core.model import ChunkRef
from pfs.vfs.chunks import KEPT_CHUNKS, ChunkCache


def ref(i: int, size: int = 1000) -> ChunkRef:
    return ChunkRef(bytes([i]) * 32, size)


class Source:
    """Stands in for the server: counts fetches, can be slow or fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[bytes] = []
        self.fail = False

    def __call__(self, refs: list[ChunkRef]):
        self.batches = getattr(self, "batches", 0) + 1
        for r in refs:
            self.calls.append(r.address)
            time.sleep(self.delay)
            if self.fail:
                raise OSError("server gone")
            yield r.address[:1] * r.size


def get(cache: ChunkCache, r: ChunkRef) -> bytes:
    """R's bytes through CACHE, waiting for its fetch if it is not cached, as RepoTree.read does."""
    [found] = cache.get([r])
    return found if isinstance(found, bytes) else found.result()


def test_concurrent_readers_of_one_chunk_cause_one_fetch():
    source = Source(delay=0.2)
    cache = ChunkCache(source)
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(cache, ref(7)))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"\x07" * 1000] * 20
    assert source.calls == [bytes([7]) * 32]
    cache.close()


def test_prefetch_then_get_fetches_once():
    source = Source(delay=0.05)
    cache = ChunkCache(source)
    cache.prefetch([ref(1), ref(2), ref(3)])
    assert [get(cache, ref(i))[:1] for i in (1, 2, 3)] == [b"\x01", b"\x02", b"\x03"]
    assert len(source.calls) == 3
    assert source.batches == 1  # fetched together
    cache.close()


def test_size_bound_evicts_least_recently_used():
    source = Source()
    cache = ChunkCache(source, max_bytes=3000)
    for i in range(5):
        get(cache, ref(i))
    get(cache, ref(4))
    get(cache, ref(0))  # evicted: fetched again
    assert source.calls.count(bytes([0]) * 32) == 2
    assert source.calls.count(bytes([4]) * 32) == 1
    cache.close()


def test_a_failed_fetch_is_tried_again_next_time():
    source = Source()
    source.fail = True
    cache = ChunkCache(source)
    with pytest.raises(OSError):
        get(cache, ref(1))
    source.fail = False
    assert get(cache, ref(1)) == b"\x01" * 1000
    cache.close()


def test_the_last_chunks_used_stay_however_large():
    source = Source()
    cache = ChunkCache(source, max_bytes=1000)
    for i in range(6):
        get(cache, ref(i, size=5000))
    for i in range(6 - KEPT_CHUNKS, 6):  # the last used: no fetch
        get(cache, ref(i, size=5000))
    assert len(source.calls) == 6
    get(cache, ref(1, size=5000))
    assert len(source.calls) == 7
    cache.close()
