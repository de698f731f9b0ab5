"""A chunk store in an S3-compatible bucket (AWS S3, SeaweedFS, Ceph, MinIO, ...): chunks that outgrow one disk
and outlive one machine.

Under s3://BUCKET/PREFIX:
- PREFIX/chunks/ab/abcdef... is a large chunk's frame, named by its address;
- PREFIX/packs/ab/abcdef... is a pack: the frames of small chunks one after another, named by the BLAKE3 of its
  bytes. Ten thousand small files cost a few PUTs, and a read of one of them is a ranged GET.
Where each chunk is (its object, offset and length, its frame's head and a checksum) is recorded in the metadata
store once the object holding it is written, so a chunk exists from when it is recorded: nothing is ever seen half
written, and an object a crash left unrecorded is garbage, not data. Objects are written create-only
(If-None-Match: *; HEAD then PUT on a server without it); a key always names the same bytes, so writers racing to
store one chunk never corrupt it. Every chunk read is checked against its recorded length and checksum: a corrupt
object is DataLoss, never bytes.

boto3 does the talking: credentials and region the standard AWS way, its connection pool sized for the transfer
threads, and retries with backoff and jitter of throttling (503 SlowDown), 5xx and dropped connections; a body
cut off mid-read is fetched again here. A bucket that cannot be used fails the server's start with one line;
later failures are Unavailable (UNAVAILABLE to a client). Chunks read or written stay in a DiskCache on the
server's disk. Clients fetch chunks themselves through presigned URLs (locate()), so read bandwidth grows with
the readers.
"""

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
import botocore.exceptions
import xxhash
from botocore.config import Config

from pfs.core import compression
from pfs.core.errors import DataLoss, InvalidArgument, PfsError, Unavailable
from pfs.core.hashing import address as blake3_address
from pfs.core.model import ChunkLocation, DirectRead
from server.meta import MetaStore, StoredChunk
from server.storage import ChunkStore
from server.storage.cache import DiskCache

log = logging.getLogger(__name__)

SCHEME = "s3://"
KIND = "url"  # what describe() offers: chunks fetched from the URLs locate() gives
PACK_BELOW = 512 << 10  # frames smaller than this go into packs
PACK_SIZE = 8 << 20  # a pack is written once it holds this much
LOOKUP_BATCH = 1000  # chunks looked up in the metadata store at once
RECORD_BATCH = 256  # chunks written before they are recorded (one transaction)
IN_FLIGHT = 8  # objects one put() has being written at once: bounds its memory
THREADS = 16  # transfers under way at once, across calls
WINDOW_BYTES = 64 << 20  # what get_many() fetches ahead of its reader
MAX_GAP = 256 << 10  # chunks of a pack this close are read with one GET
MAX_RANGE = 16 << 20  # ... of at most this many bytes
URL_LIFETIME = 900  # seconds a presigned URL stays valid
MAX_URLS = 10_000  # presigned URLs kept for reuse
# tries of a request: botocore backs off 0.05 s x 2^n with jitter (about 3 s in all: a restarting server is waited
# for), 1 s x 2^n when throttled; ours, for a body cut off, alike
ATTEMPTS = 8
CONFLICT = "ConditionalRequestConflict"  # AWS, when a conditional write races another: try again
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
                 threads: int = THREADS) -> None:
        self.bucket, prefix = parse_url(url)
        self.url = f"{SCHEME}{self.bucket}/{prefix}".rstrip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._meta = meta
        self._cache = cache
        config = Config(retries={"mode": "standard", "max_attempts": ATTEMPTS}, connect_timeout=5, read_timeout=60,
                        max_pool_connections=threads + 4, signature_version="s3v4",
                        # our own checksums guard every chunk; S3-compatible servers differ in theirs
                        request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        s3={"addressing_style": "path"} if endpoint else {})
        session = boto3.session.Session()
        self._s3 = session.client("s3", endpoint_url=endpoint, config=config)
        self.endpoint = self._s3.meta.endpoint_url
        self._requests: Counter[str] = Counter()
        self._s3.meta.events.register("before-send.s3", self._count)
        self._conditional = True  # If-None-Match: * until the server says it lacks it
        self._urls: dict[str, tuple[str, float]] = {}  # key -> (presigned URL, when it expires)
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
        return DirectRead(KIND, self.url)

    # -- what is stored where

    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        addresses = list(addresses)
        stored = self._lookup(addresses)
        return [a for a in addresses if a not in stored]

    def _lookup(self, addresses: Sequence[bytes]) -> dict[bytes, StoredChunk]:
        with self._meta.transaction() as tx:
            return tx.stored_chunks(addresses)

    def _key(self, chunk: StoredChunk) -> str:
        if chunk.pack:
            return f"{self._prefix}packs/{chunk.pack[:2]}/{chunk.pack}"
        name = chunk.address.hex()
        return f"{self._prefix}chunks/{name[:2]}/{name}"

    # -- writing

    def put(self, chunks: Iterable[tuple[bytes, bytes]]) -> int:
        written: list[StoredChunk] = []  # written, not yet recorded
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
                        if len(frame) >= PACK_BELOW:
                            writes.append(self._pool.submit(self._write_chunk, address, frame))
                        elif pack.add(address, frame) >= PACK_SIZE:
                            writes.append(self._pool.submit(self._write_pack, pack))
                            pack = _Pack()
                        while len(writes) > IN_FLIGHT:
                            written += writes.popleft().result()
                        if len(written) >= RECORD_BATCH:
                            new += self._record(written)
                if pack.frames:
                    writes.append(self._pool.submit(self._write_pack, pack))
                while writes:
                    written += writes.popleft().result()
                return new + self._record(written)
            except BaseException:
                # what was written whole is kept (and skipped by a retry); what was not never shows
                for f in writes:
                    if f.exception() is None:
                        written += f.result()
                self._record(written)
                raise

    def _record(self, written: list[StoredChunk]) -> int:
        """Records WRITTEN (and empties it): from now on those chunks exist. How many were new."""
        if not written:
            return 0
        with self._meta.transaction() as tx:
            new = tx.put_stored_chunks(written)
        written.clear()
        return new

    def _write_chunk(self, address: bytes, frame: bytes) -> list[StoredChunk]:
        chunk = _stored(address, "", 0, frame)
        self._create(self._key(chunk), frame)
        if self._cache:
            self._cache.put(address, frame)
        return [chunk]

    def _write_pack(self, pack: "_Pack") -> list[StoredChunk]:
        data = b"".join(frame for _, frame in pack.frames)
        name = blake3_address(data).hex()
        chunks, offset = [], 0
        for address, frame in pack.frames:
            chunks.append(_stored(address, name, offset, frame))
            offset += len(frame)
        self._create(self._key(chunks[0]), data)
        if self._cache:
            for address, frame in pack.frames:
                self._cache.put(address, frame)
        return chunks

    def _create(self, key: str, data: bytes) -> None:
        """Writes DATA at KEY unless the key exists (holding the same bytes: keys are named by their content)."""
        for attempt in range(ATTEMPTS):
            if not self._conditional:
                break
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
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
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    # -- reading

    def get(self, address: bytes) -> bytes:
        return next(self.get_many([address]))

    def get_many(self, addresses: Sequence[bytes]) -> Iterator[bytes]:
        ahead: deque[tuple[bytes, bytes | Future]] = deque()  # in order: a frame, or the fetch that brings it
        size = 0
        with self._errors():
            for i in range(0, len(addresses), LOOKUP_BATCH):
                for address, found, length in self._start(addresses[i : i + LOOKUP_BATCH]):
                    ahead.append((address, found))
                    size += length
                    while size > WINDOW_BYTES:
                        frame = _frame(*ahead.popleft())
                        size -= len(frame)
                        yield frame
            while ahead:
                yield _frame(*ahead.popleft())

    def _start(self, addresses: Sequence[bytes]) -> list[tuple[bytes, bytes | Future, int]]:
        """Each of ADDRESSES with its frame if cached, else the fetch under way that brings it, and its length."""
        cached = {a: f for a in addresses if self._cache and (f := self._cache.get(a)) is not None}
        stored = self._lookup([a for a in dict.fromkeys(addresses) if a not in cached])
        fetches = {}
        for run in _runs(sorted(stored.values(), key=lambda c: (c.pack, c.offset))):
            future = self._pool.submit(self._fetch, run)
            for chunk in run:
                fetches[chunk.address] = future
        out = []
        for a in addresses:
            if a in cached:
                out.append((a, cached[a], len(cached[a])))
            elif a in stored:
                out.append((a, fetches[a], stored[a].length))
            else:
                raise DataLoss(f"chunk {a.hex()} is missing from {self.url}")
        return out

    def _fetch(self, run: list[StoredChunk]) -> dict[bytes, bytes]:
        """The frames of RUN, chunks of one object close together, with one GET, each checked."""
        key = self._key(run[0])
        start, end = run[0].offset, run[-1].offset + run[-1].length
        for attempt in range(ATTEMPTS):
            try:
                reply = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
                data = reply["Body"].read()
                break
            except BODY_ERRORS:
                if attempt == ATTEMPTS - 1:
                    raise
                _backoff(attempt)
            except botocore.exceptions.ClientError as err:
                if _code(err) in ("NoSuchKey", "404", "InvalidRange", "416"):
                    raise DataLoss(f"{len(run)} chunk(s) (first: {run[0].address.hex()}) are missing from "
                                   f"{self.url}: object {key} is gone or shorter than recorded") from None
                raise
        frames = {}
        for chunk in run:
            frame = data[chunk.offset - start : chunk.offset - start + chunk.length]
            if len(frame) != chunk.length or xxhash.xxh3_64_digest(frame) != chunk.checksum:
                raise DataLoss(f"chunk {chunk.address.hex()} in {self.url} is corrupt: object {key} does not hold "
                               "the bytes recorded when it was written")
            frames[chunk.address] = frame
            if self._cache:
                self._cache.put(chunk.address, frame)
        return frames

    def heads(self, addresses: Iterable[bytes], size: int) -> dict[bytes, bytes]:
        stored = self._lookup(list(addresses))
        whole = [a for a, c in stored.items() if size > len(c.head) and c.length > len(c.head)]
        found = {a: c.head[:size] for a, c in stored.items()}
        found.update((a, frame[:size]) for a, frame in zip(whole, self.get_many(whole)))
        return found

    def locate(self, addresses: Sequence[bytes]) -> list[ChunkLocation | None]:
        stored = self._lookup(addresses)
        return [ChunkLocation(self._presigned(self._key(c)), c.offset, c.length) if (c := stored.get(a)) else None
                for a in addresses]

    def _presigned(self, key: str) -> str:
        """A GET URL of KEY valid for at least half of URL_LIFETIME: chunks of one pack share it."""
        now = time.time()
        with self._lock:
            url, expires = self._urls.get(key, ("", 0.0))
        if expires - now >= URL_LIFETIME / 2:
            return url
        url = self._s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                              ExpiresIn=URL_LIFETIME)
        with self._lock:
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            self._urls[key] = (url, now + URL_LIFETIME)
        return url

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


def _stored(address: bytes, pack: str, offset: int, frame: bytes) -> StoredChunk:
    return StoredChunk(address, pack, offset, len(frame), frame[: compression.HEADER_BYTES],
                       xxhash.xxh3_64_digest(frame))


def _batches(chunks: Iterable[tuple[bytes, bytes]], n: int) -> Iterator[list[tuple[bytes, bytes]]]:
    batch = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _runs(chunks: list[StoredChunk]) -> Iterator[list[StoredChunk]]:
    """CHUNKS (by object and offset) in runs that one GET each reads: a large chunk alone, chunks of a pack
    together while they are close and the run is not too long."""
    run: list[StoredChunk] = []
    for c in chunks:
        if run and (not c.pack or c.pack != run[0].pack or c.offset - (run[-1].offset + run[-1].length) > MAX_GAP
                    or c.offset + c.length - run[0].offset > MAX_RANGE):
            yield run
            run = []
        run.append(c)
    if run:
        yield run


def _frame(address: bytes, found: bytes | Future) -> bytes:
    return found if isinstance(found, bytes) else found.result()[address]


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _reason(err: botocore.exceptions.ClientError) -> str:
    error = err.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message') or 'no message'}"
