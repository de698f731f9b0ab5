"""Garbage collection: frees the objects, chunks and packs that nothing can reach, while the cluster works.

Mark: in one transaction, the root tree of every commit (open or finished) and every staged shard output of a
running job; then every object below them (server/reach.py) and the chunks their files list. Sweep: each object
and chunk not marked AND last touched more than the grace before the mark began (server/grace.py) is deleted,
each delete conditional on that time in the same atomic step, so a touch that came meanwhile wins. Whatever a
commit made after the mark refers to was touched moments before (PutFiles, PutShardFiles, an object stored
again), or was reached at the mark through a commit that existed then; so nothing recorded is ever freed.

Objects go before chunks: a crash between them leaves only unreachable chunks, which the next run frees. One
collection at a time, across the servers of a store: each holds the lease LEASE while it runs. An object that
a commit reaches but that is missing stops the collection (what it would reach is unknown): `pfs check` says
where.
"""

import threading
import time
from collections.abc import Generator, Iterator

from pfs.core.errors import Conflict, DataLoss
from pfs.core.model import GarbageCollected, Progress
from server.meta import MetaStore
from server.reach import AddressSet, walk
from server.storage import ChunkStore, Swept

LEASE = "/gc"  # the lease's name: no pipeline's (a repo name holds no /)
LEASE_TTL = 60.0  # seconds a collection holds the lease unless it renews it
OBJECT_BATCH = 10_000  # objects looked at, then swept, at once
SHOW_EVERY = 0.25  # seconds between progress reports of the chunk store's sweep


class Collector:
    def __init__(self, meta: MetaStore, chunks: ChunkStore, server: str, grace: float) -> None:
        self.meta = meta
        self.chunks = chunks
        self.server = server  # this server's id: the lease's holder
        self.grace = grace
        self._running = threading.Lock()

    def collect(self, dry_run: bool = False, grace: float | None = None) -> Iterator[Progress | GarbageCollected]:
        """Collects, yielding progress and, last, what was freed. GRACE (default: the server's) below the
        server's is safe only while nothing is being uploaded (tests)."""
        if not self._running.acquire(blocking=False):
            raise Conflict("a garbage collection is running on this server already; wait for it to finish")
        try:
            with self.meta.making_room():  # a full disk is when a collection is wanted most
                try:
                    self._hold()
                    yield from self._collect(dry_run, self.grace if grace is None else grace)
                finally:
                    with self.meta.transaction() as tx:
                        tx.release_lease(LEASE, self.server)
        finally:
            self._running.release()

    def _hold(self) -> None:
        with self.meta.transaction() as tx:
            if not tx.claim_lease(LEASE, self.server, LEASE_TTL):
                holder = tx.leases().get(LEASE)
                if self.meta.shared and holder not in tx.live_servers():
                    raise Conflict(f"the garbage collection of server {holder!r} holds the store, but that server "
                                   f"is gone (stopped or dead): try again once its hold runs out, within "
                                   f"{LEASE_TTL:g} s")
                raise Conflict(f"a garbage collection is running on server {holder!r}; wait for it to finish")

    def _collect(self, dry_run: bool, grace: float) -> Iterator[Progress | GarbageCollected]:
        started = time.time()
        cutoff = started - grace
        with self.meta.transaction() as tx:  # one snapshot of what is in use
            roots = [tree for _, _, tree in tx.commit_roots()]
            staged = tx.all_staged_files()
        objects: set[bytes] = set()
        chunks = AddressSet()
        for w in staged:
            for c in w.chunks:
                chunks.add(c.address)
        for n, reached in enumerate(walk(self.meta, roots, objects), 1):
            if reached.wrong:
                raise DataLoss(f"object {reached.address.hex()} {reached.wrong}, so what it holds is unknown and "
                               "nothing can be collected safely; run `pfs check` to see which commits it breaks")
            for a in reached.chunks:
                chunks.add(a)
            if n % OBJECT_BATCH == 0:
                self._hold()
                yield Progress("mark", n, 0)
        yield Progress("mark", len(objects), len(objects))
        freed_objects = freed_object_bytes = looked = 0
        after = b""
        while True:
            with self.meta.transaction() as tx:
                batch = tx.object_addresses(after, OBJECT_BATCH)
            if not batch:
                break
            after = batch[-1]
            self._hold()
            with self.meta.transaction() as tx:
                n, size = tx.delete_objects([a for a in batch if a not in objects], cutoff, dry_run)
            freed_objects, freed_object_bytes, looked = freed_objects + n, freed_object_bytes + size, looked + len(batch)
            yield Progress("objects", looked, 0)
        swept = yield from self._counted(self.chunks.collect(chunks.__contains__, cutoff, dry_run), "chunks")
        if not dry_run:
            self.meta.reclaim()
        yield GarbageCollected(dry_run, freed_objects, freed_object_bytes, swept.chunks, swept.bytes, swept.packs,
                               swept.rewritten, len(objects), len(chunks), time.time() - started)

    def _counted(self, counts: Generator[int, None, Swept], phase: str) -> Generator[Progress, None, Swept]:
        """COUNTS' running total as PHASE's progress, now and then, the lease renewed; what COUNTS returns."""
        done, shown = 0, time.monotonic()
        while True:
            try:
                done += next(counts)
            except StopIteration as end:
                yield Progress(phase, done, done)
                return end.value
            if time.monotonic() - shown > SHOW_EVERY:
                shown = time.monotonic()
                self._hold()
                yield Progress(phase, done, 0)
