"""A chunk store in an S3-compatible bucket (AWS S3, SeaweedFS, Ceph, MinIO, ...): chunks that outgrow one disk
and outlive one machine.

Chunks are written in packs, as restic does: PREFIX/packs/ab/abcdef... holds the frames of the chunks one put
brought, one after another, up to PACK_SIZE (a chunk larger than that is a pack of its own). Requests cost far more
than bytes (a PUT of 16 MiB takes a quarter of the CPU per MiB a PUT of 1 MiB takes, on both ends), so ten thousand
small files cost a PUT or two, a GiB about 64, and a read of one chunk is a ranged GET of its bytes.
Where each chunk is (its pack, offset and length, its frame's head and an xxh3 checksum) is recorded in the
metadata store once its pack is written, so a chunk exists from when it is recorded: nothing is ever seen half
written, and a pack a crash left unrecorded is garbage, not data. Packs have names of their own, random, and are
written create-only (If-None-Match: *; HEAD then PUT on a server without it): no two writers ever share a key, and
writers racing to store the same chunk each keep their copy, the first one recorded being the one read. Every
chunk read is checked against its recorded length and checksum: a corrupt object is DataLoss, never bytes.

boto3 does the talking: credentials and region the standard AWS way, its connection pool sized for the transfer
threads, and retries with backoff and jitter of throttling (503 SlowDown), 5xx and dropped connections; a body
cut off mid-read is fetched again here. A bucket that cannot be used fails the server's start with one line;
later failures are Unavailable (UNAVAILABLE to a client). Packs written or read stay whole in a DiskCache on the
server's disk, so reading the next small file of a directory costs no request.

Clients fetch chunks themselves through presigned URLs (locate()), so read bandwidth grows with the readers. A
pack holds chunks of many repos, so a URL never gives a pack: each is signed (SigV4, which signs the headers it
names; v2 would leave Range out) for the Range of a run of chunks that lie side by side and were all asked for
in one call, and the store refuses (403) a GET of it without that very header, as AWS S3 does and, a test holds,
SeaweedFS. A reader of a large file or a directory asks for the chunks it goes on to along with those it reads,
so their runs are long and a GET brings up to URL_RANGE bytes.

Garbage collection (collect(), server/gc.py) forgets the records of dead chunks, each row atomically against a
touch; then deletes each pack that holds no recorded chunk and is older than the grace (a put records a pack's
chunks within half a grace of writing it, or fails: so such a pack is never about to be recorded), and rewrites
one mostly dead (its live chunks copied to a new pack and recorded there in one transaction), retiring the old
one, deleted by a later collection once no URL signed for it is valid. A crash at any step leaves records that
point at whole packs, and garbage the next collection finds.
"""

import logging
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
import botocore.exceptions
import xxhash
from botocore.config import Config

from pfs.core import compression
from pfs.core.errors import DataLoss, FailedPrecondition, InvalidArgument, PfsError, Unavailable
from pfs.core.model import URL_READS, ChunkLocation, DirectRead
from server.grace import DEFAULT_GRACE
from server.meta import MetaStore, StoredChunk
from server.storage import ChunkStore, Swept
from server.storage.cache import DiskCache

log = logging.getLogger(__name__)

SCHEME = "s3://"
PACK_SIZE = 16 << 20  # a pack is written once it holds this much
LOOKUP_BATCH = 1000  # chunks looked up in the metadata store at once
RECORD_BATCH = 256  # chunks written before they are recorded (one transaction)
IN_FLIGHT = 4  # packs one put() has being written at once: bounds its memory...
PACKS_IN_FLIGHT = 32  # ...and packs being written at once across all puts (512 MiB): bounds the server's
THREADS = 16  # transfers under way at once, across calls
WINDOW_BYTES = 64 << 20  # what get_many() fetches ahead of its reader
MAX_GAP = 256 << 10  # without a cache, chunks of a pack this close are read with one GET
MAX_RANGE = 16 << 20  # ... of at most this many bytes (with a cache, a pack is read whole)
URL_LIFETIME = 900  # seconds a presigned URL stays valid
URL_RANGE = 4 << 20  # bytes one presigned URL gives at most (a larger chunk alone): a large read is several GETs
MAX_URLS = 10_000  # presigned URLs kept for reuse (a few MB), by object and range
# tries of a request: botocore backs off 0.05 s x 2^n with jitter (about 3 s in all: a restarting server is waited
# for), 1 s x 2^n when throttled; ours, for a body cut off, alike
ATTEMPTS = 8
CONFLICT = "ConditionalRequestConflict"  # AWS, when a conditional write races another: try again
SCAN_BATCH = 10_000  # recorded chunks looked at, then collected, at once
REWRITE_DEAD = 0.5  # a pack more dead than this (by bytes) is rewritten
BODY_ERRORS = (botocore.exceptions.ResponseStreamingError, botocore.exceptions.IncompleteReadError,
               botocore.exceptions.ConnectionClosedError, botocore.exceptions.ReadTimeoutError)


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://BUCKET[/PREFIX]."""
    bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
    if not url.startswith(SCHEME) or not bucket:
        raise InvalidArgument(f"{url!r} is not a bucket: write s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


class S3ChunkStore(ChunkStore):
    def __init__(self, url: str, meta: MetaStore, cache: DiskCache | None = None, endpoint: str | None = None,
                 threads: int = THREADS, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.bucket, prefix = parse_url(url)
        self.url = f"{SCHEME}{self.bucket}/{prefix}".rstrip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._meta = meta
        self._cache = cache
        config = Config(retries={"mode": "standard", "max_attempts": ATTEMPTS}, connect_timeout=5, read_timeout=60,
                        max_pool_connections=threads + 4, signature_version="s3v4",
                        # our own checksums guard every chunk; S3-compatible servers differ in theirs
                        request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        # bodies not hashed into the signature either (over http, a SHA-256 a MiB)
                        s3={"payload_signing_enabled": False, **({"addressing_style": "path"} if endpoint else {})})
        session = boto3.session.Session()
        self._s3 = session.client("s3", endpoint_url=endpoint, config=config)
        self.endpoint = self._s3.meta.endpoint_url
        self._requests: Counter[str] = Counter()
        self._s3.meta.events.register("before-send.s3", self._count)
        self._conditional = True  # If-None-Match: * until the server says it lacks it
        self._urls: dict[tuple[str, int, int], tuple[str, float]] = {}  # (key, range) -> (its URL, when it expires)
        self._fetching: dict[str, Future] = {}  # pack -> its GET under way, which other readers wait for
        self._room = threading.BoundedSemaphore(PACKS_IN_FLIGHT)
        self._lock = threading.Lock()
        self._check(session, endpoint, config)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="s3")

    def _check(self, session: boto3.session.Session, endpoint: str | None, config: Config) -> None:
        """Raises Unavailable, one line naming endpoint and bucket, unless the bucket answers (with one try)."""
        probe = session.client("s3", endpoint_url=endpoint,
                               config=config.merge(Config(retries={"mode": "standard", "max_attempts": 1})))
        try:
            probe.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.NoCredentialsError:
            reason = "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials"
        except botocore.exceptions.ClientError as err:
            code = _code(err)
            if code in ("404", "NoSuchBucket"):
                reason = f"bucket {self.bucket!r} does not exist: create it, or name another"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                reason = (f"the keys are refused for bucket {self.bucket!r} ({code}): check AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials)")
            else:
                reason = f"bucket {self.bucket!r}: {_reason(err)}"
        except botocore.exceptions.BotoCoreError as err:
            reason = f"no answer ({err})"
        else:
            return
        finally:
            probe.close()
        self._s3.close()
        raise Unavailable(f"cannot use {self.url} at {self.endpoint}: {reason}")

    def describe(self) -> DirectRead:
        return DirectRead(URL_READS, self.url)

    def where(self) -> str:
        return self.url

    def claim(self, cluster: str) -> None:
        """The mark: an object beside the packs naming the cluster whose they are (its garbage collection frees
        the packs its database does not record: another cluster's, on the same prefix)."""
        key = f"{self._prefix}cluster"
        with self._errors():  # the id in the object's metadata too: a HEAD reads it
            self._create(key, cluster.encode(), {"cluster": cluster})
            marked = self._s3.head_object(Bucket=self.bucket, Key=key)["Metadata"].get("cluster", "")
        if marked != cluster:
            raise FailedPrecondition(f"{self.url} holds the chunks of another pfs cluster (its mark, {key}, names "
                                     f"cluster {marked[:40]!r}; this server's database is cluster {cluster!r}): "
                                     "give each cluster a bucket or prefix of its own")

    # -- what is stored where

    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        addresses = list(addresses)
        stored = self._lookup(addresses, touch=True)
        return [a for a in addresses if a not in stored]

    def _lookup(self, addresses: Sequence[bytes], touch: bool = False) -> dict[bytes, StoredChunk]:
        with self._meta.transaction() as tx:
            return tx.stored_chunks(addresses, touch)

    def _key(self, pack: str) -> str:
        return f"{self._prefix}packs/{pack[:2]}/{pack}"

    # -- writing

    def put(self, chunks: Iterable[tuple[bytes, bytes]]) -> int:
        written = _Written()  # written, not yet recorded
        writes: deque[Future] = deque()
        new = 0
        with self._errors():
            try:
                pack = _Pack()
                seen = set()
                for batch in _batches(chunks, LOOKUP_BATCH):
                    stored = self._lookup([a for a, _ in batch])
                    for address, frame in batch:
                        if address in stored or address in seen:
                            continue
                        seen.add(address)
                        if pack.add(address, frame) >= PACK_SIZE:
                            writes.append(self._submit(pack))
                            pack = _Pack()
                        while len(writes) > IN_FLIGHT:
                            written.add(*writes.popleft().result())
                        if len(written.chunks) >= RECORD_BATCH or written.older_than(self.grace / 8):
                            new += self._record(written)
                if pack.frames:
                    writes.append(self._submit(pack))
                while writes:
                    written.add(*writes.popleft().result())
                return new + self._record(written)
            except BaseException:
                # what was written whole is kept (and skipped by a retry); what was not never shows
                for f in writes:
                    if f.exception() is None:
                        written.add(*f.result())
                if not written.older_than(self.grace / 2):
                    self._record(written)
                raise

    def _record(self, written: "_Written") -> int:
        """Records WRITTEN (and empties it): from now on those chunks exist. How many were new. A pack written
        more than half a grace ago may be taken for a crash's leftover by garbage collection, so its chunks are
        never recorded: the put fails, and is tried again. Looked at as the transaction ends (it may have waited
        for others), so a collection that did not see the records began within that half grace."""
        if not written.chunks:
            return 0
        with self._meta.transaction() as tx:
            new = tx.put_stored_chunks(written.chunks)
            if written.older_than(self.grace / 2):
                raise Unavailable(f"chunks written to {self.url} took over {self.grace / 2:.0f} s to be recorded; "
                                  "put them again")
        written.clear()
        return new

    def _submit(self, pack: "_Pack") -> Future:
        """PACK's write, started once fewer than PACKS_IN_FLIGHT are under way (a put waits, and so its client)."""
        self._room.acquire()
        try:
            return self._pool.submit(self._write_pack, pack)
        except BaseException:
            self._room.release()
            raise

    def _write_pack(self, pack: "_Pack") -> tuple[float, list[StoredChunk]]:
        """Writes PACK: when it was (before the write began: its object is no older), and where its chunks are."""
        try:
            started = time.time()
            name, chunks, data = _packed(pack.frames)
            self._create(self._key(name), data)
            if self._cache:
                self._cache.put(name, data)
            return started, chunks
        finally:
            self._room.release()

    def _create(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Writes DATA (with its user METADATA) at KEY unless the key exists: then a retried write had landed (names
        are random, so what is there is this one)."""
        extra = {"Metadata": metadata} if metadata else {}
        for attempt in range(ATTEMPTS):
            if not self._conditional:
                break
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", **extra)
                return
            except botocore.exceptions.ClientError as err:
                code = _code(err)
                if code in ("PreconditionFailed", "412"):
                    return
                if code in ("NotImplemented", "501"):
                    log.warning("%s does not take conditional writes (If-None-Match); HEAD then PUT instead",
                                self.endpoint)
                    self._conditional = False
                elif code != CONFLICT or attempt == ATTEMPTS - 1:
                    raise
                _backoff(attempt)
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return
        except botocore.exceptions.ClientError as err:
            if _code(err) not in ("404", "NoSuchKey", "NotFound"):
                raise
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def set_aside(self, addresses: Sequence[bytes]) -> None:
        """Forgets where they are: their bytes stay in their packs (and a cached pack's copy), unreferenced, until
        garbage collection rewrites or frees those."""
        with self._meta.transaction() as tx:
            tx.delete_stored_chunks(addresses, math.inf, dry_run=False)

    # -- reading

    def get(self, address: bytes) -> bytes:
        return next(self.get_many([address]))

    def get_many(self, addresses: Sequence[bytes]) -> Iterator[bytes]:
        ahead: deque[tuple[bytes, Future]] = deque()  # in order: each chunk, and the read that brings it
        size = 0
        with self._errors():
            for i in range(0, len(addresses), LOOKUP_BATCH):
                for address, read, length in self._start(addresses[i : i + LOOKUP_BATCH]):
                    ahead.append((address, read))
                    size += length
                    while size > WINDOW_BYTES:
                        frame = _frame(*ahead.popleft())
                        size -= len(frame)
                        yield frame
            while ahead:
                yield _frame(*ahead.popleft())

    def _start(self, addresses: Sequence[bytes]) -> list[tuple[bytes, Future, int]]:
        """Each of ADDRESSES with the read under way that brings its frame (one a pack), and its length."""
        stored = self._lookup(list(dict.fromkeys(addresses)))
        packs: dict[str, list[StoredChunk]] = {}
        for chunk in stored.values():
            packs.setdefault(chunk.pack, []).append(chunk)
        reads = {}
        for pack, chunks in packs.items():
            future = self._pool.submit(self._read, pack, sorted(chunks, key=lambda c: c.offset))
            reads.update((c.address, future) for c in chunks)
        out = []
        for a in addresses:
            if a not in stored:
                raise DataLoss(f"chunk {a.hex()} is missing from the store")  # not where: callers need not know
            out.append((a, reads[a], stored[a].length))
        return out

    def _read(self, pack: str, chunks: list[StoredChunk]) -> dict[bytes, bytes]:
        """The frames of CHUNKS (of PACK, by offset), each checked: from the cache, else from the bucket, where a
        cache gets the whole pack (the next small files of a directory are in it) and no cache the runs asked."""
        if self._cache is None:
            frames = {}
            for run in _runs(chunks, MAX_GAP, MAX_RANGE):
                start, end = run[0].offset, run[-1].offset + run[-1].length
                frames |= self._checked(pack, run, _slices(run, self._get(pack, f"bytes={start}-{end - 1}"), start))
            return frames
        parts = self._cache.read(pack, [(c.offset, c.length) for c in chunks])
        if parts is not None:
            try:
                return self._checked(pack, chunks, parts)
            except DataLoss:
                self._cache.drop(pack)  # torn by a crash: the bucket has it whole
        return self._checked(pack, chunks, _slices(chunks, self._whole(pack), 0))

    def _whole(self, pack: str) -> bytes:
        """The whole of PACK, fetched once however many readers want it at once, and kept in the cache."""
        with self._lock:
            fetching = self._fetching.get(pack)
            if fetching is None:
                mine = self._fetching[pack] = Future()
        if fetching is not None:
            return fetching.result()
        try:
            data = self._get(pack)
            self._cache.put(pack, data)
            mine.set_result(data)
            return data
        except BaseException as err:
            mine.set_exception(err)
            raise
        finally:
            with self._lock:
                del self._fetching[pack]

    def _get(self, pack: str, byte_range: str = "") -> bytes:
        """PACK's bytes (BYTE_RANGE of them, if given); a body cut off mid-read is fetched again."""
        key = self._key(pack)
        for attempt in range(ATTEMPTS):
            try:
                reply = self._s3.get_object(Bucket=self.bucket, Key=key, **({"Range": byte_range} if byte_range else {}))
                return reply["Body"].read()
            except BODY_ERRORS:
                if attempt == ATTEMPTS - 1:
                    raise
                _backoff(attempt)
            except botocore.exceptions.ClientError as err:
                if _code(err) in ("NoSuchKey", "404", "InvalidRange", "416"):
                    raise DataLoss(f"chunks are missing from {self.url}: object {key} is gone or shorter than "
                                   "recorded") from None
                raise

    def _checked(self, pack: str, chunks: list[StoredChunk], frames: list[bytes]) -> dict[bytes, bytes]:
        """CHUNKS' FRAMES by address, each checked against what was recorded when it was written."""
        found = {}
        for chunk, frame in zip(chunks, frames):
            if len(frame) != chunk.length or xxhash.xxh3_64_digest(frame) != chunk.checksum:
                raise DataLoss(f"chunk {chunk.address.hex()} in {self.url} is corrupt: object {self._key(pack)} does "
                               "not hold the bytes recorded when it was written")
            found[chunk.address] = frame
        return found

    def heads(self, addresses: Iterable[bytes], size: int) -> dict[bytes, bytes]:
        stored = self._lookup(list(addresses), touch=True)
        whole = [a for a, c in stored.items() if size > len(c.head) and c.length > len(c.head)]
        found = {a: c.head[:size] for a, c in stored.items()}
        found.update((a, frame[:size]) for a, frame in zip(whole, self.get_many(whole)))
        return found

    def locate(self, addresses: Sequence[bytes]) -> list[ChunkLocation | None]:
        """A URL per run of ADDRESSES' chunks that lie side by side in a pack, signed for exactly that run's bytes:
        a pack holds chunks of many repos, and a URL gives its holder only the chunks asked for."""
        packs: dict[str, list[StoredChunk]] = {}
        for chunk in self._lookup(addresses).values():
            packs.setdefault(chunk.pack, []).append(chunk)
        found: dict[bytes, ChunkLocation] = {}
        for pack, chunks in packs.items():
            for run in _runs(sorted(chunks, key=lambda c: c.offset), gap=0, size=URL_RANGE):
                start, end = run[0].offset, run[-1].offset + run[-1].length
                url = self._presigned(self._key(pack), start, end)
                found.update((c.address, ChunkLocation(url, c.offset, c.length, start, end)) for c in run)
        return [found.get(a) for a in addresses]

    def _presigned(self, key: str, start: int, end: int) -> str:
        """A GET URL of bytes START to END of KEY, signed for that Range header (SigV4 signs the headers it names,
        and the store refuses a GET without that very header), valid for at least half of URL_LIFETIME."""
        now = time.time()
        with self._lock:
            url, expires = self._urls.get((key, start, end), ("", 0.0))
        if expires - now >= URL_LIFETIME / 2:
            return url
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"},
            ExpiresIn=URL_LIFETIME)
        with self._lock:
            self._urls.pop((key, start, end), None)  # to the end: the dict is in the order signed
            self._urls[(key, start, end)] = (url, now + URL_LIFETIME)
            while len(self._urls) > MAX_URLS:
                del self._urls[next(iter(self._urls))]
        return url

    # -- garbage collection

    def stored(self) -> Iterator[bytes]:
        with self._errors():
            packs = self._packs()
        after = b""
        while rows := self._rows(after):
            yield from (a for a, pack, _, _ in rows if pack in packs)
            after = rows[-1][0]

    def _rows(self, after: bytes) -> list[tuple[bytes, str, int, float]]:
        with self._meta.transaction() as tx:
            return tx.stored_chunk_rows(after, SCAN_BATCH)

    def _packs(self) -> dict[str, tuple[int, float]]:
        """Every pack in the bucket: its size and when it was written."""
        found = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self._prefix}packs/"):
            for o in page.get("Contents", []):
                found[o["Key"].rsplit("/", 1)[1]] = (o["Size"], o["LastModified"].timestamp())
        return found

    def collect(self, live: Callable[[bytes], bool], cutoff: float, dry_run: bool) -> Generator[int, None, Swept]:
        swept = Swept()
        with self._errors():
            packs = self._packs()  # listed first: a pack written after this is never collected by this run
            after, forgotten = b"", set()
            while rows := self._rows(after):
                dead = [a for a, _, _, touched in rows if not live(a) and touched < cutoff]
                with self._meta.transaction() as tx:
                    n, _ = tx.delete_stored_chunks(dead, cutoff, dry_run)
                swept.chunks += n
                if dry_run:
                    forgotten.update(dead)
                yield len(rows)
                after = rows[-1][0]
            kept: Counter[str] = Counter()  # bytes still recorded, by pack
            after = b""
            while rows := self._rows(after):
                for a, pack, length, _ in rows:
                    if a not in forgotten:
                        kept[pack] += length
                after = rows[-1][0]
            with self._meta.transaction() as tx:
                retired = tx.retired_packs()
            deleted = []
            for pack, (size, written) in packs.items():
                if written >= cutoff:
                    continue  # may be a put's, about to be recorded
                if not kept[pack]:
                    if time.time() < retired.get(pack, 0.0) + URL_LIFETIME:
                        continue  # rewritten: a URL signed for it before may still be used
                    if not dry_run:
                        self._s3.delete_object(Bucket=self.bucket, Key=self._key(pack))
                    deleted.append(pack)
                    swept.packs += 1
                    swept.bytes += size
                elif kept[pack] < size * (1 - REWRITE_DEAD) and pack not in retired:
                    swept.rewritten += 1
                    swept.bytes -= kept[pack]  # the new pack; the old one's room comes back when it is deleted
                    if not dry_run:
                        self._rewrite(pack)
            if deleted and not dry_run:
                with self._meta.transaction() as tx:
                    tx.forget_retired(deleted)
        return swept

    def _rewrite(self, pack: str) -> None:
        """Copies the chunks still recorded in PACK to a new pack, records them there and retires PACK."""
        with self._meta.transaction() as tx:
            chunks = sorted(tx.pack_chunks(pack), key=lambda c: c.offset)
        frames = self._checked(pack, chunks, _slices(chunks, self._get(pack), 0))
        name, moved, data = _packed(list(frames.items()))
        self._create(self._key(name), data)
        with self._meta.transaction() as tx:
            tx.move_stored_chunks(moved, pack)

    # -- the rest

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """What went wrong with the bucket, as a domain error: Unavailable, naming it."""
        try:
            yield
        except PfsError:
            raise
        except botocore.exceptions.ClientError as err:
            raise Unavailable(f"the chunk store {self.url} at {self.endpoint} refused: {_reason(err)}") from None
        except botocore.exceptions.BotoCoreError as err:
            raise Unavailable(f"the chunk store {self.url} at {self.endpoint} does not answer: {err}") from None

    def _count(self, event_name: str, **_) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self._requests[operation] += 1

    def requests(self) -> dict[str, int]:
        """The requests made of the bucket so far (retries too), by operation."""
        with self._lock:
            return dict(self._requests)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        counts = self.requests()
        log.info("S3 requests: %d (%s)", sum(counts.values()),
                 ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none")
        self._s3.close()


@dataclass
class _Pack:
    """Small chunks to be written as one object."""

    frames: list[tuple[bytes, bytes]] = field(default_factory=list)
    size: int = 0

    def add(self, address: bytes, frame: bytes) -> int:
        self.frames.append((address, frame))
        self.size += len(frame)
        return self.size


class _Written:
    """Chunks in packs written but not yet recorded, and when the first of those packs was written."""

    def __init__(self) -> None:
        self.chunks: list[StoredChunk] = []
        self.since = 0.0

    def add(self, written: float, chunks: list[StoredChunk]) -> None:
        self.since = min(self.since, written) if self.chunks else written
        self.chunks += chunks

    def older_than(self, seconds: float) -> bool:
        return bool(self.chunks) and time.time() - self.since > seconds

    def clear(self) -> None:
        self.chunks.clear()


def _packed(frames: list[tuple[bytes, bytes]]) -> tuple[str, list[StoredChunk], bytes]:
    """A new pack of FRAMES (address, frame): its name, where each chunk is in it, and its bytes."""
    name = uuid.uuid4().hex
    chunks, offset = [], 0
    for address, frame in frames:
        chunks.append(StoredChunk(address, name, offset, len(frame), frame[: compression.HEADER_BYTES],
                                  xxhash.xxh3_64_digest(frame)))
        offset += len(frame)
    return name, chunks, b"".join(frame for _, frame in frames)


def _batches(chunks: Iterable[tuple[bytes, bytes]], n: int) -> Iterator[list[tuple[bytes, bytes]]]:
    batch = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _runs(chunks: list[StoredChunk], gap: int, size: int) -> Iterator[list[StoredChunk]]:
    """CHUNKS (of one pack, by offset) in runs that one GET each reads: chunks at most GAP bytes apart, a run
    SIZE bytes at most (a larger chunk alone)."""
    run: list[StoredChunk] = []
    for c in chunks:
        if run and (c.offset - (run[-1].offset + run[-1].length) > gap or c.offset + c.length - run[0].offset > size):
            yield run
            run = []
        run.append(c)
    if run:
        yield run


def _slices(chunks: list[StoredChunk], data: bytes, start: int) -> list[bytes]:
    """The frames of CHUNKS in DATA, a pack's bytes from START (short where DATA is)."""
    return [data[c.offset - start : c.offset - start + c.length] for c in chunks]


def _frame(address: bytes, read: Future) -> bytes:
    return read.result()[address]


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _reason(err: botocore.exceptions.ClientError) -> str:
    error = err.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message') or 'no message'}"
