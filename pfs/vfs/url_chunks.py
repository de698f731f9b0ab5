"""Reading chunks straight from an object store, through the short-lived URLs its server gives (DirectRead kind
model.URL_READS, the LocateChunks call), so read bandwidth grows with the readers, not with the servers.

Chunks are located through the server (LocateChunks), those a reader is expected to go on to (the rest of a
large file, the next files of a directory) in the same call. Objects hold chunks of many repos, so the server
signs each URL for one byte range only: a run of chunks asked for in that call that lie side by side in one
object, nothing around or between them. A GET sends exactly that Range (the store refuses any other), so a
run's chunks come in one GET whichever of them is read first: readers of a run being fetched wait for that GET,
and what it brought that no one has read yet is kept (KEPT_BYTES at most) until they do. A location is used for
LOCATION_TTL seconds, well inside its URL's life; one without a signed range (an older server's) is not used.
Every chunk is checked (frames.check_ref, frames.unpack); one that cannot be had this way (an HTTP
error, an expired URL, a short body, a corrupt frame) comes back None, to be asked of the server instead. Only
the standard library speaks HTTP here: a client needs no S3 SDK and no credentials (the URLs are presigned).
"""

import http.client
import logging
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from pfs.core import frames
from pfs.core.chunking import MAX_CHUNK_SIZE
from pfs.core.errors import DataLoss, PfsError
from pfs.core.model import MAX_LOCATE, ChunkLocation, ChunkRef

log = logging.getLogger(__name__)

Locate = Callable[[list[bytes]], list[ChunkLocation | None]]  # Client.locate_chunks, or a store's locate

# the largest chunk's frame (zstd's bound), and some; also the most one URL may give (servers sign a few MiB,
# or one chunk)
MAX_FRAME = MAX_CHUNK_SIZE + (MAX_CHUNK_SIZE >> 7) + (64 << 10)
KEPT_BYTES = 64 << 20  # bytes of fetched runs kept for their chunks not read yet (the oldest dropped first)
TIMEOUT = 10.0  # seconds a connect, or a socket read, may wait before the chunks are asked of the server
GET_THREADS = 8  # GETs under way at once (each thread keeps its own kept-alive connections)
PAUSE = 60.0  # seconds without direct reads after an object store could not be reached (each try would wait)
LOCATION_TTL = 60.0  # seconds a location is used after the server gave it (its URL is valid a few minutes)
MAX_KNOWN = 20_000  # locations kept (some MB of URLs)

Span = tuple[str, int, int]  # a URL and the bytes (start, end) it is signed for: what one GET fetches


@dataclass
class Run:
    """One GET: bytes START to END of the object at URL (what URL is signed for), holding CHUNKS (each with its
    place in it)."""

    url: str
    start: int
    end: int
    chunks: list[tuple[ChunkRef, ChunkLocation]] = field(default_factory=list)

    @property
    def span(self) -> Span:
        return self.url, self.start, self.end


def runs(located: list[tuple[ChunkRef, ChunkLocation]]) -> list[Run]:
    """The GETs that fetch LOCATED: one per signed range, each with the chunks asked for that lie in it."""
    found: dict[Span, Run] = {}
    for ref, loc in located:
        span = (loc.url, loc.range_start, loc.range_end)
        run = found.get(span)
        if run is None:
            run = found[span] = Run(*span)
        run.chunks.append((ref, loc))
    return list(found.values())


@dataclass
class _Kept:
    """A run's bytes, and how many of them no reader has taken yet (each chunk's taken once: the ChunkCache above
    keeps what it reads)."""

    data: bytes
    left: int
    taken: set[int] = field(default_factory=set)  # offsets of the chunks taken


class Locations:
    """Where chunks are: each located once per LOCATION_TTL, and those expected to be read soon located along
    with the next ones asked for, so a reader going through a large file or a directory costs the server a call
    per thousand chunks, not one per few. A chunk being located is waited for, not asked again: readers at once
    then get the same runs (and so share their GETs)."""

    def __init__(self, locate: Locate) -> None:
        self._locate = locate
        self._known: OrderedDict[bytes, tuple[ChunkLocation, float]] = OrderedDict()  # and when; oldest first
        self._expected: dict[bytes, None] = {}  # to locate with the next call, in the order expected
        self._locating: dict[bytes, Future] = {}  # chunks in a call under way, and its answer (address -> location)
        self._lock = threading.Lock()

    def expect(self, addresses: Iterable[bytes]) -> None:
        """ADDRESSES are likely to be asked for soon: the next call locates them too (MAX_LOCATE at most)."""
        with self._lock:
            for a in addresses:
                if a not in self._known and a not in self._locating:
                    self._expected[a] = None
            while len(self._expected) > MAX_LOCATE:
                del self._expected[next(iter(self._expected))]

    def get(self, addresses: list[bytes]) -> list[ChunkLocation | None]:
        """Each address's location (None: the store lacks it), asking the server only for those not known."""
        now = time.monotonic()
        with self._lock:
            found = {a: k[0] for a in addresses if (k := self._known.get(a)) and now - k[1] < LOCATION_TTL}
            waits = {a: call for a in addresses if a not in found and (call := self._locating.get(a))}
            unknown = [a for a in addresses if a not in found and a not in waits]
            if unknown:
                asked = set(unknown)
                ahead = [a for a in self._expected if a not in asked and a not in self._locating]
                call = unknown + ahead[: max(0, MAX_LOCATE - len(unknown))]
                mine: Future = Future()
                for a in call:
                    self._expected.pop(a, None)
                    self._locating[a] = mine
        if unknown:
            found.update(self._ask(call, mine, now))
        for a, other in waits.items():
            found[a] = other.result().get(a)
        return [found.get(a) for a in addresses]

    def _ask(self, call: list[bytes], answer: Future, now: float) -> dict[bytes, ChunkLocation | None]:
        """The server's locations of CALL, kept and handed to ANSWER's waiters (or its error)."""
        try:
            given = dict(zip(call, self._locate(call)))
        except BaseException as err:
            with self._lock:
                for a in call:
                    del self._locating[a]
            answer.set_exception(err)
            raise
        with self._lock:
            for a in call:
                del self._locating[a]
                loc = given.get(a)
                if loc is not None:
                    self._known[a] = (loc, now)
                    self._known.move_to_end(a)
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)
        answer.set_result(given)
        return given

    def forget(self, addresses: Iterable[bytes]) -> None:
        """Drops the locations of ADDRESSES (a GET of them failed: its URL may have expired)."""
        with self._lock:
            for a in addresses:
                self._known.pop(a, None)


class UrlChunks:
    """A reader of the chunks of an object store at ROOT (what the mount names), through the URLs LOCATE gives."""

    def __init__(self, locate: Locate, root: str) -> None:
        self.root = root
        self._locations = Locations(locate)
        self._pool = ThreadPoolExecutor(GET_THREADS, thread_name_prefix="pfs-get")
        self._local = threading.local()  # each thread's connections, by (scheme, host:port)
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, closed by close()
        self._fetching: dict[Span, Future] = {}  # the GETs under way, which other readers of their runs wait for
        self._kept: OrderedDict[Span, _Kept] = OrderedDict()  # runs fetched with chunks not taken yet; oldest first
        self._kept_bytes = 0
        self._lock = threading.Lock()
        self._paused_until = 0.0  # monotonic time until which every chunk goes through the server
        self._told_unsigned = False  # whether a location without a signed range has been logged

    def expect(self, refs: Iterable[ChunkRef]) -> None:
        """REFS are likely to be read soon: they are located along with the next chunks asked for."""
        self._locations.expect(r.address for r in refs)

    def read_many(self, refs: Sequence[ChunkRef]) -> list[bytes | None]:
        """Each chunk's plain bytes, in order; None for one that could not be fetched or was wrong."""
        if not refs or time.monotonic() < self._paused_until:
            return [None] * len(refs)
        wanted = {r.address: r for r in refs}  # each chunk once
        try:
            for r in wanted.values():
                frames.check_ref(r)
            locations = self._locations.get(list(wanted))
        except PfsError as err:
            log.warning("cannot locate %d chunk(s) in %s (%s): reading them through the server", len(wanted),
                        self.root, err)
            return [None] * len(refs)
        located = [(r, loc) for r, loc in zip(wanted.values(), locations) if loc is not None and self._sound(loc)]
        todo = runs(located)
        found: dict[bytes, bytes | None] = {}
        for run, body in zip(todo, [self._range(run) for run in todo]):
            found.update(self._take(run, body.result()))
        return [found.get(r.address) for r in refs]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)  # a GET under way fails as its connection closes
        with self._lock:
            conns, self._open = self._open, set()
            self._kept.clear()
        for conn in conns:
            conn.close()

    def _sound(self, loc: ChunkLocation) -> bool:
        """Whether LOC could hold a chunk's frame, in the range its URL is signed for (a GET sends no other)."""
        if loc.range_end <= 0 and not self._told_unsigned:  # a server from before signed ranges
            self._told_unsigned = True
            log.warning("the server's chunk locations name no signed range (it is older than this client): reading "
                        "chunks through it")
        return (0 < loc.length <= MAX_FRAME and 0 <= loc.range_start <= loc.offset
                and loc.offset + loc.length <= loc.range_end <= loc.range_start + MAX_FRAME)

    def _range(self, run: Run) -> Future:
        """The bytes of RUN's range (None: not to be had): kept, a GET under way, or a GET started now."""
        with self._lock:
            kept = self._kept.get(run.span)
            if kept is not None:
                done: Future = Future()
                done.set_result(kept.data)
                return done
            fetching = self._fetching.get(run.span)
            if fetching is None:
                fetching = self._fetching[run.span] = self._pool.submit(self._get, run)
            return fetching

    def _get(self, run: Run) -> bytes | None:
        """RUN's range in one GET, kept for the chunks in it no one has taken yet; None if the GET fails."""
        try:
            body = self._fetch(run) if time.monotonic() >= self._paused_until else None
        except Exception as err:  # noqa: BLE001 - a last resort: whatever went wrong here, the server has the chunks
            log.error("GET of chunks from %s failed unexpectedly (%s: %s): reading them through the server",
                      urllib.parse.urlsplit(run.url).netloc, type(err).__name__, str(err).partition("?")[0])
            body = None
        with self._lock:
            del self._fetching[run.span]
            if body is not None and len(body) == run.end - run.start:
                self._kept[run.span] = _Kept(body, len(body))
                self._kept_bytes += len(body)
                while self._kept_bytes > KEPT_BYTES:
                    self._kept_bytes -= len(self._kept.popitem(last=False)[1].data)
        return body

    def _take(self, run: Run, body: bytes | None) -> dict[bytes, bytes | None]:
        """RUN's chunks (by address) out of BODY, its range's bytes; None for each one missing from it, or wrong."""
        if body is None:
            self._locations.forget(ref.address for ref, _ in run.chunks)
        out: dict[bytes, bytes | None] = {}
        for ref, loc in run.chunks:
            frame = body[loc.offset - run.start : loc.offset - run.start + loc.length] if body else b""
            out[ref.address] = _unpacked(ref, frame) if len(frame) == loc.length else None
        with self._lock:
            kept = self._kept.get(run.span)
            if kept is not None:
                for _, loc in run.chunks:
                    if loc.offset not in kept.taken:
                        kept.taken.add(loc.offset)
                        kept.left -= loc.length
                if kept.left <= 0:  # every chunk in it taken: no one will ask for it again
                    self._kept_bytes -= len(self._kept.pop(run.span).data)
        return out

    def _fetch(self, run: Run) -> bytes | None:
        """Bytes RUN.start to RUN.end of the object at RUN.url, asked for with the very Range the URL is signed for
        (fewer where the object ends sooner); None if the GET fails."""
        parts = urllib.parse.urlsplit(run.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            log.warning("cannot fetch chunks from %s: not an http(s) URL", parts._replace(query="").geturl())
            return None
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        headers = {"Range": f"bytes={run.start}-{run.end - 1}"}
        while True:
            conn, reused = self._connection(parts.scheme, parts.netloc)
            try:
                if not reused:
                    conn.connect()
            except OSError as err:
                self._drop(parts.scheme, parts.netloc)
                return self._unreachable(parts.netloc, err)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                body = _body(resp, run)
            except (OSError, http.client.HTTPException) as err:
                self._drop(parts.scheme, parts.netloc)
                if reused and isinstance(err, ConnectionError):  # a kept-alive connection the other end closed
                    continue
                if isinstance(err, TimeoutError):
                    return self._unreachable(parts.netloc, "timed out")
                log.warning("GET of chunks from %s failed (%s): reading them through the server", parts.netloc,
                            str(err).partition("?")[0])  # never a URL's signature in a log
                return None
            if not resp.isclosed():  # a body left unread: the connection cannot take another request
                self._drop(parts.scheme, parts.netloc)
            if body is None:
                log.warning("GET of chunks from %s answered %d %s: reading them through the server", parts.netloc,
                            resp.status, resp.reason)
            return body

    def _unreachable(self, origin: str, err: object) -> None:
        """Stops direct reads for PAUSE seconds: with ORIGIN out of reach (or stalled), each GET would wait."""
        self._paused_until = time.monotonic() + PAUSE
        log.warning("cannot reach %s (%s): reading chunks through the server for %.0f s", origin, err, PAUSE)

    def _connection(self, scheme: str, origin: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ORIGIN, and whether it served a request before."""
        conns = self._conns()
        conn = conns.get((scheme, origin))
        if conn is not None:
            return conn, True
        kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conns[(scheme, origin)] = kind(origin, timeout=TIMEOUT)
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _drop(self, scheme: str, origin: str) -> None:
        conn = self._conns().pop((scheme, origin), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def _conns(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns


def _body(resp: http.client.HTTPResponse, run: Run) -> bytes | None:
    """What RESP holds of RUN's range: a 206 of the range asked, or a 200 of the whole object; None otherwise.
    At most RUN's bytes are read (a caller drops a connection left with some unread)."""
    if resp.status == 206 and _range_start(resp.getheader("Content-Range", "")) == run.start:
        return resp.read(run.end - run.start)
    if resp.status == 200:  # a server that ignores Range
        return resp.read(run.end)[run.start :]
    resp.read(64 << 10)  # an error's explanation, read so a short one leaves the connection usable
    return None


def _range_start(content_range: str) -> int | None:
    """The first byte a Content-Range header ("bytes A-B/TOTAL") says the body starts at."""
    unit, _, spec = content_range.partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _unpacked(ref: ChunkRef, frame: bytes) -> bytes | None:
    """FRAME's plain bytes if it is REF's chunk; None if not (a corrupt frame, or another chunk's)."""
    try:
        plain = frames.unpack(ref, frame)
    except DataLoss as err:
        log.warning("%s: reading it through the server", err)
        return None
    return plain
