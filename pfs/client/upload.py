"""Putting files into an open commit (or a job's output) with few round trips and no byte sent twice.

A pipeline, each stage on its own threads, so one file keeps both cores busy as well as many do:
- the caller's thread reads each file, cuts it into chunks and hashes them (put), and asks the server which
  chunks of each batch it lacks (one call per batch, answered while the batches before are sent);
- a sender thread hands only those to the client's pool, which compresses them on every core, in the order
  they go into one long PutChunks stream;
- a recorder thread records the files once their chunks are stored: the files put since the last time (a
  segment) are recorded in one call once the stream that carried their chunks has ended and the server says
  it stored everything in it, while the next ones are read. Segments are small (MIN_SEGMENT_FILES), so the
  last one, recorded after the last file is read, is quick; but the server rewrites each directory a segment
  adds to whole, so a segment grows until its files are at least half of those the directories it adds to
  hold (it doubles, when every file goes to one directory): the rewriting stays in proportion to the files.
  Ten thousand small files cost a few round trips and a few disk flushes on the server.
Each stage runs at most a few batches ahead of the next, which bounds memory.
"""

import posixpath
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import BinaryIO

import grpc

from pfs.client.client import Client
from pfs.core import compression
from pfs.core.chunking import Chunker
from pfs.core.hashing import address
from pfs.core.model import MAX_WRITE_LEVELS, MAX_WRITES, ChunkRef, CommitRef, FileWrite, levels

BATCH_BYTES = 16 << 20  # chunks hashed before one missing-chunks call...
BATCH_CHUNKS = 1000  # ...or this many, so small files start on their way early too
GROUP_BYTES = 4 << 20  # chunks compressed by one task and sent in one message
MIN_SEGMENT_FILES = 2000  # files recorded in one call at least (but the last)...
SEGMENT_FILES = MAX_WRITES  # ...and at most, what the server takes in one call
IN_FLIGHT = 4  # groups queued for the stream: bounds memory
AHEAD = 2  # batches handed to the sender, and segments to the recorder, not yet done: bounds memory


class Uploader:
    """Puts files, recording them with RECORD (see into_commit). Use as a context manager, or call flush()."""

    def __init__(
        self, client: Client, record: Callable[[list[FileWrite]], None], delimiter: str = "line",
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.client = client
        self.record = record  # records files whose chunks are stored
        self.chunker = Chunker(client.chunk_avg_size, delimiter)
        self.on_bytes = on_bytes
        self.bytes_sent = 0  # compressed bytes streamed to the server
        # the caller's thread
        self._batch: list[tuple[bytes, bytes]] = []
        self._batch_bytes = 0
        self._writes: list[FileWrite] = []  # files put since the last segment ended
        self._levels = 0  # the levels of their paths together (model.MAX_WRITE_LEVELS)
        self._in_dir: Counter[str] = Counter()  # files put into each directory
        self._touched: set[str] = set()  # the directories the current segment puts files into...
        self._rewrites = 0  # ...and how many files they hold: what the server rewrites to record it
        self._sending: deque[Future] = deque()
        self._recording: deque[Future] = deque()
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="pfs-send")
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix="pfs-record")
        # the sender's thread
        self._queue: queue.Queue | None = None
        self._call: grpc.Future | None = None
        self._sent: set[bytes] = set()  # chunks put into the current stream
        self._failure: BaseException | None = None  # why a batch was not sent: its stream's files are not recorded
        self._lock = threading.Lock()  # no stream starts once the upload is abandoned
        self._abandoned = False

    def __enter__(self) -> "Uploader":
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        if exc_type is not None:
            self._abandon()
            return
        try:
            self.flush()
        except BaseException:
            self._abandon()
            raise
        self._sender.shutdown()
        self._recorder.shutdown()

    def put(self, path: str, stream: BinaryIO, overwrite: bool = False, split: bool = False) -> None:
        """Puts the contents of STREAM at PATH (appending to an existing file unless OVERWRITE); SPLIT: as the next
        file of the split file PATH, a directory (see FileWrite)."""
        refs = []
        for data in self.chunker.split(stream):
            addr = address(data)
            refs.append(ChunkRef(addr, len(data)))
            self._batch.append((addr, data))
            self._batch_bytes += len(data)
            self.on_bytes(len(data))
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_CHUNKS:
                self._send_batch()
        self._add(FileWrite(path, tuple(refs), overwrite, split=split))

    def put_directory(self, path: str) -> None:
        """Makes the directory PATH (kept even while empty; one that is there stays as it is)."""
        self._add(FileWrite(path, (), directory=True))

    def _add(self, write: FileWrite) -> None:
        """Adds WRITE to the segment, which ends once it holds enough files (see the module's docstring), or
        before it would hold more levels of paths than one call records."""
        deep = levels(write.path)
        if self._levels + deep > MAX_WRITE_LEVELS:
            self._end_segment()
        self._levels += deep
        self._writes.append(write)
        directory = write.path if write.split else posixpath.dirname(write.path)
        self._in_dir[directory] += 1
        if directory in self._touched:
            self._rewrites += 1
        else:
            self._touched.add(directory)
            self._rewrites += self._in_dir[directory]
        files = len(self._writes)
        if files >= SEGMENT_FILES or (files >= MIN_SEGMENT_FILES and 2 * files >= self._rewrites):
            self._end_segment()

    def flush(self) -> None:
        """Sends everything put so far and records the files."""
        self._end_segment()
        for pending in (self._sending, self._recording):
            while pending:
                pending.popleft().result()

    def _send_batch(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:  # asked about now, while the sender sends the batches before
            asked = self.client.missing_chunks_async(list(dict.fromkeys(a for a, _ in batch)))
            _ahead(self._sending, self._sender.submit(self._send, batch, asked))

    def _end_segment(self) -> None:
        """Has the files put so far recorded once the stream that carries their chunks is done."""
        self._send_batch()
        writes, self._writes, self._levels = self._writes, [], 0
        self._touched, self._rewrites = set(), 0
        if writes:
            ended = self._sender.submit(self._end_stream)
            _ahead(self._recording, self._recorder.submit(self._record, ended, writes))

    # -- the sender's thread

    def _send(self, batch: list[tuple[bytes, bytes]], asked: Future) -> None:
        try:
            self._send_missing(batch, set(asked.result()))
        except BaseException as err:
            self._failure = err
            raise

    def _send_missing(self, batch: list[tuple[bytes, bytes]], missing: set[bytes]) -> None:
        group: list[tuple[bytes, bytes]] = []
        group_bytes = 0
        for addr, data in batch:
            if addr in missing and addr not in self._sent:
                self._sent.add(addr)
                group.append((addr, data))
                group_bytes += len(data)
                if group_bytes >= GROUP_BYTES:
                    self._enqueue(self.client.submit(_compressed, group))
                    group, group_bytes = [], 0
        if group:
            self._enqueue(self.client.submit(_compressed, group))

    def _end_stream(self) -> grpc.Future | None:
        """Ends the current stream; returns its call (None if there was none)."""
        if self._failure is not None:
            raise self._failure
        if self._call is None:
            return None
        self._enqueue(None)
        call, self._call, self._queue = self._call, None, None
        self._sent = set()  # a chunk of the ended stream asked about again is stored by then, or sent once more
        return call

    def _enqueue(self, item) -> None:
        if self._call is None:
            with self._lock:
                if self._abandoned:
                    raise CancelledError()
                self._queue = queue.Queue(IN_FLIGHT)
                self._call = self.client.put_chunks_async(self._frames(self._queue))
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._call.done():  # the stream failed: surface why
                    self._result(self._call)

    def _frames(self, q: queue.Queue):
        while (item := q.get()) is not None:
            frames = item.result()
            self.bytes_sent += sum(len(f) for _, f in frames)
            yield frames

    # -- the recorder's thread

    def _record(self, ended: Future, writes: list[FileWrite]) -> None:
        call = ended.result()
        if call is not None:
            self._result(call)
        self.record(writes)

    def _result(self, call: grpc.Future) -> None:
        try:
            call.result()
        except grpc.RpcError as err:
            raise self.client.translate(err) from None

    def _abandon(self) -> None:
        """Stops every stage: what is queued never runs, the stream is cancelled and none starts after it."""
        self._sender.shutdown(wait=False, cancel_futures=True)
        self._recorder.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._abandoned = True
            call, q = self._call, self._queue
        if call is not None:
            call.cancel()
            try:
                q.put_nowait(None)  # ends the stream's reader if it waits for more
            except queue.Full:
                pass


def into_commit(client: Client, ref: CommitRef, **options) -> Uploader:
    """An Uploader that puts files into the open commit REF."""
    return Uploader(client, lambda writes: client.put_files(ref, writes), **options)


def _ahead(pending: deque[Future], task: Future) -> None:
    """Adds TASK to PENDING, first waiting for the oldest while AHEAD are: a stage runs only so far ahead of the
    next, and the first failure of one surfaces here."""
    while len(pending) >= AHEAD:
        pending.popleft().result()
    pending.append(task)


def _compressed(group: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(addr, compression.compress(data)) for addr, data in group]
