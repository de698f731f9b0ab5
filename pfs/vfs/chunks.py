"""A cache of decompressed chunks: bounded by bytes (but for the last few chunks used), one fetch per chunk however
many readers ask.

Fetches run on a small thread pool (gRPC and zstandard release the GIL), so
read-ahead decompresses the next chunks while the reader consumes this one;
chunks asked for together (the files that follow a small file in its
directory) are fetched in one call.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pfs.core.errors import DataLoss
from pfs.core.model import ChunkRef

# The kernel keeps the pages of what was read (keep_cache); this cache holds the read-ahead and
# the chunks being read. Kept small, its memory is reused instead of being faulted in anew: a first read of 1 GiB
# faulted in 35,000 pages with 32 MiB, 68,000 with 128 MiB, and took 1.29-1.38 s against 1.57-3.18 s.
DEFAULT_CACHE_BYTES = 32 << 20
KEPT_CHUNKS = 4  # the chunks last used are kept over the bound, however large: two a read spans, two read ahead
FETCH_THREADS = 8  # fetches under way at once: enough to keep a disk and every core busy


class ChunkCache:
    def __init__(self, fetch: Callable[[list[ChunkRef]], Iterator[bytes]],
                 max_bytes: int = DEFAULT_CACHE_BYTES, workers: int = FETCH_THREADS) -> None:
        self._fetch = fetch  # the bytes of several chunks, in order
        self._max_bytes = max_bytes
        self._lru: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pfs-chunk")

    def holds(self, ref: ChunkRef) -> bool:
        """Whether the chunk is cached or being fetched: a read of it starts no fetch."""
        with self._lock:
            return ref.address in self._lru or ref.address in self._inflight

    def get(self, refs: Iterable[ChunkRef]) -> list[bytes | Future]:
        """Each chunk's bytes if cached, else the future of its fetch: one new fetch for all those not under way.

        A reader waits for the futures and takes their results, not the cache's: what the cache evicts before
        the reader wakes (other reads, the read-ahead) never sends it back for the same chunks."""
        found: list[bytes | Future] = []
        todo: list[tuple[ChunkRef, Future]] = []
        with self._lock:
            for ref in refs:
                data = self._lru.get(ref.address)
                if data is not None:
                    self._lru.move_to_end(ref.address)
                    found.append(data)
                    continue
                future = self._inflight.get(ref.address)
                if future is None:
                    future = self._inflight[ref.address] = Future()
                    todo.append((ref, future))
                found.append(future)
        if todo:
            self._pool.submit(self._load, todo)
        return found

    def prefetch(self, refs: Iterable[ChunkRef]) -> None:
        """Starts fetching, in one call, chunks that are likely to be read next."""
        self.get(refs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _load(self, todo: list[tuple[ChunkRef, Future]]) -> None:
        done = 0
        try:
            for (ref, future), data in zip(todo, self._fetch([r for r, _ in todo])):
                with self._lock:
                    if ref.address not in self._lru:
                        self._lru[ref.address] = data
                        self._bytes += len(data)
                    while self._bytes > self._max_bytes and len(self._lru) > KEPT_CHUNKS:
                        _, old = self._lru.popitem(last=False)
                        self._bytes -= len(old)
                    del self._inflight[ref.address]
                future.set_result(data)
                done += 1
            if done < len(todo):
                raise DataLoss(f"the server sent {done} of {len(todo)} chunks asked for")
        except BaseException as err:
            for ref, future in todo[done:]:
                with self._lock:
                    self._inflight.pop(ref.address, None)
                future.set_exception(err)
