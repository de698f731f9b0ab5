"""A chunk store in a local directory.

Large chunks are files, chunks/ab/abcdef... (hex address), each a zstd
frame: written to tmp/, made durable, then renamed into place, so a crash
never leaves a half chunk under its address. Small chunks (the whole of
most small files) live in one SQLite table, chunks.db, written a batch per
transaction: a file per small chunk would cost a file creation, a rename and
a stat each, which dominates ingesting many small files. Durability is paid
per batch (one syncfs, one transaction), not per chunk, and each batch is
made durable on another thread while the next one is written.

A put that fails (a full disk: ResourceExhausted naming the dir) removes every temp file it made
before it returns, those of batches already handed to the flusher too.
"""

import ctypes
import os
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from pfs import chunk_dir
from pfs.core.errors import DataLoss
from pfs.core.model import DirectRead
from server import disk
from server.storage import ChunkStore

SMALL = 64 << 10  # compressed frames below this go to chunks.db
BATCH_BYTES = 32 << 20
BATCH_CHUNKS = 4000
QUERY_BATCH = 500  # addresses per SQL IN (...)
CACHE_BYTES = 64 << 20  # chunks.db pages kept in memory
_libc = ctypes.CDLL(None, use_errno=True)


class LocalChunkStore(ChunkStore):
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.chunks = root / "chunks"
        self.tmp = root / "tmp"
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # from a crash: never renamed, never visible
            leftover.unlink()
        self._db = sqlite3.connect(chunk_dir.small_db(root), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA page_size=65536")  # blobs of a few KiB: fewer, larger writes
        # Room for the pages a put has just written, which PutFiles reads back at once (heads()): SQLite's
        # default (2 MB, 31 such pages) read them from the OS again, a 64 KiB page per chunk
        self._db.execute(f"PRAGMA cache_size={-CACHE_BYTES // 1024}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(chunk_dir.CREATE_SMALL)
        self._lock = threading.Lock()

    def path(self, address: bytes) -> str:
        """Where a large chunk's file is (small chunks have none)."""
        return chunk_dir.chunk_file(self.root, address)

    def describe(self) -> DirectRead:
        return DirectRead(chunk_dir.KIND, str(self.root))

    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        addresses = list(addresses)
        small = set()
        with self._lock:
            for i in range(0, len(addresses), QUERY_BATCH):
                small |= chunk_dir.small_present(self._db, addresses[i : i + QUERY_BATCH])
        return [a for a in addresses if a not in small and not os.path.exists(self.path(a))]

    def put(self, chunks: Iterable[tuple[bytes, bytes]]) -> int:
        temps: list[pathlib.Path] = []  # every temp file of this call: none outlives it
        try:
            with disk.space(self.root):
                return self._put(chunks, temps)
        except BaseException:
            for tmp in temps:
                tmp.unlink(missing_ok=True)  # renamed into place already, or half written and never to be
            raise

    def _put(self, chunks: Iterable[tuple[bytes, bytes]], temps: list[pathlib.Path]) -> int:
        batch = _Batch()
        flushes = []
        files = set()  # the large chunks this call writes, across its batches
        with ThreadPoolExecutor(1, thread_name_prefix="chunk-flush") as flusher:  # waits for every flush it has
            for address, data in chunks:
                if len(data) < SMALL:
                    batch.small[address] = data
                else:
                    final = self.path(address)
                    if final in files or os.path.exists(final):  # stored already: nothing to write
                        continue
                    files.add(final)
                    tmp = self.tmp / uuid.uuid4().hex
                    temps.append(tmp)
                    with open(tmp, "wb") as f:
                        f.write(data)
                    batch.files[final] = tmp
                batch.size += len(data)
                if batch.size >= BATCH_BYTES or len(batch.small) + len(batch.files) >= BATCH_CHUNKS:
                    flushes.append(flusher.submit(self._commit, batch))
                    batch = _Batch()
            flushes.append(flusher.submit(self._commit, batch))
        return sum(f.result() for f in flushes)

    def _commit(self, batch: "_Batch") -> int:
        """Makes a batch durable: small chunks in one transaction; files flushed, then renamed. How many were new."""
        new = 0
        if batch.small:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    # the ignored ones count 0; the cursor ends here, under the lock: one freed later, on another
                    # thread, resets its statement while the connection runs another (SQLITE_MISUSE)
                    new = self._db.executemany(chunk_dir.INSERT_SMALL, batch.small.items()).rowcount
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a COMMIT that failed (a full disk) may have ended it already
                        self._db.execute("ROLLBACK")
                    raise
        if batch.files:
            self._sync()
            for final, tmp in batch.files.items():
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:  # the first chunk under its fan-out directory
                    os.makedirs(os.path.dirname(final), exist_ok=True)
                    os.replace(tmp, final)
            self._sync()  # the renames themselves
        return new + len(batch.files)

    def _sync(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(self.root))
        finally:
            os.close(fd)

    def get(self, address: bytes) -> bytes:
        try:
            with open(self.path(address), "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        with self._lock:
            frame = chunk_dir.small_chunk(self._db, address)
        if frame is None:
            raise DataLoss(f"chunk {address.hex()} is missing from {self.root}")
        return frame

    def heads(self, addresses: Iterable[bytes], size: int) -> dict[bytes, bytes]:
        addresses = list(addresses)
        found = {}
        with self._lock:
            for i in range(0, len(addresses), QUERY_BATCH):
                found |= chunk_dir.small_heads(self._db, addresses[i : i + QUERY_BATCH], size)
        for a in addresses:
            if a not in found:
                try:
                    with open(self.path(a), "rb") as f:
                        found[a] = f.read(size)
                except FileNotFoundError:
                    pass
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Batch:
    """Chunks written but not yet durable."""

    def __init__(self) -> None:
        self.small: dict[bytes, bytes] = {}
        self.files: dict[str, pathlib.Path] = {}  # final path -> temp file
        self.size = 0
