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

When a chunk was last touched (server/grace.py) is its file's mtime, or its row's `touched`. A touch and the
garbage collector's delete of the same chunk never interleave: both hold the store's lock (the files' lock for
chunk files), and the collector looks at the time again under it before it deletes.
"""

import contextlib
import ctypes
import os
import pathlib
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from pfs import chunk_dir
from pfs.core.errors import DataLoss
from pfs.core.hashing import ADDRESS_SIZE
from pfs.core.memory import write_all
from pfs.core.model import DirectRead
from server import disk
from server.grace import DEFAULT_GRACE, refresh_before
from server.meta.sqlite import vacuum
from server.storage import ChunkStore, Swept

BATCH_BYTES = 32 << 20
BATCH_CHUNKS = 4000
SCAN_BATCH = 10_000  # small chunks looked at, then collected, at once
CACHE_BYTES = 64 << 20  # chunks.db pages kept in memory
_libc = ctypes.CDLL(None, use_errno=True)


class LocalChunkStore(ChunkStore):
    def __init__(self, root: pathlib.Path, grace: float = DEFAULT_GRACE) -> None:
        self.root = root
        self.grace = grace
        self.chunks = root / "chunks"
        self.tmp = root / "tmp"
        self.chunks.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # from a crash: never renamed, never visible
            leftover.unlink()
        try:
            self._db = sqlite3.connect(chunk_dir.small_db(root), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA page_size=65536")  # blobs of a few KiB: fewer, larger writes
            # Room for the pages a put has just written, which PutFiles reads back at once (heads()): SQLite's
            # default (2 MB, 31 such pages) read them from the OS again, a 64 KiB page per chunk
            self._db.execute(f"PRAGMA cache_size={-CACHE_BYTES // 1024}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(chunk_dir.CREATE_SMALL)
            chunk_dir.upgrade(self._db)
        except sqlite3.DatabaseError as err:  # said of this database, not of the metadata's
            raise DataLoss(f"the small chunks' database {chunk_dir.small_db(root)}: {err}") from None
        self._lock = threading.Lock()  # the connection; a touch of small chunks, and their deletes
        self._files_lock = threading.Lock()  # a touch of a chunk file, and its delete

    def path(self, address: bytes) -> str:
        """Where a large chunk's file is (small chunks have none)."""
        return chunk_dir.chunk_file(self.root, address)

    def describe(self) -> DirectRead:
        return DirectRead(chunk_dir.KIND, str(self.root))

    def where(self) -> str:
        return "each server's data dir"

    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        addresses = list(addresses)
        small = self._touched_small(addresses, 0)
        return [a for a in addresses if a not in small and not self._touch_file(a)]

    def _touched_small(self, addresses: list[bytes], size: int) -> dict[bytes, bytes]:
        """The first SIZE bytes of each small chunk among ADDRESSES, each touched if it was long ago: the look and
        the touch under the lock a delete takes, so no chunk found here is freed before its new time is written."""
        now = time.time()
        found, stale = {}, []
        with self._lock:
            for i in range(0, len(addresses), chunk_dir.QUERY_BATCH):
                batch = addresses[i : i + chunk_dir.QUERY_BATCH]
                rows = self._db.execute(f"SELECT address, substr(data, 1, ?), touched FROM small WHERE address IN "
                                        f"({','.join('?' * len(batch))})", (size, *batch))
                for address, head, touched in rows:
                    found[address] = head
                    if touched < refresh_before(now, self.grace):
                        stale.append((now, address))
            if stale:
                self._db.executemany("UPDATE small SET touched = ? WHERE address = ?", stale)
        return found

    def _touch_file(self, address: bytes) -> bool:
        """Whether the chunk file of ADDRESS exists; touched, if it was long ago."""
        path = self.path(address)
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return False
        if mtime >= refresh_before(time.time(), self.grace):
            return True  # too recent for the collector, whose cutoff is older still
        with self._files_lock:
            try:
                os.utime(path)
            except FileNotFoundError:  # the collector came first
                return False
        return True

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
                if len(data) < chunk_dir.SMALL:
                    batch.small[address] = data
                else:
                    final = self.path(address)
                    if final in files or os.path.exists(final):  # stored already: nothing to write
                        continue
                    files.add(final)
                    tmp = self.tmp / uuid.uuid4().hex
                    temps.append(tmp)
                    with open(tmp, "wb") as f:
                        write_all(f, data)
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
                    now = time.time()
                    new = self._db.executemany(chunk_dir.INSERT_SMALL,
                                               [(a, d, now) for a, d in batch.small.items()]).rowcount
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a COMMIT that failed (a full disk) may have ended it already
                        self._db.execute("ROLLBACK")
                    raise
        if batch.files:
            self._sync()
            for final, tmp in batch.files.items():
                for attempt in range(3):
                    try:
                        os.replace(tmp, final)
                        break
                    except FileNotFoundError:  # the first chunk under its fan-out directory (or the collector
                        if attempt == 2:       # removed it, empty, since this made it)
                            raise
                        os.makedirs(os.path.dirname(final), exist_ok=True)
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

    def get_many(self, addresses: Sequence[bytes]) -> Iterator[bytes]:
        """As get() for each, in order; the small chunks of each QUERY_BATCH found in one query first (a file
        opened in vain and a query of its own cost more than a small chunk's read)."""
        for i in range(0, len(addresses), chunk_dir.QUERY_BATCH):
            batch = addresses[i : i + chunk_dir.QUERY_BATCH]
            with self._lock:
                small = chunk_dir.small_chunks(self._db, batch)
            for address in batch:
                yield small.get(address) or self.get(address)

    def set_aside(self, addresses: Sequence[bytes]) -> None:
        """Into DATA_DIR/corrupt, each as a file named by its address."""
        aside = self.root / "corrupt"
        aside.mkdir(exist_ok=True)
        with self._lock:
            small = chunk_dir.small_chunks(self._db, list(addresses))
        for address in addresses:
            if address in small:
                (aside / address.hex()).write_bytes(small[address])
                with self._lock:
                    self._db.execute("DELETE FROM small WHERE address = ?", (address,))
            else:
                with self._files_lock, contextlib.suppress(FileNotFoundError):
                    os.replace(self.path(address), aside / address.hex())

    def get(self, address: bytes) -> bytes:
        try:
            with open(self.path(address), "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        with self._lock:
            frame = chunk_dir.small_chunks(self._db, [address]).get(address)
        if frame is None:
            raise DataLoss(f"chunk {address.hex()} is missing from the store")  # not where: callers need not know
        return frame

    def heads(self, addresses: Iterable[bytes], size: int) -> dict[bytes, bytes]:
        addresses = list(addresses)
        found = self._touched_small(addresses, size)
        for a in addresses:
            if a not in found and self._touch_file(a):
                try:
                    with open(self.path(a), "rb") as f:
                        found[a] = f.read(size)
                except FileNotFoundError:
                    pass
        return found

    def stored(self) -> Iterator[bytes]:
        for batch in self._small_addresses():
            yield from batch
        for path in self._files():
            yield bytes.fromhex(path.name)

    def collect(self, live: Callable[[bytes], bool], cutoff: float, dry_run: bool) -> Generator[int, None, Swept]:
        swept = Swept()
        for batch in self._small_addresses():
            dead = [a for a in batch if not live(a)]
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for i in range(0, len(dead), chunk_dir.QUERY_BATCH):
                        part = dead[i : i + chunk_dir.QUERY_BATCH]
                        where = f"WHERE address IN ({','.join('?' * len(part))}) AND touched < ?"
                        n, size = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM small {where}",
                                                   (*part, cutoff)).fetchone()
                        if n and not dry_run:
                            self._db.execute(f"DELETE FROM small {where}", (*part, cutoff))
                        swept.chunks += n
                        swept.bytes += size
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            yield len(batch)
        for path in self._files():
            if not live(bytes.fromhex(path.name)):
                with self._files_lock:  # against a touch: look again, then delete
                    try:
                        stat = path.stat()
                        if stat.st_mtime < cutoff:
                            if not dry_run:
                                path.unlink()
                            swept.chunks += 1
                            swept.bytes += stat.st_size
                    except FileNotFoundError:
                        pass
            yield 1
        if not dry_run:
            for fan in self.chunks.iterdir():
                try:
                    fan.rmdir()  # an empty fan-out directory takes a block too
                except OSError:  # not empty
                    pass
            with self._lock:
                vacuum(self._db)
        return swept

    def _small_addresses(self) -> Iterator[list[bytes]]:
        """The small chunks' addresses, a batch at a time (the lock is not held between batches)."""
        after = b""
        while True:
            with self._lock:
                batch = [r[0] for r in self._db.execute("SELECT address FROM small WHERE address > ? ORDER BY address "
                                                        "LIMIT ?", (after, SCAN_BATCH))]
            if not batch:
                return
            yield batch
            after = batch[-1]

    def _files(self) -> Iterator[pathlib.Path]:
        """Every chunk file; what else is there (an editor's file, NFS's .nfsXXXX of a chunk freed while a
        reader had it open) is no chunk, and left alone."""
        for fan in sorted(self.chunks.iterdir()):
            if _FAN.fullmatch(fan.name) and fan.is_dir():
                yield from sorted(p for p in fan.iterdir() if p.name[:2] == fan.name and _CHUNK.fullmatch(p.name))

    def close(self) -> None:
        with self._lock:
            self._db.close()


_FAN, _CHUNK = re.compile("[0-9a-f]{2}"), re.compile(f"[0-9a-f]{{{2 * ADDRESS_SIZE}}}")  # chunk_dir.chunk_file


class _Batch:
    """Chunks written but not yet durable."""

    def __init__(self) -> None:
        self.small: dict[bytes, bytes] = {}
        self.files: dict[str, pathlib.Path] = {}  # final path -> temp file
        self.size = 0
