"""A cache of decompressed chunks: bounded by bytes, one fetch per chunk however many readers ask.

Fetches run on a small thread pool (gRPC and zstandard release the GIL), so
read-ahead decompresses the next chunks while the reader consumes this one.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from pfs.core.model import ChunkRef

DEFAULT_CACHE_BYTES = 512 << 20


class ChunkCache:
    def __init__(self, fetch: Callable[[ChunkRef], bytes], max_bytes: int = DEFAULT_CACHE_BYTES,
                 workers: int = 4) -> None:
        self._fetch = fetch
        self._max_bytes = max_bytes
        self._lru: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pfs-chunk")

    def get(self, ref: ChunkRef) -> bytes:
        """The chunk's bytes, from the cache, from a fetch under way, or fetched now."""
        found = self._start(ref)
        return found if isinstance(found, bytes) else found.result()

    def peek(self, ref: ChunkRef) -> bytes | None:
        """The chunk's bytes if they are cached, without waiting or fetching."""
        with self._lock:
            data = self._lru.get(ref.address)
            if data is not None:
                self._lru.move_to_end(ref.address)
            return data

    def prefetch(self, refs: Iterable[ChunkRef]) -> None:
        """Starts fetching chunks that are likely to be read next."""
        for ref in refs:
            self._start(ref)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, ref: ChunkRef) -> bytes | Future:
        with self._lock:
            data = self._lru.get(ref.address)
            if data is not None:
                self._lru.move_to_end(ref.address)
                return data
            future = self._inflight.get(ref.address)
            if future is None:
                future = self._inflight[ref.address] = self._pool.submit(self._load, ref)
            return future

    def _load(self, ref: ChunkRef) -> bytes:
        try:
            data = self._fetch(ref)
            with self._lock:
                if ref.address not in self._lru:
                    self._lru[ref.address] = data
                    self._bytes += len(data)
                while self._bytes > self._max_bytes and len(self._lru) > 1:
                    _, old = self._lru.popitem(last=False)
                    self._bytes -= len(old)
            return data
        finally:
            with self._lock:
                self._inflight.pop(ref.address, None)
