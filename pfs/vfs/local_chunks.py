"""Reading chunks straight from a server's store, where the server offers it (its Info's DirectRead) and the
mount runs on the server's machine.

The embedded case: the server and the mount share a disk, so a chunk costs a
file read (or a SQLite lookup) and a decompression instead of a gRPC call
and the server's work. Every chunk is checked (frames.check_ref, frames.unpack); one that
is absent or wrong is asked of the server instead. The layout read is
pfs/chunk_dir.py, the one the server's store writes.
"""

import functools
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from pfs import chunk_dir
from pfs.core import frames
from pfs.core.errors import DataLoss
from pfs.core.model import ChunkRef

READ_THREADS = 8  # chunks of one batch read and decompressed at once (zstandard and file reads release the GIL)
PARALLEL_BYTES = 1 << 20  # a batch of one chunk, or of fewer bytes, is read in turn: the pool would gain it nothing


class LocalChunks:
    """A reader of a local chunk directory (DirectRead kind chunk_dir.KIND)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._db = sqlite3.connect(f"file:{chunk_dir.small_db(root)}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="pfs-local")

    @classmethod
    def find(cls, root: str) -> "LocalChunks | None":
        """The server's chunk store at ROOT, if this machine can see it."""
        if not root or not os.path.isfile(chunk_dir.small_db(root)):
            return None
        try:
            return cls(root)
        except sqlite3.Error:
            return None

    def read_many(self, refs: Sequence[ChunkRef]) -> Iterator[bytes | None]:
        """Each chunk's plain bytes, in order, as each is read; None for one that is not here (or not right).

        The chunks of fewer plain bytes than chunk_dir.SMALL, whose frames are rows of chunks.db (most of a small
        file's), are looked up in one query first: a file opened in vain and a query of its own each cost about as
        much as such a chunk's decompression."""
        small = self._small([r.address for r in refs if r.size < chunk_dir.SMALL])
        read = functools.partial(self._read, small)
        if len(refs) < 2 or sum(r.size for r in refs) < PARALLEL_BYTES:
            return map(read, refs)
        return self._pool.map(read, refs)

    def expect(self, refs: Iterable[ChunkRef]) -> None:
        """Nothing to prepare: a chunk on this disk is found by its address."""

    def _read(self, small: dict[bytes, bytes], ref: ChunkRef) -> bytes | None:
        """The chunk's plain bytes, from SMALL (frames found already) or the store, or None if it is not here (or
        not right)."""
        frame = small.get(ref.address) or self._frame(ref.address)
        if frame is None:
            return None
        try:
            frames.check_ref(ref)
            return frames.unpack(ref, frame)
        except DataLoss:  # fetched from the server instead
            return None

    def _frame(self, address: bytes) -> bytes | None:
        try:
            with open(chunk_dir.chunk_file(self.root, address), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return self._small([address]).get(address)
        except OSError:
            return None

    def _small(self, addresses: list[bytes]) -> dict[bytes, bytes]:
        """The frames of those of ADDRESSES that are rows of chunks.db."""
        if not addresses:
            return {}
        try:
            with self._lock:
                return chunk_dir.small_chunks(self._db, addresses)
        except sqlite3.Error:
            return {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._db.close()

